"""The downtime at the operator level: one task per VM's downtime, against the emulator (600x).

The downtime task stops, captures and starts with no poke between; whatever fails after its stop request
it starts the VM again; a retry never makes a second snapshot of a disk; a VM that was stopped before is
never started; and before it stops a VM a try counts the VMs of its tier down at once (markers first,
then task states) and gives its slot back when the cap is reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from gce_vm_backup.backup.stages import (
    DOWN_XCOM_KEY,
    ENSURE_RUNNING,
    STOP_SNAPSHOT,
    STOP_SNAPSHOT_START,
    tier_task,
)
from gce_vm_backup.errors import ConfigError, OperationFailedError, OperationTimeoutError, VmStateError
from gce_vm_backup.operators import (
    EnsureRunningOperator,
    PrecheckInstanceOperator,
    ResolveTargetsOperator,
    StopSnapshotOperator,
    StopSnapshotStartOperator,
)
from gce_vm_backup.runtime.base import ERROR_XCOM_KEY

from .conftest import PROJECT, RUN_TIME, ZONE_A, ZONE_B

pytestmark = pytest.mark.emulator

VM = f"projects/{PROJECT}/zones/{ZONE_A}/instances"
DOWNTIME = tier_task(1, STOP_SNAPSHOT_START)
ENSURE = tier_task(1, ENSURE_RUNNING)


NOTSET = object()


@dataclass
class RunTI:
    """A task instance of one DAG run: its own XComs, and the run's XComs and states (as the Task SDK's
    RuntimeTaskInstance serves them: get_task_states keys are ``<task_id>_<map_index>``)."""

    task_id: str = DOWNTIME
    map_index: int = 0
    try_number: int = 1
    dag_id: str = "gce_vm_backup__test"
    run_id: str = "scheduled__2026-11-24T03:00:00+00:00"
    xcoms: dict[tuple[str, int, str], Any] = field(default_factory=dict)
    states: dict[tuple[str, int], str | None] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)  # "xcom" / "states", in order
    first_reschedule: datetime | None = None

    @property
    def pushed(self) -> dict[str, Any]:
        return {k: v for (t, m, k), v in self.xcoms.items() if (t, m) == (self.task_id, self.map_index)}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[(self.task_id, self.map_index, key)] = value

    def xcom_pull(self, task_ids: str, key: str = "return_value", map_indexes: Any = NOTSET) -> Any:
        self.reads.append("xcom")
        if map_indexes is NOTSET:  # every map index in one request, as the Task SDK does
            values = [v for (t, m, k), v in sorted(self.xcoms.items()) if (t, k) == (task_ids, key)]
            return values[0] if len(values) == 1 else values  # one value comes unwrapped there too
        if isinstance(map_indexes, list):
            return [self.xcoms.get((task_ids, index, key)) for index in map_indexes]
        return self.xcoms.get((task_ids, map_indexes, key))

    def get_task_states(self, *, dag_id: str, task_ids: list[str], run_ids: list[str]) -> dict[str, Any]:
        self.reads.append("states")
        return {
            self.run_id: {f"{t}_{m}": s for (t, m), s in self.states.items() if t in task_ids},
        }

    def get_first_reschedule_date(self, context: Any) -> datetime | None:
        return self.first_reschedule


def context_of(ti: RunTI) -> dict[str, Any]:
    @dataclass
    class DagRun:
        run_after: datetime = RUN_TIME

    return {"ti": ti, "dag_run": DagRun(), "run_id": ti.run_id, "logical_date": RUN_TIME}


def precheck(instance: str = "web-1") -> dict[str, Any]:
    operator = PrecheckInstanceOperator(
        task_id="precheck", project_id=PROJECT, zone=ZONE_A, instance=instance
    )
    return operator.execute(context_of(RunTI(task_id="tier_1.precheck")))


def downtime(record: dict[str, Any], cls: type = StopSnapshotStartOperator, **kwargs: Any) -> Any:
    args: dict[str, Any] = {
        "task_id": DOWNTIME if cls is StopSnapshotStartOperator else "tier_1.stop_snapshot",
        "instance_record": record,
        "deployment": "test",
        "group": "web",
        "stop_timeout": 30,
        "snapshot_timeout": 30,
        "start_timeout": 30,
        **kwargs,
    }
    return cls(**args)


def operations(emulator: Any, kind: str, target_end: str) -> list[Any]:
    with emulator.world.lock:
        return [
            op
            for op in emulator.world.operations.values()
            if op.operation_type == kind and op.target.endswith(target_end)
        ]


# ---- the downtime in one task --------------------------------------------------------------------------
def test_one_task_stops_captures_every_disk_and_starts_and_returns_the_contract(fast_emulator):
    ti = RunTI()
    result = downtime(precheck()).execute(context_of(ti))

    assert set(result) == {
        "vm",
        "prior_status",
        "stopped",
        "stop_requested_at",
        "captured_at",
        "started",
        "running_at",
        "mode",
        "snapshots",
    }
    assert (result["vm"], result["prior_status"], result["mode"]) == (f"{VM}/web-1", "RUNNING", "standard")
    assert (result["stopped"], result["started"]) == (True, True)
    assert result["stop_requested_at"] <= result["captured_at"] <= result["running_at"]
    assert [(s["disk"], s["status"]) for s in result["snapshots"]] == [
        ("web-1", "READY"),
        ("web-1-data", "READY"),
    ]
    assert set(result["snapshots"][0]) == {"vm", "disk", "disk_source", "snapshot", "status", "storage_bytes"}
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"
    assert ti.pushed[DOWN_XCOM_KEY]["down"] is False  # back up: the cap no longer counts it
    # The two snapshots were taken together: both inserts were sent before the capture waited on any.
    stop, start = operations(fast_emulator, "stop", "/web-1"), operations(fast_emulator, "start", "/web-1")
    inserts = operations(fast_emulator, "insert", "")
    assert (len(stop), len(start), len(inserts)) == (1, 1, 2)
    methods = [c.method for c in fast_emulator.calls]
    last_insert = len(methods) - 1 - methods[::-1].index("compute.snapshots.insert")
    assert "compute.globalOperations.wait" not in methods[:last_insert]
    assert "compute.globalOperations.wait" in methods[last_insert:]  # long-polled, not poked
    assert stop[0].end_time <= min(op.insert_time for op in inserts)
    assert max(op.end_time for op in inserts) <= start[0].insert_time


def test_the_marker_says_down_before_the_stop_request_is_sent(fast_emulator):
    ti = RunTI()
    seen: list[Any] = []
    fast_emulator.faults.on_call(
        "compute.instances.stop", lambda: seen.append(dict(ti.pushed.get(DOWN_XCOM_KEY) or {}))
    )
    downtime(precheck()).execute(context_of(ti))
    assert seen
    assert seen[0] == {"vm": f"{VM}/web-1", "map_index": 0, "down": True, "at": seen[0]["at"]}


def test_a_vm_that_was_stopped_before_is_captured_and_never_stopped_nor_started(fast_emulator):
    ti = RunTI()
    record = precheck("batch-1")
    result = downtime(record).execute(context_of(ti))
    assert (result["stopped"], result["started"], result["stop_requested_at"]) == (False, False, None)
    assert [s["status"] for s in result["snapshots"]] == ["READY"]
    assert DOWN_XCOM_KEY not in ti.pushed
    # ... and its teardown leaves it stopped too, whatever the downtime task's XComs say
    ensure = EnsureRunningOperator(task_id=ENSURE, instance_record=record, downtime_task=DOWNTIME)
    ensure_ti = RunTI(task_id=ENSURE, xcoms={(DOWNTIME, 0, DOWN_XCOM_KEY): {"down": True}})
    assert ensure.execute(context_of(ensure_ti))["started"] is False
    assert fast_emulator.instance(PROJECT, ZONE_A, "batch-1")["status"] == "TERMINATED"
    methods = {c.method for c in fast_emulator.calls if c.resource.endswith("/batch-1")}
    assert not methods & {"compute.instances.stop", "compute.instances.start"}


def test_ensure_running_never_starts_a_vm_this_run_did_not_stop(fast_emulator):
    record = precheck()  # RUNNING before the backup ...
    fast_emulator.set_instance_status(PROJECT, ZONE_A, "web-1", "TERMINATED")  # ... stopped by someone else
    ensure = EnsureRunningOperator(task_id=ENSURE, instance_record=record, downtime_task=DOWNTIME)
    result = ensure.execute(
        context_of(RunTI(task_id=ENSURE))
    )  # no marker, no result: this run never stopped it
    assert (result["started"], result["status"]) == (False, "TERMINATED")
    assert fast_emulator.calls_for("compute.instances.start") == []


def test_ensure_running_starts_a_vm_the_downtime_task_left_down(fast_emulator):
    record = precheck()
    fast_emulator.set_instance_status(PROJECT, ZONE_A, "web-1", "TERMINATED")
    ensure = EnsureRunningOperator(task_id=ENSURE, instance_record=record, downtime_task=DOWNTIME, timeout=30)
    ti = RunTI(task_id=ENSURE, xcoms={(DOWNTIME, 0, DOWN_XCOM_KEY): {"vm": f"{VM}/web-1", "down": True}})
    result = ensure.execute(context_of(ti))
    assert (result["started"], result["status"]) == (True, "RUNNING")
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"


def test_ensure_running_takes_the_downtime_tasks_running_read_after_a_successful_try(fast_emulator):
    record = precheck()
    ti = RunTI()
    ti.xcoms[(DOWNTIME, 0, "return_value")] = downtime(record).execute(context_of(ti))
    before = len(fast_emulator.calls)
    ensure = EnsureRunningOperator(task_id=ENSURE, instance_record=record, downtime_task=DOWNTIME)
    result = ensure.execute(context_of(RunTI(task_id=ENSURE, xcoms=ti.xcoms)))
    assert (result["status"], result["started"], result["running_at"]) == ("RUNNING", False, None)
    assert fast_emulator.calls[before:] == []  # not a single Compute Engine call
    assert ensure._hook is None  # nor a Google client loaded


@pytest.mark.parametrize(
    ("marker", "outcome"),
    [
        ({"down": True}, {"started": True, "running_at": "2026-12-01T03:00:00+00:00"}),  # marker: still down
        ({"down": False}, {"started": True, "running_at": None}),  # no RUNNING read
        ({"down": False}, None),  # the try failed (or was killed) after its restart: no result
        (None, {"started": True, "running_at": "2026-12-01T03:00:00+00:00"}),  # no marker
    ],
)
def test_ensure_running_reads_the_vm_unless_the_downtime_try_confirmed_it_running(
    fast_emulator, marker, outcome
):
    record = precheck()
    fast_emulator.set_instance_status(PROJECT, ZONE_A, "web-1", "TERMINATED")
    xcoms = {(DOWNTIME, 0, DOWN_XCOM_KEY): marker, (DOWNTIME, 0, "return_value"): outcome}
    ensure = EnsureRunningOperator(task_id=ENSURE, instance_record=record, downtime_task=DOWNTIME, timeout=30)
    result = ensure.execute(context_of(RunTI(task_id=ENSURE, xcoms=xcoms)))
    assert fast_emulator.calls_for("compute.instances.get")
    stopped_here = bool((marker or {}).get("down"))
    assert (result["started"], result["status"]) == (
        (True, "RUNNING") if stopped_here else (False, "TERMINATED")
    )


# ---- failures after the stop request: the VM is started again ---------------------------------------------
def test_a_failed_capture_starts_the_vm_again_and_its_retry_makes_no_second_snapshot(fast_emulator):
    record = precheck()
    # The second disk's insert fails (quota) on the first try only.
    fast_emulator.faults.on_call(
        "compute.snapshots.insert",
        lambda: fast_emulator.faults.fail_operation(
            "compute.snapshots.insert", "QUOTA_EXCEEDED", "Quota", times=1
        ),
        after=1,
    )
    first = RunTI()
    with pytest.raises(OperationFailedError, match="QUOTA_EXCEEDED"):
        downtime(record).execute(context_of(first))
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"  # started again
    assert first.pushed[DOWN_XCOM_KEY]["down"] is False
    assert first.pushed[ERROR_XCOM_KEY]["cause"].startswith(
        "snapshot of disk web-1-data failed: QUOTA_EXCEEDED"
    )
    # The first disk's snapshot was settled (READY) before the VM ran again, and the retry adopts it.
    retry = RunTI(try_number=2)
    result = downtime(record).execute(context_of(retry))
    assert [s["status"] for s in result["snapshots"]] == ["READY", "READY"]
    names = {s["name"] for s in fast_emulator.snapshots(PROJECT)}
    assert {s["snapshot"] for s in result["snapshots"]} <= names
    boot_inserts = [c for c in fast_emulator.calls_for("compute.snapshots.insert") if c.status == 200]
    assert len({c.request_id for c in boot_inserts}) == 3  # boot once, data twice (the failed one, the retry)
    assert len([s for s in fast_emulator.snapshots(PROJECT) if s["sourceDisk"].endswith("/disks/web-1")]) == 1


def test_a_lost_insert_response_is_adopted_by_the_retry(fast_emulator):
    record = precheck()
    fast_emulator.faults.http_error_after_apply("compute.snapshots.insert", 503, times=5)
    with pytest.raises(Exception, match="Injected HTTP 503 after the call took effect"):
        downtime(record).execute(context_of(RunTI()))
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"
    result = downtime(record).execute(context_of(RunTI(try_number=2)))
    assert [s["status"] for s in result["snapshots"]] == ["READY", "READY"]
    per_disk: dict[str, int] = {}
    for snapshot in fast_emulator.snapshots(PROJECT):
        per_disk[snapshot["sourceDisk"]] = per_disk.get(snapshot["sourceDisk"], 0) + 1
    assert sorted(per_disk.values()) == [1, 1]


def test_a_stop_that_times_out_names_the_vm_and_tries_to_start_it(fast_emulator):
    record = precheck()
    fast_emulator.faults.hang_operation("compute.instances.stop", times=10)
    ti = RunTI()
    with pytest.raises(
        OperationTimeoutError, match=rf"The stop of VM {VM}/web-1 did not finish within 0 seconds"
    ):
        downtime(record, stop_timeout=0, start_timeout=0).execute(context_of(ti))
    assert ti.pushed[ERROR_XCOM_KEY]["cause"].startswith(f"stop failed: The stop of VM {VM}/web-1")
    # The hung stop keeps it STOPPING: no start is possible, so the marker still says down.
    assert ti.pushed[DOWN_XCOM_KEY]["down"] is True


def test_a_failed_start_is_sent_again_as_a_new_request_and_then_the_task_succeeds(fast_emulator):
    record = precheck()
    fast_emulator.faults.fail_operation("compute.instances.start", "INTERNAL_ERROR", "boom", times=1)
    ti = RunTI()
    result = downtime(record).execute(context_of(ti))  # stopped and captured: only the start failed
    assert (result["started"], ti.pushed[DOWN_XCOM_KEY]["down"]) == (True, False)
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"
    starts = fast_emulator.calls_for("compute.instances.start")
    assert len({c.request_id for c in starts}) == 2  # the replay of the failed request would fail again
    assert len(fast_emulator.calls_for("compute.instances.stop")) == 1  # no retry, so no second stop


def test_a_start_that_cannot_succeed_fails_the_task_and_leaves_the_marker_down(fast_emulator):
    record = precheck()
    fast_emulator.faults.fail_operation("compute.instances.start", "INTERNAL_ERROR", "boom", times=10)
    ti = RunTI()
    with pytest.raises(OperationFailedError, match="The start operation"):
        downtime(record).execute(context_of(ti))
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "TERMINATED"
    assert ti.pushed[DOWN_XCOM_KEY]["down"] is True  # still counted against the cap; ensure_running next


def test_a_vm_suspended_after_the_precheck_is_neither_stopped_nor_resumed(fast_emulator):
    record = precheck()
    fast_emulator.set_instance_status(PROJECT, ZONE_A, "web-1", "SUSPENDED")
    ti = RunTI()
    with pytest.raises(VmStateError, match="became SUSPENDED during the backup; refusing to stop it"):
        downtime(record).execute(context_of(ti))
    assert DOWN_XCOM_KEY not in ti.pushed
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "SUSPENDED"


def test_the_outer_tiers_task_leaves_the_vm_stopped_for_its_start_task(fast_emulator):
    record = precheck()
    ti = RunTI(task_id="tier_1.stop_snapshot")
    result = downtime(record, cls=StopSnapshotOperator).execute(context_of(ti))
    assert "started" not in result
    assert result["stopped"] is True
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "TERMINATED"
    start = EnsureRunningOperator(
        task_id="tier_1.start", instance_record=record, downtime_task="tier_1.stop_snapshot", timeout=30
    )
    start_ti = RunTI(task_id="tier_1.start", xcoms={("tier_1.stop_snapshot", 0, "return_value"): result})
    assert start.execute(context_of(start_ti))["started"] is True
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"


# ---- the cap: VMs down at once ------------------------------------------------------------------------
def cap_ti(
    states: dict[int, str | None], markers: dict[int, bool], *, me: int = 0, back: tuple[int, ...] = ()
):
    ti = RunTI(map_index=me)
    ti.states = {(DOWNTIME, index): state for index, state in states.items()}
    for index, down in markers.items():
        ti.xcoms[(DOWNTIME, index, DOWN_XCOM_KEY)] = {"map_index": index, "down": down}
    for index in back:
        ti.xcoms[(ENSURE, index, "return_value")] = {"started": True}
    return ti


def on_state_read(ti: RunTI, number: int, change: Any) -> dict[str, int]:
    """Make ``change()`` happen to the run just before ``ti``'s ``number``-th read of the task states (the
    moment another try moves). Returns the count of reads so far (``["n"]``)."""
    reads = {"n": 0}
    real_states = ti.get_task_states

    def read(**kwargs: Any) -> Any:
        reads["n"] += 1
        if reads["n"] == number:
            change()
        return real_states(**kwargs)

    ti.get_task_states = read  # type: ignore[method-assign]
    return reads


def test_the_count_is_running_tries_plus_vms_left_down_by_tries_that_are_not_running():
    from gce_vm_backup.backup.cap import count_down, tier_indexes

    # 0 is me; 1 runs; 2 was killed mid-downtime (marker down, up for retry); 3 failed but its
    # ensure_running brought it back; 4 is back up (marker false); 5 has not started.
    ti = cap_ti(
        {0: "running", 1: "running", 2: "up_for_retry", 3: "failed", 4: "success", 5: None},
        {1: True, 2: True, 3: True, 4: False},
        back=(3,),
    )
    found = count_down(ti, task_id=DOWNTIME, indexes=tier_indexes(ti, DOWNTIME))
    count, detail = found.total, found.detail
    assert count == 3, detail  # me, 1 and 2
    # every marker in one read, before the states the count trusts; then ensure_running's results of
    # the VMs that look left down (2 and 3)
    assert ti.reads == ["states", "xcom", "states", "xcom"]


def test_a_tier_no_bigger_than_the_cap_is_not_counted(fast_emulator):
    record = precheck()
    ti = cap_ti({0: "running", 1: "up_for_retry"}, {1: True})
    result = downtime(record, max_concurrent_vms=2).execute(context_of(ti))
    assert (result["stopped"], result["started"]) == (True, True)  # no wait for room
    assert ti.reads == ["states"]


def test_reading_states_before_markers_would_miss_a_retry_that_started_in_between():
    """The race the order prevents: VM 1 is down (killed try, marker down, up_for_retry); its retry starts
    (clearing the marker) between two reads. Markers first: the marker is seen, or the retry is running."""
    from gce_vm_backup.backup.cap import count_down, tier_indexes

    ti = cap_ti({0: "running", 1: "up_for_retry", 2: None}, {1: True})

    def the_retry_starts() -> None:
        ti.xcoms.pop((DOWNTIME, 1, DOWN_XCOM_KEY))
        ti.states[(DOWNTIME, 1)] = "running"

    on_state_read(ti, 2, the_retry_starts)  # between the marker read and the state read
    assert count_down(ti, task_id=DOWNTIME, indexes=tier_indexes(ti, DOWNTIME)).total == 2  # VM 1 either way


def test_over_the_cap_a_try_gives_its_slot_back_before_stopping_anything(fast_emulator):
    from airflow.exceptions import AirflowRescheduleException

    record = precheck()
    ti = cap_ti({0: "running", 1: "up_for_retry", 2: None}, {1: True})
    operator = downtime(record, max_concurrent_vms=1, cap_poll=5)
    with pytest.raises(AirflowRescheduleException):
        operator.execute(context_of(ti))
    assert fast_emulator.calls_for("compute.instances.stop") == []
    # VM 1 is left down by a try that is not running: its retry needs a slot, so this one gives its slot
    # back at once instead of waiting on it; its marker says it is not down
    assert ti.pushed[DOWN_XCOM_KEY]["down"] is False
    assert ti.pushed[DOWN_XCOM_KEY]["waiting"] is True
    assert ERROR_XCOM_KEY not in ti.pushed  # control flow, not a failure
    # Past its wait budget the try fails (retryably), still without stopping anything.
    ti.first_reschedule = datetime(2000, 1, 1, tzinfo=UTC)
    with pytest.raises(
        OperationTimeoutError, match=r"waited \d+ seconds for room under max_concurrent_vms=1"
    ):
        downtime(record, max_concurrent_vms=1, cap_wait=60).execute(context_of(ti))
    assert fast_emulator.calls_for("compute.instances.stop") == []


def test_a_vm_already_down_from_an_earlier_try_goes_on_without_waiting_for_room(fast_emulator):
    from gce_vm_backup.compute.hook import ComputeBackupHook
    from gce_vm_backup.runtime.lease import Holder, acquire

    record = precheck()
    ti = cap_ti({0: "running", 1: "running", 2: None}, {1: True})
    ti.try_number = 2  # the earlier try took the VM's lease, stopped it and was killed
    holder = Holder.of_run("backup", deployment="test", dag_id=ti.dag_id, run_id=ti.run_id)
    acquire(
        ComputeBackupHook(),
        {"project_id": PROJECT, "zone": ZONE_A, "name": "web-1"},
        holder,
        duration=60,
        wait=0,
    )
    fast_emulator.set_instance_status(PROJECT, ZONE_A, "web-1", "TERMINATED")  # the killed try's stop
    result = downtime(record, max_concurrent_vms=1).execute(context_of(ti))
    assert (result["stopped"], result["started"]) == (True, True)
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"


def test_a_running_try_that_says_it_is_not_down_is_not_counted_and_one_just_started_is():
    from gce_vm_backup.backup.cap import count_down

    # 1 waits for room (started ahead), 2 is back up and finishing, 3 has just started (no marker yet:
    # it may be the retry of a try that left its VM down), 4 has its VM down
    ti = cap_ti({0: "running", 1: "running", 2: "running", 3: "running", 4: "running"}, {2: False, 4: True})
    ti.xcoms[(DOWNTIME, 1, DOWN_XCOM_KEY)] = {"map_index": 1, "down": False, "waiting": True}
    found = count_down(ti, task_id=DOWNTIME, indexes=[0, 1, 2, 3, 4])
    assert found.total == 3, found.detail  # me, 3 and 4
    assert found.left_down == []


@pytest.fixture
def quick_room_poll(monkeypatch):
    import gce_vm_backup.backup.downtime as downtime_ops

    monkeypatch.setattr(downtime_ops, "ROOM_POLL", 0.02)


def test_a_try_started_ahead_waits_on_its_slot_and_stops_its_vm_once_another_is_back(
    fast_emulator, quick_room_poll
):
    """Cap 1, VM 1's try has its VM down: this try waits (no reschedule), then goes on as soon as VM 1's
    marker says it is back, and only then sends its stop."""
    record = precheck()
    ti = cap_ti({0: "running", 1: "running", 2: None}, {1: True})

    def vm_1_is_back_and_its_try_ends() -> None:
        ti.xcoms[(DOWNTIME, 1, DOWN_XCOM_KEY)] = {"map_index": 1, "down": False}
        ti.states[(DOWNTIME, 1)] = "success"

    counts = on_state_read(ti, 6, vm_1_is_back_and_its_try_ends)
    seen: list[Any] = []
    fast_emulator.faults.on_call(
        "compute.instances.stop", lambda: seen.append(dict(ti.xcoms[(DOWNTIME, 1, DOWN_XCOM_KEY)]))
    )
    result = downtime(record, max_concurrent_vms=1).execute(context_of(ti))
    assert (result["stopped"], result["started"]) == (True, True)
    assert seen == [{"map_index": 1, "down": False}]  # the stop came after VM 1 was back, not before
    # ... and at once: the look that saw VM 1's try end, then the count and the claim's count
    assert counts["n"] == 6 + 2


def test_a_vm_seen_left_down_in_one_count_only_does_not_make_the_try_give_its_slot_back(
    fast_emulator, quick_room_poll
):
    """The count read VM 1's marker just before VM 1 came back and its try ended: one count sees a VM
    'left down' by a try that is not running. That is not a killed try: no reschedule, the try waits."""
    record = precheck()
    ti = cap_ti({0: "running", 1: "success", 2: None}, {1: True})

    def the_marker_was_stale() -> None:
        ti.xcoms[(DOWNTIME, 1, DOWN_XCOM_KEY)] = {"map_index": 1, "down": False}

    on_state_read(ti, 2, the_marker_was_stale)  # during the first full count, after it read the markers
    result = downtime(record, max_concurrent_vms=1).execute(context_of(ti))  # no AirflowRescheduleException
    assert (result["stopped"], result["started"]) == (True, True)


def test_two_tries_claiming_the_last_room_at_once_do_not_both_stop(fast_emulator, quick_room_poll):
    """Cap 1, both tries see room and claim it: the one whose count reads the other's claim withdraws."""
    record = precheck()
    ti = cap_ti({0: "running", 1: "running", 2: None}, {})
    ti.xcoms[(DOWNTIME, 1, DOWN_XCOM_KEY)] = {"map_index": 1, "down": False, "waiting": True}
    real_push = ti.xcom_push

    def the_other_claims_at_the_same_moment(key: str, value: Any) -> None:
        real_push(key, value)
        if key == DOWN_XCOM_KEY and value["down"] is True:
            ti.xcoms[(DOWNTIME, 1, DOWN_XCOM_KEY)] = {"map_index": 1, "down": True}  # it keeps its claim

    ti.xcom_push = the_other_claims_at_the_same_moment  # type: ignore[method-assign]
    with pytest.raises(
        OperationTimeoutError, match=r"waited \d+ seconds for room under max_concurrent_vms=1"
    ):
        downtime(record, max_concurrent_vms=1, cap_wait=0.2).execute(context_of(ti))
    assert fast_emulator.calls_for("compute.instances.stop") == []
    assert ti.pushed[DOWN_XCOM_KEY] == {**ti.pushed[DOWN_XCOM_KEY], "down": False, "waiting": True}


