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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gce_emulator import Emulator
from gce_emulator.server import operation_scope
from gce_vm_backup.backup import stages  # task ids only: no Google import

PROJECT = "bench-project"
RUN_TIME = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
RUN_ID = "scheduled__2026-11-24T03:00:00+00:00"
DAG_ID = "gce_vm_backup__bench"
PRECHECK_ID = stages.tier_task(1, stages.PRECHECK)
POKE_INTERVAL = 30.0  # the config's default poke_interval (config.Group.poke_interval)
SERVER_HOLD = 120.0  # simulated seconds one operations.wait holds at most: "about 2 minutes" (GCE_FACTS
# "Operations"; hook.SERVER_WAIT_HOLD). The operators ask for less, but the API has no such parameter.
# Per task try: DAG parse, Google client imports, hook and client creation (a forked task process).
# Measured with `slot_seconds.py --measure-overhead`: medians of 1.55 s and 1.80 s in two runs on the
# 2-core machine; 2 s is used by default (each table says which value it used).
DEFAULT_TRY_OVERHEAD = 2.0


def short_method(method: str) -> str:
    """'compute.zoneOperations.wait' -> 'zoneOperations.wait'."""
    return method.removeprefix("compute.")


class VirtualEmulator(Emulator):
    """The emulator on a virtual clock (time_scale 0): ``operations.wait`` advances the clock to the
    operation's end, or by ``hold`` simulated seconds, whichever comes first (one flow of control only).
    """

    def __init__(self, seed: Any, *, timings: dict[str, float], hold: float = SERVER_HOLD):
        super().__init__(seed, time_scale=0.0, timings=timings)
        self.hold = hold

    def _wait(self, params: dict[str, str], query: dict[str, str]) -> Any:
        scope = operation_scope(params)
        with self.world.lock:
            world, clock = self.world, self.clock
            deadline = clock.now() + self.hold
            while True:
                world.tick()
                op = world.get_operation(params["project"], scope, params["operation"])
                if op.status == "DONE" or clock.now() >= deadline:
                    return op.view(world)
                upcoming = world._events[0][0] if world._events else deadline
                clock.advance(max(0.0, min(upcoming, deadline) - clock.now()))


class VirtualTime:
    """The ``time`` module as the operators see it in the harness: ``monotonic``/``time`` read the
    emulator's simulated clock and ``sleep`` advances it, so every deadline (``timeouts.stop`` etc.) and
    every 1-second re-read of the downtime task run on simulated time, deterministically."""

    def __init__(self, clock: Any):
        self._clock, self._epoch = clock, RUN_TIME.timestamp()

    def monotonic(self) -> float:
        return float(self._clock.now())

    def time(self) -> float:
        return self._epoch + float(self._clock.now())

    def sleep(self, seconds: float) -> None:
        self._clock.advance(max(0.0, float(seconds)))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


# The modules whose waits and deadlines must run on the simulated clock (each does ``import time``).
VIRTUAL_TIME_MODULES = (
    "gce_vm_backup.runtime.base",
    "gce_vm_backup.compute.hook",
    "gce_vm_backup.backup.instance",
    "gce_vm_backup.backup.capture",
    "gce_vm_backup.backup.downtime",
)


@contextmanager
def virtual_time(clock: Any) -> Iterator[None]:
    """Point the operators' ``time`` at ``clock`` (see VirtualTime) for the duration of the block."""
    import importlib

    modules = [importlib.import_module(name) for name in VIRTUAL_TIME_MODULES]
    fake = VirtualTime(clock)
    saved = [module.time for module in modules]
    for module in modules:
        module.time = fake  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module, original in zip(modules, saved, strict=True):
            module.time = original  # type: ignore[attr-defined]


