"""Compute Engine API calls per VM backup, by kind, and how they grow with the operations' duration.

    uv run --no-sync python benchmarks/api_calls.py [--minutes 1 5 30] [--poke-interval 30]
        [--early-restart] [--quick]

One VM with two disks is backed up in DAG order (precheck -> stop_snapshot_start -> verify -> retention
with keep_last 7 -> ensure_running) by the real operators against the emulator, in each ``wait_mode``,
with every long-running operation (stop, snapshot, start) taking 1, 5 and 30 simulated minutes (with
``--early-restart``: the capture ends at UPLOADING and the upload takes twice as long, so verify waits).
The emulator's call log is counted by method.

Model (see _harness.run_vm_backup): the emulator runs on a virtual clock (time_scale 0), so a 30-minute
operation takes no real time, and the operators' deadlines and 1-second re-reads run on it too
(_harness.virtual_time). The downtime task is one try whatever the wait mode: it long-polls
``operations.wait``, which holds until the operation is DONE or for 120 simulated seconds ("about 2
minutes"). Only verify follows ``wait_mode``:
- ``defer``: poke, defer on a TimeDeltaTrigger for ``poke_interval``, resume in a new task process;
- ``reschedule``: every poke is a new task try, ``poke_interval`` after the previous one;
- ``worker``: one try; pokes back to back with a ``poke_interval`` sleep between them.
Left out: retries, scheduler latency (it only spaces pokes further apart, so fewer calls). The
downtime task's cap check (cap.py: one Task SDK ``get_task_states`` call) is not a Compute API call.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    DEFAULT_TRY_OVERHEAD,
    DOWNTIME,
    POKE_INTERVAL,
    STAGES,
    WAIT_MODES,
    WAIT_STAGES,
    markdown_table,
    run_vm_backup,
)

METHODS = (
    "instances.get",
    "instances.stop",
    "instances.start",
    "instances.setLabels",
    "disks.get",
    "zoneOperations.wait",
    "snapshots.insert",
    "snapshots.get",
    "globalOperations.wait",
    "snapshots.list",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 30])
    parser.add_argument("--poke-interval", type=float, default=POKE_INTERVAL)
    parser.add_argument("--try-overhead", type=float, default=DEFAULT_TRY_OVERHEAD)
    parser.add_argument("--early-restart", action="store_true", help="capture ends at UPLOADING; long upload")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 and 5 minutes only")
    args = parser.parse_args(argv)
    minutes = [1, 5] if args.quick else args.minutes
    runs = [
        run_vm_backup(
            minutes=m,
            wait_mode=mode,
            poke_interval=args.poke_interval,
            try_overhead=args.try_overhead,
            early_restart=args.early_restart,
        )
        for mode in WAIT_MODES
        for m in minutes
    ]
    print(
        f"### API calls per VM backup (1 VM, 2 disks; early_restart {str(args.early_restart).lower()}; "
        f"poke_interval {args.poke_interval:g} s; per-try overhead {args.try_overhead:g} s)\n"
    )
    headers = ["wait_mode", "operation min", "task tries", "pokes", "API calls", *METHODS, "calls/poke"]
    rows = []
    for run in runs:
        calls = run.calls
        total = sum(calls.values())
        other = total - sum(calls[m] for m in METHODS)
        assert other == 0, f"unexpected methods: {calls}"
        rows.append(
            [
                run.wait_mode,
                f"{run.minutes:g}",
                run.tries,
                run.pokes,
                total,
                *(calls[m] for m in METHODS),
                f"{total / run.pokes:.1f}",
            ]
        )
    print(markdown_table(headers, rows))
    print("\n### Tries, pokes and API calls per stage\n")
    headers = ["wait_mode", "operation min", *(f"{s} tries / pokes / calls" for s in STAGES)]
    rows = [
        [
            run.wait_mode,
            f"{run.minutes:g}",
            *(
                f"{run.stages[s].tries} / {run.stages[s].pokes} / {sum(run.stages[s].calls.values())}"
                for s in STAGES
            ),
        ]
        for run in runs
    ]
    print(markdown_table(headers, rows))
    if len(minutes) > 1:
        print("\n### Growth: API calls per simulated minute of operation, between the shortest and longest\n")
        headers = ["wait_mode", f"{DOWNTIME} calls/min", *(f"{s} calls/min" for s in WAIT_STAGES)]
        headers.append("total calls/min")
        rows = []
        for mode in WAIT_MODES:
            short, long = (
                r for r in runs if r.wait_mode == mode and r.minutes in (min(minutes), max(minutes))
            )
            span = long.minutes - short.minutes

            def slope(stage: str | None, short=short, long=long, span=span) -> str:
                if stage is None:
                    return f"{(sum(long.calls.values()) - sum(short.calls.values())) / span:.1f}"
                a, b = sum(short.stages[stage].calls.values()), sum(long.stages[stage].calls.values())
                return f"{(b - a) / span:.1f}"

            rows.append([mode, slope(DOWNTIME), *(slope(s) for s in WAIT_STAGES), slope(None)])
        print(markdown_table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
