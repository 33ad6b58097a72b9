"""A fleet run: 200 and 1,000 VMs through the real operators, under a model of Airflow's scheduling.

    uv run --no-sync python benchmarks/fleet.py [--vms 200 1000] [--caps 10 50] [--wait-modes reschedule]
                                                [--max-active-tasks 16] [--quick]

Running 1,000 VMs through a real scheduler on 2 cores is not feasible in minutes (each task try is a
process), so this is a discrete-event driver: the real operators' execute()/poke() run against the
emulator on a virtual clock (time_scale 0, moved with ``clock.advance``) with its default latency model
(stop 30 s, start 20 s, snapshot CREATING 15 s then UPLOADING 5 s + 1 s per GB), while the driver
models what Airflow's scheduler does with the per-VM task chain of one tier:

- Tasks per VM: precheck -> stop -> snapshot -> start -> verify -> retention (keep_last 7). A task is
  queued when its upstream succeeded. Priority as Airflow's default ``downstream`` weight rule gives it
  (precheck highest, retention lowest), then map index; ``--weight-rule upstream`` is the what-if of
  the reverse (a VM already down goes first).
- ``max_active_tis_per_dagrun`` = the cap on stop, snapshot, start and verify, counted as Airflow
  3.3's scheduler counts it: task instances RUNNING or QUEUED (ACTIVE_STATES; UP_FOR_RESCHEDULE is not
  counted). What-ifs: ``--cap-rule stage`` counts every VM in the stage, rescheduled ones included (the
  documented intent "at most N VMs in each stage at once"); ``--cap-rule window`` lets a VM's stop
  begin only while fewer than cap VMs are between their stop and the end of their start (a cap on VMs
  down at once), with snapshot and start uncapped.
- ``max_active_tasks`` of the DAG run (Airflow's ``[core] max_active_tasks_per_dag``, default 16; the
  generated DAGs do not set it): at most that many tries running at once in the run. 0 = unlimited.
- reschedule: each poke is a try: the slot is taken, the per-try overhead passes, the poke runs, the
  slot is freed; the task is ready again ``poke_interval`` later. worker: one try; pokes follow each
  other after a ``poke_interval`` sleep; ``operations.wait`` is answered at once by the emulator and the
  driver resumes the task when the operation is DONE or 60 simulated seconds later (then it sleeps
  ``poke_interval``), holding the slot; the real code would continue the same poke at that moment.
Left out: the scheduler loop's latency and the executor's queueing (add them per try: see
``--scheduler-latency``), pools, ``[core] parallelism`` and worker concurrency (assumed large enough),
task failures and retries, Compute Engine's own quotas (concurrent operations, API rate) - the emulator
has none -, API latency (loopback), tier barriers (one tier) and run_report.

Downtime of a VM = from its stop operation's start to its start operation's end (the emulator's
operation times). Floor = stop + snapshot capture (CREATING) + start, what early restart could reach;
without early restart a VM must also stay down while its largest disk uploads. Ideal makespan =
max(sum of per-VM critical paths / cap, longest critical path), critical path = stop + capture + upload +
start (early restart: stop + capture + max(upload, start)).
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    DEFAULT_TRY_OVERHEAD,
    POKE_INTERVAL,
    PROJECT,
    SENSOR_STAGES,
    STAGES,
    VirtualEmulator,
    context,
    make_operator,
    markdown_table,
    point_airflow_at,
    quiet_logs,
)

from gce_emulator.model import DEFAULT_TIMINGS

ZONES = [
    f"{region}-{z}"
    for region, zones in (
        ("us-central1", "abcf"),
        ("us-east1", "bcd"),
        ("europe-west1", "bcd"),
        ("asia-east1", "ab"),
    )
    for z in zones
]
# Airflow's default weight rule ("downstream"): a task's weight is its own plus every downstream task's
# (+1: run_report). "upstream" (its own plus every upstream task's) is the what-if: finish VMs first.
WEIGHTS = {
    "downstream": {stage: len(STAGES) - i + 1 for i, stage in enumerate(STAGES)},
    "upstream": {stage: i + 2 for i, stage in enumerate(STAGES)},  # +1: resolve_tier upstream
}
CAP_RULES = {
    "airflow": "RUNNING+QUEUED tries per capped task (Airflow 3.3)",
    "stage": "VMs in each capped stage (what-if)",
    "window": "VMs between stop and start, per DAG run (what-if)",
}
NEXT = dict(zip(STAGES, [*STAGES[1:], None], strict=True))


@dataclass(frozen=True)
class Vm:
    index: int
    name: str
    zone: str
    disk_sizes: tuple[int, ...]


def fleet(vms: int, seed: int = 7) -> list[Vm]:
    """VMs spread over 12 zones; a 10-50 GB boot disk each, and half of them a 50-500 GB data disk."""
    rng = random.Random(seed)
    result = []
    for i in range(vms):
        sizes = [rng.randint(10, 50)]
        if rng.random() < 0.5:
            sizes.append(rng.randint(50, 500))
        result.append(Vm(i, f"vm-{i:05d}", ZONES[i % len(ZONES)], tuple(sizes)))
    return result


def emulator_seed(vms: list[Vm]) -> dict[str, Any]:
    zones: dict[str, Any] = {}
    for vm in vms:
        disks = [{"name": vm.name, "size_gb": vm.disk_sizes[0], "boot": True}]
        disks += [{"name": f"{vm.name}-data", "size_gb": size} for size in vm.disk_sizes[1:]]
        zones.setdefault(vm.zone, {"instances": []})["instances"].append({"name": vm.name, "disks": disks})
    return {"projects": {PROJECT: {"zones": zones}}}


@dataclass(eq=False)
class Task:
    vm: Vm
    stage: str
    weight: int
    state: str = "blocked"  # blocked, ready, running, rescheduled, done, failed
    operator: Any = None
    tries: int = 0
    pokes: int = 0
    value: Any = None


@dataclass
class Settings:
    vms: int
    cap: int
    wait_mode: str = "reschedule"
    early_restart: bool = False
    max_active_tasks: int = 16
    cap_rule: str = "airflow"  # see CAP_RULES
    poke_interval: float = POKE_INTERVAL
    try_overhead: float = DEFAULT_TRY_OVERHEAD
    scheduler_latency: float = 0.0
    hold: float = 60.0
    weight_rule: str = "downstream"


@dataclass
class FleetResult:
    settings: Settings
    makespan: float
    ideal: float
    longest_path: float
    downtimes: list[float]
    floor: float
    floor_no_early_mean: float
    peak_down: int
    peak_running: int
    pokes: int
    api_calls: int
    failed: int
    real_seconds: float
    stage_peak_active: dict[str, int] = field(default_factory=dict)


def run_fleet(settings: Settings) -> FleetResult:
    quiet_logs()
    import gce_vm_backup.hook  # noqa: F401

    timings = dict(DEFAULT_TIMINGS)
    vms = fleet(settings.vms)
    emulator = VirtualEmulator(emulator_seed(vms), timings=timings, hold=settings.hold)
    emulator.blocking_wait = False
    real_start = time.perf_counter()
    with emulator:
        point_airflow_at(emulator)
        result = _Driver(settings, emulator, vms).run()
        calls = len(emulator.calls)
        operations = list(emulator.world.operations.values())
    stops = {op.target: op.insert_time for op in operations if op.operation_type == "stop"}
    starts = {
        op.target: op.end_time
        for op in operations
        if op.operation_type == "start" and op.end_time is not None
    }
    downtimes = [starts[t] - stops[t] for t in stops if t in starts]
    intervals = sorted(
        [(stops[t], 1) for t in stops if t in starts] + [(starts[t], -1) for t in stops if t in starts]
    )
    down, peak_down = 0, 0
    for _, delta in intervals:
        down += delta
        peak_down = max(peak_down, down)
    capture, stop, start = timings["snapshot_creating"], timings["stop"], timings["start"]

    def upload(vm: Vm) -> float:
        return timings["snapshot_uploading"] + timings["snapshot_uploading_per_gb"] * max(vm.disk_sizes)

    if settings.early_restart:
        paths = [stop + capture + max(upload(vm), start) for vm in vms]
    else:
        paths = [stop + capture + upload(vm) + start for vm in vms]
    ideal = max(sum(paths) / settings.cap, max(paths))
    return FleetResult(
        settings=settings,
        makespan=result["makespan"],
        ideal=ideal,
        longest_path=max(paths),
        downtimes=downtimes,
        floor=stop + capture + start,
        floor_no_early_mean=statistics.mean(stop + capture + upload(vm) + start for vm in vms),
        peak_down=peak_down,
        peak_running=result["peak_running"],
        pokes=result["pokes"],
        api_calls=calls,
        failed=result["failed"],
        real_seconds=time.perf_counter() - real_start,
        stage_peak_active=result["stage_peak_active"],
    )


class _Driver:
    """The discrete-event loop: events are (simulated time, seq, kind, task)."""

    def __init__(self, settings: Settings, emulator: VirtualEmulator, vms: list[Vm]):
        self.s, self.emu, self.vms = settings, emulator, vms
        self.clock = emulator.clock
        self.events: list[tuple[float, int, str, Task]] = []
        self.seq = itertools.count()
        self.ready: list[Task] = []
        self.running: dict[str, int] = dict.fromkeys(STAGES, 0)  # RUNNING/QUEUED tries per task id
        self.in_stage: dict[str, int] = dict.fromkeys(STAGES, 0)  # VMs between first try and the end
        self.stage_peak: dict[str, int] = dict.fromkeys(STAGES, 0)
        self.total_running = 0
        self.in_window = 0  # VMs whose stop began and whose start has not ended
        self.peak_running = 0
        self.long_polls: dict[Task, tuple[tuple[str, str, str], float]] = {}
        self.pokes = 0
        self.failed = 0
        self.last_done = 0.0
        self.hook: Any = None
        self.tasks: dict[tuple[int, str], Task] = {}
        for vm in vms:
            for stage in STAGES:
                self.tasks[vm.index, stage] = Task(vm, stage, WEIGHTS[settings.weight_rule][stage])

    def push(self, when: float, kind: str, task: Task) -> None:
        heapq.heappush(self.events, (when, next(self.seq), kind, task))

    def set_time(self, when: float) -> None:
        self.clock.advance(when - self.clock.now())

    def run(self) -> dict[str, Any]:
        for vm in self.vms:
            self.make_ready(self.tasks[vm.index, "precheck"], 0.0)
        while self.events or self.long_polls:
            candidates = [self.events[0][0]] if self.events else []
            if self.long_polls:
                candidates.append(min(deadline for _, deadline in self.long_polls.values()))
                upcoming = self.emu.next_event_time()
                if upcoming is not None:
                    candidates.append(upcoming)
            now = max(min(candidates), self.clock.now())
            self.set_time(now)
            while self.events and self.events[0][0] <= now:
                _, _, kind, task = heapq.heappop(self.events)
                getattr(self, f"on_{kind}")(task, now)
            self.check_long_polls(now)
            self.schedule(now)
        return {
            "makespan": self.last_done,
            "peak_running": self.peak_running,
            "pokes": self.pokes,
            "failed": self.failed,
            "stage_peak_active": self.stage_peak,
        }

    # ---- the scheduler -------------------------------------------------------------------------
    def make_ready(self, task: Task, when: float) -> None:
        self.push(when + self.s.scheduler_latency, "ready", task)

    def on_ready(self, task: Task, now: float) -> None:
        task.state = "ready"
        self.ready.append(task)

    def capped(self, task: Task) -> bool:
        if task.stage not in SENSOR_STAGES:
            return False
        if self.s.cap_rule == "stage":  # at most cap VMs in the stage; a VM in it keeps its place
            return task.tries == 0 and self.in_stage[task.stage] >= self.s.cap
        if self.s.cap_rule == "window":  # at most cap VMs between their stop and the end of their start
            return task.stage == "stop" and task.tries == 0 and self.in_window >= self.s.cap
        return self.running[task.stage] >= self.s.cap

    def schedule(self, now: float) -> None:
        if not self.ready:
            return
        self.ready.sort(key=lambda t: (-t.weight, t.vm.index))
        keep = []
        for task in self.ready:
            if (self.s.max_active_tasks and self.total_running >= self.s.max_active_tasks) or self.capped(
                task
            ):
                keep.append(task)
                continue
            task.state = "running"
            if task.tries == 0:
                self.in_window += task.stage == "stop"
                self.in_stage[task.stage] += 1
                self.stage_peak[task.stage] = max(self.stage_peak[task.stage], self.in_stage[task.stage])
            task.tries += 1
            self.running[task.stage] += 1
            self.total_running += 1
            self.peak_running = max(self.peak_running, self.total_running)
            self.push(now + self.s.try_overhead, "poke", task)
        self.ready = keep

    # ---- a try ---------------------------------------------------------------------------------
    def operator(self, task: Task) -> Any:
        if task.operator is None:
            upstream = {
                "record": self.tasks[task.vm.index, "precheck"].value,
                "snapshots": self.tasks[task.vm.index, "snapshot"].value,
            }
            task.operator = make_operator(
                task.stage,
                project=PROJECT,
                zone=task.vm.zone,
                instance=task.vm.name,
                wait_mode=self.s.wait_mode,
                poke_interval=self.s.poke_interval,
                early_restart=self.s.early_restart,
                **upstream,
            )
            if self.hook is not None:
                task.operator._hook = self.hook  # one hook and its clients for every task: saves real time
        return task.operator

    def on_poke(self, task: Task, now: float) -> None:
        operator = self.operator(task)
        self.emu.wait_requests.clear()
        started = time.perf_counter()
        try:
            if hasattr(operator, "poke"):
                result = operator.poke(context(task.vm.index))
                done, value = bool(result), getattr(result, "xcom_value", result)
            else:
                done, value = True, operator.execute(context(task.vm.index))
        except Exception as exc:  # a failed task: counted, its VM's chain stops there
            print(f"<!-- {task.vm.name} {task.stage} failed: {exc} -->", file=sys.stderr)
            self.failed += 1
            done, value = None, None
        if self.hook is None:
            self.hook = operator._hook
        wall = time.perf_counter() - started
        self.pokes += 1
        task.pokes += 1
        if done is None:
            self.release(task, now + wall, "failed")
        elif done:
            task.value = value
            self.release(task, now + wall, "done")
        elif self.s.wait_mode == "reschedule":
            self.release(task, now + wall, "rescheduled")
        elif self.emu.wait_requests:
            self.long_polls[task] = (self.emu.wait_requests[-1], now + self.s.hold)
        else:
            self.push(now + wall + self.s.poke_interval, "poke", task)

    def check_long_polls(self, now: float) -> None:
        for task, (key, deadline) in list(self.long_polls.items()):
            if self.emu.operation_done(key):
                del self.long_polls[task]
                self.push(now, "poke", task)
            elif now >= deadline:
                del self.long_polls[task]
                self.push(deadline + self.s.poke_interval, "poke", task)

    def release(self, task: Task, when: float, outcome: str) -> None:
        self.push(when, outcome, task)

    def free_slot(self, task: Task, *, finished: bool = True) -> None:
        self.running[task.stage] -= 1
        self.total_running -= 1
        if finished:
            self.in_stage[task.stage] -= 1

    def on_done(self, task: Task, now: float) -> None:
        self.free_slot(task)
        self.in_window -= task.stage == "start"
        task.state = "done"
        self.last_done = max(self.last_done, now)
        following = NEXT[task.stage]
        if following is not None:
            self.make_ready(self.tasks[task.vm.index, following], now)

    def on_failed(self, task: Task, now: float) -> None:
        self.free_slot(task)
        self.in_window -= task.stage in ("stop", "snapshot", "start")
        task.state = "failed"
        self.last_done = max(self.last_done, now)

    def on_rescheduled(self, task: Task, now: float) -> None:
        self.free_slot(task, finished=False)
        task.state = "rescheduled"
        self.push(now + self.s.poke_interval + self.s.scheduler_latency, "ready", task)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(result: FleetResult) -> list[Any]:
    s, d = result.settings, result.downtimes
    return [
        s.vms,
        s.cap,
        s.wait_mode,
        "yes" if s.early_restart else "no",
        s.max_active_tasks or "unlimited",
        f"{result.makespan / 60:.1f}",
        f"{result.ideal / 60:.1f}",
        f"{result.makespan / result.ideal:.2f}",
        f"{result.longest_path / 60:.1f}",
        f"{statistics.mean(d):.0f}",
        f"{percentile(d, 0.95):.0f}",
        f"{max(d):.0f}",
        f"{result.floor:.0f}",
        f"{result.floor_no_early_mean:.0f}",
        result.peak_down,
        result.stage_peak_active.get("stop", 0),
        result.peak_running,
        result.pokes,
        result.api_calls,
        result.failed,
        f"{result.real_seconds:.0f}",
    ]


HEADERS = [
    "VMs",
    "cap",
    "wait_mode",
    "early restart",
    "max_active_tasks",
    "makespan min",
    "ideal min",
    "makespan / ideal",
    "longest VM path min",
    "downtime mean s",
    "p95 s",
    "max s",
    "floor s",
    "floor w/o early restart (mean) s",
    "peak VMs down at once",
    "peak VMs in stop stage",
    "peak running tries",
    "pokes",
    "API calls",
    "failed tasks",
    "real s",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--caps", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--wait-modes", nargs="+", default=["reschedule"], choices=["reschedule", "worker"])
    parser.add_argument("--early-restart", nargs="+", default=["no", "yes"], choices=["no", "yes"])
    parser.add_argument(
        "--max-active-tasks", type=int, nargs="+", default=[16], help="per DAG run; 0 = unlimited"
    )
    parser.add_argument("--cap-rule", choices=sorted(CAP_RULES), default="airflow")
    parser.add_argument("--weight-rule", choices=sorted(WEIGHTS), default="downstream")
    parser.add_argument("--poke-interval", type=float, default=POKE_INTERVAL)
    parser.add_argument("--try-overhead", type=float, default=DEFAULT_TRY_OVERHEAD)
    parser.add_argument("--scheduler-latency", type=float, default=0.0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 VMs, cap 5, both restart modes")
    args = parser.parse_args(argv)
    if args.quick:
        args.vms, args.caps = [20], [5]
    results = []
    for vms in args.vms:
        for cap in args.caps:
            for mode in args.wait_modes:
                for limit in args.max_active_tasks:
                    for early in args.early_restart:
                        settings = Settings(
                            vms=vms,
                            cap=cap,
                            wait_mode=mode,
                            early_restart=early == "yes",
                            max_active_tasks=limit,
                            cap_rule=args.cap_rule,
                            poke_interval=args.poke_interval,
                            try_overhead=args.try_overhead,
                            scheduler_latency=args.scheduler_latency,
                            weight_rule=args.weight_rule,
                        )
                        results.append(run_fleet(settings))
                        print(
                            f"<!-- {markdown_table(HEADERS, [row(results[-1])]).splitlines()[-1]} -->",
                            file=sys.stderr,
                            flush=True,
                        )
    cap_rule = CAP_RULES[args.cap_rule]
    print(
        f"### Fleet run (emulator latency model; poke_interval {args.poke_interval:g} s; per-try overhead "
        f"{args.try_overhead:g} s; scheduler latency {args.scheduler_latency:g} s; cap counts {cap_rule}; "
        f"weight rule {args.weight_rule})\n"
    )
    print(markdown_table(HEADERS, [row(r) for r in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
