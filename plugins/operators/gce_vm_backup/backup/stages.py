"""The backup DAG's task ids and stage names, defined once.

``dag_factory`` builds the DAG from these names; the run report, ``vm-backup validate``, the fault matrix
and the benchmarks import them, so a renamed or added stage cannot leave one of them behind.
Nothing here imports Airflow or Google: it is read at parse time and by plain scripts.

Per tier ``N`` (``resolve_tier_N`` then a mapped task group ``tier_N``, one instance per VM):
- ``precheck``: records the VM's state before anything changes (setup of the group);
- one-tier groups and the innermost tier: ``stop_snapshot_start``, the whole downtime in one task
  (stop, capture every disk, start), waiting on the worker with ``operations.wait`` long-polls;
- outer tiers of a tiered group: ``stop_snapshot`` (stop, capture) and ``start``, because their VMs
  stay down until every inner tier is back;
- ``ensure_running`` (teardown of the precheck): starts the VM if this run stopped it and it is still
  down, whatever failed before;
- ``verify`` (standard snapshots READY) or ``convert`` (instant snapshots into standard ones), slot-free;
- ``retention`` (only with a policy).
``run_report`` runs last, whatever happened.
"""

from __future__ import annotations

PRECHECK = "precheck"
STOP_SNAPSHOT_START = "stop_snapshot_start"
STOP_SNAPSHOT = "stop_snapshot"
START = "start"
ENSURE_RUNNING = "ensure_running"
VERIFY = "verify"
CONVERT = "convert"
RETENTION = "retention"
REPORT = "run_report"

# XCom key of the downtime tasks' "this VM is down" marker (the cap on VMs down at once reads it).
DOWN_XCOM_KEY = "gce_vm_backup_down"


def tier_group(tier: int) -> str:
    """The mapped task group of tier ``tier`` (1-based)."""
    return f"tier_{tier}"


def resolve_task(tier: int) -> str:
    return f"resolve_tier_{tier}"


def tier_task(tier: int, stage: str) -> str:
    """The full task id of ``stage`` in tier ``tier``: ``tier_1.stop_snapshot_start``."""
    return f"{tier_group(tier)}.{stage}"


def tier_stopped_task(tier: int) -> str:
    """Barrier: every VM of tier ``tier`` is down and captured (tiered groups only)."""
    return f"tier_{tier}_stopped"


def tier_started_task(tier: int) -> str:
    """Barrier: every VM of tier ``tier`` was brought back (tiered groups only)."""
    return f"tier_{tier}_started"
