"""Retention and holds: a snapshot a restore holds is never deleted while the hold lasts, and is pruned as
usual once the hold expired or was released. A hold only ever keeps a snapshot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gce_vm_backup.compute.holds import hold_expiry, hold_key, hold_reason, hold_value
from gce_vm_backup.config.retention import RetentionPolicy, SnapshotInfo, plan_deletions

from .test_retention_ops_units import (
    NEW_TIME,
    both_disks,
    hook,  # noqa: F401  (fixture)
    operation,
    retention,
    snapshot,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
RUN = "0123456789abcdef"
KEY = hold_key(RUN)


def info(name, age_days, labels=None):
    return SnapshotInfo(
        name=name,
        disk_key="d",
        status="READY",
        created=NOW - timedelta(days=age_days),
        managed=True,
        labels=labels or {},
    )


def plan(*snapshots, now=NOW):
    return plan_deletions(snapshots, RetentionPolicy(keep_last=1), now=now, disks_with_new_ready={"d"})


def test_a_held_snapshot_the_policy_would_prune_is_kept_and_says_why():
    held = info("old", 3, {KEY: hold_value(NOW + timedelta(hours=1))})

    result = plan(info("new", 0), held)

    assert result.deleted_names() == []
    assert result.kept["old"] == [f"held by restore run {RUN} until 2026-12-07T13:00:00+00:00"]


def test_a_hold_that_expired_or_was_released_no_longer_keeps_it():
    expired = info("old", 3, {KEY: hold_value(NOW - timedelta(seconds=1))})
    released = info("older", 4, {"team": "ops"})

    assert sorted(plan(info("new", 0), expired, released).deleted_names()) == ["old", "older"]


def test_the_same_snapshot_is_kept_until_its_hold_ends_and_pruned_after():
    labels = {KEY: hold_value(NOW + timedelta(hours=2))}
    snapshots = (info("new", 0), info("old", 3, labels))

    assert plan(*snapshots, now=NOW + timedelta(hours=1)).deleted_names() == []
    assert plan(*snapshots, now=NOW + timedelta(hours=2)).deleted_names() == ["old"]


def test_two_restores_holding_one_snapshot_each_keep_it_until_both_end():
    labels = {
        hold_key("a" * 16): hold_value(NOW + timedelta(hours=1)),
        hold_key("b" * 16): hold_value(NOW + timedelta(hours=3)),
    }
    snapshots = (info("new", 0), info("old", 3, labels))

    assert plan(*snapshots, now=NOW + timedelta(hours=2)).deleted_names() == []
    assert plan(*snapshots, now=NOW + timedelta(hours=3)).deleted_names() == ["old"]


@pytest.mark.parametrize("value", ["forever", "", "99999999t999999z"])
def test_a_hold_whose_expiry_is_not_a_time_keeps_the_snapshot(value):
    result = plan(info("new", 0), info("old", 3, {KEY: value}))

    assert result.deleted_names() == []
    assert "is not a time: kept" in result.kept["old"][0]


@pytest.mark.parametrize("key", ["gce-vm-backup-hold", "x-gce-vm-backup-hold-1", "hold-0123"])
def test_a_label_that_only_looks_like_a_hold_is_not_one(key):
    far = hold_value(NOW + timedelta(days=30))

    assert plan(info("new", 0), info("old", 3, {key: far})).deleted_names() == ["old"]


def test_a_hold_never_makes_a_snapshot_a_candidate():
    """A forged hold on a snapshot retention would keep anyway changes nothing: holds only keep."""
    far = {KEY: hold_value(NOW + timedelta(days=30))}
    stranger = SnapshotInfo("x", "d", "READY", NOW - timedelta(days=9), managed=False, labels=far)
    creating = SnapshotInfo("y", "d", "CREATING", NOW - timedelta(days=9), managed=True, labels=far)

    result = plan(info("new", 0), stranger, creating)

    assert result.deleted_names() == []


def test_hold_values_are_label_values_and_read_back():
    value = hold_value(datetime(2026, 12, 8, 3, 15, 7, tzinfo=UTC))

    assert value == "20261208t031507z"
    assert hold_expiry(value) == datetime(2026, 12, 8, 3, 15, 7, tzinfo=UTC)
    assert hold_key(RUN) == "gce-vm-backup-hold-0123456789abcdef"
    assert hold_reason({}, NOW) is None
    with pytest.raises(ValueError, match="timezone-aware"):
        hold_value(datetime(2026, 12, 8))


# ---- ApplyRetentionOperator: a hold put on after the listing still keeps the snapshot -----------------
def with_labels(listed, labels):
    return type(listed)(mapping={**type(listed).to_dict(listed), "labels": {**listed.labels, **labels}})


def test_retention_reads_each_snapshot_again_and_keeps_one_held_since_the_listing(hook, context):  # noqa: F811
    old = snapshot("old-1", age_days=1)
    hook.list_snapshots.side_effect = both_disks([snapshot("web-1-new"), old])
    held = with_labels(old, {KEY: hold_value(NEW_TIME + timedelta(hours=1))})
    hook.get_snapshot.return_value = held
    hook.delete_snapshot.return_value = operation()

    result = retention(hook, policy={"keep_last": 1}).execute(context.as_dict())

    hook.delete_snapshot.assert_not_called()
    assert result["deleted"] == []
    kept = {k["snapshot"]: k["reasons"] for k in result["kept"]}
    assert kept["old-1"] == [f"held by restore run {RUN} until {(NEW_TIME + timedelta(hours=1)).isoformat()}"]
    assert [c.kwargs for c in hook.get_snapshot.call_args_list] == [
        {"project_id": "demo-project", "name": "old-1"}
    ]


def test_retention_deletes_a_snapshot_whose_hold_expired_before_the_run(hook, context):  # noqa: F811
    old = with_labels(snapshot("old-1", age_days=1), {KEY: hold_value(NEW_TIME - timedelta(minutes=1))})
    hook.list_snapshots.side_effect = both_disks([snapshot("web-1-new"), old])
    hook.get_snapshot.return_value = old
    hook.delete_snapshot.return_value = operation()

    result = retention(hook, policy={"keep_last": 1}).execute(context.as_dict())

    assert [d["snapshot"] for d in result["deleted"]] == ["old-1"]
