"""Worker-slot seconds held per VM backup, in each wait mode, for 1, 5 and 30-minute operations.

    uv run --no-sync python benchmarks/slot_seconds.py [--minutes 1 5 30] [--measure-overhead]
        [--early-restart] [--quick]

One VM with two disks is backed up by the real operators against the emulator (see _harness.py), with
every long-running operation (stop, snapshot, start) taking the given simulated minutes (with
``--early-restart``: the capture ends at UPLOADING and the upload takes twice as long). Figures are
simulated seconds, i.e. what they would be against real Compute Engine with those operation durations.

The model of a worker slot:
- the downtime task (``stop_snapshot_start``) holds its slot from its start to its end in every wait
  mode, on purpose (the slot is the cap on VMs down at once): the per-try overhead, then stop +
  capture + start, long-polled (``operations.wait`` held until DONE or 120 simulated s);
- precheck, retention and ensure_running are plain operators: one try each;
- only verify follows ``wait_mode``. ``defer`` and ``reschedule``: each poke is a task process (a
  resume after a deferral, or a new try) and costs the per-try overhead (DAG parse, Google client
  imports, hook and clients) plus its own API calls (measured wall time against the loopback emulator);
  in between it holds nothing. ``worker``: one try holds the slot throughout, ``poke_interval`` sleeps
  included.
The per-try overhead is measured with ``--measure-overhead`` (a fresh process with Airflow imported
parses a one-task DAG file and runs the real precheck against the emulator; median of 3), or taken
from ``--try-overhead`` (default: the figure measured on the 2-core machine, see _harness.py).
Left out: scheduler and triggerer latency between looks (it holds no slot), retries.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    DEFAULT_TRY_OVERHEAD,
    POKE_INTERVAL,
    STAGES,
    WAIT_MODES,
    markdown_table,
    measure_try_overhead,
    run_vm_backup,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 30])
    parser.add_argument("--poke-interval", type=float, default=POKE_INTERVAL)
    parser.add_argument("--try-overhead", type=float, default=None, help="seconds per task try")
    parser.add_argument("--measure-overhead", action="store_true", help="measure the per-try overhead first")
    parser.add_argument("--early-restart", action="store_true", help="capture ends at UPLOADING; long upload")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 and 5 minutes only")
    args = parser.parse_args(argv)
    minutes = [1, 5] if args.quick else args.minutes
    overhead = args.try_overhead if args.try_overhead is not None else DEFAULT_TRY_OVERHEAD
    if args.measure_overhead:
        measured = measure_try_overhead(3)
        overhead = round(measured["child"], 1)
        print("### Per-try overhead (median of 3 fresh processes)\n")
        print(
            markdown_table(
                ["what", "seconds"],
                [
                    [
                        "forked task process: DAG parse + Google imports + hook + one precheck call",
                        f"{measured['child']:.2f}",
                    ],
                    [
                        "`airflow tasks test` of that task (interpreter, CLI, DB; upper bound)",
                        f"{measured['cli']:.2f}",
                    ],
                ],
            )
        )
        print()
    runs = [
        run_vm_backup(
            minutes=m,
            wait_mode=mode,
            poke_interval=args.poke_interval,
            try_overhead=overhead,
            early_restart=args.early_restart,
        )
        for m in minutes
        for mode in WAIT_MODES
    ]
    print(
        f"### Worker-slot seconds per VM backup (1 VM, 2 disks; "
        f"early_restart {str(args.early_restart).lower()}; poke_interval {args.poke_interval:g} s; "
        f"per-try overhead {overhead:g} s; simulated seconds)\n"
    )
    headers = [
        "operation min",
        "wait_mode",
        "VM backup elapsed s",
        *(f"{stage} slot s" for stage in STAGES),
        "slot s per VM",
        "slot / elapsed",
        "tries",
        "pokes",
        "median poke wall s",
    ]
    rows = [
        [
            f"{run.minutes:g}",
            run.wait_mode,
            f"{run.elapsed:.0f}",
            *(f"{run.stages[stage].slot_sim:.0f}" for stage in STAGES),
            f"{run.slot_seconds:.0f}",
            f"{run.slot_seconds / run.elapsed:.0%}",
            run.tries,
            run.pokes,
            f"{run.median_poke_wall:.3f}",
        ]
        for run in runs
    ]
    print(markdown_table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
