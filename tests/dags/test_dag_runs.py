"""Real Airflow runs (dag.test on SQLite) of generated DAGs against the Compute Engine emulator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED

from ..conftest import AIRFLOW_HOME, REPO

pytestmark = [pytest.mark.airflow, pytest.mark.emulator, pytest.mark.slow]

P = "demo-project"
CONFIG = """\
version: 1
defaults:
  start_date: "2026-01-01T00:00:00+00:00"
  poke_interval: 1
  retries: 0
groups:
  shop:
    tiers:
      - - {project: demo-project, zone: us-central1-a, instance: web-1}
      - - {project: demo-project, zones: all, labels: {app: shop}}
  nothing:
    targets:
      - {project: demo-project, zones: [us-central1-b], labels: {tier: web}}
"""
MUTATING = {"stop", "start", "resume", "insert", "delete", "createSnapshot"}


@pytest.fixture(scope="module")
def dagbag():
    dags = AIRFLOW_HOME / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dags" / "gce_vm_backup_dags.py", dags)
    (dags / "gce_vm_backup.yaml").write_text(CONFIG)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ
    )
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(dags))
    assert bag.import_errors == {}
    return bag


@pytest.fixture
def emulator(monkeypatch):
    with Emulator(DEMO_SEED, time_scale=60) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
        yield emulator


def run_dag(dagbag, dag_id, **conf):
    """dag.test() with the full trigger-form conf: dag.test keeps conf in the DAG object's params."""
    return dagbag.get_dag(dag_id).test(run_conf={"vms": [], "dry_run": False, **conf})


def states(run):
    return {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}


def vm_status(emulator, zone, name):
    return emulator.instance(P, zone, name)["status"]


def test_full_backup_succeeds_and_leaves_every_vm_as_it_was(dagbag, emulator):
    run = run_dag(dagbag, "gce_vm_backup__shop")

    assert run.state == "success", states(run)
    assert vm_status(emulator, "us-central1-a", "web-1") == "RUNNING"
    assert vm_status(emulator, "us-central1-b", "db-1") == "RUNNING"
    assert vm_status(emulator, "us-central1-a", "batch-1") == "TERMINATED"
    snapshots = emulator.snapshots(P)
    assert len(snapshots) == 5  # web-1: 2 disks, db-1: 2 (one regional), batch-1: 1
    assert {s["status"] for s in snapshots} == {"READY"}
    assert emulator.calls_for("compute.instances.start")  # web-1 and db-1 came back
    assert not [c for c in emulator.calls_for("compute.instances.start") if "batch-1" in c.resource]


def test_tier_order_web_stops_before_db_and_starts_after_it(dagbag, emulator):
    run_dag(dagbag, "gce_vm_backup__shop")
    calls = emulator.calls
    first = {}
    for index, call in enumerate(calls):
        first.setdefault((call.method, call.resource.rsplit("/", 1)[-1]), index)
    assert first[("compute.instances.stop", "web-1")] < first[("compute.instances.stop", "db-1")]
    assert first[("compute.instances.start", "db-1")] < first[("compute.instances.start", "web-1")]


def test_failed_snapshot_still_restarts_the_vm_and_fails_the_run(dagbag, emulator):
    emulator.faults.fail_operation(
        "compute.snapshots.insert", "QUOTA_EXCEEDED", "Quota 'SNAPSHOTS' exceeded", times=20
    )
    run = run_dag(dagbag, "gce_vm_backup__shop")

    assert run.state == "failed"
    result = states(run)
    assert result[("tier_1.snapshot", 0)] == "failed"
    assert result[("tier_1.start", 0)] == "success"
    assert vm_status(emulator, "us-central1-a", "web-1") == "RUNNING"
    assert vm_status(emulator, "us-central1-b", "db-1") == "RUNNING"


def test_dry_run_changes_nothing(dagbag, emulator):
    run = run_dag(dagbag, "gce_vm_backup__shop", dry_run=True)

    assert run.state == "success"
    assert [c for c in emulator.calls if c.method.rsplit(".", 1)[-1] in MUTATING] == []
    assert emulator.snapshots(P) == []
    assert emulator.calls_for("compute.instances.get")  # the plan read the VMs


def test_subset_from_the_trigger_form_backs_up_only_those_vms(dagbag, emulator):
    run = run_dag(dagbag, "gce_vm_backup__shop", vms=["web-1"])

    assert run.state == "success"
    stopped = {c.resource.rsplit("/", 1)[-1] for c in emulator.calls_for("compute.instances.stop")}
    assert stopped == {"web-1"}
    assert {s["name"].split("-us-central1")[0] for s in emulator.snapshots(P)} == {"web-1", "web-1-data"}
    assert vm_status(emulator, "us-central1-a", "web-1") == "RUNNING"
    assert vm_status(emulator, "us-central1-b", "db-1") == "RUNNING"


def test_choosing_only_a_later_tier_skips_the_empty_first_tier_and_backs_up_the_choice(dagbag, emulator):
    run = run_dag(dagbag, "gce_vm_backup__shop", vms=["db-1"])

    assert run.state == "success"
    stopped = {c.resource.rsplit("/", 1)[-1] for c in emulator.calls_for("compute.instances.stop")}
    assert stopped == {"db-1"}
    assert states(run)[("tier_1.stop", 0)] == "success"  # the empty tier's placeholder passes through
    assert states(run)[("tier_1_stopped", -1)] == "success"
    assert vm_status(emulator, "us-central1-b", "db-1") == "RUNNING"
    assert vm_status(emulator, "us-central1-a", "web-1") == "RUNNING"


def test_selector_matching_zero_vms_succeeds_without_touching_anything(dagbag, emulator):
    run = run_dag(dagbag, "gce_vm_backup__nothing")

    assert run.state == "success"
    assert {state for (task, _), state in states(run).items() if task.startswith("tier_1.")} == {"success"}
    assert [c for c in emulator.calls if c.method.rsplit(".", 1)[-1] in MUTATING] == []