def test_a_count_that_fails_is_never_taken_for_room(fast_emulator, quick_room_poll):
    record = precheck()
    ti = cap_ti({0: "running", 1: "running", 2: None}, {})

    def api_down(**kwargs: Any) -> Any:
        if ti.reads.count("states") >= 1:
            raise ConnectionError("execution API unavailable")
        ti.reads.append("states")
        return RunTI.get_task_states(ti, **kwargs)

    ti.get_task_states = api_down  # type: ignore[method-assign]
    with pytest.raises(OperationTimeoutError, match="could not count the VMs down at once: execution API"):
        downtime(record, max_concurrent_vms=1, cap_wait=0.2).execute(context_of(ti))
    assert fast_emulator.calls_for("compute.instances.stop") == []


@pytest.mark.parametrize(("try_number", "said_before_the_first_read"), [(1, True), (2, False)])
def test_a_first_try_says_it_is_not_down_before_its_first_read_and_a_retry_only_after(
    fast_emulator, try_number, said_before_the_first_read
):
    """A first try has stopped nothing: it says so at once, so a try started ahead is not counted as a VM
    down while it starts. A retry may find its VM down from the try before: it is counted until it has
    read the VM."""
    record = precheck()
    ti = cap_ti({0: "running", 1: None, 2: None}, {})
    ti.try_number = try_number
    seen: list[Any] = []
    fast_emulator.faults.on_call("compute.instances.get", lambda: seen.append(ti.pushed.get(DOWN_XCOM_KEY)))
    downtime(record, max_concurrent_vms=1).execute(context_of(ti))
    first = seen[0]
    assert (first is not None and first["down"] is False) is said_before_the_first_read


