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

VM_TASKS = ("precheck", "stop", "snapshot", "start", "verify")
BOTH_EXECUTORS = pytest.mark.executors("local", "celery")


def _assert_vm_tasks_succeeded(result: Any, tier: int, map_indexes: range) -> None:
    for index in map_indexes:
        for task in VM_TASKS:
            assert result.ti(f"tier_{tier}.{task}", index)["state"] == "success", result.states()


def _map_index_of(result: Any, tier: int, instance: str) -> int:
    """The map index of ``instance`` in its tier (the resolve task decides the order, not the config)."""
    indexes = [
        t["map_index"]
        for t in result.task_instances
        if t["task_id"] == f"tier_{tier}.precheck" and t["rendered_fields"].get("instance") == instance
    ]
    assert len(indexes) == 1, (instance, result.states())
    return int(indexes[0])


@BOTH_EXECUTORS
def test_full_backup_in_reschedule_mode_frees_the_slot_between_pokes(
    airflow_env: LocalAirflow, e2e_emulator: Emulator
) -> None:
    dag_id = "gce_vm_backup__e2e-full"
    result = trigger_and_wait(airflow_env, dag_id, {"vms": [], "dry_run": False}, run_id="e2e-full-1")

    assert result.run["state"] == "success", result.states()
    _assert_vm_tasks_succeeded(result, 1, range(2))
    _assert_vm_tasks_succeeded(result, 2, range(1))
    # Slot-free waiting: the sensors of the running VM gave their slot back between pokes (reschedules
    # recorded by the scheduler), all on their first try.
    web = _map_index_of(result, 1, "full-web")
    reschedules = airflow_env.reschedule_counts(dag_id, "e2e-full-1")
    for task_id in ("tier_1.stop", "tier_1.snapshot"):
        assert reschedules.get((task_id, web), 0) >= 1, reschedules
        assert result.ti(task_id, web)["try_number"] == 1
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
    assert (rows["full-web"]["stopped"], rows["full-web"]["started"]) == (True, True)
    assert (rows["full-off"]["prior_status"], rows["full-off"]["stopped"]) == ("TERMINATED", False)


def _in_flight(emulator: Emulator, stage: str, names: set[str]) -> tuple[int, list[str]]:
    """The most ``stage`` operations on ``names`` (VMs, or snapshots) running at once, and the intervals.

    From the emulator's operations (insert to DONE, simulated seconds), which its call log created.
    """
    with emulator.world.lock:
        operations = [
            op
            for op in emulator.world.operations.values()
            if op.operation_type in STAGE_OPERATIONS[stage] and op.target.rsplit("/", 1)[-1] in names
        ]
    assert len(operations) == len(names), f"{stage} operations: {operations}"
    intervals = [(op.insert_time, op.end_time, op.target.rsplit("/", 1)[-1]) for op in operations]
    assert all(end is not None for _, end, _ in intervals), intervals
    events = sorted([(start, 1) for start, _, _ in intervals] + [(end, -1) for _, end, _ in intervals])
    in_flight = peak = 0
    for _, delta in events:  # an end at the same instant as a start sorts first (-1 < 1)
        in_flight += delta
        peak = max(peak, in_flight)
    described = [f"{vm} {start:.0f}-{end:.0f}s" for start, end, vm in sorted(intervals)]
    return peak, described


STAGE_OPERATIONS = {"stop": ("stop",), "snapshot": ("insert", "createSnapshot"), "start": ("start",)}
RESCHEDULE_CAP_BUG = (
    "documented limit of wait_mode reschedule: max_concurrent_vms is max_active_tis_per_dagrun, which counts "
    "running/queued/deferred task instances only; a sensor is up_for_reschedule between pokes, so the next "
    "VM's stop starts while the first VM's stop is in flight. defer (the default) and worker are capped."
)


