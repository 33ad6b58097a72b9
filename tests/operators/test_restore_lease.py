"""One operation per VM at a time, at a replace-disks restore: its stop takes the VM's lease (waiting for a
backup's), its start extends it, and ensure_vm gives it back; ensure_vm starts a VM that was RUNNING
before the restore when the stop task ended without a result, since the lease says the stop got as far as
taking it (it may have stopped the VM). Operators run directly against the emulator (600x)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from gce_vm_backup.errors import LeaseHeldError
from gce_vm_backup.restore.ops import EnsureVmOperator, StartAfterRestoreOperator, StopForRestoreOperator
from gce_vm_backup.runtime.base import ERROR_XCOM_KEY
from gce_vm_backup.runtime.lease import Holder, acquire, lease_of

from .conftest import PROJECT, ZONE_A

pytestmark = pytest.mark.emulator

DAG_ID, RUN_ID = "gce_vm_backup_restore__web", "manual__2026-12-01T00:00:00+00:00"
RESTORE = Holder.of_run("restore", deployment="test", dag_id=DAG_ID, run_id=RUN_ID)
BACKUP = Holder.of_run("backup", deployment="test", dag_id="gce_vm_backup__web", run_id="scheduled__1")
VM = f"projects/{PROJECT}/zones/{ZONE_A}/instances/web-1"
WEB1 = {"project_id": PROJECT, "zone": ZONE_A, "name": "web-1"}
PLAN = {
    "mode": "replace-disks",
    "dry_run": False,
    "vm": VM,
    "project": PROJECT,
    "zone": ZONE_A,
    "instance": "web-1",
    "prior_status": "RUNNING",
    "run_hash": "0123456789abcdef",
    "disks": [],  # every device keeps its disk here: ensure_vm has nothing to re-attach
}


@dataclass
class TI:
    """A restore task instance: the run's XComs by (task_id, key)."""

    task_id: str = "ensure_vm"
    dag_id: str = DAG_ID
    map_index: int = -1
    try_number: int = 1
    xcoms: dict[tuple[str, str], Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[(self.task_id, key)] = value

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        return self.xcoms.get((task_ids, key))


def context(ti: TI) -> dict[str, Any]:
    @dataclass
    class DagRun:
        run_after: datetime = datetime(2026, 12, 1, tzinfo=UTC)

    return {"ti": ti, "dag_run": DagRun(), "run_id": RUN_ID, "logical_date": DagRun.run_after}


def step(cls: type, task_id: str, **kwargs: Any) -> Any:
    return cls(
        task_id=task_id,
        plan=dict(PLAN),
        deployment="test",
        group="web",
        timeout=30,
        poll_interval=0.02,
        **kwargs,
    )


def hook() -> Any:
    from gce_vm_backup.compute.hook import ComputeBackupHook

    return ComputeBackupHook()


def lease_now(emulator: Any) -> Any:
    return lease_of(emulator.instance(PROJECT, ZONE_A, "web-1")["labels"])


def test_ensure_vm_starts_a_vm_that_the_stop_task_may_have_stopped_though_it_left_no_result(fast_emulator):
    stop_ti = TI(task_id="stop")
    step(StopForRestoreOperator, "stop").execute(context(stop_ti))  # took the lease, stopped the VM ...
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "TERMINATED"
    # ... and its worker was killed before it returned: no result, no recorded failure.
    result = step(EnsureVmOperator, "ensure_vm").execute(context(TI()))
    assert "started the VM" in result["actions"]
    assert result["status"] == "RUNNING"
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"
    assert lease_now(fast_emulator) is None  # given back at the end


def test_the_restores_stop_takes_the_lease_and_ensure_vm_gives_it_back(fast_emulator):
    before = dict(fast_emulator.instance(PROJECT, ZONE_A, "web-1")["labels"])
    ti = TI(task_id="stop")
    ti.xcoms[("stop", "return_value")] = step(StopForRestoreOperator, "stop").execute(context(ti))
    held = lease_now(fast_emulator)
    assert held is not None
    assert held.held_by(RESTORE)
    assert held.kind == "restore"
    step(StartAfterRestoreOperator, "start").execute(context(TI(task_id="start")))
    assert lease_now(fast_emulator).held_by(RESTORE)  # extended, still the restore's
    result = step(EnsureVmOperator, "ensure_vm").execute(context(TI(xcoms=ti.xcoms)))
    assert result["actions"] == ["gave back the lease on the VM"]
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["labels"] == before


def test_the_restores_stop_waits_for_a_backups_lease_then_fails_naming_it_and_ensure_vm_does_nothing(
    fast_emulator,
):
    acquire(hook(), WEB1, BACKUP, duration=600, wait=0)
    ti = TI(task_id="stop")
    with pytest.raises(LeaseHeldError, match=r"held by the backup gce_vm_backup__web \(lease until"):
        step(StopForRestoreOperator, "stop", lease_wait=0.2).execute(context(ti))
    assert fast_emulator.calls_for("compute.instances.stop") == []
    assert ti.xcoms[("stop", ERROR_XCOM_KEY)]["error"] == "LeaseHeldError"
    # The backup stops the VM meanwhile: the restore's teardown must not start it under the backup.
    fast_emulator.set_instance_status(PROJECT, ZONE_A, "web-1", "TERMINATED")
    result = step(EnsureVmOperator, "ensure_vm").execute(context(TI(xcoms=ti.xcoms)))
    assert result["actions"] == []
    assert fast_emulator.calls_for("compute.instances.start") == []
    assert lease_now(fast_emulator).held_by(BACKUP)


def test_ensure_vm_leaves_a_vm_alone_when_the_stop_never_ran(fast_emulator):
    fast_emulator.set_instance_status(PROJECT, ZONE_A, "web-1", "TERMINATED")  # stopped by someone else
    result = step(EnsureVmOperator, "ensure_vm").execute(context(TI()))
    assert (result["actions"], result["status"]) == ([], "TERMINATED")
    assert fast_emulator.calls_for("compute.instances.setLabels") == []
