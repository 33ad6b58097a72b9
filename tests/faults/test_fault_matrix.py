"""Issue #7, the fault matrix: every fault of tests/faults/cases.py, end to end with dag.test().

For each case the run must: leave every VM that was RUNNING running again (unless the fault itself made
that impossible, which the run must then report as a failure), make at most one snapshot per disk,
delete nothing but its own old snapshots of disks it has a new READY snapshot of, end in the expected
state, and fail with a message naming the resource and the cause. ``benchmarks/fault_matrix.py`` prints
the same cases as a table.
"""

from __future__ import annotations

import pytest

from .cases import CASES
from .harness import excerpt, run_case, violations

pytestmark = [pytest.mark.airflow, pytest.mark.emulator, pytest.mark.slow]


def _param(case):
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_fault_case(fault_dagbag, case):
    outcome = run_case(fault_dagbag, case)

    problems = violations(outcome)
    assert not problems, (
        f"{case.id} ({case.fault}): "
        + "; ".join(problems)
        + f"\nerrors: {[excerpt(m, 400) for m in outcome.failure_messages()]}"
        + f"\ntasks: {outcome.task_states}"
    )