@dataclass
class FakeTI:
    """The task instance the operators read: identity, XComs (one store shared by the VM's tasks, keyed
    by task id and key) and the Task SDK's ``get_task_states`` (cap.py counts the tier's VMs down)."""

    task_id: str = PRECHECK_ID
    dag_id: str = DAG_ID
    run_id: str = RUN_ID
    map_index: int = 0
    try_number: int = 1
    xcoms: dict[tuple[str, str], Any] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    state_reads: int = 0

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[(self.task_id, key)] = value

    def xcom_pull(
        self, task_ids: str | None = None, key: str = "return_value", map_indexes: Any = None, **_: Any
    ) -> Any:
        return self.xcoms.get((task_ids or self.task_id, key))

    def get_task_states(self, *, dag_id: str, task_ids: list[str], run_ids: list[str]) -> dict[str, Any]:
        self.state_reads += 1
        return {
            self.run_id: {
                f"{task}_{self.map_index}": self.states[task] for task in task_ids if task in self.states
            }
        }


@dataclass
class FakeDagRun:
    run_after: datetime = RUN_TIME


def context(map_index: int = 0, *, task_id: str = PRECHECK_ID, ti: FakeTI | None = None) -> dict[str, Any]:
    """What the operators read from Airflow's context (ti, dag_run, run_id, logical_date)."""
    if ti is None:
        ti = FakeTI(task_id=task_id, map_index=map_index)
    return {"ti": ti, "dag_run": FakeDagRun(), "run_id": RUN_ID, "logical_date": RUN_TIME}


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
    logging.getLogger("gce_vm_backup").setLevel(logging.ERROR)  # the steps' stdlib loggers


def timings_for(
    minutes: float, *, capture_share: float = 0.5, early_restart: bool = False
) -> dict[str, float]:
    """Every long-running operation of a backup takes ``minutes``: stop, start, and the snapshot
    (``capture_share`` of it CREATING, the rest UPLOADING; no per-GB term, so disk size does not matter).

    With ``early_restart`` the upload takes ``2 * minutes`` after a CREATING of ``capture_share *
    minutes``: the case early restart is for (an upload longer than the start), where verify waits."""
    seconds = minutes * 60.0
    return {
        "stop": seconds,
        "start": seconds,
        "snapshot_creating": seconds * capture_share,
        "snapshot_uploading": 2 * seconds if early_restart else seconds * (1 - capture_share),
        "snapshot_uploading_per_gb": 0.0,
    }


def one_vm_seed(name: str = "vm-1", zone: str = "us-central1-a") -> dict[str, Any]:
    disks = [
        {"name": name, "size_gb": 20, "boot": True},
        {"name": f"{name}-data", "size_gb": 200},
    ]
    return {"projects": {PROJECT: {"zones": {zone: {"instances": [{"name": name, "disks": disks}]}}}}}


# ---- operators ---------------------------------------------------------------------------------------
# One VM's backup in a one-tier standard group with a retention policy, in DAG order (stages.VM_STAGES),
# the teardown (ensure_running) last.
_CHAIN = sorted(stages.vm_chain(innermost=True, options={"retention"}), key=lambda stage: stage.teardown)
STAGES = tuple(stage.id for stage in _CHAIN)
# the slot-free waits (waits.SlotFreeWait): the only stages wait_mode changes
WAIT_STAGES = tuple(stage.id for stage in _CHAIN if stage.slot_free)
WAIT_MODES = ("defer", "reschedule", "worker")
DOWNTIME = next(stage.id for stage in _CHAIN if stage.returns == "downtime")
CAP = 10  # config.Group.max_concurrent_vms default


def timeouts_for(minutes: float) -> dict[str, float]:
    """The group's ``timeouts``: the config defaults (stop/start 900, snapshot/verify 7200), raised to
    twice the operation where a slower operation would not fit (as such a group must configure them)."""
    seconds = minutes * 60.0
    return {
        "stop": max(900.0, 2 * seconds),
        "start": max(900.0, 2 * seconds),
        "snapshot": max(7200.0, 2 * seconds),
        "verify": max(7200.0, 2 * seconds),
    }


