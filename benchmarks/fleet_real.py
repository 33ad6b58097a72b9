"""A fleet run under a real scheduler: downtime / floor, VMs down at once, makespan / ideal, tries, slots.

    uv run --no-sync python benchmarks/fleet_real.py [--vms 8 40] [--caps 4 10]
        [--snapshot-modes standard instant] [--wait-modes defer reschedule worker] [--early-restart]
        [--disk-gb 10] [--large-disk-gb 2048] [--matrix] [--quick] [--json]

Airflow 3 runs as `vm-backup local-env` runs it (``LocalAirflow``: scheduler, DAG processor, triggerer,
API server, LocalExecutor on SQLite, Airflow's defaults otherwise) against the Compute Engine emulator in
this process, at time scale 1 with its default timings (stop 30 s, start 20 s, snapshot CREATING 15 s
then UPLOADING 5 s + 1 s per GB of the disk). One group per configuration (N VMs with one boot disk of
``--disk-gb`` each, in one zone; ``max_concurrent_vms`` C; the group's every other key at its default),
all in one generated config; each configuration's DAG is triggered once, alone, and waited for.

What is measured, from the emulator's operation records (insert and end time of each operation; a
thread applies the emulator's due changes every 50 ms, so an end time is within 50 ms of the modelled
end whoever polls) and from Airflow's metadata database:
- downtime of a VM = its stop operation's insert -> its start operation's end (retries reuse the request
  id, hence the operation: the first stop and the last start count). Floor of a VM = stop + capture +
  start from the timings and its largest disk: capture = CREATING with ``early_restart``, CREATING +
  UPLOADING without (the VM waits for READY), the modelled instant snapshot creation in instant mode.
- peak VMs down at once: the most downtime intervals overlapping, against the cap.
- makespan: first stop request -> end of the last task of the VMs' task group (and -> end of the DAG
  run, run report included). Ideal = max(sum of the floors / cap, longest VM path): the cap bounds VMs
  down at once, so the floors share C lanes; a VM's path is its floor plus what must follow it before
  its last task can end (with early restart the upload past the start: stop + CREATING + max(UPLOADING,
  start); in instant mode the conversion, modelled as a standard snapshot's CREATING + UPLOADING of the
  largest disk). Resolve and report tasks, task start-up and scheduling are in the makespan, not in
  the ideal.
- task tries per VM: the sum of the final ``try_number`` of the VM's tasks (a retry adds one; a
  reschedule or a deferral does not). Task runs per VM: how often one of its tasks entered ``running``
  (each poke in reschedule mode, each resume after a deferral).
- worker-slot seconds per VM: seconds its tasks spent in state ``running`` (they hold an executor slot
  then; queued, deferred and up_for_reschedule hold none), sampled from the database every 0.25 s.
The machine's load average is printed beside each run: on the shared 2-core machine absolute times are
noisy. Times are simulated seconds (= real seconds at time scale 1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gce_emulator import Emulator
from gce_emulator.model import DEFAULT_TIMINGS
from gce_vm_backup import stages
from gce_vm_backup.config import Group, parse_config

PROJECT = "fleet-project"
ZONE = "us-central1-a"
SNAPSHOT_MODES = ("standard", "instant")
WAIT_MODES = ("defer", "reschedule", "worker")
# Candidate names of the emulator's instant snapshot creation timing (the instant-mode work adds one).
INSTANT_TIMING_KEYS = ("instant_snapshot_creating", "instant_snapshot_create", "instant_snapshot")
SAMPLE_INTERVAL = 0.25
TICK_INTERVAL = 0.05


@dataclass(frozen=True)
class Spec:
    """One configuration: one group, one DAG run."""

    vms: int
    cap: int
    snapshot_mode: str = "standard"
    wait_mode: str = "defer"
    early_restart: bool = False
    disk_gb: int = 10
    large_disk_gb: int = 0  # > 0: the first VM also has a data disk of this size
    poke_interval: int | None = None  # None: the config's default
    retry_delay: int | None = None  # None: the config's default

    @property
    def group_id(self) -> str:
        mode = {"standard": "std", "instant": "ins"}[self.snapshot_mode]
        gid = f"f{self.vms}-c{self.cap}-{mode}-{self.wait_mode[:3]}-d{self.disk_gb}"
        return (
            gid
            + ("-er" if self.early_restart else "")
            + (f"-l{self.large_disk_gb}" if self.large_disk_gb else "")
        )

    def vm_names(self) -> list[str]:
        return [f"{self.group_id}-{i:03d}" for i in range(self.vms)]

    def disks(self, index: int) -> list[int]:
        return [self.disk_gb] + ([self.large_disk_gb] if index == 0 and self.large_disk_gb else [])


def dag_id_for(group_id: str) -> str:
    """The group's DAG id, as the DAG factory names it (imported late: the factory imports Airflow, which
    must not read or create ~/airflow in this process; main() points it at the benchmark's home)."""
    from gce_vm_backup import dag_factory

    return dag_factory.dag_id_for(group_id)


