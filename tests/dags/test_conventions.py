"""Provider conventions on real Airflow (both supported images run tests/dags): no backfill of a backup,
the Cloud Console links through the REST API the UI reads, the owner and ``deferrable`` of the built DAGs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED
from gce_vm_backup.backup.stages import PRECHECK, STOP_SNAPSHOT_START, VERIFY, resolve_task, tier_task
from gce_vm_backup.config.models import parse_config
from gce_vm_backup.dags.backup import build_all_dags
from gce_vm_backup.runtime.compat import DAG_HAS_ALLOWED_RUN_TYPES
from gce_vm_backup.runtime.links import snapshots_console_url, vm_console_url

from ..conftest import generated_dagbag, migrate_airflow_db

pytestmark = [pytest.mark.airflow, pytest.mark.emulator, pytest.mark.slow]

P = "demo-project"
DAG_ID = "gce_vm_backup__nightly"
REFUSAL = (
    "backfill runs are refused: a backup stops VMs now and names snapshots by the run's date; "
    "trigger the DAG instead"
)
CONFIG = """\
version: 1
deployment: test
defaults:
  start_date: "2026-01-01T00:00:00+00:00"
  poke_interval: 1
  retries: 0
groups:
  nightly:
    schedule: "0 3 * * *"
    owner: shop-team
    targets:
      - {project: demo-project, zone: us-central1-a, instance: web-1}