def make_operator(
    stage: str,
    *,
    project: str,
    zone: str,
    instance: str,
    wait_mode: str,
    poke_interval: float,
    timeouts: dict[str, float],
    early_restart: bool = False,
    record: Any = None,
    downtime: Any = None,
    snapshots: Any = None,
) -> Any:
    """The operator of one stage, built as dag_factory._tier_group builds it (config defaults)."""
    from gce_vm_backup.operators import (
        ApplyRetentionOperator,
        EnsureRunningOperator,
        PrecheckInstanceOperator,
        StopSnapshotStartOperator,
        VerifySnapshotsOperator,
    )

    task_id = stages.tier_task(1, stage)
    if stage == stages.PRECHECK:
        return PrecheckInstanceOperator(
            task_id=task_id,
            project_id=project,
            zone=zone,
            instance=instance,
            deployment="bench",
            group="bench",
        )
    if stage == DOWNTIME:
        return StopSnapshotStartOperator(
            task_id=task_id,
            instance_record=record,
            deployment="bench",
            group="bench",
            early_restart=early_restart,
            stop_timeout=timeouts["stop"],
            snapshot_timeout=timeouts["snapshot"],
            start_timeout=timeouts["start"],
            max_concurrent_vms=CAP,
            max_active_tis_per_dagrun=CAP,
            cap_poll=poke_interval,
        )
    if stage == stages.VERIFY:
        return VerifySnapshotsOperator(
            task_id=task_id,
            snapshot_records=downtime,
            timeout=timeouts["verify"],
            wait_mode=wait_mode,
            poke_interval=poke_interval,
            max_active_tis_per_dagrun=CAP,
        )
    if stage == stages.RETENTION:
        return ApplyRetentionOperator(
            task_id=task_id,
            instance_record=record,
            snapshot_records=snapshots,
            policy={"keep_last": 7},
            deployment="bench",
            group="bench",
        )
    if stage == stages.ENSURE_RUNNING:
        return EnsureRunningOperator(
            task_id=task_id,
            instance_record=record,
            downtime_task=stages.tier_task(1, DOWNTIME),
            timeout=timeouts["start"],
            stop_timeout=timeouts["stop"],
        )
    raise ValueError(stage)


@dataclass
class StageResult:
    stage: str
    pokes: int = 0  # looks: one per execute of a plain operator; one per poke of a wait
    tries: int = 0  # task processes: a try, or a resume after a deferral
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
    cap_reads: int = 0  # get_task_states calls of the downtime task (cap.py; not Compute API calls)

    @property
    def pokes(self) -> int:
        return sum(s.pokes for s in self.stages.values())

    @property
    def tries(self) -> int:
        return sum(s.tries for s in self.stages.values())

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


def _run_wait(
    operator: Any,
    ctx: dict[str, Any],
    result: StageResult,
    clock: Any,
    *,
    wait_mode: str,
    poke_interval: float,
    try_overhead: float,
    max_pokes: int,
) -> Any:
    """A slot-free wait (verify) in its wait mode, with Airflow's semantics in simulated time:
    - defer: the real DeferringWait code (execute, then resume_execution after each TimeDeltaTrigger); each
      resume is a new task process (``try_overhead``, slot held only while it runs);
    - reschedule: each poke is a new try (``try_overhead``); the slot is free in between;
    - worker: one try; the pokes run back to back with a ``poke_interval`` sleep on the slot.
    Scheduler and triggerer latency are left out (they only space the looks further apart)."""
    from airflow.sdk.exceptions import TaskDeferred

    deferred: Any = None
    for poke in range(max_pokes):
        if poke == 0 or wait_mode != "worker":
            operator._hook = None  # a new process builds its hook again
            clock.advance(try_overhead)
            result.slot_sim += try_overhead
            result.tries += 1
        before, start = clock.now(), time.perf_counter()
        done, value = False, None
        if wait_mode == "defer":
            try:
                if deferred is None:
                    value = operator.execute(ctx)
                else:
                    kwargs = {**(deferred.kwargs or {}), "event": None}
                    value = operator.resume_execution(deferred.method_name, kwargs, ctx)
                done = True
            except TaskDeferred as exc:
                deferred = exc
        else:
            outcome = operator.poke(ctx)
            if outcome:
                done, value = True, getattr(outcome, "xcom_value", outcome)
        wall = time.perf_counter() - start
        result.pokes += 1
        result.poke_walls.append(wall)
        result.slot_sim += (clock.now() - before) + wall
        if done:
            return value
        if wait_mode == "worker":
            result.slot_sim += poke_interval  # time.sleep(poke_interval) on the slot
        clock.advance(poke_interval)
    raise RuntimeError(f"{operator.task_id} did not finish in {max_pokes} pokes")