def seed(specs: list[Spec]) -> dict[str, Any]:
    instances = []
    for spec in specs:
        for index, name in enumerate(spec.vm_names()):
            sizes = spec.disks(index)
            disks = [{"name": name, "size_gb": sizes[0], "boot": True}]
            disks += [{"name": f"{name}-data", "size_gb": size} for size in sizes[1:]]
            instances.append({"name": name, "disks": disks})
    return {"projects": {PROJECT: {"zones": {ZONE: {"instances": instances}}}}}


def config_text(specs: list[Spec]) -> str:
    lines = ["version: 1", "deployment: bench", "groups:"]
    for spec in specs:
        lines += [
            f"  {spec.group_id}:",
            "    schedule: null",
            '    start_date: "2026-01-01T00:00:00+00:00"',
            f"    wait_mode: {spec.wait_mode}",
            f"    max_concurrent_vms: {spec.cap}",
            f"    early_restart: {'true' if spec.early_restart else 'false'}",
        ]
        if spec.snapshot_mode != "standard":
            lines.append(f"    snapshot_mode: {spec.snapshot_mode}")
        if spec.poke_interval is not None:
            lines.append(f"    poke_interval: {spec.poke_interval}")
        if spec.retry_delay is not None:
            lines.append(f"    retry_delay: {spec.retry_delay}")
        lines.append("    targets:")
        lines += [f"      - {{project: {PROJECT}, zone: {ZONE}, instance: {vm}}}" for vm in spec.vm_names()]
    return "\n".join(lines) + "\n"


def runnable(specs: list[Spec]) -> tuple[list[Spec], list[str]]:
    """The specs this checkout can run, and a message for each one it cannot."""
    keep, skipped = [], []
    for spec in specs:
        if spec.snapshot_mode != "standard" and "snapshot_mode" not in Group.model_fields:
            skipped.append(f"{spec.group_id}: skipped: this checkout's config has no `snapshot_mode` key yet")
            continue
        if spec.snapshot_mode == "instant" and not any(k in DEFAULT_TIMINGS for k in INSTANT_TIMING_KEYS):
            skipped.append(f"{spec.group_id}: skipped: the emulator has no instant snapshot timing yet")
            continue
        _, problems = parse_config(config_text([spec]), "<generated config>", environ={})
        if problems:
            skipped.append(f"{spec.group_id}: skipped: {'; '.join(map(str, problems))}")
            continue
        keep.append(spec)
    return keep, skipped


# ---- the model: floors, paths, ideal ---------------------------------------------------------------
def vm_model(spec: Spec, index: int, timings: dict[str, float]) -> tuple[float, float]:
    """(floor, path) of VM ``index`` in simulated seconds: see the module docstring."""
    stop, start, creating = timings["stop"], timings["start"], timings["snapshot_creating"]
    upload = timings["snapshot_uploading"] + timings["snapshot_uploading_per_gb"] * max(spec.disks(index))
    if spec.snapshot_mode == "instant":
        instant = next(timings[k] for k in INSTANT_TIMING_KEYS if k in timings)
        floor = stop + instant + start
        return floor, floor + creating + upload
    if spec.early_restart:
        return stop + creating + start, stop + creating + max(upload, start)
    floor = stop + creating + upload + start
    return floor, floor


