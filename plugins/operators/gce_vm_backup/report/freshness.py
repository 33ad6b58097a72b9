"""What backups exist, how old each VM's newest usable one is, and the freshness check DAG.

``collect_group`` lists a group's snapshots (``snapshots.list`` per project of its targets, filtered on
``managed-by``, the deployment and the group with ``labels.label_filter``), groups them into snapshot sets
(``restore_sets``) and, per VM, compares the age of its newest complete READY set with the group's
schedule: older than two schedule periods, counted in runs (older than the schedule's second latest run:
two runs in a row made no usable set; or none at all by then since the group's start date), is STALE.
A group without a schedule (manual runs, or ``@once``) is never stale. The VMs of a group are its
explicit targets, the VMs its label selectors match now, and any VM that has sets of the group; a VM that
is no longer a target is shown, never flagged. A VM is its path (project, zone, name): two VMs named alike
in two zones or projects each have their own sets and freshness. The live VMs of the targets' projects are
read once (``instances.aggregatedList``; the selectors are matched against it): a VM with sets but no live
VM at its path is shown as gone (a deleted VM's sets are what a restore needs), and a live VM is fresh
only by sets of its own instance id (or sets without a manifest, which ``restore_sets`` takes only for
disks attached to it now), not by those of a VM of the same name deleted before it.

``build_freshness_dag(config)`` builds ``gce_vm_backup_freshness`` (hourly), one task per scheduled group
that fails naming each stale VM and its age; the task's failure callbacks are the group's ``notify``
notifiers (``notify.notifiers_from_config``), so a stale backup notifies like a failed one. Used by
``vm-backup backups`` and the Airflow UI page too. Nothing Google is imported at module level (the DAG
processor imports this at every parse).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG
from airflow.sdk.bases.notifier import BaseNotifier

from gce_vm_backup.compute.paths import VmRef
from gce_vm_backup.config.models import BackupConfig, ExplicitTarget, Group, SelectorTarget
from gce_vm_backup.report.notify import notifiers_from_config
from gce_vm_backup.restore.sets import (
    READY,
    SnapshotSet,
    attached_of,
    group_filter,
    newest_complete,
    snapshot_sets,
)
from gce_vm_backup.runtime.base import ERROR_XCOM_KEY, GCP_CONN_ID, ComputeOperator
from gce_vm_backup.runtime.compat import AirflowFailException

if TYPE_CHECKING:
    from gce_vm_backup.compute.hook import ComputeBackupHook

FRESHNESS_DAG_ID = "gce_vm_backup_freshness"
FRESHNESS_SCHEDULE = "@hourly"
STALE_AFTER_PERIODS = 2
# Airflow's presets as the cron expressions its timetables use (airflow/timetables/_cron.py).
PRESET_CRON = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
}


def schedule_runs(
    schedule: str | None, *, now: datetime, timezone: tzinfo | None = None, count: int = STALE_AFTER_PERIODS
) -> list[datetime] | None:
    """The schedule's ``count`` latest fire times at or before ``now`` (newest first, in UTC), counted in the
    DAG's timezone as its timetable counts them; None for manual runs (``None``, ``@once``). Raises
    ValueError for a cron expression croniter cannot read (the config refuses those)."""
    if schedule is None or schedule == "@once":
        return None
    from croniter import croniter

    cron = croniter(PRESET_CRON.get(schedule, schedule), now.astimezone(timezone or UTC))
    return [cron.get_prev(datetime).astimezone(UTC) for _ in range(count)]


def schedule_period(
    schedule: str | None, *, now: datetime, timezone: tzinfo | None = None
) -> timedelta | None:
    """The time between the schedule's two latest fire times before ``now``; None for manual runs."""
    runs = schedule_runs(schedule, now=now, timezone=timezone, count=2)
    return None if runs is None else runs[0] - runs[1]