def run_vm_backup(
    *,
    minutes: float,
    wait_mode: str,
    poke_interval: float = POKE_INTERVAL,
    try_overhead: float = DEFAULT_TRY_OVERHEAD,
    early_restart: bool = False,
    hold: float = SERVER_HOLD,
    max_pokes: int = 10_000,
) -> VmBackupResult:
    """One VM (two disks) backed up by the real operators against a fresh VirtualEmulator, in DAG order:
    precheck, stop_snapshot_start, verify (in ``wait_mode``), retention (keep_last 7), ensure_running.

    Plain operators (precheck, the downtime task, retention, ensure_running) are one try each, whatever
    the wait mode: ``try_overhead`` then their ``execute`` to the end, on the slot. The downtime task's
    long-polls advance the simulated clock (VirtualEmulator) and its deadlines and re-reads run on it
    (virtual_time), so its slot time is stop + capture + start in simulated seconds: it holds its slot on
    purpose (the slot is the cap). Only verify is slot-free (see _run_wait). Each task's result goes into
    the shared XCom store under its task id, as the DAG's XComArgs pass it on.
    """
    quiet_logs()
    import gce_vm_backup.compute.hook  # noqa: F401  -- Google imports belong to the per-try overhead, not a poke

    timeouts = timeouts_for(minutes)
    emulator = VirtualEmulator(
        one_vm_seed(), timings=timings_for(minutes, early_restart=early_restart), hold=hold
    )
    results: dict[str, StageResult] = {}
    xcoms: dict[tuple[str, str], Any] = {}
    states: dict[str, str] = {}
    cap_reads = 0
    with emulator, virtual_time(emulator.clock):
        point_airflow_at(emulator)
        clock = emulator.clock
        outputs: dict[str, Any] = {}
        for stage in STAGES:
            operator = make_operator(
                stage,
                project=PROJECT,
                zone="us-central1-a",
                instance="vm-1",
                wait_mode=wait_mode,
                poke_interval=poke_interval,
                timeouts=timeouts,
                early_restart=early_restart,
                record=outputs.get("precheck"),
                downtime=outputs.get(DOWNTIME),
                snapshots=outputs.get("verify"),
            )
            ti = FakeTI(task_id=operator.task_id, xcoms=xcoms, states=states)
            ctx = context(ti=ti)
            result = StageResult(stage)
            emulator.clear_calls()
            began = clock.now()
            states[operator.task_id] = "running"
            if stage in WAIT_STAGES:
                value = _run_wait(
                    operator,
                    ctx,
                    result,
                    clock,
                    wait_mode=wait_mode,
                    poke_interval=poke_interval,
                    try_overhead=try_overhead,
                    max_pokes=max_pokes,
                )
            else:
                clock.advance(try_overhead)  # process start of the try, before its calls
                before, start = clock.now(), time.perf_counter()
                value = operator.execute(ctx)
                wall = time.perf_counter() - start
                result.pokes, result.tries = 1, 1
                if stage != DOWNTIME:  # the downtime's wall time is its long-polls', not a poke's
                    result.poke_walls.append(wall)
                result.slot_sim = try_overhead + (clock.now() - before) + wall
            states[operator.task_id] = "success"
            if stage == DOWNTIME:
                cap_reads = ti.state_reads
            xcoms[(operator.task_id, "return_value")] = value
            outputs[stage] = value
            result.sim_elapsed = clock.now() - began
            result.calls = Counter(short_method(call.method) for call in emulator.calls)
            results[stage] = result
        if not (outputs[DOWNTIME]["stopped"] and outputs[DOWNTIME]["started"]):
            raise RuntimeError(f"the downtime task did not stop and start the VM: {outputs[DOWNTIME]}")
        if outputs["ensure_running"]["started"]:
            raise RuntimeError("ensure_running had to start the VM: the downtime task left it down")
    return VmBackupResult(wait_mode, minutes, results, try_overhead, cap_reads)


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
