"""Instant mode under faults, with the fault matrix's promises: the VM is back, no duplicates, no wrong
deletes, and a failure says what failed and why.

The quick ones run the instant-mode steps (instant_ops) against the fault harness's emulator (its seed,
time scale and timings) through the package's hook, in the order the downtime task and ``convert`` run
them: the clean-up and count before the stop, stop, capture, start (whatever happened), then the
conversion. The DAG-level ones run an instant-mode group end to end with ``dag.test()``, the fault
matrix's way (its helpers; a config of their own, so harness.py and cases.py stay as they are).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED
from gce_vm_backup.backup.capture import CaptureSettings
from gce_vm_backup.backup.instant import (
    MAX_INSTANT_PER_DISK,
    ConvertInstantSnapshotsOperator,
    capture_instant,
    prepare_instant,
)
from gce_vm_backup.compute.hook import ComputeBackupHook
from gce_vm_backup.errors import (
    BackupError,
    OperationFailedError,
    OperationTimeoutError,
    ResourceNotFoundError,
)
from gce_vm_backup.runtime.base import RunKey

from .harness import DATA_DISK, TIME_SCALE, TIMINGS, WEB_DISK, ZONE, P, seeded_snapshots

pytestmark = pytest.mark.emulator
quick = pytest.mark.quick  # no DAG run: the steps against the emulator

WEB = {
    "project_id": P,
    "zone": ZONE,
    "instance": "web-1",
    "prior_status": "RUNNING",
    "disks": [
        {
            "name": "web-1",
            "source": WEB_DISK,
            "boot": True,
            "size_gb": 10,
            "location": ZONE,
            "regional": False,
        },
        {
            "name": "web-1-data",
            "source": DATA_DISK,
            "boot": False,
            "size_gb": 50,
            "location": ZONE,
            "regional": False,
        },
    ],
}
RUN_TIME = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
GROUP = "fault-matrix"


def group_settings():
    return CaptureSettings(deployment="test", group=GROUP)


@dataclass
class TI:
    try_number: int = 1
    dag_id: str = "gce_vm_backup__fault-matrix"
    map_index: int = 0

    def xcom_push(self, key: str, value: Any) -> None:
        pass


@dataclass
class DagRun:
    run_after: datetime = RUN_TIME


def context(try_number: int = 1, run_id: str = "scheduled__2026-11-24T03:00:00+00:00") -> dict[str, Any]:
    return {"ti": TI(try_number), "dag_run": DagRun(), "run_id": run_id, "logical_date": RUN_TIME}


@pytest.fixture
def emulator(monkeypatch):
    with Emulator(DEMO_SEED, time_scale=TIME_SCALE, timings=TIMINGS) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
        yield emulator


def downtime(emulator: Emulator, try_number: int = 1, timeout: float = 20) -> list[dict[str, Any]]:
    """The instant-mode downtime of web-1 in miniature: clean up and count, stop, capture, start again
    whatever the capture did (the downtime task's promise: a VM this run stopped is RUNNING again)."""
    hook, run = (
        ComputeBackupHook(retry_initial=0.001, retry_max=0.01),
        RunKey.from_context(context(try_number)),
    )
    deadline = time.monotonic() + timeout
    prepare_instant(hook, WEB, run, deadline=deadline, deployment="test", group=GROUP)  # before any downtime
    hook.wait_operation(
        hook.stop_instance(project_id=P, zone=ZONE, name="web-1", request_id=run.request_id("web-1", "stop")),
        timeout=timeout,
    )
    try:
        return capture_instant(hook, WEB, run, deadline=deadline, settings=group_settings())
    finally:
        start = hook.start_instance(
            project_id=P, zone=ZONE, name="web-1", request_id=run.request_id("web-1", "start")
        )
        hook.wait_operation(start, timeout=timeout)


def convert(records: list[dict[str, Any]], try_number: int = 1, timeout: float = 20) -> list[dict[str, Any]]:
    """The ``convert`` task: poke until done (simulated time runs 600x, so a short real pause suffices)."""
    operator = ConvertInstantSnapshotsOperator(
        task_id="convert", instant_records=records, deployment="test", group=GROUP, wait_mode="worker"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = operator.poke(context(try_number))
        if result:
            return result.xcom_value
        time.sleep(0.05)
    raise AssertionError(f"convert did not finish: {operator.pending()}")


def vm_status(emulator: Emulator) -> str:
    return emulator.instance(P, ZONE, "web-1")["status"]


def package_calls(emulator: Emulator, method: str) -> int:
    return sum(1 for call in emulator.calls_for(method) if call.client[:1] == ("gce-vm-backup",))


@quick
def test_a_failed_conversion_keeps_the_instant_snapshots_the_vm_runs_and_the_retry_converts(emulator):
    seeded = seeded_snapshots(emulator)
    records = downtime(emulator)
    assert vm_status(emulator) == "RUNNING"
    emulator.faults.fail_operation("compute.snapshots.insert", "INTERNAL_ERROR", "Conversion failed", times=2)
    with pytest.raises(
        OperationFailedError, match=r"insert operation .* finished with an error: INTERNAL_ERROR"
    ):
        convert(records)
    kept = {item["name"] for item in emulator.instant_snapshots(P)}
    assert kept == {r["instant_snapshot"] for r in records}  # kept for the retry
    assert package_calls(emulator, "compute.snapshots.delete") == 0
    assert set(seeded) <= {s["name"] for s in emulator.snapshots(P)}
    done = convert(records, try_number=2)
    assert [r["status"] for r in done] == ["READY", "READY"]
    assert emulator.instant_snapshots(P) == []
    assert vm_status(emulator) == "RUNNING"


@quick
def test_the_instant_snapshot_limit_is_refused_before_the_vm_is_stopped(emulator):
    raw = compute_v1.InstantSnapshotsClient(
        credentials=AnonymousCredentials(), client_options={"api_endpoint": emulator.url}
    )
    for number in range(MAX_INSTANT_PER_DISK):
        raw.insert_unary(
            request={
                "project": P,
                "zone": ZONE,
                "instant_snapshot_resource": compute_v1.InstantSnapshot(
                    name=f"other-{number}", source_disk=DATA_DISK
                ),
                "request_id": str(uuid.uuid4()),
            }
        )
        emulator.clock.advance(31)
    with pytest.raises(
        BackupError, match=r"web-1-data already has 32 instant snapshots.*before stopping the VM"
    ):
        downtime(emulator)
    assert not emulator.calls_for("compute.instances.stop")
    assert vm_status(emulator) == "RUNNING"
    assert package_calls(emulator, "compute.instantSnapshots.delete") == 0  # not ours: never deleted
    assert package_calls(emulator, "compute.instantSnapshots.insert") == 0


@quick
def test_leftovers_of_failed_runs_are_cleaned_up_so_they_never_reach_the_limit(emulator):
    emulator.clock.advance(0)
    for day in range(MAX_INSTANT_PER_DISK + 3):  # more failed runs than the limit, one a day
        hook = ComputeBackupHook()
        run = RunKey.from_context(context(run_id=f"scheduled__2026-10-{day + 1:02d}"))
        prepare_instant(hook, WEB, run, deadline=time.monotonic() + 20, deployment="test", group=GROUP)
        capture_instant(hook, WEB, run, deadline=time.monotonic() + 20, settings=group_settings())
        emulator.clock.advance(31)
    per_disk = [item["sourceDisk"].rsplit("/", 1)[-1] for item in emulator.instant_snapshots(P)]
    assert sorted(per_disk) == ["web-1", "web-1-data"]  # only the last run's


@quick
def test_a_disk_deleted_before_its_conversion_fails_clearly_and_nothing_is_wrongly_deleted(emulator):
    seeded = seeded_snapshots(emulator)
    records = downtime(emulator)
    emulator.delete_disk(DATA_DISK)
    with pytest.raises(
        ResourceNotFoundError, match=r"web-1-data-ips.* no longer exists .*Nothing was deleted"
    ):
        convert(records)
    assert package_calls(emulator, "compute.snapshots.delete") == 0
    assert package_calls(emulator, "compute.instantSnapshots.delete") == 0
    assert set(seeded) <= {s["name"] for s in emulator.snapshots(P)}
    assert [i["name"] for i in emulator.instant_snapshots(P)] == [records[0]["instant_snapshot"]]
    assert vm_status(emulator) == "RUNNING"


@quick
def test_lost_answers_and_retries_make_no_duplicates(emulator):
    emulator.faults.http_error_after_apply("compute.instantSnapshots.insert", 503)
    emulator.faults.http_error_after_apply("compute.snapshots.insert", 503)
    first = downtime(emulator)
    again = downtime(emulator, try_number=2)  # the downtime task's retry adopts this run's instant snapshots
    assert again == first
    assert len(emulator.instant_snapshots(P)) == 2
    done = convert(first)
    assert convert(first, try_number=2) == done
    assert sorted(s["name"] for s in emulator.snapshots(P)) == sorted(r["snapshot"] for r in done)
    assert vm_status(emulator) == "RUNNING"


@quick
def test_a_failed_or_hung_capture_still_brings_the_vm_back(emulator):
    emulator.faults.fail_operation("compute.instantSnapshots.insert", "QUOTA_EXCEEDED", "Quota exceeded")
    with pytest.raises(OperationFailedError, match="QUOTA_EXCEEDED: Quota exceeded"):
        downtime(emulator)
    assert vm_status(emulator) == "RUNNING"
    emulator.clock.advance(60)
    emulator.faults.hang_operation("compute.instantSnapshots.insert")
    with pytest.raises(OperationTimeoutError):
        downtime(emulator, try_number=2, timeout=2)
    assert vm_status(emulator) == "RUNNING"


# ---- DAG level: the instant-mode DAG end to end (dag.test), the fault matrix's way -----------------------
DAG_GROUP = "instant-faults"
DAG_ID = f"gce_vm_backup__{DAG_GROUP}"
DAG_CONFIG = f"""\
version: 1
deployment: test
defaults:
  start_date: "2026-01-01T00:00:00+00:00"
  poke_interval: 1
  retries: 1
  retry_delay: 0
groups:
  {DAG_GROUP}:
    snapshot_mode: instant
    targets:
      - {{project: demo-project, zone: us-central1-a, instance: web-1}}
    retention: {{keep_last: 1}}
    timeouts: {{stop: 30, snapshot: 60, start: 30, verify: 60}}
  {DAG_GROUP}-fallback:
    snapshot_mode: instant
    instant_fallback: standard
    targets:
      - {{project: demo-project, zone: us-central1-a, instance: web-1}}
    retention: {{keep_last: 1}}
    timeouts: {{stop: 30, snapshot: 60, start: 30, verify: 60}}
"""


@pytest.fixture(scope="module")
def instant_dagbag():
    from ..conftest import AIRFLOW_HOME, REPO, migrate_airflow_db
    from .harness import only_dags_folder

    folder = AIRFLOW_HOME / "dags" / "instant-faults"
    only_dags_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dags" / "gce_vm_backup_dags.py", folder)
    (folder / "gce_vm_backup.yaml").write_text(DAG_CONFIG)
    migrate_airflow_db()
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag
    bag = DagBag(str(folder))
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture(scope="module")
def instant_dag(instant_dagbag):
    return instant_dagbag.get_dag(DAG_ID)


@dataclass
class DagOutcome:
    state: str
    task_states: dict[str, str | None]
    messages: list[str]
    vm: str
    snapshots: list[dict[str, Any]]
    instants: list[dict[str, Any]]
    seeded: dict[str, dict[str, Any]]
    calls: dict[str, int]


def run_instant_dag(dag: Any, inject: Any = None, group: str = DAG_GROUP) -> DagOutcome:
    from gce_vm_backup.backup import stages

    from .harness import _captured_errors, fast_hook_retries, fine_trigger_sleeps, quiet_output

    with Emulator(DEMO_SEED, time_scale=TIME_SCALE, timings=TIMINGS) as emu:
        os.environ["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"] = json.dumps(
            {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emu.url}}
        )
        seeded = seeded_snapshots(emu, group=group)
        if inject:
            inject(emu)
        convert = dag.task_dict[stages.tier_task(1, stages.CONVERT)]
        saved = convert.poke_interval
        convert.poke_interval = 0.2
        try:
            with fast_hook_retries(), fine_trigger_sleeps(), _captured_errors() as messages, quiet_output():
                run = dag.test(run_conf={"vms": [], "dry_run": False})
        finally:
            convert.poke_interval = saved
            os.environ.pop("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", None)
        emu.faults.clear()
        calls: dict[str, int] = {}
        for call in emu.calls:
            if call.client[:1] == ("gce-vm-backup",):
                calls[call.method] = calls.get(call.method, 0) + 1
        return DagOutcome(
            state=str(run.state),
            task_states={ti.task_id.rsplit(".", 1)[-1]: ti.state for ti in run.get_task_instances()},
            messages=list(dict.fromkeys(messages)),
            vm=vm_status(emu),
            snapshots=emu.snapshots(P),
            instants=emu.instant_snapshots(P),
            seeded=seeded,
            calls=calls,
        )


@pytest.mark.airflow
@pytest.mark.slow
def test_dag_an_instant_run_converts_prunes_and_leaves_no_instant_snapshot(instant_dag):
    outcome = run_instant_dag(instant_dag)
    assert outcome.state == "success", outcome.messages
    assert outcome.vm == "RUNNING"
    assert outcome.instants == []
    ours = [s for s in outcome.snapshots if s["name"] not in outcome.seeded]
    assert sorted(s["sourceDisk"].rsplit("/", 1)[-1] for s in ours) == ["web-1", "web-1-data"]
    assert all(s.get("sourceInstantSnapshot") and s["status"] == "READY" for s in ours)
    left = {s["name"] for s in outcome.snapshots} & set(outcome.seeded)
    web_1s = {name for name, spec in outcome.seeded.items() if "batch-1" not in spec["sourceDisk"]}
    assert left & web_1s == {"hand-made-web-1"}  # keep_last 1 pruned the old ones of ours, not the hand-made
    assert outcome.task_states["convert"] == "success"
    assert "verify" not in outcome.task_states


@pytest.mark.airflow
@pytest.mark.slow
def test_dag_a_failed_conversion_fails_the_run_clearly_keeps_the_instant_snapshots_and_the_vm_runs(
    instant_dag,
):
    def inject(emu: Emulator) -> None:
        emu.faults.fail_operation("compute.snapshots.insert", "INTERNAL_ERROR", "Conversion failed", times=20)

    outcome = run_instant_dag(instant_dag, inject)
    assert outcome.state == "failed"
    assert outcome.vm == "RUNNING"
    assert any("convert" in m and "INTERNAL_ERROR: Conversion failed" in m for m in outcome.messages), (
        outcome.messages
    )
    assert sorted(i["sourceDisk"].rsplit("/", 1)[-1] for i in outcome.instants) == ["web-1", "web-1-data"]
    assert set(outcome.seeded) <= {s["name"] for s in outcome.snapshots}  # retention never ran
    assert outcome.calls.get("compute.snapshots.delete", 0) == 0


@pytest.mark.airflow
@pytest.mark.slow
def test_dag_the_instant_snapshot_limit_fails_the_run_and_the_vm_runs(instant_dag):
    def inject(emu: Emulator) -> None:
        raw = compute_v1.InstantSnapshotsClient(
            credentials=AnonymousCredentials(), client_options={"api_endpoint": emu.url}
        )
        for number in range(MAX_INSTANT_PER_DISK):
            raw.insert_unary(
                request={
                    "project": P,
                    "zone": ZONE,
                    "instant_snapshot_resource": compute_v1.InstantSnapshot(
                        name=f"other-{number}", source_disk=DATA_DISK
                    ),
                    "request_id": str(uuid.uuid4()),
                }
            )
            emu.clock.advance(31)

    outcome = run_instant_dag(instant_dag, inject)
    assert outcome.state == "failed"
    assert outcome.vm == "RUNNING"
    assert any("already has 32 instant snapshots" in m for m in outcome.messages), outcome.messages
    assert len(outcome.instants) == MAX_INSTANT_PER_DISK  # none of the others' deleted, none of ours left
    assert set(outcome.seeded) <= {s["name"] for s in outcome.snapshots}


@pytest.mark.airflow
@pytest.mark.slow
def test_dag_a_disk_deleted_before_its_conversion_fails_clearly_and_deletes_nothing(instant_dag):
    def inject(emu: Emulator) -> None:
        emu.faults.on_call("compute.snapshots.insert", lambda: emu.delete_disk(DATA_DISK))

    outcome = run_instant_dag(instant_dag, inject)
    assert outcome.state == "failed"
    assert outcome.vm == "RUNNING"
    assert any("no longer exists" in m and "web-1-data" in m for m in outcome.messages), outcome.messages
    assert outcome.calls.get("compute.snapshots.delete", 0) == 0
    assert set(outcome.seeded) <= {s["name"] for s in outcome.snapshots}


@pytest.mark.airflow
@pytest.mark.slow
def test_dag_lost_answers_make_no_duplicates(instant_dag):
    def inject(emu: Emulator) -> None:
        emu.faults.http_error_after_apply("compute.instantSnapshots.insert", 503, times=2)
        emu.faults.http_error_after_apply("compute.snapshots.insert", 503, times=2)

    outcome = run_instant_dag(instant_dag, inject)
    assert outcome.state == "success", outcome.messages
    ours = [s for s in outcome.snapshots if s["name"] not in outcome.seeded]
    assert len(ours) == 2
    assert outcome.instants == []
    assert outcome.vm == "RUNNING"


@pytest.mark.airflow
@pytest.mark.slow
def test_dag_the_instant_snapshot_limit_is_refused_before_the_vm_is_stopped(instant_dag):
    def inject(emu: Emulator) -> None:
        raw = compute_v1.InstantSnapshotsClient(
            credentials=AnonymousCredentials(), client_options={"api_endpoint": emu.url}
        )
        for number in range(MAX_INSTANT_PER_DISK):
            raw.insert_unary(
                request={
                    "project": P,
                    "zone": ZONE,
                    "instant_snapshot_resource": compute_v1.InstantSnapshot(
                        name=f"other-{number}", source_disk=DATA_DISK
                    ),
                    "request_id": str(uuid.uuid4()),
                }
            )
            emu.clock.advance(31)

    outcome = run_instant_dag(instant_dag, inject)
    assert outcome.calls.get("compute.instances.stop", 0) == 0


def _hyperdisk_ml(emu: Emulator) -> None:
    with emu.world.lock:
        emu.world.disks[DATA_DISK]["type"] = emu.world.url(
            f"projects/{P}/zones/{ZONE}/diskTypes/hyperdisk-ml"
        )


@pytest.mark.airflow
@pytest.mark.slow
def test_dag_a_disk_type_without_instant_snapshots_is_refused_and_the_vm_runs(instant_dag):
    outcome = run_instant_dag(instant_dag, _hyperdisk_ml)
    assert outcome.state == "failed"
    assert outcome.vm == "RUNNING"
    assert any("cannot have instant snapshots" in m and "hyperdisk-ml" in m for m in outcome.messages)
    assert outcome.instants == []
    assert outcome.calls.get("compute.instantSnapshots.insert", 0) == 0
    assert set(outcome.seeded) <= {s["name"] for s in outcome.snapshots}


@pytest.mark.airflow
@pytest.mark.slow
def test_dag_instant_fallback_standard_backs_such_a_vm_up_the_standard_way(instant_dagbag):
    group = f"{DAG_GROUP}-fallback"
    outcome = run_instant_dag(instant_dagbag.get_dag(f"gce_vm_backup__{group}"), _hyperdisk_ml, group=group)
    assert outcome.state == "success", outcome.messages
    assert outcome.vm == "RUNNING"
    assert outcome.instants == []
    ours = [s for s in outcome.snapshots if s["name"] not in outcome.seeded]
    assert sorted(s["sourceDisk"].rsplit("/", 1)[-1] for s in ours) == ["web-1", "web-1-data"]
    assert not any(s.get("sourceInstantSnapshot") for s in ours)  # made from the disks, while the VM was down
