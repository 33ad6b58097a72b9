"""Instant mode under faults, with the fault matrix's promises: the VM is back, no duplicates, no wrong
deletes, and a failure says what failed and why.

These run the instant-mode steps (instant_ops) against the fault harness's emulator (its seed, time scale
and timings) through the package's hook, in the order the downtime task and ``convert`` run them: the
clean-up and count before the stop, stop, capture, start (whatever happened), then the conversion. The
DAG-level versions need the instant-mode downtime task (``stop_snapshot_start``) and belong in the fault
matrix once it exists.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED
from gce_vm_backup._base import RunKey
from gce_vm_backup.errors import (
    BackupError,
    OperationFailedError,
    OperationTimeoutError,
    ResourceNotFoundError,
)
from gce_vm_backup.hook import ComputeBackupHook
from gce_vm_backup.instant_ops import (
    MAX_INSTANT_PER_DISK,
    ConvertInstantSnapshotsOperator,
    capture_instant,
    prepare_instant,
)

from .harness import DATA_DISK, TIME_SCALE, TIMINGS, WEB_DISK, ZONE, P, seeded_snapshots

pytestmark = [pytest.mark.emulator, pytest.mark.quick]

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


@dataclass(frozen=True)
class Settings:
    deployment: str = "test"
    group: str = GROUP
    labels: dict[str, str] = field(default_factory=dict)
    description: str | None = None


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
        return capture_instant(hook, WEB, run, deadline=deadline, settings=Settings())
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


def test_leftovers_of_failed_runs_are_cleaned_up_so_they_never_reach_the_limit(emulator):
    emulator.clock.advance(0)
    for day in range(MAX_INSTANT_PER_DISK + 3):  # more failed runs than the limit, one a day
        hook = ComputeBackupHook()
        run = RunKey.from_context(context(run_id=f"scheduled__2026-10-{day + 1:02d}"))
        prepare_instant(hook, WEB, run, deadline=time.monotonic() + 20, deployment="test", group=GROUP)
        capture_instant(hook, WEB, run, deadline=time.monotonic() + 20, settings=Settings())
        emulator.clock.advance(31)
    per_disk = [item["sourceDisk"].rsplit("/", 1)[-1] for item in emulator.instant_snapshots(P)]
    assert sorted(per_disk) == ["web-1", "web-1-data"]  # only the last run's


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