def ideal_makespan(floors: list[float], paths: list[float], cap: int) -> float:
    return max(sum(floors) / cap, max(paths))


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant; an end at the same instant as a start comes first."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    open_now = peak = 0
    for _, delta in events:
        open_now += delta
        peak = max(peak, open_now)
    return peak


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def downtime_intervals(operations: list[Any], vm_paths: list[str]) -> dict[str, tuple[float, float] | None]:
    """Per VM path: (first stop insert, last start end), None when it was not stopped and started."""
    result: dict[str, tuple[float, float] | None] = {}
    for path in vm_paths:
        stops = [op.insert_time for op in operations if op.target == path and op.operation_type == "stop"]
        starts = [
            op.end_time
            for op in operations
            if op.target == path and op.operation_type == "start" and op.end_time is not None and not op.error
        ]
        result[path] = (min(stops), max(starts)) if stops and starts else None
    return result


# ---- sampling the run --------------------------------------------------------------------------------
@dataclass
class TaskSample:
    state: str | None = None
    try_number: int = 0
    running_seconds: float = 0.0
    runs: int = 0


class Sampler(threading.Thread):
    """Ticks the emulator every TICK_INTERVAL and samples the run's task instances every SAMPLE_INTERVAL."""

    def __init__(self, env: Any, emulator: Emulator, dag_id: str, run_id: str):
        super().__init__(daemon=True, name="fleet-sampler")
        self.env, self.emulator, self.dag_id, self.run_id = env, emulator, dag_id, run_id
        self.tasks: dict[tuple[str, int], TaskSample] = {}
        self.errors = 0
        self._halt = threading.Event()

    def run(self) -> None:
        query = (
            "SELECT task_id, map_index, state, try_number FROM task_instance"
            " WHERE dag_id = %s AND run_id = %s"
        )
        last = time.monotonic()
        next_sample = last
        while not self._halt.wait(TICK_INTERVAL):
            with self.emulator.world.lock:
                self.emulator.world.tick()
            now = time.monotonic()
            if now < next_sample:
                continue
            next_sample = now + SAMPLE_INTERVAL
            try:
                rows = self.env._query(query, (self.dag_id, self.run_id))
            except Exception:  # the database is busy for a moment: count it and sample again later
                self.errors += 1
                continue
            elapsed, last = now - last, now
            for task_id, map_index, state, try_number in rows:
                sample = self.tasks.setdefault((task_id, map_index), TaskSample())
                if state == "running":
                    sample.running_seconds += elapsed if sample.state == "running" else elapsed / 2
                    sample.runs += sample.state != "running"
                elif sample.state == "running":
                    sample.running_seconds += elapsed / 2
                sample.state, sample.try_number = state, int(try_number or 0)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


# ---- one run -----------------------------------------------------------------------------------------
@dataclass
class Result:
    spec: Spec
    state: str
    load_before: float
    load_after: float
    downtimes: list[float] = field(default_factory=list)
    floors: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    peak_down: int = 0
    makespan_tasks: float = 0.0
    makespan_run: float = 0.0
    ideal: float = 0.0
    tries_per_vm: list[int] = field(default_factory=list)
    runs_per_vm: list[int] = field(default_factory=list)
    slot_seconds_per_vm: list[float] = field(default_factory=list)
    slot_seconds_by_stage: dict[str, float] = field(default_factory=dict)  # mean per VM
    api_calls: int = 0
    not_restored: list[str] = field(default_factory=list)
    large_vm_downtime: float | None = None
    sample_errors: int = 0
    real_seconds: float = 0.0