@dataclass(frozen=True)
class VmBackups:
    """One VM of a group: its snapshot sets (newest first) and its freshness at ``checked_at``."""

    group: str
    vm: str  # projects/P/zones/Z/instances/I
    in_config: bool  # an explicit target or matched by a selector now
    sets: tuple[SnapshotSet, ...]
    checked_at: datetime
    period: timedelta | None  # between the schedule's two latest runs; None: manual
    stale_before: datetime | None  # the schedule's second latest run: a newest set older is stale
    since: datetime | None = None  # the group's start date, for a VM with no usable set
    exists: bool = True  # False: no VM at this path now (deleted): its sets are listed, marked gone
    vm_id: str | None = None  # the live VM's instance id, when known
    newest: SnapshotSet | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "newest", newest_complete(self.own_sets))

    @property
    def own_sets(self) -> tuple[SnapshotSet, ...]:
        """The sets of this VM itself: with the live VM's id known, those of that id (and sets without
        a manifest); every set otherwise."""
        if not self.vm_id:
            return self.sets
        return tuple(s for s in self.sets if s.vm_id in ("", self.vm_id))

    @property
    def age(self) -> timedelta | None:
        """Age of the newest complete READY set, or None when there is none."""
        return None if self.newest is None else self.checked_at - set_time(self.newest)

    @property
    def stale(self) -> bool:
        """No complete READY set since the schedule's second latest run (two runs in a row made none),
        or none at all since the group's start date by then. Never for a manual group or a former
        target. Two periods of age, counted in runs: right for irregular schedules (weekdays only) and
        across a daylight-saving change."""
        if self.stale_before is None or not self.in_config:
            return False
        reference = set_time(self.newest) if self.newest is not None else self.since
        return reference is None or reference < self.stale_before

    @property
    def name(self) -> str:
        return self.vm.rsplit("/", 1)[-1]

    def stale_line(self) -> str:
        """``web-1 (projects/...): newest READY set 3d 2h old (made ...); none from the 2 scheduled runs
        since 2026-11-29 03:00 UTC (group web)``."""
        if self.newest is None:
            what = "no complete READY snapshot set"
        else:
            what = (
                f"newest READY set {format_age(self.age)} old "
                f"(made {set_time(self.newest):%Y-%m-%d %H:%M} UTC)"
            )
        since = f"{self.stale_before:%Y-%m-%d %H:%M} UTC" if self.stale_before else "-"
        return (
            f"{self.name} ({self.vm}): {what}; none from the {STALE_AFTER_PERIODS} scheduled runs since "
            f"{since} (group {self.group})"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "vm": self.vm,
            "in_config": self.in_config,
            "exists": self.exists,
            "vm_id": self.vm_id,
            "stale": self.stale,
            "age_seconds": None if self.age is None else int(self.age.total_seconds()),
            "schedule_period_seconds": None if self.period is None else int(self.period.total_seconds()),
            "stale_before": None if self.stale_before is None else self.stale_before.isoformat(),
            "newest_ready_set": None if self.newest is None else self.newest.run,
            "sets": [set_json(s) for s in self.sets],
        }


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def set_time(snapshot_set: SnapshotSet) -> datetime:
    """When the set was made (its snapshots' creation time, in UTC); 1970 when none says."""
    return (snapshot_set.created_at or EPOCH).astimezone(UTC)


def set_status(snapshot_set: SnapshotSet) -> str:
    """READY for a complete READY set; else the statuses that are not READY (``FAILED``,
    ``CREATING+FAILED``)."""
    if snapshot_set.complete and snapshot_set.ready:
        return READY
    other = sorted({s.status or "?" for s in snapshot_set.snapshots if s.status != READY})
    return "+".join(other) if other else "INCOMPLETE"


