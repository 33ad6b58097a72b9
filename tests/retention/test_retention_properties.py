"""Property tests of the retention policy over random snapshot sets (hypothesis)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gce_vm_backup.config.retention import GfsPolicy, RetentionPolicy, SnapshotInfo, plan_deletions

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
DISKS = ["p/z/disk-a", "p/z/disk-b", "p/r/disk-c"]
STATUSES = ["READY", "READY", "READY", "CREATING", "UPLOADING", "FAILED", "DELETING"]


@st.composite
def snapshot_sets(draw):
    count = draw(st.integers(min_value=0, max_value=40))
    snapshots = []
    for index in range(count):
        age = draw(st.integers(min_value=0, max_value=400 * 24 * 60))  # minutes, up to ~13 months
        snapshots.append(
            SnapshotInfo(
                name=f"snap-{index}",
                disk_key=draw(st.sampled_from(DISKS)),
                status=draw(st.sampled_from(STATUSES)),
                created=NOW - timedelta(minutes=age),
                managed=draw(st.booleans()) or draw(st.booleans()),  # mostly managed
            )
        )
    return snapshots


policies = st.builds(
    RetentionPolicy,
    keep_last=st.integers(min_value=1, max_value=5),
    keep_days=st.none() | st.integers(min_value=1, max_value=60),
    gfs=st.none()
    | st.builds(
        GfsPolicy,
        daily=st.integers(min_value=0, max_value=10),
        weekly=st.integers(min_value=0, max_value=6),
        monthly=st.integers(min_value=0, max_value=6),
    ),
)
new_ready = st.sets(st.sampled_from(DISKS))


def _ready_managed_by_disk(snapshots):
    by_disk = defaultdict(list)
    for snapshot in snapshots:
        if snapshot.managed and snapshot.status == "READY":
            by_disk[snapshot.disk_key].append(snapshot)
    for items in by_disk.values():
        items.sort(key=lambda s: (s.created, s.name), reverse=True)
    return by_disk


@settings(max_examples=150, deadline=None)
@given(snapshot_sets(), policies, new_ready)
def test_never_deletes_an_unmanaged_or_non_ready_snapshot(snapshots, policy, disks):
    plan = plan_deletions(snapshots, policy, now=NOW, disks_with_new_ready=disks)
    for snapshot in plan.to_delete:
        assert snapshot.managed
        assert snapshot.status == "READY"


@settings(max_examples=150, deadline=None)
@given(snapshot_sets(), policies, new_ready)
def test_never_deletes_for_a_disk_without_a_new_ready_snapshot(snapshots, policy, disks):
    plan = plan_deletions(snapshots, policy, now=NOW, disks_with_new_ready=disks)
    assert all(snapshot.disk_key in disks for snapshot in plan.to_delete)


@settings(max_examples=150, deadline=None)
@given(snapshot_sets(), policies, new_ready)
def test_keeps_the_newest_ready_and_at_least_keep_last_per_disk(snapshots, policy, disks):
    plan = plan_deletions(snapshots, policy, now=NOW, disks_with_new_ready=disks)
    deleted = set(plan.deleted_names())
    for items in _ready_managed_by_disk(snapshots).values():
        assert items[0].name not in deleted
        survivors = [s for s in items if s.name not in deleted]
        assert len(survivors) >= min(policy.keep_last, len(items))
        assert [s.name for s in items[: policy.keep_last]] == [s.name for s in survivors[: policy.keep_last]]


@settings(max_examples=150, deadline=None)
@given(snapshot_sets(), policies, new_ready)
def test_keeps_everything_younger_than_keep_days(snapshots, policy, disks):
    plan = plan_deletions(snapshots, policy, now=NOW, disks_with_new_ready=disks)
    if policy.keep_days is not None:
        cutoff = NOW - timedelta(days=policy.keep_days)
        assert all(snapshot.created < cutoff for snapshot in plan.to_delete)


def _reference_gfs(items, gfs):
    """A second, independent reading of GFS: walk periods from newest to oldest."""
    keep = set()
    for count, key in (
        (gfs.daily, lambda t: t.strftime("%Y-%m-%d")),
        (gfs.weekly, lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2])),
        (gfs.monthly, lambda t: t.strftime("%Y-%m")),
    ):
        newest_in_period = {}
        for snapshot in items:
            period = key(snapshot.created.astimezone(UTC))
            best = newest_in_period.get(period)
            if best is None or (snapshot.created, snapshot.name) > (best.created, best.name):
                newest_in_period[period] = snapshot
        latest_periods = sorted(newest_in_period.values(), key=lambda s: (s.created, s.name), reverse=True)
        keep.update(s.name for s in latest_periods[:count])
    return keep


@settings(max_examples=150, deadline=None)
@given(snapshot_sets(), policies, new_ready)
def test_deletes_exactly_what_no_rule_keeps(snapshots, policy, disks):
    plan = plan_deletions(snapshots, policy, now=NOW, disks_with_new_ready=disks)
    expected = set()
    for disk, items in _ready_managed_by_disk(snapshots).items():
        if disk not in disks:
            continue
        keep = {s.name for s in items[: policy.keep_last]}
        if policy.keep_days is not None:
            keep |= {s.name for s in items if s.created >= NOW - timedelta(days=policy.keep_days)}
        if policy.gfs is not None:
            keep |= _reference_gfs(items, policy.gfs)
        expected |= {s.name for s in items} - keep
    assert set(plan.deleted_names()) == expected


@settings(max_examples=100, deadline=None)
@given(snapshot_sets(), policies, new_ready)
def test_applying_a_plan_then_planning_again_deletes_nothing_more(snapshots, policy, disks):
    plan = plan_deletions(snapshots, policy, now=NOW, disks_with_new_ready=disks)
    remaining = [s for s in snapshots if s.name not in set(plan.deleted_names())]
    again = plan_deletions(remaining, policy, now=NOW, disks_with_new_ready=disks)
    assert again.to_delete == []


def test_gfs_keeps_one_per_day_week_and_month():
    daily = [NOW - timedelta(hours=6 * i) for i in range(4 * 70)]  # every 6 h for 70 days
    snapshots = [
        SnapshotInfo(f"s-{i:03d}", "d", "READY", created, managed=True) for i, created in enumerate(daily)
    ]
    policy = RetentionPolicy(keep_last=1, gfs=GfsPolicy(daily=7, weekly=4, monthly=3))
    plan = plan_deletions(snapshots, policy, now=NOW, disks_with_new_ready={"d"})
    kept = [s for s in snapshots if s.name not in set(plan.deleted_names())]
    kept_days = {s.created.date() for s in kept}
    assert len(kept_days) <= 7 + 4 + 3
    assert all((NOW - timedelta(days=d)).date() in kept_days for d in range(7))
    months = {(s.created.year, s.created.month) for s in kept}
    assert months == {(2026, 11), (2026, 10), (2026, 9)}


def test_reasons_are_recorded_for_every_kept_snapshot():
    snapshots = [
        SnapshotInfo("ours-new", "d", "READY", NOW, managed=True),
        SnapshotInfo("ours-old", "d", "READY", NOW - timedelta(days=90), managed=True),
        SnapshotInfo("theirs", "d", "READY", NOW - timedelta(days=90), managed=False),
        SnapshotInfo("ours-creating", "d", "CREATING", NOW - timedelta(days=90), managed=True),
    ]
    plan = plan_deletions(snapshots, RetentionPolicy(keep_last=1), now=NOW, disks_with_new_ready={"d"})
    assert plan.deleted_names() == ["ours-old"]
    assert plan.kept == {
        "ours-new": ["keep_last=1"],
        "theirs": ["not made by gce-vm-backup for this deployment, group and disk"],
        "ours-creating": ["status CREATING"],
    }


def test_naive_times_are_refused():
    naive = SnapshotInfo("s", "d", "READY", datetime(2026, 1, 1), managed=True)
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_deletions([naive], RetentionPolicy(), now=NOW, disks_with_new_ready={"d"})


def test_policy_rejects_unknown_keys_and_zero_keep_last():
    with pytest.raises(ValueError, match="keep_last"):
        RetentionPolicy(keep_last=0)
    with pytest.raises(ValueError, match="keep_forever"):
        RetentionPolicy.model_validate({"keep_forever": True})