@BOTH_EXECUTORS
@pytest.mark.parametrize(
    ("group", "prefix"),
    [
        pytest.param(
            "e2e-capped",
            "cap",
            marks=pytest.mark.xfail(strict=True, reason=RESCHEDULE_CAP_BUG),
            id="reschedule",
        ),
        pytest.param("e2e-capped-worker", "capw", id="worker"),
        pytest.param("e2e-capped-defer", "capd", id="defer"),
    ],
)
def test_concurrency_cap_is_honoured_under_the_scheduler(
    airflow_env: LocalAirflow, e2e_emulator: Emulator, group: str, prefix: str, executor: str
) -> None:
    if executor == "celery" and group == "e2e-capped":
        # The gap is a race: the next VM's stop must start within the first one's 3 s operation. The
        # LocalExecutor starts a task in about a second and shows it every time; a Celery task's way
        # through the broker to a worker's fork takes long enough on 2 busy cores to miss it (XPASS).
        pytest.skip("reschedule mode's cap gap is timing-dependent under Celery; shown on [local]")
    dag_id, run_id = f"gce_vm_backup__{group}", f"{group}-1"
    result = trigger_and_wait(airflow_env, dag_id, {"vms": [], "dry_run": False}, run_id=run_id)

    assert result.run["state"] == "success", result.states()
    _assert_vm_tasks_succeeded(result, 1, range(3))
    vms = {f"{prefix}-{n}" for n in (1, 2, 3)}
    for vm in vms:
        assert e2e_emulator.instance(PROJECT, ZONE, vm)["status"] == "RUNNING"
        assert [s["status"] for s in vm_snapshots(e2e_emulator, vm)[vm]] == ["READY"]
    # Every VM was really stopped, snapshotted and started, at most one at a time in each stage.
    snapshots = {vm_snapshots(e2e_emulator, vm)[vm][0]["name"] for vm in vms}
    for stage in ("stop", "snapshot", "start"):
        peak, intervals = _in_flight(e2e_emulator, stage, snapshots if stage == "snapshot" else vms)
        assert peak <= 1, f"{stage}: {peak} in flight at once; {intervals}"
    if prefix == "capd":  # the waits really went through the triggerer, not a held slot
        log = airflow_env.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/tier_1.snapshot/logs/1",
            params={"map_index": 0, "full_content": True},
            headers={"Accept": "application/json"},
        )
        assert log.status_code == 200, log.text[:500]
        assert "Pausing task as DEFERRED" in log.text


def _running_snapshot_task(env: LocalAirflow, dag_id: str, run_id: str) -> dict[str, Any] | None:
    for ti in env.task_instances(dag_id, run_id):
        if ti["task_id"] == "tier_1.snapshot" and ti["state"] == "running" and ti["pid"]:
            return ti
    return None


@BOTH_EXECUTORS
def test_killed_worker_task_is_retried_without_a_duplicate_snapshot(
    airflow_env: LocalAirflow, e2e_emulator: Emulator
) -> None:
    dag_id, run_id = "gce_vm_backup__e2e-kill", "e2e-kill-1"
    response = airflow_env.trigger(dag_id, {"vms": [], "dry_run": False}, run_id=run_id)
    assert response.status_code == 200, response.text

    # Wait until the snapshot task (worker mode: it keeps its slot) has asked for both snapshots and is
    # waiting on the big one.
    deadline = time.monotonic() + run_timeout(airflow_env, 120)
    victim = None
    while time.monotonic() < deadline:
        ti = _running_snapshot_task(airflow_env, dag_id, run_id)
        snapshots = vm_snapshots(e2e_emulator, "kill-1")
        pending = [s for s in snapshots.get("kill-1-data", []) if s["status"] != "READY"]
        if ti is not None and pending and "kill-1" in snapshots:
            victim = ti
            break
        time.sleep(0.3)
    assert victim is not None, "the snapshot task never ran while its snapshot was pending"
    assert victim["try_number"] == 1

    # Kill the worker as a crash would: the supervisor (which heartbeats for the task) and the task.
    task = psutil.Process(victim["pid"])
    supervisor = task.parent()
    assert supervisor is not None
    os.kill(supervisor.pid, signal.SIGKILL)
    os.kill(task.pid, signal.SIGKILL)
    killed_at = time.monotonic()

    result = wait_for(airflow_env, dag_id, run_id, timeout=HEARTBEAT_TIMEOUT + 150)
    assert result.run["state"] == "success", result.states()
    snapshot_ti = result.ti("tier_1.snapshot", 0)
    assert snapshot_ti["try_number"] == 2, "the killed try was not retried exactly once"
    assert snapshot_ti["state"] == "success"
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
    print(f"killed snapshot task recovered in {time.monotonic() - killed_at:.0f} s")


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

    # The stop task (worker mode: it holds its worker slot until the VM is TERMINATED) once it runs ...
    deadline = time.monotonic() + run_timeout(airflow_env, 120)
    victim = None
    while victim is None and time.monotonic() < deadline:
        tis = airflow_env.task_instances(dag_id, run_id)
        victim = next((t for t in tis if t["task_id"] == "tier_1.stop" and t["state"] == "running"), None)
        if victim is None or not victim["pid"]:
            victim = None
            time.sleep(0.2)
    assert victim is not None, "the stop task never ran"
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
        stop = tis[("tier_1.stop", 0)]
        assert (stop["state"], stop["try_number"]) == ("success", 2), "the killed try was not retried once"
        # Everything that ran after the kill ran on the other worker (None: a process seen as it ended).
        assert ran_on.get(("tier_1.stop", 0, 2), set()) <= {survivor, None}
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
        assert (row["stopped"], row["started"]) == (True, True)
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
        "Invalid input for param dry_run: 'yes' is not of type 'boolean'"
    )
    assert airflow_env.dag_runs(dag_id) == before
