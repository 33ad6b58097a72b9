"""A fleet run under a real scheduler: downtime / floor, VMs down at once, makespan / ideal, tries, slots.

    uv run --no-sync python benchmarks/fleet_real.py [--vms 8 40] [--caps 4 10]
        [--snapshot-modes standard instant] [--wait-modes defer reschedule worker] [--early-restart]
        [--disk-gb 10] [--large-disk-gb 2048] [--matrix] [--quick] [--json]

Airflow 3 runs as `vm-backup local-env` runs it (``LocalAirflow``: scheduler, DAG processor, triggerer,
API server, LocalExecutor on SQLite, Airflow's defaults otherwise) against the Compute Engine emulator in
this process, at time scale 1 with its default timings (stop 30 s, start 20 s, snapshot CREATING 15 s
then UPLOADING 5 s + 1 s per GB of the disk). One group per configuration (N VMs with one boot disk of
``--disk-gb`` each, in one zone; ``max_concurrent_vms`` C; the group's every other key at its default),
all in one generated config; each configuration's DAG is triggered once, alone, and waited for (at most
600 s + 4 x its ideal makespan, then the run is marked failed and the next one starts). ``--quick``: 2
VMs, cap 1, standard, defer, at time scale 10 with a 6 s ``poke_interval`` and a 2 s ``retry_delay``.

What is measured, from the emulator's operation records (insert and end time of each operation; a
thread applies the emulator's due changes every 50 ms, so an end time is within 50 ms of the modelled
end whoever polls) and from Airflow's metadata database:
- downtime of a VM = its stop operation's insert -> its start operation's end (retries reuse the request
  id, hence the operation: the first stop and the last start count). Floor of a VM = stop + capture +
  start from the timings and its largest disk: capture = CREATING with ``early_restart``, CREATING +
  UPLOADING without (the VM waits for READY), the modelled instant snapshot creation in instant mode.
- peak VMs down at once: the most downtime intervals overlapping, against the cap (a VM never started
  again counts as down until the run's end, and the run says how many).
- makespan: first stop request -> end of the last task of the VMs' task group (and -> end of the DAG
  run, run report included). Ideal = max(sum of the floors / cap, longest VM path): the cap bounds VMs
  down at once, so the floors share C lanes; a VM's path is its floor plus what must follow it before
  its last task can end (with early restart the upload past the start: stop + CREATING + max(UPLOADING,
  start); in instant mode the conversion, modelled as a standard snapshot's CREATING + UPLOADING of the
  largest disk). Task start-up and scheduling are in the makespan, not in the ideal (the resolve and
  precheck tasks come before the first stop; the run report only in the run's makespan).
- task tries per VM: the sum of the final ``try_number`` of the VM's tasks (a retry adds one; a
  reschedule or a deferral does not). Task runs per VM: how often one of its tasks entered ``running``
  (each poke in reschedule mode, each resume after a deferral).
- worker-slot seconds per VM: seconds its tasks spent in state ``running`` (they hold an executor slot
  then; queued, deferred and up_for_reschedule hold none), sampled from the database every 0.25 s.
The machine's load average is printed beside each run: on the shared 2-core machine absolute times are
noisy. Times are simulated seconds (= real seconds at time scale 1); slot seconds are real seconds.
API calls per VM: the emulator's ``operations.wait`` holds 2 s (Compute Engine's up to about 2 minutes),
so a long-poll costs more calls here than there.
The model and the measures are in ``_fleet_measures.py``; this script runs the fleet.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fleet_measures import (
    INSTANT_TIMING,
    SNAPSHOT_MODES,
    WAIT_MODES,
    Result,
    Spec,
    downtime_intervals,
    ideal_makespan,
    markdown,
    peak_overlap,
    row,
    summary,
    vm_model,
)

from gce_emulator import Emulator
from gce_emulator.__main__ import time_scale
from gce_emulator.model import DEFAULT_TIMINGS
from gce_vm_backup.backup import stages
from gce_vm_backup.config.models import Group, parse_config
from vm_backup_cli.local_env import LocalAirflow, LocalEnvError

PROJECT = "fleet-project"
ZONE = "us-central1-a"
SAMPLE_INTERVAL = 0.25
TICK_INTERVAL = 0.05


def dag_id_for(group_id: str) -> str:
    """The group's DAG id, as the DAG factory names it (imported late: the factory imports Airflow, which
    must not read or create ~/airflow in this process; main() points it at the benchmark's home)."""
    from gce_vm_backup.dags import backup as dag_factory

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
        if spec.snapshot_mode == "instant" and INSTANT_TIMING not in DEFAULT_TIMINGS:
            skipped.append(f"{spec.group_id}: skipped: the emulator has no instant snapshot timing yet")
            continue
        _, problems = parse_config(config_text([spec]), "<generated config>", environ={})
        if problems:
            skipped.append(f"{spec.group_id}: skipped: {'; '.join(map(str, problems))}")
            continue
        keep.append(spec)
    return keep, skipped


# ---- sampling the run --------------------------------------------------------------------------------
@dataclass
class TaskSample:
    state: str | None = None
    try_number: int = 0
    running_seconds: float = 0.0
    runs: int = 0


