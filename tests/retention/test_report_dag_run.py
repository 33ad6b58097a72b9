"""A real Airflow run (dag.test on SQLite) of one tier with verification, retention and the run report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED
from gce_vm_backup.labels import managed_snapshot_labels

from ..conftest import AIRFLOW_HOME
from .conftest import PROJECT, ZONE

pytestmark = [pytest.mark.airflow, pytest.mark.emulator, pytest.mark.slow]

DAG_ID = "gce_vm_backup__report_test"
DAG_FILE = f"""\
from datetime import UTC, datetime

from airflow.sdk import DAG, task_group

from gce_vm_backup.operators import (
    PrecheckInstanceOperator, ResolveTargetsOperator, SnapshotDisksOperator, StartInstanceOperator,
    StopInstanceOperator,
)
from gce_vm_backup.report import RunReportOperator
from gce_vm_backup.retention_ops import ApplyRetentionOperator, VerifySnapshotsOperator

with DAG({DAG_ID!r}, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC),
         render_template_as_native_obj=True, default_args={{"retries": 0}}):
    resolve = ResolveTargetsOperator(task_id="resolve_tier_1", targets=[
        {{"project_id": {PROJECT!r}, "zone": {ZONE!r}, "instance": "web-1", "disks": ["web-1"]}},
        {{"project_id": {PROJECT!r}, "zone": {ZONE!r}, "instance": "batch-1", "disks": None}},
    ])

    @task_group(group_id="tier_1")
    def backup_vm(project_id, zone, instance, disks):
        precheck = PrecheckInstanceOperator(
            task_id="precheck", project_id=project_id, zone=zone, instance=instance, disks=disks
        )
        common = {{"instance_record": precheck.output, "poke_interval": 1, "timeout": 300}}
        stop = StopInstanceOperator(task_id="stop", **common)
        snapshot = SnapshotDisksOperator(task_id="snapshot", group="web", **common)
        start = StartInstanceOperator(task_id="start", **common)
        verify = VerifySnapshotsOperator(
            task_id="verify", snapshot_records=snapshot.output, poke_interval=1, timeout=300
        )
        retention = ApplyRetentionOperator(
            task_id="retention", instance_record=precheck.output, snapshot_records=verify.output,
            policy={{"keep_last": 1}},
        )
        precheck >> stop >> snapshot >> start >> verify >> retention
        start.as_teardown(setups=precheck)

    backup_vm.expand_kwargs(resolve.output) >> RunReportOperator(task_id="run_report", vm_groups=["tier_1"])
"""


@pytest.fixture(scope="module")
def dag():
    folder = AIRFLOW_HOME / "dags" / "report_tests"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report_test_dag.py").write_text(DAG_FILE)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ
    )
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(folder))
    assert bag.import_errors == {}
    return bag.get_dag(DAG_ID)


@pytest.fixture
def emulator(monkeypatch):
    with Emulator(DEMO_SEED, time_scale=60) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
        yield emulator


def seed_old(emulator, name, disk, days_before):
    created = datetime.fromisoformat(emulator.clock.timestamp()) - timedelta(days=days_before)
    emulator.seed_snapshot(
        PROJECT,
        {
            "name": name,
            "sourceDisk": disk,
            "labels": managed_snapshot_labels(
                group="web", instance=disk.rsplit("/", 1)[-1], disk_source=disk
            ),
            "creationTimestamp": created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        },
    )


def report_of(run):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=run.run_id, key="run_report", dag_ids=DAG_ID, task_ids="run_report")
        ).first()
        return XComModel.deserialize_value(row)


def test_a_real_run_verifies_prunes_and_reports_every_vm(dag, emulator):
    web_disk = f"projects/{PROJECT}/zones/{ZONE}/disks/web-1"
    seed_old(emulator, "web-1-older", web_disk, days_before=3)

    run = dag.test()

    assert run.state == "success", {(t.task_id, t.map_index): t.state for t in run.get_task_instances()}
    report = report_of(run)
    rows = {row["vm"].rsplit("/", 1)[-1]: row for row in report["vms"]}
    assert set(rows) == {"web-1", "batch-1"}
    assert rows["web-1"]["prior_status"] == "RUNNING"
    assert rows["web-1"]["downtime_seconds"] >= 0
    assert rows["web-1"]["retention"]["deleted"] == ["web-1-older"]
    assert rows["batch-1"]["downtime_seconds"] == 0
    assert all(
        s["status"] == "READY" and s["storage_bytes"] > 0 for r in rows.values() for s in r["snapshots"]
    )
    assert report["status"] == "success"
    assert "web-1-older" not in {s["name"] for s in emulator.snapshots(PROJECT)}


def test_a_failed_snapshot_fails_the_run_restarts_the_vm_and_the_report_says_why(dag, emulator):
    emulator.faults.fail_operation("compute.snapshots.insert", "QUOTA_EXCEEDED", "Quota 'SNAPSHOTS' exceeded")

    run = dag.test()

    assert run.state == "failed"
    assert emulator.instance(PROJECT, ZONE, "web-1")["status"] == "RUNNING"
    report = report_of(run)
    assert report["status"] == "failed"
    problems = [p for row in report["vms"] for p in row["problems"]]
    assert "snapshot failed" in problems
    assert emulator.calls_for("compute.snapshots.delete") == []
