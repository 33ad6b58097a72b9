"""The fault matrix: every fault of tests/faults/cases.py, end to end with dag.test().

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

# The quick subset (marker ``quick``: `make test-fast`, and the DAG-level suite on other Airflow versions):
# one case per family of faults and each wait mode; the full matrix runs in `make test`.
QUICK = (
    "baseline",
    "http-once-snapshots.insert",
    "http-503-repeatedly-instances.stop",
    "http-429-repeatedly-zoneOperations.wait",  # worker mode
    "op-quota_exceeded-repeatedly-snapshot",
    "op-internal_error-once-stop",
    "hang-snapshot",
    "vm-deleted-before-start",
    "snapshot-failed-once",
    "killed-try-snapshots.insert",
    "killed-try-instances.stop-reschedule",
    "not-on-path",
    "report-after-failed-snapshot",
)
assert set(QUICK) <= {case.id for case in CASES}, set(QUICK) - {case.id for case in CASES}


def _param(case):
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    if case.id in QUICK:
        marks.append(pytest.mark.quick)
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


# ---- the hook's retry bound, below the DAG (what the matrix's GET rows cannot show in CI time) ---------
# Both found by the first version of this matrix (then strict xfails) and fixed in plugins/: the client
# library's own retry of GETs on 503 (up to 600 s) ran inside every tenacity attempt, and pages after the
# first of a listing were fetched outside the retried, translated call.


@pytest.fixture
def hook_on_emulator(monkeypatch):
    import json

    from gce_emulator import Emulator
    from gce_emulator.__main__ import DEMO_SEED

    with Emulator(DEMO_SEED) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
        from gce_vm_backup.compute.hook import ComputeBackupHook

        from .harness import fast_hook_retries

        with fast_hook_retries():
            yield emulator, ComputeBackupHook()


@pytest.mark.quick  # no DAG run: the hook against the emulator
def test_a_503_storm_on_a_get_is_bounded_by_the_hooks_attempts(hook_on_emulator):
    from gce_vm_backup.errors import ApiError

    from .cases import GET_503_STORM

    emulator, hook = hook_on_emulator
    emulator.faults.http_error("compute.instances.get", 503, times=GET_503_STORM)
    with pytest.raises(ApiError):  # 5 attempts, then the error (what the README promises)
        hook.get_instance(project_id="demo-project", zone="us-central1-a", name="web-1")


@pytest.mark.quick  # no DAG run: the hook against the emulator
def test_a_429_on_the_second_page_of_a_listing_is_retried(hook_on_emulator):
    emulator, hook = hook_on_emulator
    for name in ("a-1", "a-2", "a-3"):
        emulator.seed_snapshot("demo-project", {"name": name})
    # the second snapshots.list call (page 2) fails once with 429
    emulator.faults.on_call(
        "compute.snapshots.list",
        lambda: emulator.faults.http_error("compute.snapshots.list", 429, times=1),
        after=1,
    )
    names = [s.name for s in hook.list_snapshots(project_id="demo-project", filter="", max_results=2)]
    assert names == ["a-1", "a-2", "a-3"]