def _parse_time(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def run_one(
    env: Any, emulator: Emulator, spec: Spec, timings: dict[str, float], wall_at_zero: float
) -> Result:
    """Trigger the spec's DAG once, wait (bounded) and measure. Times are simulated seconds."""
    scale = emulator.clock.time_scale
    dag_id, run_id = dag_id_for(spec.group_id), f"bench-{spec.group_id}-{int(time.time())}"
    models = [vm_model(spec, i, timings) for i in range(spec.vms)]
    floors = [f for f, _ in models]
    ideal = ideal_makespan(floors, [p for _, p in models], spec.cap)
    bound = 600 + 4 * ideal / scale  # real seconds
    result = Result(spec, "timeout", os.getloadavg()[0], 0.0, floors=floors, ideal=ideal)
    calls_before = len(emulator.calls)
    began = time.monotonic()
    sampler = Sampler(env, emulator, dag_id, run_id)
    response = env.trigger(dag_id, {"vms": [], "dry_run": False}, run_id=run_id)
    if response.status_code != 200:
        raise RuntimeError(f"trigger {dag_id}: HTTP {response.status_code} {response.text[:500]}")
    sampler.start()
    try:
        run = env.wait_for_run(dag_id, run_id, timeout=bound, interval=2.0)
        result.state = run["state"]
    except Exception as exc:  # a run past its bound is failed, so it does not load the next one
        print(f"<!-- {dag_id}: {exc} -->", file=sys.stderr, flush=True)
        env.api("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}", json={"state": "failed"})
        run = env.api_json("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
    finally:
        sampler.stop()
    result.real_seconds = time.monotonic() - began
    result.load_after = os.getloadavg()[0]
    result.sample_errors = sampler.errors
    result.api_calls = len(emulator.calls) - calls_before
    with emulator.world.lock:
        emulator.world.tick()
        operations = list(emulator.world.operations.values())
    paths = [f"projects/{PROJECT}/zones/{ZONE}/instances/{vm}" for vm in spec.vm_names()]
    intervals = downtime_intervals(operations, paths)
    done = [iv for iv in intervals.values() if iv is not None]
    result.not_restored = [p.rsplit("/", 1)[-1] for p, iv in intervals.items() if iv is None]
    result.downtimes = [b - a for a, b in done]
    result.ratios = [(iv[1] - iv[0]) / f for iv, f in zip(intervals.values(), floors, strict=True) if iv]
    result.peak_down = peak_overlap(done)
    if spec.large_disk_gb and intervals[paths[0]] is not None:
        first = intervals[paths[0]]
        assert first is not None
        result.large_vm_downtime = first[1] - first[0]

    def sim(wall: float | None) -> float:
        return ((wall or time.time()) - wall_at_zero) * scale

    first_stop = min((a for a, _ in done), default=0.0)
    tis = env.task_instances(dag_id, run_id)
    prefix = stages.tier_group(1) + "."
    vm_tis = [t for t in tis if t["task_id"].startswith(prefix)]
    last_end = max((_parse_time(t.get("end_date")) or 0.0 for t in vm_tis), default=0.0)
    result.makespan_tasks = sim(last_end) - first_stop
    result.makespan_run = sim(_parse_time(run.get("end_date"))) - first_stop
    for index in range(spec.vms):
        mine = [t for t in vm_tis if t["map_index"] == index]
        samples = [sampler.tasks.get((t["task_id"], index), TaskSample()) for t in mine]
        result.tries_per_vm.append(sum(int(t["try_number"] or 0) for t in mine))
        result.runs_per_vm.append(sum(s.runs for s in samples))
        result.slot_seconds_per_vm.append(sum(s.running_seconds for s in samples))
    for t in vm_tis:
        stage = t["task_id"].removeprefix(prefix)
        seconds = sampler.tasks.get((t["task_id"], t["map_index"]), TaskSample()).running_seconds
        result.slot_seconds_by_stage[stage] = (
            result.slot_seconds_by_stage.get(stage, 0.0) + seconds / spec.vms
        )
    return result


# ---- output --------------------------------------------------------------------------------------
def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.mean(values):.2f}, {percentile(values, 0.95):.2f}, {max(values):.2f}"


def summary(result: Result) -> dict[str, Any]:
    r = result
    mean = statistics.mean
    return {
        "spec": asdict(r.spec),
        "group": r.spec.group_id,
        "state": r.state,
        "load_1min": [round(r.load_before, 2), round(r.load_after, 2)],
        "downtime_s": {
            "mean": mean(r.downtimes),
            "p95": percentile(r.downtimes, 0.95),
            "max": max(r.downtimes),
        }
        if r.downtimes
        else None,
        "floor_s_mean": mean(r.floors),
        "downtime_over_floor": {
            "mean": mean(r.ratios),
            "p95": percentile(r.ratios, 0.95),
            "max": max(r.ratios),
        }
        if r.ratios
        else None,
        "peak_vms_down": r.peak_down,
        "cap": r.spec.cap,
        "ideal_s": r.ideal,
        "makespan_tasks_s": r.makespan_tasks,
        "makespan_run_s": r.makespan_run,
        "tries_per_vm": mean(r.tries_per_vm) if r.tries_per_vm else None,
        "runs_per_vm": mean(r.runs_per_vm) if r.runs_per_vm else None,
        "slot_s_per_vm": mean(r.slot_seconds_per_vm) if r.slot_seconds_per_vm else None,
        "slot_s_per_vm_by_stage": r.slot_seconds_by_stage,
        "api_calls_per_vm": r.api_calls / r.spec.vms,
        "not_restored": r.not_restored,
        "large_vm_downtime_s": r.large_vm_downtime,
        "large_vm_over_others_median": r.large_vm_downtime / statistics.median(r.downtimes[1:])
        if r.large_vm_downtime is not None and len(r.downtimes) > 1
        else None,
        "downtimes_s": r.downtimes,
        "floors_s": r.floors,
        "sample_errors": r.sample_errors,
        "real_s": r.real_seconds,
    }


HEADERS = [
    "snapshot mode",
    "wait_mode",
    "early restart",
    "run",
    "downtime / floor (mean, p95, max)",
    "downtime s mean",
    "floor s mean",
    "VMs down at once",
    "makespan / ideal (tasks)",
    "makespan / ideal (run)",
    "ideal s",
    "tries / VM",
    "task runs / VM",
    "slot s / VM",
    "API calls / VM",
    "large-disk VM / others",
    "load 1-min",
]


def row(result: Result) -> list[str]:
    s = summary(result)
    large = s["large_vm_over_others_median"]
    return [
        result.spec.snapshot_mode,
        result.spec.wait_mode,
        "yes" if result.spec.early_restart else "no",
        result.state + (f" ({len(result.not_restored)} VMs not restarted)" if result.not_restored else ""),
        _stats(result.ratios),
        f"{s['downtime_s']['mean']:.0f}" if s["downtime_s"] else "-",
        f"{s['floor_s_mean']:.0f}",
        f"{result.peak_down} of a cap of {result.spec.cap}",
        f"{result.makespan_tasks / result.ideal:.2f}",
        f"{result.makespan_run / result.ideal:.2f}",
        f"{result.ideal:.0f}",
        f"{s['tries_per_vm']:.1f}" if s["tries_per_vm"] is not None else "-",
        f"{s['runs_per_vm']:.1f}" if s["runs_per_vm"] is not None else "-",
        f"{s['slot_s_per_vm']:.0f}" if s["slot_s_per_vm"] is not None else "-",
        f"{s['api_calls_per_vm']:.0f}",
        f"{large:.2f}" if large is not None else "-",
        f"{result.load_before:.1f} -> {result.load_after:.1f}",
    ]


def markdown(results: list[Result], scale: float) -> str:
    """One table per (VMs, cap, disks), a row per snapshot mode, wait mode and early restart."""
    out = []
    for key in sorted({(r.spec.vms, r.spec.cap, r.spec.disk_gb, r.spec.large_disk_gb) for r in results}):
        vms, cap, disk_gb, large = key
        mine = [r for r in results if (r.spec.vms, r.spec.cap, r.spec.disk_gb, r.spec.large_disk_gb) == key]
        title = f"### Fleet run, real scheduler: {vms} VMs, max_concurrent_vms {cap}, {disk_gb} GB boot disks"
        title += f", one VM with a {large} GB data disk" if large else ""
        title += f" (time scale {scale:g})" if scale != 1 else ""
        lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join("---" for _ in HEADERS) + "|"]
        lines += ["| " + " | ".join(row(r)) + " |" for r in mine]
        out.append(title + "\n\n" + "\n".join(lines))
    return "\n\n".join(out)