"""


@pytest.fixture(scope="module")
def dagbag():
    return generated_dagbag("conventions", CONFIG)


@pytest.fixture
def emulator(monkeypatch):
    with Emulator(DEMO_SEED, time_scale=60) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
        yield emulator


def airflow(*args: str) -> subprocess.CompletedProcess[str]:
    """Airflow's own CLI, on this test's Airflow home and database."""
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args], env=os.environ, capture_output=True, text=True, timeout=600
    )


def backfill_runs(dag_id: str) -> list[Any]:
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)).all()
        return sorted((run.run_id for run in runs if run.run_type == "backfill"), key=str)


def start_run(dag_id: str, run_id: str) -> None:
    from airflow.models import DagRun
    from airflow.utils import timezone
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).one()
        run.state, run.start_date = "running", timezone.utcnow()


def test_a_backfill_of_a_backup_dag_is_refused_and_the_emulator_sees_no_call(dagbag, emulator):
    reserialized = airflow("dags", "reserialize")  # the DAG in the database, as the DAG processor puts it
    assert reserialized.returncode == 0, reserialized.stderr[-2000:]

    created = airflow(
        "backfill", "create", "--dag-id", DAG_ID, "--from-date", "2026-01-01", "--to-date", "2026-01-29"
    )

    if DAG_HAS_ALLOWED_RUN_TYPES:  # Airflow 3.2+: refused before a run exists
        assert created.returncode != 0
        assert f"Dag with dag_id: '{DAG_ID}' does not allow backfill runs" in created.stdout + created.stderr
        assert backfill_runs(DAG_ID) == []
    else:  # Airflow 3.1: the runs exist, and their first task refuses them
        assert created.returncode == 0, created.stderr[-2000:]
        runs = backfill_runs(DAG_ID)
        assert len(runs) == 28
        start_run(DAG_ID, runs[0])  # what the scheduler does first with a queued run
        first = airflow("tasks", "test", DAG_ID, resolve_task(1), runs[0])
        assert REFUSAL in first.stdout + first.stderr
        assert "Traceback" not in first.stdout.split(REFUSAL)[0][-200:]
    assert emulator.calls == []


def test_the_backup_dags_take_scheduled_and_manual_runs_only_where_airflow_can_say_so(dagbag):
    dag = dagbag.get_dag(DAG_ID)
    if DAG_HAS_ALLOWED_RUN_TYPES:
        assert sorted(str(getattr(t, "value", t)) for t in dag.allowed_run_types) == ["manual", "scheduled"]
    else:
        assert not hasattr(dag, "allowed_run_types")


def test_restore_and_drill_dags_refuse_backfills_too():
    text = CONFIG + (
        "    restore_drill: {scratch_project: drills-prj, scratch_zone: us-central1-f, network: drills,\n"
        '      schedule: "0 5 * * 0"}\n'
    )
    groups, problems = parse_config(text, "gce_vm_backup.yaml")
    assert problems == []
    from gce_vm_backup.config.models import BackupConfig

    dags = build_all_dags(BackupConfig("gce_vm_backup.yaml", groups, "test"))
    restore, drill = dags["gce_vm_backup_restore__nightly"], dags["gce_vm_backup_drill__nightly"]

    assert restore.schedule is None  # unscheduled: Airflow refuses its backfill on every version
    if DAG_HAS_ALLOWED_RUN_TYPES:
        assert [str(getattr(t, "value", t)) for t in restore.allowed_run_types] == ["manual"]
        assert sorted(str(getattr(t, "value", t)) for t in drill.allowed_run_types) == ["manual", "scheduled"]
    for dag in dags.values():
        if dag.dag_id.startswith("gce_vm_backup_freshness"):
            continue
        assert {task.owner for task in dag.tasks} == {"shop-team"}, dag.dag_id


def test_the_owner_defaults_to_platform_not_airflow():
    groups, problems = parse_config(CONFIG.replace("    owner: shop-team\n", ""), "gce_vm_backup.yaml")
    assert problems == []
    from gce_vm_backup.config.models import BackupConfig

    dags = build_all_dags(BackupConfig("gce_vm_backup.yaml", groups, "test"))

    assert {task.owner for task in dags[DAG_ID].tasks} == {"platform"}
    assert {task.owner for task in dags["gce_vm_backup_restore__nightly"].tasks} == {"platform"}


@pytest.mark.parametrize(
    ("wait_mode", "deferrable"), [("defer", True), ("reschedule", False), ("worker", False)]
)
def test_the_groups_wait_mode_maps_onto_the_waits_deferrable(wait_mode, deferrable):
    text = CONFIG.replace("    owner: shop-team\n", f"    wait_mode: {wait_mode}\n")
    groups, problems = parse_config(text, "gce_vm_backup.yaml")
    assert problems == []
    from gce_vm_backup.config.models import BackupConfig

    dag = build_all_dags(BackupConfig("gce_vm_backup.yaml", groups, "test"))[DAG_ID]
    verify = dag.get_task(tier_task(1, VERIFY))

    assert (verify.wait_mode, verify.deferrable) == (wait_mode, deferrable)


def test_the_console_links_of_a_vm_task_resolve_through_the_rest_api_the_ui_reads(dagbag, emulator):
    from airflow import plugins_manager
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    run = dagbag.get_dag(DAG_ID).test(run_conf={"vms": [], "dry_run": False})
    assert run.state == "success"
    migrate_airflow_db()
    for cached in ("_get_plugins", "get_fastapi_plugins", "_get_ui_plugins"):  # Airflow 3.2+ caches
        getattr(getattr(plugins_manager, cached, None), "cache_clear", lambda: None)()
    app = create_app(apps="core")
    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="someone", role="viewer"))
    client = TestClient(app)

    def links(task_id: str, map_index: int = 0) -> dict[str, Any]:
        response = client.get(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run.run_id}/taskInstances/{task_id}/links",
            params={"map_index": map_index},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        return response.json()["extra_links"]

    vm = vm_console_url(P, "us-central1-a", "web-1")
    assert links(tier_task(1, PRECHECK)) == {"Compute Engine VM": vm, "Snapshots": None}
    # web-1 has two disks, so two snapshots: the project's snapshot list
    assert links(tier_task(1, STOP_SNAPSHOT_START)) == {
        "Compute Engine VM": vm,
        "Snapshots": snapshots_console_url(P),
    }
    assert links(tier_task(1, VERIFY))["Snapshots"] == snapshots_console_url(P)
    assert links(resolve_task(1), map_index=-1) == {}