# ---- tiered groups -----------------------------------------------------------------------------------
def test_a_tiered_run_with_more_vms_than_the_cap_is_refused_before_anything_is_stopped(fast_emulator):
    tiers = [
        [{"project_id": PROJECT, "zone": ZONE_A, "instance": "web-1", "disks": None}],
        [{"project_id": PROJECT, "zones": None, "labels": {"app": "shop"}}],
    ]
    resolve = ResolveTargetsOperator(
        task_id="resolve_tier_1", deployment="test", group="shop", tiers=tiers, max_concurrent_vms=2
    )
    with pytest.raises(
        ConfigError, match="Group shop: this run has 3 VMs in 2 tiers, more than its max_concurrent_vms of 2"
    ):
        resolve.execute(context_of(RunTI(task_id="resolve_tier_1", map_index=-1)))
    assert not [c for c in fast_emulator.calls if c.method.endswith(("stop", "insert"))]


# ---- the cap across tiers: a tiered group keeps its outer tiers down while the inner ones run ----------
OUTER = tier_task(1, STOP_SNAPSHOT)
INNER = tier_task(2, STOP_SNAPSHOT_START)
CAP_TASKS = [OUTER, INNER]
TIERS = [
    [{"project_id": PROJECT, "zone": ZONE_A, "instance": "web-1", "disks": None}],
    [{"project_id": PROJECT, "zones": None, "labels": {"tier": "db"}}],
]