# ---- the command ---------------------------------------------------------------------------------
# What the README shows: every wait mode and snapshot mode on 8 VMs / cap 4 and 40 VMs / cap 10, early
# restart and 40 VMs / cap 4 for the default wait mode, and the instant mode's large-disk claim.
MATRIX = [
    *(
        Spec(vms, cap, snapshot_mode=mode, wait_mode=wait)
        for mode in SNAPSHOT_MODES
        for wait in WAIT_MODES
        for vms, cap in ((8, 4), (40, 10))
    ),
    Spec(8, 4, early_restart=True),
    Spec(40, 10, early_restart=True),
    Spec(40, 4),
    Spec(8, 4, snapshot_mode="instant", large_disk_gb=2048),
]
# Short waits at 10x: the deferral of one poke may be reported after the next poke started (Airflow's
# race, see tests/e2e/conftest.py); a short retry_delay keeps such a retry cheap.
QUICK = [Spec(2, 1, poke_interval=6, retry_delay=2)]
QUICK_TIME_SCALE = 10.0


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def specs_from(args: argparse.Namespace) -> list[Spec]:
    if args.quick:
        return list(QUICK)
    if args.matrix:
        return list(MATRIX)
    return [
        Spec(
            vms,
            cap,
            snapshot_mode=mode,
            wait_mode=wait,
            early_restart=early == "yes",
            disk_gb=args.disk_gb,
            large_disk_gb=args.large_disk_gb,
            poke_interval=args.poke_interval,
        )
        for vms in args.vms
        for cap in args.caps
        for mode in args.snapshot_modes
        for wait in args.wait_modes
        # early restart is a standard-mode setting: an instant snapshot has no upload to skip
        for early in (args.early_restart if mode == "standard" else ["no"])
    ]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--vms", type=positive, nargs="+", default=[8, 40], help="VMs in the group (8 40)")
    p.add_argument("--caps", type=positive, nargs="+", default=[4, 10], help="max_concurrent_vms (4 10)")
    p.add_argument("--snapshot-modes", nargs="+", choices=SNAPSHOT_MODES, default=list(SNAPSHOT_MODES))
    p.add_argument("--wait-modes", nargs="+", choices=WAIT_MODES, default=list(WAIT_MODES))
    p.add_argument(
        "--early-restart",
        nargs="*",
        choices=["no", "yes"],
        default=["no"],
        help="alone: yes; or the values to run (no yes); default no",
    )
    p.add_argument("--disk-gb", type=positive, default=10, help="each VM's boot disk (default 10)")
    p.add_argument(
        "--large-disk-gb",
        type=positive,
        nargs="?",
        const=2048,
        default=0,
        help="the first VM also gets a data disk of this size (alone: 2048)",
    )
    p.add_argument("--poke-interval", type=positive, default=None, help="the groups' poke_interval")
    p.add_argument("--time-scale", type=float, default=None, help="emulator speed (default 1; --quick 10)")
    p.add_argument("--matrix", action="store_true", help="the README's runs (about 2 hours; see README)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 VMs, cap 1, standard, defer")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE", help="JSON to FILE (alone: stdout)")
    p.add_argument("--home", type=Path, help="Airflow home (default: a temporary folder, removed)")
    return p


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM ends the run like Ctrl-C: every Airflow process is stopped


