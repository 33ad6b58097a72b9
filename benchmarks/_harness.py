"""Shared by the benchmarks: the emulator on a virtual clock, a task context, and one VM's backup driven
through the real operators with Airflow's sensor semantics.

The emulator runs with ``time_scale=0``: simulated time moves only when the harness calls
``clock.advance``, so a 30-minute operation costs no real time and every figure is deterministic (except
the measured wall time of the pokes). ``operations.wait`` is replaced by a *virtual* long-poll
(``VirtualEmulator._wait``): it returns when the operation is DONE or after ``hold`` simulated seconds,
advancing the clock, which is what the real server does in real time.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gce_emulator import Emulator
from gce_emulator.server import operation_scope

PROJECT = "bench-project"
RUN_TIME = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
RUN_ID = "scheduled__2026-11-24T03:00:00+00:00"
DAG_ID = "gce_vm_backup__bench"
POKE_INTERVAL = 30.0  # the config's default poke_interval (config.Group.poke_interval)
SERVER_HOLD = 60.0  # simulated seconds one operations.wait holds (the hook's MAX_WAIT_CALL; see README text)
# Per task try: DAG parse, Google client imports, hook and client creation (a forked task process).
# Measured with `slot_seconds.py --measure-overhead`: medians of 1.55 s and 1.80 s in two runs on the
# 2-core machine; 2 s is used by default (each table says which value it used).
DEFAULT_TRY_OVERHEAD = 2.0


def short_method(method: str) -> str:
    """'compute.zoneOperations.wait' -> 'zoneOperations.wait'."""
    return method.removeprefix("compute.")


class VirtualEmulator(Emulator):
    """The emulator on a virtual clock (time_scale 0).

    ``blocking_wait=True``: ``operations.wait`` advances the clock to the operation's end, or by ``hold``
    simulated seconds, whichever comes first (one flow of control only: the single-VM benchmarks).
    ``blocking_wait=False``: it answers at once like ``get`` and records the request in ``wait_requests``,
    so a discrete-event driver can resume the waiter when the operation is DONE (the fleet benchmark).
    """

    def __init__(self, seed: Any, *, timings: dict[str, float], hold: float = SERVER_HOLD):
        super().__init__(seed, time_scale=0.0, timings=timings)
        self.hold = hold
        self.blocking_wait = True
        self.wait_requests: list[tuple[str, str, str]] = []  # (project, scope, operation)

    def _wait(self, params: dict[str, str], query: dict[str, str]) -> Any:
        scope = operation_scope(params)
        with self.world.lock:
            world, clock = self.world, self.clock
            deadline = clock.now() + self.hold
            while True:
                world.tick()
                op = world.get_operation(params["project"], scope, params["operation"])
                if op.status == "DONE" or not self.blocking_wait or clock.now() >= deadline:
                    if not self.blocking_wait and op.status != "DONE":
                        self.wait_requests.append((params["project"], scope, params["operation"]))
                    return op.view(world)
                upcoming = world._events[0][0] if world._events else deadline
                clock.advance(max(0.0, min(upcoming, deadline) - clock.now()))

    def operation_done(self, key: tuple[str, str, str]) -> bool:
        with self.world.lock:
            self.world.tick()
            return self.world.get_operation(*key).status == "DONE"

    def next_event_time(self) -> float | None:
        with self.world.lock:
            return self.world._events[0][0] if self.world._events else None


@dataclass
class FakeTI:
    dag_id: str = DAG_ID
    map_index: int = 0
    try_number: int = 1
    pushed: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@dataclass
class FakeDagRun:
    run_after: datetime = RUN_TIME


def context(map_index: int = 0) -> dict[str, Any]:
    """What the operators read from Airflow's context (ti, dag_run, run_id, logical_date)."""
    return {
        "ti": FakeTI(map_index=map_index),
        "dag_run": FakeDagRun(),
        "run_id": RUN_ID,
        "logical_date": RUN_TIME,
    }


def point_airflow_at(emulator: Emulator) -> None:
    """The operators' hook reads the Airflow connection from the environment (anonymous on loopback)."""
    connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
    os.environ["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"] = json.dumps(connection)


def quiet_logs() -> None:
    """The operators log every poke through Airflow's structlog; the benchmarks print tables only."""
    import logging

    import structlog

    import gce_vm_backup.operators  # noqa: F401  (Airflow configures structlog on import; override after)

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


def timings_for(minutes: float, *, capture_share: float = 0.5) -> dict[str, float]:
    """Every long-running operation of a backup takes ``minutes``: stop, start, and the snapshot
    (``capture_share`` of it CREATING, the rest UPLOADING; no per-GB term, so disk size does not matter)."""
    seconds = minutes * 60.0
    return {
        "stop": seconds,
        "start": seconds,
        "snapshot_creating": seconds * capture_share,
        "snapshot_uploading": seconds * (1 - capture_share),
        "snapshot_uploading_per_gb": 0.0,
    }