def set_json(snapshot_set: SnapshotSet) -> dict[str, Any]:
    return {
        "run": snapshot_set.run,
        "created_at": set_time(snapshot_set).isoformat(),
        "status": set_status(snapshot_set),
        "complete": snapshot_set.complete,
        "vm_id": snapshot_set.vm_id,
        "storage_bytes": snapshot_set.storage_bytes,
        "snapshots": [
            {"name": s.name, "disk": s.disk_source, "status": s.status, "storage_bytes": s.storage_bytes}
            for s in snapshot_set.snapshots
        ],
    }


def format_age(age: timedelta | None) -> str:
    """``2d 3h``, ``5h 10m``, ``4m``; ``-`` for None."""
    if age is None:
        return "-"
    minutes = max(int(age.total_seconds() // 60), 0)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m"


def _targets(live: Mapping[str, Any], targets: Iterable[ExplicitTarget | SelectorTarget]) -> set[str]:
    """The VM paths the targets name, or their selectors match now among the ``live`` VMs (a VM matches
    when it carries every label of the selector with the same value, in one of its zones: the
    ``labels.k = "v"`` filter the backup's resolve task sends)."""
    vms: set[str] = set()
    for target in targets:
        if isinstance(target, ExplicitTarget):
            vms.add(VmRef(target.project, target.zone, target.instance).path)
            continue
        for path, instance in live.items():
            vm = VmRef.parse(path)
            project, zone = vm.project, vm.zone
            labels = dict(instance.labels or {})
            if (
                project == target.project
                and (target.zones is None or zone in target.zones)
                and all(labels.get(key) == value for key, value in target.labels.items())
            ):
                vms.add(path)
    return vms


def live_vms(hook: ComputeBackupHook, projects: Iterable[str]) -> dict[str, Any]:
    """Every VM of ``projects`` now, by path (one ``instances.aggregatedList`` per project)."""
    return {
        VmRef(project, zone, instance.name).path: instance
        for project in sorted(projects)
        for zone, instance in hook.list_instances(project_id=project, zone=None)
    }


def collect_group(
    hook: ComputeBackupHook, group_id: str, group: Group, *, deployment: str, now: datetime | None = None
) -> list[VmBackups]:
    """Every VM of the group with its sets and freshness, by VM path. Raises the hook's ApiError when a
    listing fails."""
    now = now or datetime.now(UTC)
    projects = {target.project for target in group.all_targets()}
    live = live_vms(hook, projects)
    targets = _targets(live, group.all_targets())
    expression = group_filter(deployment=deployment, group=group_id)
    snapshots = [
        snapshot
        for project in sorted(projects)
        for snapshot in hook.list_snapshots(project_id=project, filter=expression, of=f"group {group_id}")
    ]
    sets = snapshot_sets(
        snapshots,
        group=group_id,
        deployment=deployment,
        attached={vm: attached_of(instance) for vm, instance in live.items()},
    )
    runs = schedule_runs(group.schedule, now=now, timezone=group.start_date.tzinfo)
    return [
        VmBackups(
            group=group_id,
            vm=vm,
            in_config=vm in targets,
            sets=tuple(sets.get(vm, ())),
            checked_at=now,
            period=None if runs is None else runs[0] - runs[1],
            stale_before=None if runs is None else runs[-1],
            since=group.start_date,
            exists=vm in live,
            vm_id=str(live[vm].id) if vm in live and live[vm].id else None,
        )
        for vm in sorted(targets | set(sets))
    ]


# ---- the freshness check DAG -------------------------------------------------------------------
def stale_message(group_id: str, stale: Sequence[VmBackups]) -> str:
    return f"{len(stale)} VM(s) of group {group_id} have no fresh backup: " + " | ".join(
        vm.stale_line() for vm in stale
    )


class FreshnessCheckOperator(ComputeOperator):
    """Fails (no retry) naming every stale VM of the group, with the age of its newest READY set; returns
    every VM's freshness (XCom) otherwise. Raises the hook's ApiError when a listing fails (retried).

    :param group_config: the group as ``Group.model_dump(mode="json")`` (validated again when it runs).
    """

    def __init__(
        self, *, group: str, group_config: Mapping[str, Any], deployment: str, **kwargs: Any
    ) -> None:
        gcp_conn_id = str(group_config.get("gcp_conn_id") or GCP_CONN_ID)  # the group's connection
        super().__init__(gcp_conn_id=gcp_conn_id, impersonation_chain=None, **kwargs)
        self.group, self.group_config, self.deployment = group, dict(group_config), deployment

    def execute(self, context: Any) -> list[dict[str, Any]]:
        group = Group.model_validate(self.group_config)
        vms = collect_group(self.hook, self.group, group, deployment=self.deployment)
        for vm in vms:
            self.log.info(
                "%s: %d set(s), newest READY set %s old%s",
                vm.vm,
                len(vm.sets),
                format_age(vm.age),
                " - STALE" if vm.stale else "",
            )
        stale = [vm for vm in vms if vm.stale]
        if stale:
            raise AirflowFailException(stale_message(self.group, stale))
        return [vm.as_json() for vm in vms]


class StaleBackupNotifier(BaseNotifier):
    """Sends the group's failure notification (``notifiers_from_config``) with the check's message as the
    reason, so that it names the stale VMs (this DAG has no run report)."""

    def __init__(self, inner: BaseNotifier) -> None:
        super().__init__()
        self.inner = inner

    def notify(self, context: Any) -> None:
        self.inner.notify({**context, "reason": failure_reason(context)})


def failure_reason(context: Mapping[str, Any]) -> str:
    """The check's failure message: the callback context's ``exception`` (set on a worker; not by
    Airflow 3.1's dag.test), else the failure XCom the operator pushed (``_base.RecordsFailures``)."""
    exception = context.get("exception")
    if exception:
        return str(exception)
    ti = context.get("ti")
    try:
        record = ti.xcom_pull(task_ids=ti.task_id, key=ERROR_XCOM_KEY, default=None) if ti else None
    except Exception:  # the notification must still go out
        record = None
    if isinstance(record, Mapping) and record.get("message"):
        return str(record["message"])
    return "stale backups (see the task log)"


def build_freshness_dag(config: BackupConfig) -> DAG | None:
    """The hourly ``gce_vm_backup_freshness`` DAG, one task ``check_<group>`` per group with a schedule;
    None when no group has one (a manual group is never stale). Raises ConfigError (from
    ``notifiers_from_config``) for a notify block that cannot notify, as the backup DAG does."""
    scheduled = {gid: group for gid, group in config.groups.items() if schedule_period_known(group.schedule)}
    if not scheduled:
        return None
    with DAG(
        dag_id=FRESHNESS_DAG_ID,
        description="Fails, and notifies, when a VM's newest READY backup is older than two schedule periods",
        schedule=FRESHNESS_SCHEDULE,
        start_date=min(group.start_date for group in scheduled.values()),
        catchup=False,
        max_active_runs=1,
        tags=["gce-vm-backup"],
        doc_md=(
            f"### Backup freshness (deployment `{config.deployment}`)\n\nEvery hour, per group: a VM whose "
            "newest complete READY snapshot set is older than two schedule periods fails its group's task, "
            f"and the group's `notify` block is told. Generated from `{config.source}`."
        ),
        default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    ) as dag:
        for gid, group in scheduled.items():
            callbacks = [StaleBackupNotifier(inner) for inner in notifiers_from_config(group.notify)]
            FreshnessCheckOperator(
                task_id=f"check_{gid}",
                group=gid,
                group_config=group.model_dump(mode="json", warnings=False),
                deployment=config.deployment,
                on_failure_callback=callbacks or None,
            )
    return dag


def schedule_period_known(schedule: str | None) -> bool:
    """True when the schedule repeats (so freshness can be judged)."""
    return schedule is not None and schedule != "@once"
