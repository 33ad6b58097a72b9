"""A VM's backup stages, declared once, in order; and the backup DAG's other task ids.

``VM_STAGES`` is the one ordered declaration of the tasks each VM runs in its tier's mapped task group.
Its readers: the DAG factory (``dags/backup.py``: which operator, in which tier and mode, after what,
setup or teardown), the run report (``report/model.py``: the tasks on a VM's row and their order, which
return the downtime or the snapshots, which can bring a VM back), ``vm-backup validate`` (it prints the
chain the built DAG has), the fault matrix and the benchmarks. So a stage added here shows everywhere;
docs/architecture.md ("Adding a stage") lists the few other places it touches.
Nothing here imports Airflow, Google or the rest of the package: it is read at parse time and by plain
scripts (an operator is named by its import path, imported only by the factory, only when it applies).

Per tier ``N`` (``resolve_tier_N`` then a mapped task group ``tier_N``, one instance per VM):
- ``precheck``: records the VM's state before anything changes (setup of the group);
- one-tier groups and the innermost tier: ``stop_snapshot_start``, the whole downtime in one task
  (stop, capture every disk, start), waiting on the worker with ``operations.wait`` long-polls;
- outer tiers of a tiered group: ``stop_snapshot`` (stop, capture) and ``start``, because their VMs
  stay down until every inner tier is back;
- ``ensure_running`` (teardown of the precheck): starts the VM if this run stopped it and it is still
  down, whatever failed before;
- ``verify`` (standard snapshots READY) or ``convert`` (instant snapshots into standard ones), slot-free;
- ``listed`` (opt-in, group key ``check_listed``): retention's own listing finds each new snapshot;
- ``retention`` (only with a policy).
``signals`` (log line, metrics, Asset events) then ``run_report`` run last, whatever happened.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PRECHECK = "precheck"
STOP_SNAPSHOT_START = "stop_snapshot_start"
STOP_SNAPSHOT = "stop_snapshot"
START = "start"
ENSURE_RUNNING = "ensure_running"
VERIFY = "verify"
CONVERT = "convert"
LISTED = "listed"
RETENTION = "retention"
REPORT = "run_report"
SIGNALS = "signals"  # per-VM log line, metrics and Asset events (report/signals.py), before run_report

# XCom key of the downtime tasks' "this VM is down" marker (the cap on VMs down at once reads it).
DOWN_XCOM_KEY = "gce_vm_backup_down"

EVERY_TIER, INNERMOST, OUTER = "every", "innermost", "outer"  # Stage.tiers
MODES = ("standard", "instant")  # the config's snapshot_mode values


@dataclass(frozen=True)
class Stage:
    """One task of a VM's chain.

    :param id: the task id inside the tier's group (``tier_1.<id>``).
    :param operator: ``module:Class`` of its operator, imported by the factory only when the stage applies.
    :param after: the stages it runs after; those not in a VM's chain (another tier kind or mode) are
        ignored. Arguments that are another stage's output add that dependency too.
    :param tiers: ``every`` tier, only the ``innermost`` (one-tier groups), or only the ``outer`` ones.
    :param modes: the snapshot modes it runs in.
    :param option: the group key that turns it on (absent, None or false: the stage is left out).
    :param setup: the setup task of the VM's group; ``teardown``: a teardown of it, run whatever failed.
    :param reported: its state, output and error are read for the VM's row of the run report.
    :param returns: what its return value is to the report: ``downtime`` (the VM's stop and start
        times and the snapshots it made), ``snapshots`` (the run's standard snapshot records), or "".
    :param brings_back: it can bring the VM back up (the report names how each such task ended when
        the VM is down).
    :param slot_free: a slot-free wait (``waits.SlotFreeWait``): the group's ``wait_mode`` applies to it.
    """

    id: str
    operator: str
    after: tuple[str, ...] = ()
    tiers: str = EVERY_TIER
    modes: tuple[str, ...] = MODES
    option: str | None = None
    setup: bool = False
    teardown: bool = False
    reported: bool = True
    returns: str = ""
    brings_back: bool = False
    slot_free: bool = False

    def applies(self, *, innermost: bool, mode: str, options: Iterable[str] = ()) -> bool:
        """Whether a VM of a tier runs it: innermost or outer tier, snapshot mode, the options turned on."""
        tier_ok = self.tiers == EVERY_TIER or (self.tiers == INNERMOST) == innermost
        return tier_ok and mode in self.modes and (self.option is None or self.option in set(options))


_BACKUP = "gce_vm_backup.backup"
# In the order the report lists them and the factory builds them.
VM_STAGES: tuple[Stage, ...] = (
    Stage(PRECHECK, f"{_BACKUP}.precheck:PrecheckInstanceOperator", setup=True),
    Stage(
        STOP_SNAPSHOT_START,
        f"{_BACKUP}.downtime:StopSnapshotStartOperator",
        after=(PRECHECK,),
        tiers=INNERMOST,
        returns="downtime",
        brings_back=True,
    ),
    Stage(
        STOP_SNAPSHOT,
        f"{_BACKUP}.downtime:StopSnapshotOperator",
        after=(PRECHECK,),
        tiers=OUTER,
        returns="downtime",
    ),
    Stage(
        START,
        f"{_BACKUP}.precheck:EnsureRunningOperator",
        after=(STOP_SNAPSHOT,),
        tiers=OUTER,
        teardown=True,
        brings_back=True,
    ),
    Stage(
        ENSURE_RUNNING,
        f"{_BACKUP}.precheck:EnsureRunningOperator",
        after=(STOP_SNAPSHOT_START, START),
        teardown=True,
        brings_back=True,
    ),
    Stage(
        VERIFY,
        f"{_BACKUP}.retention:VerifySnapshotsOperator",
        after=(STOP_SNAPSHOT_START, STOP_SNAPSHOT),
        modes=("standard",),
        returns="snapshots",
        slot_free=True,
    ),
    Stage(
        CONVERT,
        f"{_BACKUP}.instant:ConvertInstantSnapshotsOperator",
        after=(STOP_SNAPSHOT_START, STOP_SNAPSHOT),
        modes=("instant",),
        returns="snapshots",
        slot_free=True,
    ),
    Stage(
        LISTED,
        f"{_BACKUP}.listed:CheckListedOperator",
        after=(VERIFY, CONVERT),
        option="check_listed",
    ),
    Stage(
        RETENTION,
        f"{_BACKUP}.retention:ApplyRetentionOperator",
        after=(VERIFY, CONVERT, LISTED),
        option="retention",
    ),
)
STAGES_BY_ID = {stage.id: stage for stage in VM_STAGES}
# The report's view of the declaration.
REPORTED = tuple(stage.id for stage in VM_STAGES if stage.reported)
DOWNTIME_STAGES = tuple(stage.id for stage in VM_STAGES if stage.returns == "downtime")
SNAPSHOT_STAGES = tuple(stage.id for stage in VM_STAGES if stage.returns == "snapshots")
BRINGS_BACK = tuple(stage.id for stage in VM_STAGES if stage.brings_back)
SLOT_FREE = tuple(stage.id for stage in VM_STAGES if stage.slot_free)


def vm_chain(*, innermost: bool, mode: str = "standard", options: Iterable[str] = ()) -> tuple[Stage, ...]:
    """The stages a VM of a tier runs, in declaration order (the teardowns among them)."""
    options = frozenset(options)
    return tuple(s for s in VM_STAGES if s.applies(innermost=innermost, mode=mode, options=options))


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