def run_ti(shared: RunTI, task_id: str, map_index: int = -1) -> RunTI:
    """Another task instance of ``shared``'s run: the same XComs and states."""
    return RunTI(task_id=task_id, map_index=map_index, xcoms=shared.xcoms, states=shared.states)


def prechecked(zone: str, instance: str) -> dict[str, Any]:
    operator = PrecheckInstanceOperator(task_id="precheck", project_id=PROJECT, zone=zone, instance=instance)
    return operator.execute(context_of(RunTI(task_id="tier_1.precheck")))


def batch_1_joins_tier_2(emulator: Any) -> None:
    """batch-1 (TERMINATED in the demo fleet) runs, and gets the label tier 2's selector matches."""
    emulator.set_instance_status(PROJECT, ZONE_A, "batch-1", "RUNNING")
    with emulator.world.lock:
        emulator.world.instances[f"{VM}/batch-1"]["labels"]["tier"] = "db"


def test_a_later_tier_that_matches_more_vms_at_run_time_is_refused_with_the_outer_tiers_down(fast_emulator):
    """Cap 2: at tier 1's check the run is web-1 (tier 1) and db-1 (tier 2). Then batch-1 joins tier 2:
    2 VMs alone fit the cap, but with web-1 kept down that is 3 at once. Tier 2's resolve refuses it."""
    run = RunTI(task_id="resolve_tier_1")
    resolve_1 = ResolveTargetsOperator(
        task_id="resolve_tier_1", deployment="test", group="shop", tiers=TIERS, tier=1, max_concurrent_vms=2
    )
    run.xcoms[("resolve_tier_1", -1, "return_value")] = resolve_1.execute(context_of(run))
    batch_1_joins_tier_2(fast_emulator)
    resolve_2 = ResolveTargetsOperator(
        task_id="resolve_tier_2", deployment="test", group="shop", tiers=TIERS, tier=2, max_concurrent_vms=2
    )
    with pytest.raises(
        ConfigError,
        match=r"Group shop: tier 2 has 2 VM\(s\) this run and tier 1 keep 1 VM\(s\) down until it is back: "
        r"3 VMs down at once, more than its max_concurrent_vms of 2",
    ):
        resolve_2.execute(context_of(run_ti(run, "resolve_tier_2")))
    # Tier 1's result unreadable: the tier counts as it resolves now (web-1), still refused.
    with pytest.raises(ConfigError, match="3 VMs down at once"):
        resolve_2.execute(context_of(RunTI(task_id="resolve_tier_2")))
    assert not [c for c in fast_emulator.calls if c.method.endswith(("stop", "insert"))]


