"""The fleet benchmark's model and measures (benchmarks/fleet_real.py runs the fleet; this module
computes): a configuration (``Spec``), each VM's floor and path from the emulator's timings, the ideal
makespan, downtime intervals from the emulator's operations, their overlap, percentiles, and the
Markdown and JSON output. Pure functions: nothing here starts Airflow or the emulator.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

SNAPSHOT_MODES = ("standard", "instant")
WAIT_MODES = ("defer", "reschedule", "worker")
# The emulator's modelled instant snapshot creation (CREATING -> READY, whatever the disk size).
INSTANT_TIMING = "instant_snapshot_create"


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


# ---- the model: floors, paths, ideal ---------------------------------------------------------------
def vm_model(spec: Spec, index: int, timings: dict[str, float]) -> tuple[float, float]:
    """(floor, path) of VM ``index`` in simulated seconds: see the module docstring."""
    stop, start, creating = timings["stop"], timings["start"], timings["snapshot_creating"]
    upload = timings["snapshot_uploading"] + timings["snapshot_uploading_per_gb"] * max(spec.disks(index))
    if spec.snapshot_mode == "instant":
        floor = stop + timings[INSTANT_TIMING] + start
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


def downtime_intervals(
    operations: list[Any], vm_paths: list[str]
) -> dict[str, tuple[float, float | None] | None]:
    """Per VM path: (first stop insert, end of its last successful start, None if none came after the
    stop), or None when it was not stopped. A start that ended before the stop does not bring it back."""
    result: dict[str, tuple[float, float | None] | None] = {}
    for path in vm_paths:
        stops = [op.insert_time for op in operations if op.target == path and op.operation_type == "stop"]
        if not stops:
            result[path] = None
            continue
        starts = [
            op.end_time
            for op in operations
            if op.target == path
            and op.operation_type == "start"
            and op.end_time is not None
            and not op.error
            and op.end_time >= min(stops)
        ]
        result[path] = (min(stops), max(starts) if starts else None)
    return result


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
    instant_snapshots: int = 0  # instant snapshots created during the run (0 in standard mode)
    sample_errors: int = 0
    real_seconds: float = 0.0


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
        "instant_snapshots": r.instant_snapshots,
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


def notes(result: Result) -> list[str]:
    """What makes a run's figures not what they claim to be, in a few words each."""
    found = []
    if result.not_restored:
        found.append(f" ({len(result.not_restored)} VMs not restarted)")
    disks = sum(len(result.spec.disks(i)) for i in range(result.spec.vms))
    if result.spec.snapshot_mode == "instant" and result.instant_snapshots < disks:
        # the config took snapshot_mode but the DAG did not act on it: the floors would be wrong
        found.append(
            f" (instant mode not in effect: {result.instant_snapshots} instant snapshots, {disks} disks)"
        )
    return found


def row(result: Result) -> list[str]:
    s = summary(result)
    large = s["large_vm_over_others_median"]
    return [
        result.spec.snapshot_mode,
        result.spec.wait_mode,
        "yes" if result.spec.early_restart else "no",
        result.state + "".join(notes(result)),
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
