"""One operation per VM at a time, at the downtime task: the VM's lease (lease.py) against the emulator.

A backup's downtime task takes the VM's lease before it stops (or captures) anything and gives it back
once the VM is RUNNING again; a VM that another operation holds is waited for, then left as it is; and a
backup starts only a VM that this run stopped: a VM found down that no try of this run stopped (none took
its lease) is neither snapshotted nor started.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from gce_vm_backup.backup.stages import DOWN_XCOM_KEY
from gce_vm_backup.errors import LeaseHeldError, OperationFailedError, VmStateError
from gce_vm_backup.operators import EnsureRunningOperator, StopSnapshotOperator
from gce_vm_backup.runtime.base import ERROR_XCOM_KEY
from gce_vm_backup.runtime.lease import HOLDER_KEY, LEASE_KEY, Holder, acquire, lease_of

from .conftest import PROJECT, ZONE_A
from .test_downtime import DOWNTIME, ENSURE, VM, RunTI, cap_ti, context_of, downtime, precheck

pytestmark = pytest.mark.emulator

RESTORE = Holder.of_run("restore", deployment="test", dag_id="gce_vm_backup_restore__web", run_id="manual__1")
QUICK = {"lease_wait": 0.3, "lease_poll": 0.05}


def hook() -> Any:
    from gce_vm_backup.compute.hook import ComputeBackupHook

    return ComputeBackupHook()


def vm_args(name: str = "web-1") -> dict[str, str]:
    return {"project_id": PROJECT, "zone": ZONE_A, "name": name}


def labels(emulator: Any, name: str = "web-1") -> dict[str, str]:
    return dict(emulator.instance(PROJECT, ZONE_A, name)["labels"])


def our_labels(emulator: Any, name: str = "web-1") -> dict[str, str]:
    return {k: v for k, v in labels(emulator, name).items() if k not in (LEASE_KEY, HOLDER_KEY)}


def this_run(ti: RunTI, deployment: str = "test") -> Holder:
    return Holder.of_run("backup", deployment=deployment, dag_id=ti.dag_id, run_id=ti.run_id)


def changes(emulator: Any, name: str = "web-1") -> list[str]:
    """The stop, start and snapshot calls on the VM or its disks, in order."""
    wanted = {"compute.instances.stop", "compute.instances.start", "compute.snapshots.insert"}
    return [c.method.rsplit(".", 1)[-1] for c in emulator.calls if c.method in wanted]


def ensure(record: dict[str, Any], **kwargs: Any) -> EnsureRunningOperator:
    return EnsureRunningOperator(
        task_id=ENSURE,
        instance_record=record,
        downtime_task=DOWNTIME,
        timeout=30,
        deployment="test",
        **kwargs,
    )


# ---- a restore holds the VM ------------------------------------------------------------------------------
def test_a_restore_holding_the_lease_makes_the_backup_wait_then_fail_naming_it_and_leaves_the_vm(
    fast_emulator,
):
    record = precheck()  # the backup's precheck saw web-1 RUNNING ...
    acquire(hook(), vm_args(), RESTORE, duration=3600, wait=0)  # ... then a replace-disks restore took it
    fast_emulator.set_instance_status(PROJECT, ZONE_A, "web-1", "TERMINATED")  # and stopped it
    held = labels(fast_emulator)
    ti = RunTI()
    with pytest.raises(LeaseHeldError, match=r"held by the restore gce_vm_backup_restore__web \(lease until"):
        downtime(record, **QUICK).execute(context_of(ti))
    assert ti.pushed[ERROR_XCOM_KEY]["cause"].startswith(
        f"lease failed: VM {VM}/web-1 is held by the restore"
    )
    assert changes(fast_emulator) == []  # neither stopped, snapshotted nor started
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "TERMINATED"
    assert labels(fast_emulator) == held  # the restore's lease untouched
    # ... and the backup's teardown leaves it as the restore left it, too.
    result = ensure(record).execute(context_of(RunTI(task_id=ENSURE, xcoms=ti.xcoms)))
    assert (result["started"], result["status"]) == (False, "TERMINATED")
    assert changes(fast_emulator) == []


def test_ensure_running_does_not_start_a_vm_this_run_stopped_once_another_operation_holds_it(fast_emulator):
    record = precheck()
    fast_emulator.set_instance_status(PROJECT, ZONE_A, "web-1", "TERMINATED")
    acquire(hook(), vm_args(), RESTORE, duration=3600, wait=0)  # took over after this run's lease ran out
    ti = RunTI(task_id=ENSURE, xcoms={(DOWNTIME, 0, DOWN_XCOM_KEY): {"down": True}})
    with pytest.raises(LeaseHeldError, match="not starting it while that operation runs"):
        ensure(record).execute(context_of(ti))
    assert fast_emulator.calls_for("compute.instances.start") == []


# ---- two backups of one VM -----------------------------------------------------------------------------
def test_two_backups_of_one_vm_from_two_deployments_never_both_stop_it(fast_emulator):
    record = precheck()
    first = RunTI(task_id="tier_1.stop_snapshot")  # an outer tier: it leaves the VM down, leased
    downtime(record, cls=StopSnapshotOperator).execute(context_of(first))
    second = RunTI()
    with pytest.raises(LeaseHeldError, match="held by the backup gce_vm_backup__test"):
        downtime(record, deployment="other", **QUICK).execute(context_of(second))
    assert changes(fast_emulator) == ["stop", "insert", "insert"]  # the other backup changed nothing
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "TERMINATED"
    # The first run's start brings it back and gives the lease back; the other's retry then backs it up.
    start = EnsureRunningOperator(
        task_id="tier_1.start",
        instance_record=record,
        downtime_task=first.task_id,
        timeout=30,
        deployment="test",
    )
    outcome = {(first.task_id, 0, "return_value"): {"stopped": True, "started": None}}
    assert start.execute(context_of(RunTI(task_id="tier_1.start", xcoms=outcome)))["started"] is True
    assert lease_of(labels(fast_emulator)) is None
    second.try_number = 2
    result = downtime(record, deployment="other", **QUICK).execute(context_of(second))
    assert (result["stopped"], result["started"]) == (True, True)
    assert [c for c in changes(fast_emulator) if c != "insert"] == ["stop", "start", "stop", "start"]


def test_two_backups_of_one_vm_from_two_groups_at_once_take_turns(fast_emulator):
    record = precheck()
    errors: list[BaseException] = []

    def backup(dag_id: str) -> None:  # two groups: two DAGs
        try:
            downtime(record, lease_wait=60, lease_poll=0.02).execute(context_of(RunTI(dag_id=dag_id)))
        except BaseException as exc:  # pragma: no cover - shown by the assertion below
            errors.append(exc)

    threads = [
        threading.Thread(target=backup, args=(d,)) for d in ("gce_vm_backup__web", "gce_vm_backup__db")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    # Never two stops without a start between: the second stop waited for the first VM's return.
    assert [c for c in changes(fast_emulator) if c != "insert"] == ["stop", "start", "stop", "start"]
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"
    assert lease_of(labels(fast_emulator)) is None


# ---- a backup starts only a VM that this run stopped -----------------------------------------------------
def test_a_first_try_that_finds_the_vm_terminated_after_a_running_precheck_neither_snapshots_nor_starts_it(
    fast_emulator,
):
    record = precheck()
    fast_emulator.set_instance_status(PROJECT, ZONE_A, "web-1", "TERMINATED")  # an admin stopped it
    before = labels(fast_emulator)
    ti = RunTI()
    with pytest.raises(VmStateError, match="this run did not stop it \\(this is the run's first try\\)"):
        downtime(record).execute(context_of(ti))
    assert changes(fast_emulator) == []
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "TERMINATED"
    assert labels(fast_emulator) == before  # the lease was given back
    cause = ti.pushed[ERROR_XCOM_KEY]["cause"]
    assert cause.startswith(f"backup failed: VM {VM}/web-1 is TERMINATED, but the precheck saw it RUNNING")
    assert "NOT backed up by this run" in cause
    assert ti.pushed[DOWN_XCOM_KEY]["down"] is False
    # Its teardown leaves it stopped too.
    result = ensure(record).execute(context_of(RunTI(task_id=ENSURE, xcoms=ti.xcoms)))
    assert (result["started"], result["status"]) == (False, "TERMINATED")
    assert changes(fast_emulator) == []


def test_a_retry_whose_earlier_tries_never_took_the_lease_leaves_a_stopped_vm_as_it_is(fast_emulator):
    record = precheck()
    fast_emulator.set_instance_status(PROJECT, ZONE_A, "web-1", "TERMINATED")
    ti = RunTI(try_number=2)  # try 1 failed before its lease (say, a 503 on its first read)
    with pytest.raises(VmStateError, match="no earlier try of this run took its lease"):
        downtime(record).execute(context_of(ti))
    assert changes(fast_emulator) == []


def test_a_retry_goes_on_with_a_vm_its_earlier_try_stopped_under_the_lease(fast_emulator):
    record = precheck()
    ti = RunTI(try_number=2)
    acquire(hook(), vm_args(), this_run(ti), duration=-10, wait=0)  # try 1's lease, run out since
    fast_emulator.set_instance_status(PROJECT, ZONE_A, "web-1", "TERMINATED")  # try 1's stop; then killed
    result = downtime(record).execute(context_of(ti))
    assert (result["stopped"], result["started"]) == (True, True)
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"
    assert lease_of(labels(fast_emulator)) is None


# ---- the lease is given back -----------------------------------------------------------------------------
def test_the_lease_is_taken_before_the_stop_and_given_back_after_the_vm_runs_again(fast_emulator):
    record = precheck()
    before = labels(fast_emulator)
    downtime(record).execute(context_of(RunTI()))
    assert labels(fast_emulator) == before  # every other label exactly as it was
    methods = [c.method.rsplit(".", 1)[-1] for c in fast_emulator.calls]
    assert methods.count("setLabels") == 2
    first_write = methods.index("setLabels")
    last_write = len(methods) - 1 - methods[::-1].index("setLabels")
    # Out of the measured downtime: taken before the stop request, given back after the last RUNNING read.
    assert first_write < methods.index("stop")
    assert last_write > len(methods) - 1 - methods[::-1].index("start")


def test_the_lease_is_given_back_when_a_failed_capture_has_brought_the_vm_back(fast_emulator):
    record = precheck()
    fast_emulator.faults.fail_operation("compute.snapshots.insert", "QUOTA_EXCEEDED", "Quota", times=10)
    with pytest.raises(OperationFailedError):
        downtime(record).execute(context_of(RunTI()))
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"
    assert lease_of(labels(fast_emulator)) is None


def test_a_vm_left_down_keeps_the_lease_until_ensure_running_brings_it_back(fast_emulator):
    record = precheck()
    fast_emulator.faults.fail_operation("compute.instances.start", "INTERNAL_ERROR", "boom", times=10)
    ti = RunTI()
    with pytest.raises(OperationFailedError):
        downtime(record).execute(context_of(ti))
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "TERMINATED"
    assert lease_of(labels(fast_emulator)).held_by(this_run(ti))  # no other operation may act on it now
    fast_emulator.faults.clear()
    result = ensure(record).execute(context_of(RunTI(task_id=ENSURE, xcoms=ti.xcoms)))
    assert (result["started"], result["status"]) == (True, "RUNNING")
    assert lease_of(labels(fast_emulator)) is None


def test_the_outer_tiers_start_gives_the_lease_back(fast_emulator):
    record = precheck()
    ti = RunTI(task_id="tier_1.stop_snapshot")
    result = downtime(record, cls=StopSnapshotOperator).execute(context_of(ti))
    assert lease_of(labels(fast_emulator)).held_by(this_run(ti))  # down, and held, until `start`
    start = EnsureRunningOperator(
        task_id="tier_1.start",
        instance_record=record,
        downtime_task=ti.task_id,
        timeout=30,
        deployment="test",
    )
    start_ti = RunTI(task_id="tier_1.start", xcoms={(ti.task_id, 0, "return_value"): result})
    assert start.execute(context_of(start_ti))["started"] is True
    assert lease_of(labels(fast_emulator)) is None


def test_a_vm_that_was_stopped_before_is_captured_under_the_lease_and_given_back(fast_emulator):
    record = precheck("batch-1")
    before = labels(fast_emulator, "batch-1")
    downtime(record).execute(context_of(RunTI()))
    assert labels(fast_emulator, "batch-1") == before
    assert len(fast_emulator.calls_for("compute.instances.setLabels")) == 2
    # ... and one that a restore holds is not captured at all.
    acquire(hook(), vm_args("batch-1"), RESTORE, duration=3600, wait=0)
    fast_emulator.clear_calls()
    with pytest.raises(LeaseHeldError):
        downtime(record, **QUICK).execute(context_of(RunTI(try_number=2)))
    assert fast_emulator.calls_for("compute.snapshots.insert") == []


def test_a_try_that_gives_its_slot_back_gives_the_lease_back_too(fast_emulator):
    from airflow.exceptions import AirflowRescheduleException

    record = precheck()
    ti = cap_ti({0: "running", 1: "up_for_retry", 2: None}, {1: True})
    with pytest.raises(AirflowRescheduleException):
        downtime(record, max_concurrent_vms=1, cap_poll=5).execute(context_of(ti))
    assert fast_emulator.calls_for("compute.instances.stop") == []
    assert lease_of(labels(fast_emulator)) is None
    assert our_labels(fast_emulator) == labels(fast_emulator)


def test_a_second_deployment_with_the_same_dag_and_run_id_really_stops_and_starts_the_vm(fast_emulator):
    """Staging and prod back up one VM with a group of the same name: the same DAG id and run id. Their
    request ids must differ, or Compute Engine takes the second stop for a repeat of the first."""
    record = precheck()
    first = downtime(record).execute(context_of(RunTI()))
    assert (first["stopped"], first["started"]) == (True, True)

    second = downtime(record, deployment="other", **QUICK).execute(context_of(RunTI()))

    assert (second["stopped"], second["started"]) == (True, True)
    assert [c for c in changes(fast_emulator) if c != "insert"] == ["stop", "start", "stop", "start"]
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"