def main(argv: list[str] | None = None) -> int:
    from vm_backup_cli.local_env import LocalAirflow, LocalEnvError

    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    scale = args.time_scale or (QUICK_TIME_SCALE if args.quick else 1.0)
    if args.early_restart == []:
        args.early_restart = ["yes"]
    specs, skipped = runnable(specs_from(args))
    for message in skipped:
        print(f"<!-- {message} -->", file=sys.stderr, flush=True)
    results: list[Result] = []
    if specs:
        home = args.home or Path(tempfile.mkdtemp(prefix="fleet-real-"))
        config = home / "fleet_config.yaml"
        home.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("AIRFLOW_HOME", str(home / "benchmark-process"))
        config.write_text(config_text(specs))
        timings = dict(DEFAULT_TIMINGS)
        try:
            with Emulator(seed(specs), time_scale=scale) as emulator:
                wall_at_zero = time.time() - emulator.clock.now() / scale
                with LocalAirflow(home, emulator.url, config=config) as env:
                    for spec in specs:
                        env.wait_for_dag(dag_id_for(spec.group_id), timeout=300)
                    for spec in specs:
                        results.append(run_one(env, emulator, spec, timings, wall_at_zero))
                        print(
                            f"<!-- {spec.group_id}: {' | '.join(row(results[-1]))} -->",
                            file=sys.stderr,
                            flush=True,
                        )
        except LocalEnvError as exc:
            print(f"fleet_real: {exc}", file=sys.stderr)
            return 1
        finally:
            if args.home is None:
                shutil.rmtree(home, ignore_errors=True)
    document = {"time_scale": scale, "timings": DEFAULT_TIMINGS, "skipped": skipped}
    document["runs"] = [summary(r) for r in results]
    if args.json != "-":
        print(markdown(results, scale) if results else "No run: every configuration was skipped.")
        for message in skipped:
            print(f"\n- {message}")
    if args.json:
        text = json.dumps(document, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0 if all(r.state == "success" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