def one_vm_seed(name: str = "vm-1", zone: str = "us-central1-a") -> dict[str, Any]:
    disks = [
        {"name": name, "size_gb": 20, "boot": True},
        {"name": f"{name}-data", "size_gb": 200},
    ]
    return {"projects": {PROJECT: {"zones": {zone: {"instances": [{"name": name, "disks": disks}]}}}}}


# ---- operators ---------------------------------------------------------------------------------------
STAGES = ("precheck", "stop", "snapshot", "start", "verify", "retention")
SENSOR_STAGES = ("stop", "snapshot", "start", "verify")


def make_operator(
    stage: str,
    *,
    project: str,
    zone: str,
    instance: str,
    wait_mode: str,
    poke_interval: float,
    early_restart: bool = False,
    record: Any = None,
    snapshots: Any = None,
) -> Any:
    """The operator of one stage, configured as dag_factory.build_dag configures it (config defaults)."""
    from gce_vm_backup.operators import (
        ApplyRetentionOperator,
        PrecheckInstanceOperator,
        SnapshotDisksOperator,
        StartInstanceOperator,
        StopInstanceOperator,
        VerifySnapshotsOperator,
    )

    sensor: dict[str, Any] = {"wait_mode": wait_mode, "poke_interval": poke_interval}
    if stage == "precheck":
        return PrecheckInstanceOperator(task_id="precheck", project_id=project, zone=zone, instance=instance)
    if stage == "stop":
        return StopInstanceOperator(task_id="stop", instance_record=record, timeout=900, **sensor)
    if stage == "snapshot":
        return SnapshotDisksOperator(
            task_id="snapshot",
            instance_record=record,
            deployment="bench",
            group="bench",
            ready_when="UPLOADING" if early_restart else "READY",
            timeout=7200,
            **sensor,
        )
    if stage == "start":
        return StartInstanceOperator(task_id="start", instance_record=record, timeout=900, **sensor)
    if stage == "verify":
        return VerifySnapshotsOperator(task_id="verify", snapshot_records=snapshots, timeout=7200, **sensor)
    if stage == "retention":
        return ApplyRetentionOperator(
            task_id="retention",
            instance_record=record,
            snapshot_records=snapshots,
            policy={"keep_last": 7},
            deployment="bench",
            group="bench",
        )
    raise ValueError(stage)


def poke_once(operator: Any, ctx: dict[str, Any], *, fresh_process: bool) -> tuple[bool, Any, float]:
    """One poke (or execute of a plain operator): (done, xcom value, wall seconds).

    ``fresh_process`` drops the operator's cached hook first, as a new task try (a new process) would.
    """
    if fresh_process:
        operator._hook = None
    start = time.perf_counter()
    if not hasattr(operator, "poke"):
        value = operator.execute(ctx)
        return True, value, time.perf_counter() - start
    result = operator.poke(ctx)
    wall = time.perf_counter() - start
    if result:
        return True, getattr(result, "xcom_value", result), wall
    return False, None, wall


@dataclass
class StageResult:
    stage: str
    pokes: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    sim_elapsed: float = 0.0  # simulated seconds from the stage's first try to its end
    poke_walls: list[float] = field(default_factory=list)
    slot_sim: float = 0.0  # simulated seconds a worker slot is held (overhead included)