def test_a_vm_in_an_outer_tier_and_again_in_a_later_one_is_counted_once(fast_emulator):
    """web-1 was tier 1's (returned by its resolve) and now matches tier 2's selector too: one VM, not two."""
    fast_emulator.set_instance_status(PROJECT, ZONE_A, "batch-1", "RUNNING")
    run = RunTI(task_id="resolve_tier_2")
    run.xcoms[("resolve_tier_1", -1, "return_value")] = [
        {"project_id": PROJECT, "zone": ZONE_A, "instance": "batch-1", "disks": None, "carried_by": {}}
    ]
    resolve_2 = ResolveTargetsOperator(
        task_id="resolve_tier_2", deployment="test", group="shop", tiers=TIERS, tier=2, max_concurrent_vms=2
    )
    with fast_emulator.world.lock:
        fast_emulator.world.instances[f"{VM}/batch-1"]["labels"]["tier"] = "db"
    found = resolve_2.execute(context_of(run))  # tier 2: db-1, batch-1; tier 1 keeps batch-1 down: 2 VMs
    assert sorted(vm["instance"] for vm in found) == ["batch-1", "db-1"]


def test_the_count_covers_the_vms_outer_tiers_keep_down_when_tier_2_runs_its_tries_at_once(fast_emulator):
    """Cap 2, tier 1's web-1 down (its try ended, its VM kept down for tier 2), tier 2 with two VMs that
    alone fit the cap, both tries running at once: at most one stops its VM, the other waits (on its slot, or
    rescheduled) and stops its own once the first is back. Never more than 2 VMs down, read from the emulator."""
    import threading

    from airflow.exceptions import AirflowRescheduleException

    from ..conftest import most_down_at_once

    fast_emulator.set_instance_status(PROJECT, ZONE_A, "batch-1", "RUNNING")
    web, db, batch = prechecked(ZONE_A, "web-1"), prechecked(ZONE_B, "db-1"), prechecked(ZONE_A, "batch-1")
    run = RunTI(task_id=OUTER)
    cap = {"max_concurrent_vms": 2, "cap_tasks": CAP_TASKS, "cap_poll": 1}
    run.states[(OUTER, 0)] = "running"
    downtime(web, StopSnapshotOperator, task_id=OUTER, **cap).execute(context_of(run_ti(run, OUTER, 0)))
    run.states[(OUTER, 0)] = "success"  # web-1 stays down until tier 2 is back
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "TERMINATED"

    # Both tier-2 tries pass their checks before either VM is back: a start waits for the second stop
    # request (or 1 s), so that two stops, if both were sent, overlap.
    stops, both_stopped = [], threading.Event()

    def a_stop() -> None:
        stops.append(1)
        if len(stops) >= 2:
            both_stopped.set()

    fast_emulator.faults.on_call("compute.instances.stop", a_stop, times=10)
    fast_emulator.faults.on_call("compute.instances.start", lambda: both_stopped.wait(1.0), times=10)
    outcome: dict[int, Any] = {}

    def tier_2_try(index: int, record: dict[str, Any]) -> None:
        try:
            outcome[index] = downtime(record, task_id=INNER, **cap).execute(
                context_of(run_ti(run, INNER, index))
            )
        except BaseException as exc:
            outcome[index] = exc
        finally:
            if not isinstance(outcome.get(index), AirflowRescheduleException):
                run.states[(INNER, index)] = "success"

    records = {0: db, 1: batch}
    for index in records:
        run.states[(INNER, index)] = "running"
    threads = [threading.Thread(target=tier_2_try, args=(index, r)) for index, r in records.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    waited = sorted(
        index for index, found in outcome.items() if isinstance(found, AirflowRescheduleException)
    )
    # A try waits on its slot, or gives it back (rescheduled), or both do (two claims at once: each
    # counts the other's and withdraws, cap.py); none fails.
    assert all(isinstance(outcome[i], dict) for i in set(records) - set(waited)), outcome
    for index in waited:  # rescheduled, one after the other: web-1 and its own VM, 2 down
        again = downtime(records[index], task_id=INNER, **cap).execute(context_of(run_ti(run, INNER, index)))
        assert (again["stopped"], again["started"]) == (True, True)
        run.states[(INNER, index)] = "success"

    count, down = most_down_at_once(fast_emulator)
    assert count == 2, down
    assert len(fast_emulator.calls_for("compute.instances.stop")) == 3
    assert fast_emulator.instance(PROJECT, ZONE_B, "db-1")["status"] == "RUNNING"
    assert fast_emulator.instance(PROJECT, ZONE_A, "batch-1")["status"] == "RUNNING"


def test_a_run_no_bigger_than_the_cap_over_every_tier_is_not_counted(fast_emulator):
    """The count is skipped only when the downtime tasks of every tier have no more instances than the
    cap: then no more than the cap of VMs can be down."""
    web = prechecked(ZONE_A, "web-1")
    run = RunTI(task_id=INNER)
    run.states = {(OUTER, 0): "success", (INNER, 0): "running"}
    result = downtime(web, task_id=INNER, max_concurrent_vms=2, cap_tasks=CAP_TASKS).execute(context_of(run))
    assert (result["stopped"], result["started"]) == (True, True)
    assert run.reads == ["states"]