class Sampler(threading.Thread):
    """Ticks the emulator every TICK_INTERVAL and samples the run's task instances every SAMPLE_INTERVAL."""

    def __init__(self, env: LocalAirflow, emulator: Emulator, dag_id: str, run_id: str):
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
def _parse_time(value: str | datetime | None) -> float | None:
    """An Airflow time (ISO text from the REST API or SQLite, a datetime from Postgres) as a timestamp;
    one without a zone is UTC, as Airflow stores it."""
    if not value:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def task_instances(env: LocalAirflow, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Every task instance of the run, from the metadata database (the REST API pages at 100, Airflow's
    ``[api] maximum_page_limit``: 40 VMs have more task instances than that)."""
    query = (
        "SELECT task_id, map_index, try_number, end_date FROM task_instance WHERE dag_id = %s AND run_id = %s"
    )
    names = ("task_id", "map_index", "try_number", "end_date")
    return [dict(zip(names, row, strict=True)) for row in env._query(query, (dag_id, run_id))]


def run_one(
    env: LocalAirflow, emulator: Emulator, spec: Spec, timings: dict[str, float], wall_at_zero: float
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
        raise LocalEnvError(f"trigger {dag_id}: HTTP {response.status_code} {response.text[:500]}")
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
    done: dict[str, tuple[float, float]] = {}  # stopped and started again
    for path, interval in intervals.items():
        if interval is not None and interval[1] is not None:
            done[path] = (interval[0], interval[1])
        elif interval is not None:
            result.not_restored.append(path.rsplit("/", 1)[-1])
    result.downtimes = [b - a for a, b in done.values()]
    result.ratios = [(done[p][1] - done[p][0]) / f for p, f in zip(paths, floors, strict=True) if p in done]
    if spec.large_disk_gb and paths[0] in done:
        result.large_vm_downtime = done[paths[0]][1] - done[paths[0]][0]

    def sim(wall: float | None) -> float:
        return ((wall or time.time()) - wall_at_zero) * scale

    stopped = [iv[0] for iv in intervals.values() if iv is not None]
    first_stop = min(stopped, default=0.0)
    tis = task_instances(env, dag_id, run_id)
    prefix = stages.tier_group(1) + "."
    vm_tis = [t for t in tis if t["task_id"].startswith(prefix)]
    last_end = max((_parse_time(t.get("end_date")) or 0.0 for t in vm_tis), default=0.0)
    result.makespan_tasks = sim(last_end) - first_stop
    result.makespan_run = sim(_parse_time(run.get("end_date"))) - first_stop
    # A VM never started again counts as down until the run's end.
    result.peak_down = peak_overlap(
        [
            (iv[0], first_stop + result.makespan_run if iv[1] is None else iv[1])
            for iv in intervals.values()
            if iv
        ]
    )
    # One run at a time: the instant snapshots created from its first stop to its end are its own.
    result.instant_snapshots = sum(
        op.operation_type == "insert"
        and "/instantSnapshots/" in op.target
        and first_stop <= op.insert_time <= first_stop + result.makespan_run
        for op in operations
    )
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


# ---- the command ---------------------------------------------------------------------------------
# What the README shows: every wait mode and snapshot mode on 8 VMs / cap 4 and 40 VMs / cap 10, early
# restart and 40 VMs / cap 4 for the default wait mode, and the instant mode's large-disk claim.
MATRIX = [
    # Standard mode: the capture waits for READY, so verify has nothing left to wait for (it takes the
    # downtime task's READY read) and the wait mode should change nothing: 8 VMs in each, to show it.
    *(Spec(8, 4, wait_mode=wait) for wait in WAIT_MODES),
    Spec(40, 10),
    # Early restart and instant mode: verify waits for the upload, convert for the conversion, slot-free
    # or not as the wait mode says: every wait mode on 8 VMs / cap 4, defer on 40 VMs / cap 10.
    *(Spec(8, 4, early_restart=True, wait_mode=wait) for wait in WAIT_MODES),
    Spec(40, 10, early_restart=True),
    *(Spec(8, 4, snapshot_mode="instant", wait_mode=wait) for wait in WAIT_MODES),
    Spec(40, 10, snapshot_mode="instant"),
    Spec(40, 4),  # ten VMs through each of four lanes: the longest run, last
]
# The 2 TB instant run (its downtime against the others') waits about 35 minutes for its conversion:
# run it beside the matrix, in a process of its own (README, "Fleet run").
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
    p.add_argument(
        "--time-scale", type=time_scale, default=None, help="emulator speed (default 1; --quick 10)"
    )
    p.add_argument(
        "--matrix", action="store_true", help="the README's 14 runs (about 65 minutes; see README)"
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 2 VMs, cap 1, standard, defer")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE", help="JSON to FILE (alone: stdout)")
    p.add_argument("--home", type=Path, help="Airflow home (default: a temporary folder, removed)")
    return p


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM ends the run like Ctrl-C: every Airflow process is stopped


def main(argv: list[str] | None = None) -> int:
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
