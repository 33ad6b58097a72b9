"""Which old snapshots may go: the retention policy, as a pure function.

Rules that no policy can break (tests/retention/test_retention_properties.py pins each):
- only snapshots this deployment and group made of that disk (``managed``) are ever candidates;
- only READY snapshots are ever deleted (CREATING, UPLOADING, FAILED and DELETING ones are left alone:
  an in-flight one may become this run's good copy, and a FAILED one of ours is deleted by the snapshot
  operator itself, before its retry, so retention never has to judge it);
- nothing is deleted for a disk unless this run produced a READY snapshot of it;
- the newest READY snapshot of a disk is never deleted, and never fewer than ``keep_last`` are kept;
- a snapshot with an unexpired hold (holds.py: a restore's chosen set, from its plan to its end) is never
  deleted, whatever the policy says.

A snapshot is deleted only when no rule keeps it: ``keep_last`` OR ``keep_days`` OR grandfather-father-son.
GFS keeps the newest READY snapshot of each of the ``daily`` most recent calendar days (UTC) that have one,
of each of the ``weekly`` most recent ISO weeks that have one, and of each of the ``monthly`` most recent
calendar months that have one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from gce_vm_backup.compute.holds import hold_reason

READY = "READY"


class GfsPolicy(BaseModel):
    """Grandfather-father-son: how many daily, weekly and monthly snapshots to keep per disk."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    daily: int = Field(default=0, ge=0)
    weekly: int = Field(default=0, ge=0)
    monthly: int = Field(default=0, ge=0)


class RetentionPolicy(BaseModel):
    """A group's retention settings (the ``retention`` key of the config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep_last: int = Field(
        default=7, ge=1, description="always keep this many newest READY snapshots per disk"
    )
    keep_days: int | None = Field(default=None, ge=1, description="keep every snapshot younger than this")
    gfs: GfsPolicy | None = None


@dataclass(frozen=True)
class SnapshotInfo:
    """One existing snapshot as retention sees it. ``disk_key`` is any stable id of the source disk."""

    name: str
    disk_key: str
    status: str
    created: datetime  # timezone-aware
    managed: bool  # this deployment's and group's snapshot of that disk (labels.is_managed_snapshot_of)
    labels: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    source_disk: str = field(default="", compare=False)  # the snapshot's sourceDisk, as listed


@dataclass
class RetentionPlan:
    """What to delete (oldest first per disk) and, for every snapshot kept, why."""

    to_delete: list[SnapshotInfo] = field(default_factory=list)
    kept: dict[str, list[str]] = field(default_factory=dict)  # snapshot name -> reasons

    def deleted_names(self) -> list[str]:
        return [snapshot.name for snapshot in self.to_delete]


def plan_deletions(
    snapshots: Iterable[SnapshotInfo],
    policy: RetentionPolicy,
    *,
    now: datetime,
    disks_with_new_ready: set[str],
) -> RetentionPlan:
    """Split ``snapshots`` into what the policy deletes and what it keeps (with the reasons).

    Raises ValueError if ``now`` or a snapshot's ``created`` is naive (the ages would be wrong).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    plan = RetentionPlan()
    by_disk: dict[str, list[SnapshotInfo]] = defaultdict(list)
    for snapshot in snapshots:
        if snapshot.created.tzinfo is None:
            raise ValueError(f"snapshot {snapshot.name}: creation time must be timezone-aware")
        reason = _never_candidate_reason(snapshot, disks_with_new_ready)
        if reason:
            plan.kept[snapshot.name] = [reason]
        else:
            by_disk[snapshot.disk_key].append(snapshot)
    for ready in by_disk.values():
        ready.sort(key=lambda s: (s.created, s.name), reverse=True)
        reasons = _keep_reasons(ready, policy, now)
        for snapshot in ready:
            held = hold_reason(snapshot.labels, now)
            if held:
                reasons[snapshot.name].append(held)
            if reasons[snapshot.name]:
                plan.kept[snapshot.name] = reasons[snapshot.name]
            else:
                plan.to_delete.append(snapshot)
    plan.to_delete.sort(key=lambda s: (s.disk_key, s.created, s.name))
    return plan


def _never_candidate_reason(snapshot: SnapshotInfo, disks_with_new_ready: set[str]) -> str | None:
    if not snapshot.managed:
        return "not made by gce-vm-backup for this deployment, group and disk"
    if snapshot.status != READY:
        return f"status {snapshot.status}"
    if snapshot.disk_key not in disks_with_new_ready:
        return "no new READY snapshot of this disk in this run"
    return None


def _keep_reasons(
    newest_first: list[SnapshotInfo], policy: RetentionPolicy, now: datetime
) -> dict[str, list[str]]:
    reasons: dict[str, list[str]] = {s.name: [] for s in newest_first}
    for snapshot in newest_first[: policy.keep_last]:
        reasons[snapshot.name].append(f"keep_last={policy.keep_last}")
    if policy.keep_days is not None:
        cutoff = now - timedelta(days=policy.keep_days)
        for snapshot in newest_first:
            if snapshot.created >= cutoff:
                reasons[snapshot.name].append(f"keep_days={policy.keep_days}")
    if policy.gfs is not None:
        periods: list[tuple[str, int, Callable[[datetime], Hashable]]] = [
            ("daily", policy.gfs.daily, lambda t: t.date()),
            ("weekly", policy.gfs.weekly, lambda t: t.isocalendar()[:2]),
            ("monthly", policy.gfs.monthly, lambda t: (t.year, t.month)),
        ]
        for label, count, period_of in periods:
            for snapshot in _newest_per_period(newest_first, count, period_of):
                reasons[snapshot.name].append(label)
    return reasons


def _newest_per_period(
    newest_first: list[SnapshotInfo], count: int, period_of: Callable[[datetime], Hashable]
) -> list[SnapshotInfo]:
    """The newest snapshot of each of the ``count`` most recent periods that have one (UTC)."""
    chosen: list[SnapshotInfo] = []
    seen: set[Hashable] = set()
    for snapshot in newest_first:
        if len(chosen) >= count:
            break
        period = period_of(_utc(snapshot.created))
        if period not in seen:
            seen.add(period)
            chosen.append(snapshot)
    return chosen


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)