@dataclass
class VmBackupResult:
    wait_mode: str
    minutes: float
    stages: dict[str, StageResult]
    try_overhead: float

    @property
    def pokes(self) -> int:
        return sum(s.pokes for s in self.stages.values())

    @property
    def calls(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for stage in self.stages.values():
            total.update(stage.calls)
        return total

    @property
    def slot_seconds(self) -> float:
        return sum(s.slot_sim for s in self.stages.values())

    @property
    def elapsed(self) -> float:
        return sum(s.sim_elapsed for s in self.stages.values())

    @property
    def median_poke_wall(self) -> float:
        walls = [w for s in self.stages.values() for w in s.poke_walls]
        return statistics.median(walls) if walls else 0.0


def run_vm_backup(
    *,
    minutes: float,
    wait_mode: str,
    poke_interval: float = POKE_INTERVAL,
    try_overhead: float = DEFAULT_TRY_OVERHEAD,
    early_restart: bool = False,
    max_pokes: int = 10_000,
) -> VmBackupResult:
    """One VM (two disks) backed up by the real operators against a fresh VirtualEmulator.

    Airflow's sensor semantics, in simulated time:
    - reschedule: each poke is a new task try: ``try_overhead`` passes (slot held), the poke runs, the
      slot is freed, and the next try comes ``poke_interval`` later (scheduler latency left out).
    - worker (Airflow's ``poke`` mode): one try; ``try_overhead`` once; the pokes run back to back with a
      ``poke_interval`` sleep between them; the slot is held throughout, long-polls included.
    Plain operators (precheck, retention) are one try each in both modes.
    """
    quiet_logs()
    import gce_vm_backup.hook  # noqa: F401  -- Google imports belong to the per-try overhead, not a poke

    timings = timings_for(minutes)
    emulator = VirtualEmulator(one_vm_seed(), timings=timings)
    stages: dict[str, StageResult] = {}
    with emulator:
        point_airflow_at(emulator)
        ctx = context()
        clock = emulator.clock
        record: Any = None
        snapshots: Any = None
        for stage in STAGES:
            operator = make_operator(
                stage,
                project=PROJECT,
                zone="us-central1-a",
                instance="vm-1",
                wait_mode=wait_mode,
                poke_interval=poke_interval,
                early_restart=early_restart,
                record=record,
                snapshots=snapshots,
            )
            result = StageResult(stage)
            emulator.clear_calls()
            began = clock.now()
            for poke in range(max_pokes):
                fresh = poke == 0 or (stage in SENSOR_STAGES and wait_mode == "reschedule")
                if fresh:
                    clock.advance(try_overhead)  # process start of the try, before the poke's calls
                    result.slot_sim += try_overhead
                before = clock.now()
                done, value, wall = poke_once(operator, ctx, fresh_process=fresh)
                result.pokes += 1
                result.poke_walls.append(wall)
                # the poke's own work: long-polls advanced the virtual clock; the rest is its wall time
                result.slot_sim += (clock.now() - before) + wall
                if done:
                    break
                if wait_mode == "worker":
                    result.slot_sim += poke_interval  # time.sleep(poke_interval) on the slot
                clock.advance(poke_interval)
            else:
                raise RuntimeError(f"{stage} did not finish in {max_pokes} pokes")
            result.sim_elapsed = clock.now() - began
            result.calls = Counter(short_method(call.method) for call in emulator.calls)
            stages[stage] = result
            if stage == "precheck":
                record = value
            elif stage == "snapshot":
                snapshots = value
    return VmBackupResult(wait_mode, minutes, stages, try_overhead)


# ---- the per-try overhead, measured once -----------------------------------------------------------
CHILD = """
import json, os, sys, time
import airflow  # noqa: F401  -- a worker has Airflow imported before it starts a task: not timed
from airflow.dag_processing.dagbag import DagBag
start = time.perf_counter()
bag = DagBag(sys.argv[1])
dag = bag.dags["bench_try_overhead"]
parsed = time.perf_counter()
task = dag.get_task("precheck")
ctx = json.loads(sys.argv[2])
sys.path.insert(0, sys.argv[3])
from _harness import context, quiet_logs
quiet_logs()
before = time.perf_counter()
task.execute(context())
done = time.perf_counter()
print(json.dumps({"parse": parsed - start, "task": done - before, "total": done - start}))
"""
OVERHEAD_DAG = (
    "from airflow.sdk import DAG\n"
    "from gce_vm_backup.operators import PrecheckInstanceOperator\n"
    "with DAG('bench_try_overhead', schedule=None):\n"
    "    PrecheckInstanceOperator(task_id='precheck', project_id='bench-project', zone='us-central1-a',"
    " instance='vm-1')\n"
)


def measure_try_overhead(repeat: int = 3, *, airflow_cli: bool = True) -> dict[str, float]:
    """Median seconds, over ``repeat`` fresh processes, of what one task try costs besides its API calls.

    - ``child``: a fresh Python process with Airflow already imported (as a worker's forked task
      process has) parses a one-task DAG file and runs the real precheck against the emulator: DAG
      parse + Google client/provider imports + hook and client creation + one API call.
    - ``cli``: the wall time of ``airflow tasks test`` of that task (interpreter start, Airflow import,
      DB round trips, the same task): an upper bound for one try.
    """
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    work = Path(tempfile.mkdtemp(prefix="try-overhead-"))
    dags = work / "dags"
    dags.mkdir()
    (dags / "overhead_dag.py").write_text(OVERHEAD_DAG)
    here = str(Path(__file__).resolve().parent)
    repo = Path(here).parent
    results: dict[str, list[float]] = {"child": [], "cli": []}
    with Emulator(one_vm_seed()) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(work / "home"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(repo / "plugins"),
            "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(connection),
        }
        for _ in range(repeat):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(dags), "{}", here],
                env=env,
                capture_output=True,
                text=True,
            )
            if out.returncode:
                raise RuntimeError(f"the overhead probe failed:\n{out.stderr[-3000:]}")
            results["child"].append(json.loads(out.stdout.strip().splitlines()[-1])["total"])
        if airflow_cli:
            airflow = [sys.executable, "-m", "airflow"]
            subprocess.run([*airflow, "db", "migrate"], env=env, capture_output=True, check=True)
            for _ in range(repeat):
                start = time.perf_counter()
                subprocess.run(
                    [*airflow, "tasks", "test", "bench_try_overhead", "precheck"],
                    env=env,
                    capture_output=True,
                    check=True,
                )
                results["cli"].append(time.perf_counter() - start)
    shutil.rmtree(work, ignore_errors=True)
    return {key: statistics.median(values) for key, values in results.items() if values}


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def timed(label: str, action: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    value = action()
    print(f"<!-- {label}: {time.perf_counter() - start:.1f} s real -->", flush=True)
    return value
