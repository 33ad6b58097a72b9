"""Print the fault matrix as a Markdown table: every case of tests/faults/cases.py, run end to
end with dag.test() against the emulator, with the outcome the pytest module asserts.

    uv run --no-sync python benchmarks/fault_matrix.py            # every case (about 10 minutes)
    uv run --no-sync python benchmarks/fault_matrix.py hang vm-   # only the cases whose id contains one

Progress goes to stderr, the table to stdout. Exit status 1 when a case violates its assertions (an
xfail case that behaves as its bug says counts as expected).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Airflow reads its configuration at first import: a throw-away home, as the tests' conftest does.
HOME = Path(tempfile.mkdtemp(prefix="gce-vm-backup-fault-matrix-"))
os.environ["AIRFLOW_HOME"] = str(HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(HOME / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.pop("GCE_VM_BACKUP_COMPUTE_ENDPOINT", None)
os.environ.pop("GCE_VM_BACKUP_CONFIG", None)
sys.path.insert(0, str(REPO))

from tests.faults.cases import CASES  # noqa: E402
from tests.faults.harness import (  # noqa: E402
    BATCH,
    DISKS,
    WEB,
    Outcome,
    excerpt,
    prepare_airflow,
    quiet_output,
    report_check,
    run_case,
    violations,
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def row(outcome: Outcome, problems: list[str]) -> str:
    case = outcome.case
    vms = f"web-1 {outcome.vms_after[WEB] or 'deleted'}, batch-1 {outcome.vms_after[BATCH] or 'deleted'}"
    per_disk = "/".join(str(len(outcome.new_snapshots.get(disk, []))) for disk in DISKS)
    inserts = "/".join(str(outcome.insert_operations.get(disk, 0)) for disk in DISKS)
    ours = sum(1 for spec in outcome.seeded.values() if spec["labels"])
    deleted = f"{len(outcome.deleted)}/{ours}"
    messages = outcome.failure_messages()
    if case.expect_message:
        pattern = re.compile(case.expect_message, re.S)
        messages = [m for m in messages if pattern.search(m)] or messages
    # the request URL inside API errors (emulator host and port) says nothing the row does not
    message = excerpt(re.sub(r"(GET|POST|DELETE) http://\S+: ", "", messages[0]), 130) if messages else "-"
    if case.xfail:
        verdict = f"XFAIL (bug): {excerpt('; '.join(problems), 100)}" if problems else "XPASS (bug gone?)"
    else:
        verdict = "ok" if not problems else f"FAIL: {excerpt('; '.join(problems), 160)}"
    state = (
        outcome.state
        if outcome.state == case.expect_state
        else f"{outcome.state} (expected {case.expect_state})"
    )
    return (
        f"| {case.id} | {_cell(case.fault)} | {state} | {vms} | {per_disk} ({inserts}) | {deleted} | "
        f"{outcome.stop_operations} | {_cell(report_check(outcome))} | {_cell(message)} | {_cell(verdict)} "
        f"| {outcome.seconds:.1f} |"
    )


def main(argv: list[str]) -> int:
    chosen = [case for case in CASES if not argv or any(part in case.id for part in argv)]
    print(f"fault matrix: {len(chosen)} case(s); Airflow home {HOME}", file=sys.stderr)
    dagbag = prepare_airflow(HOME)
    lines = [
        "| case | injected fault | run state | VMs after | new snapshots per disk web-1/web-1-data/batch-1 "
        "(insert operations) | old snapshots deleted | stop ops | run report | error message (excerpt) "
        "| verdict | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    failures = 0
    started = time.monotonic()
    for number, case in enumerate(chosen, start=1):
        with quiet_output():
            outcome = run_case(dagbag, case)
        problems = violations(outcome)
        failures += bool(problems) != bool(case.xfail)
        lines.append(row(outcome, problems))
        print(
            f"[{number}/{len(chosen)}] {case.id}: {outcome.state} in {outcome.seconds:.1f}s"
            + (f" - {'; '.join(problems)}" if problems else ""),
            file=sys.stderr,
        )
    print("\n".join(lines))
    print(
        f"\n{len(chosen)} case(s) in {time.monotonic() - started:.0f} s; "
        f"{failures} unexpected outcome(s). Snapshot counts are this run's snapshots still present; "
        "'old snapshots deleted' counts the seeded snapshots of ours (a hand-made one is never ours).",
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
