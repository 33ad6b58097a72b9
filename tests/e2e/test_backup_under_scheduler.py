"""Backups under a real scheduler, DAG processor, triggerer and API server, triggered through /api/v2.

The backup, cap and killed-task cases run on both environments (LocalExecutor on SQLite; CeleryExecutor
with two workers on Postgres and Redis); the killed Celery worker case on the Celery one only.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psutil
import pytest

from gce_emulator import Emulator
from gce_vm_backup.backup.stages import (
    ENSURE_RUNNING,
    PRECHECK,
    START,
    STOP_SNAPSHOT,
    STOP_SNAPSHOT_START,
    VERIFY,
    tier_task,
)
from vm_backup_cli.local_env import LocalAirflow

from .conftest import (
    HEARTBEAT_TIMEOUT,
    PROJECT,
    ZONE,
    run_timeout,
    trigger_and_wait,
    vm_snapshots,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BOTH_EXECUTORS = pytest.mark.executors("local", "celery")


def _vm_tasks(tier: int, innermost: bool) -> tuple[str, ...]:
    stages = (PRECHECK, STOP_SNAPSHOT_START) if innermost else (PRECHECK, STOP_SNAPSHOT, START)
    return tuple(tier_task(tier, stage) for stage in (*stages, ENSURE_RUNNING, VERIFY))


def _assert_vm_tasks_succeeded(result: Any, tier: int, map_indexes: range, innermost: bool = True) -> None:
    for index in map_indexes:
        for task in _vm_tasks(tier, innermost):
            assert result.ti(task, index)["state"] == "success", result.states()


def _map_index_of(result: Any, tier: int, instance: str) -> int:
    """The map index of ``instance`` in its tier (the resolve task decides the order, not the config)."""
    indexes = [
        t["map_index"]
        for t in result.task_instances
        if t["task_id"] == tier_task(tier, PRECHECK) and t["rendered_fields"].get("instance") == instance
    ]
    assert len(indexes) == 1, (instance, result.states())
    return int(indexes[0])


@BOTH_EXECUTORS
def test_full_backup_of_a_tiered_group_downtime_in_one_task_per_vm(
    airflow_env: LocalAirflow, e2e_emulator: Emulator
) -> None:
    dag_id = "gce_vm_backup__e2e-full"
    result = trigger_and_wait(airflow_env, dag_id, {"vms": [], "dry_run": False}, run_id="e2e-full-1")

    assert result.run["state"] == "success", result.states()
    _assert_vm_tasks_succeeded(result, 1, range(2), innermost=False)
    _assert_vm_tasks_succeeded(result, 2, range(1))
    # The downtime never waits for a poke: no downtime task gave its slot back (reschedule mode applies
    # to the slot-free waits only), each on its first try.
    web = _map_index_of(result, 1, "full-web")
    reschedules = airflow_env.reschedule_counts(dag_id, "e2e-full-1")
    for task_id, index in ((tier_task(1, STOP_SNAPSHOT), web), (tier_task(2, STOP_SNAPSHOT_START), 0)):
        assert reschedules.get((task_id, index), 0) == 0, reschedules
        assert result.ti(task_id, index)["try_number"] == 1
    # The emulator's final state: every VM as before, one READY snapshot per disk.
    assert e2e_emulator.instance(PROJECT, ZONE, "full-web")["status"] == "RUNNING"
    assert e2e_emulator.instance(PROJECT, ZONE, "full-db")["status"] == "RUNNING"
    assert e2e_emulator.instance(PROJECT, ZONE, "full-off")["status"] == "TERMINATED"
    expected_disks = {
        "full-web": {"full-web", "full-web-data"},
        "full-off": {"full-off"},
        "full-db": {"full-db"},
    }
    for instance, disks in expected_disks.items():
        snapshots = vm_snapshots(e2e_emulator, instance)
        assert set(snapshots) == disks
        assert all(len(s) == 1 and s[0]["status"] == "READY" for s in snapshots.values()), snapshots
    # The already stopped VM was neither stopped nor started.
    off_path = f"projects/{PROJECT}/zones/{ZONE}/instances/full-off"
    assert not [
        c for c in e2e_emulator.calls if c.resource == off_path and c.method.endswith(("stop", "start"))
    ]
    # The run report is the run_report task's XCom return_value.
    report = airflow_env.xcom(dag_id, "e2e-full-1", "run_report")
    assert report["status"] == "success"
    assert report["summary"]["vms"] == 3
    assert report["summary"]["vms_ok"] == 3
    assert report["summary"]["snapshots"] == 4
    assert report["summary"]["snapshots_ready"] == 4
    rows = {row["vm"].rsplit("/", 1)[-1]: row for row in report["vms"]}
    # full-web is in the outer tier: down until the inner tier is back, then its `start` brings it back
    assert (rows["full-web"]["stopped"], rows["full-web"]["brought_back_by"]) == (True, START)
    assert rows["full-web"]["downtime_seconds"] > 0
    assert (rows["full-off"]["prior_status"], rows["full-off"]["stopped"]) == ("TERMINATED", False)


def _down_at_once(emulator: Emulator, vms: set[str]) -> tuple[int, list[str]]:
    """The most VMs of ``vms`` down at once, and each VM's down intervals (simulated seconds).

    Down = from a stop operation's insert to the end of the next start operation of that VM, from the
    emulator's operations (overlapping intervals of one VM, e.g. a retry's, are merged).
    """
    with emulator.world.lock:
        operations = [
            op
            for op in emulator.world.operations.values()
            if op.operation_type in ("stop", "start") and op.target.rsplit("/", 1)[-1] in vms
        ]
    intervals: list[tuple[float, float, str]] = []
    for vm in sorted(vms):
        ops = sorted((op for op in operations if op.target.endswith(f"/{vm}")), key=lambda op: op.insert_time)
        starts = [op for op in ops if op.operation_type == "start"]
        for stop in (op for op in ops if op.operation_type == "stop"):
            start = next((op for op in starts if op.insert_time >= stop.insert_time), None)
            assert start is not None, f"{vm} was not started after {stop}"
            assert start.end_time is not None, f"{vm}'s start {start} never ended"
            if intervals and intervals[-1][2] == vm and stop.insert_time <= intervals[-1][1]:
                intervals[-1] = (intervals[-1][0], max(intervals[-1][1], start.end_time), vm)
            else:
                intervals.append((stop.insert_time, start.end_time, vm))
    events = sorted([(start, 1) for start, _, _ in intervals] + [(end, -1) for _, end, _ in intervals])
    down = peak = 0
    for _, delta in events:  # an end at the same instant as a start sorts first (-1 < 1)
        down += delta
        peak = max(peak, down)
    return peak, [f"{vm} {start:.1f}-{end:.1f}s" for start, end, vm in sorted(intervals)]


@BOTH_EXECUTORS
@pytest.mark.parametrize(
    ("group", "prefix"),
    [
        pytest.param("e2e-capped", "cap", id="reschedule"),
        pytest.param("e2e-capped-worker", "capw", id="worker"),
        pytest.param("e2e-capped-defer", "capd", id="defer"),
    ],
)
def test_the_cap_bounds_the_vms_down_at_once_in_every_wait_mode(
    airflow_env: LocalAirflow, e2e_emulator: Emulator, group: str, prefix: str, executor: str
) -> None:
    dag_id, run_id = f"gce_vm_backup__{group}", f"{group}-1"
    result = trigger_and_wait(airflow_env, dag_id, {"vms": [], "dry_run": False}, run_id=run_id)

    assert result.run["state"] == "success", result.states()
    _assert_vm_tasks_succeeded(result, 1, range(3))
    vms = {f"{prefix}-{n}" for n in (1, 2, 3)}
    for vm in vms:
        assert e2e_emulator.instance(PROJECT, ZONE, vm)["status"] == "RUNNING"
        assert [s["status"] for s in vm_snapshots(e2e_emulator, vm)[vm]] == ["READY"]
    # Every VM was really stopped, snapshotted and started, one VM down at a time.
    peak, intervals = _down_at_once(e2e_emulator, vms)
    assert peak == 1, f"{peak} VMs down at once; {intervals}"
    assert len(intervals) == 3, intervals


def test_six_vms_with_a_cap_of_two_are_never_more_than_two_down(
    airflow_env: LocalAirflow, e2e_emulator: Emulator
) -> None:
    dag_id, run_id = "gce_vm_backup__e2e-cap6", "e2e-cap6-1"
    result = trigger_and_wait(airflow_env, dag_id, {"vms": [], "dry_run": False}, run_id=run_id)

    assert result.run["state"] == "success", result.states()
    _assert_vm_tasks_succeeded(result, 1, range(6))
    vms = {f"c6-{n}" for n in range(1, 7)}
    peak, intervals = _down_at_once(e2e_emulator, vms)
    assert peak == 2, f"{peak} VMs down at once (cap 2); {intervals}"
    assert all(e2e_emulator.instance(PROJECT, ZONE, vm)["status"] == "RUNNING" for vm in vms)
    reschedules = airflow_env.reschedule_counts(dag_id, run_id)
    print(f"down (simulated s): {intervals}; downtime tries that gave their slot back: {reschedules}")


DOWNTIME = tier_task(1, STOP_SNAPSHOT_START)


def _running_downtime_task(
    env: LocalAirflow, dag_id: str, run_id: str, index: int = 0
) -> dict[str, Any] | None:
    for ti in env.task_instances(dag_id, run_id):
        if (ti["task_id"], ti["map_index"]) == (DOWNTIME, index) and ti["state"] == "running" and ti["pid"]:
            return ti
    return None


def _kill_mid_capture(env: LocalAirflow, emulator: Emulator, dag_id: str, run_id: str, vm: str) -> float:
    """Once ``vm``'s downtime task (map index 0) has asked for both snapshots and waits on the big one,
    kill it as a crash would: the supervisor (which heartbeats for the task) and the task. Returns when."""
    deadline = time.monotonic() + run_timeout(env, 120)
    victim = None
    while time.monotonic() < deadline:
        ti = _running_downtime_task(env, dag_id, run_id)
        snapshots = vm_snapshots(emulator, vm)
        pending = [s for s in snapshots.get(f"{vm}-data", []) if s["status"] != "READY"]
        if ti is not None and pending and vm in snapshots:
            victim = ti
            break
        time.sleep(0.3)
    assert victim is not None, "the downtime task never ran while its snapshot was pending"
    assert victim["try_number"] == 1
    task = psutil.Process(victim["pid"])
    supervisor = task.parent()
    assert supervisor is not None
    os.kill(supervisor.pid, signal.SIGKILL)
    os.kill(task.pid, signal.SIGKILL)
    assert emulator.instance(PROJECT, ZONE, vm)["status"] == "TERMINATED"  # killed while the VM was down
    return time.monotonic()


@BOTH_EXECUTORS
def test_killed_worker_task_is_retried_without_a_duplicate_snapshot(
    airflow_env: LocalAirflow, e2e_emulator: Emulator
) -> None:
    dag_id, run_id = "gce_vm_backup__e2e-kill", "e2e-kill-1"
    response = airflow_env.trigger(dag_id, {"vms": [], "dry_run": False}, run_id=run_id)
    assert response.status_code == 200, response.text

    killed_at = _kill_mid_capture(airflow_env, e2e_emulator, dag_id, run_id, "kill-1")

    result = wait_for(airflow_env, dag_id, run_id, timeout=HEARTBEAT_TIMEOUT + 150)
    assert result.run["state"] == "success", result.states()
    downtime_ti = result.ti(DOWNTIME, 0)
    assert downtime_ti["try_number"] == 2, "the killed try was not retried exactly once"
    assert downtime_ti["state"] == "success"
    # The retry found the VM down and went on: it neither stopped it again nor made a second snapshot.
    assert len(_operations(e2e_emulator, "stop", "kill-1")) == 1
    assert len(_operations(e2e_emulator, "start", "kill-1")) == 1
    # No duplicate: one snapshot per disk, READY, and no second snapshot request succeeded for a disk.
    snapshots = vm_snapshots(e2e_emulator, "kill-1")
    assert {disk: [s["status"] for s in found] for disk, found in snapshots.items()} == {
        "kill-1": ["READY"],
        "kill-1-data": ["READY"],
    }
    assert e2e_emulator.instance(PROJECT, ZONE, "kill-1")["status"] == "RUNNING"
    report = airflow_env.xcom(dag_id, run_id, "run_report")
    assert report["status"] == "success"
    assert report["summary"]["snapshots_ready"] == 2
    print(f"killed downtime task recovered in {time.monotonic() - killed_at:.0f} s")


def test_a_vm_left_down_by_a_killed_try_counts_against_the_cap(
    airflow_env: LocalAirflow, e2e_emulator: Emulator
) -> None:
    """The killed try's VM stays down until its retry brings it back; meanwhile the
    scheduler no longer counts that try (up_for_retry), so the other tries must count its marker."""
    dag_id, run_id = "gce_vm_backup__e2e-cap-kill", "e2e-cap-kill-1"
    response = airflow_env.trigger(dag_id, {"vms": [], "dry_run": False}, run_id=run_id)
    assert response.status_code == 200, response.text
    _kill_mid_capture(airflow_env, e2e_emulator, dag_id, run_id, "ck-1")

    result = wait_for(airflow_env, dag_id, run_id, timeout=HEARTBEAT_TIMEOUT + 200)
    assert result.run["state"] == "success", result.states()
    vms = {f"ck-{n}" for n in range(1, 5)}
    peak, intervals = _down_at_once(e2e_emulator, vms)
    assert peak <= 2, f"{peak} VMs down at once (cap 2) after a killed try; {intervals}"
    assert result.ti(DOWNTIME, 0)["try_number"] == 2
    for vm in vms:
        assert e2e_emulator.instance(PROJECT, ZONE, vm)["status"] == "RUNNING"
        assert {
            disk: [s["status"] for s in found] for disk, found in vm_snapshots(e2e_emulator, vm).items()
        } == {
            vm: ["READY"],
            f"{vm}-data": ["READY"],
        }
    reschedules = airflow_env.reschedule_counts(dag_id, run_id)
    print(f"down (simulated s): {intervals}; downtime tries that gave their slot back: {reschedules}")


def _operations(emulator: Emulator, operation_type: str, instance: str) -> list[Any]:
    with emulator.world.lock:
        return [
            op
            for op in emulator.world.operations.values()
            if op.operation_type == operation_type and op.target.rsplit("/", 1)[-1] == instance
        ]


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed orphan that its new parent has not reaped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.executors("celery")
def test_celery_worker_killed_while_holding_a_stop_and_the_other_worker_finishes_the_run(
    airflow_env: LocalAirflow, e2e_emulator: Emulator
) -> None:
    dag_id, run_id, vm = "gce_vm_backup__e2e-kill-worker", "e2e-kill-worker-1", "killw-1"
    assert len(airflow_env.workers) == 2
    response = airflow_env.trigger(dag_id, {"vms": [], "dry_run": False}, run_id=run_id)
    assert response.status_code == 200, response.text

    # The downtime task (it holds its worker slot until the VM is RUNNING again) once it runs ...
    deadline = time.monotonic() + run_timeout(airflow_env, 120)
    victim = None
    while victim is None and time.monotonic() < deadline:
        tis = airflow_env.task_instances(dag_id, run_id)
        victim = next((t for t in tis if t["task_id"] == DOWNTIME and t["state"] == "running"), None)
        if victim is None or not victim["pid"]:
            victim = None
            time.sleep(0.2)
    assert victim is not None, "the downtime task never ran"
    assert victim["try_number"] == 1
    worker = airflow_env.worker_of(victim["pid"])
    assert worker in airflow_env.workers, f"task pid {victim['pid']} is in no worker's process tree"
    (survivor,) = (w for w in airflow_env.workers if w != worker)
    # ... and once its stop request reached Compute Engine (the stop operation runs 3 s): kill the worker
    # and every process it started, as a lost machine or pod would.
    while e2e_emulator.instance(PROJECT, ZONE, vm)["status"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.02)
    killed = airflow_env.kill_worker(worker)
    assert e2e_emulator.instance(PROJECT, ZONE, vm)["status"] == "STOPPING", "not killed during the stop"
    assert victim["pid"] in killed
    assert not [pid for pid in killed if _alive(pid)]

    ran_on: dict[tuple[str, int, int], set[str | None]] = {}

    def record(tis: list[dict[str, Any]]) -> None:
        for t in tis:
            if t["state"] == "running" and t["pid"]:
                key = (t["task_id"], t["map_index"], t["try_number"])
                ran_on.setdefault(key, set()).add(airflow_env.worker_of(t["pid"]))

    try:
        timeout = HEARTBEAT_TIMEOUT + run_timeout(airflow_env, 150)
        run = airflow_env.wait_for_run(dag_id, run_id, timeout=timeout, on_poll=record)
        tis = {(t["task_id"], t["map_index"]): t for t in airflow_env.task_instances(dag_id, run_id)}
        states = {f"{k[0]}[{k[1]}]": t["state"] for k, t in tis.items()}
        assert run["state"] == "success", states
        stop = tis[(DOWNTIME, 0)]
        assert (stop["state"], stop["try_number"]) == ("success", 2), "the killed try was not retried once"
        # Everything that ran after the kill ran on the other worker (None: a process seen as it ended).
        assert ran_on.get((DOWNTIME, 0, 2), set()) <= {survivor, None}
        assert {w for workers in ran_on.values() for w in workers} <= {survivor, None}, ran_on
        assert airflow_env.components.running[survivor].poll() is None
        # The VM is back, stopped once and started once, with one snapshot: nothing was done twice.
        assert e2e_emulator.instance(PROJECT, ZONE, vm)["status"] == "RUNNING"
        assert len(_operations(e2e_emulator, "stop", vm)) == 1
        assert len(_operations(e2e_emulator, "start", vm)) == 1
        assert [s["status"] for s in vm_snapshots(e2e_emulator, vm)[vm]] == ["READY"]
        report = airflow_env.xcom(dag_id, run_id, "run_report")
        assert report["status"] == "success"
        (row,) = report["vms"]
        # the retry found the VM down, went on and brought it back itself
        assert (row["stopped"], row["brought_back_by"]) == (True, STOP_SNAPSHOT_START)
        assert report["summary"]["snapshots_ready"] == 1
    finally:
        airflow_env.start_worker(worker)  # the next tests get two workers again


def test_invalid_conf_is_rejected_with_400_and_no_run_is_created(airflow_env: LocalAirflow) -> None:
    dag_id = "gce_vm_backup__e2e-form"
    before = airflow_env.dag_runs(dag_id)

    not_in_group = airflow_env.trigger(dag_id, {"vms": [f"{ZONE}/not-in-group"], "dry_run": False})
    wrong_type = airflow_env.trigger(dag_id, {"vms": [], "dry_run": "yes"})

    assert not_in_group.status_code == 400, not_in_group.text
    assert wrong_type.status_code == 400, wrong_type.text
    # The body is {"detail": <jsonschema's message>}; its first line names the param and the problem.
    assert list(not_in_group.json()) == ["detail"]
    assert not_in_group.json()["detail"].splitlines()[0] == (
        f"Invalid input for param vms: '{ZONE}/not-in-group' is not one of "
        f"['{ZONE}/form-1', '{ZONE}/form-2', '{ZONE}/form-3']"
    )
    assert wrong_type.json()["detail"].splitlines()[0] == (
        "Invalid input for param dry_run: 'yes' is not of type 'null', 'boolean'"
    )
    assert airflow_env.dag_runs(dag_id) == before
