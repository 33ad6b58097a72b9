"""Verification and retention through the real client against the emulator (loopback, no credentials)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from gce_vm_backup.errors import OperationFailedError
from gce_vm_backup.labels import managed_snapshot_labels
from gce_vm_backup.naming import snapshot_name
from gce_vm_backup.operators import PrecheckInstanceOperator, SnapshotDisksOperator
from gce_vm_backup.retention_ops import ApplyRetentionOperator, VerifySnapshotsOperator

from .conftest import PROJECT, RUN_TIME, ZONE, converge

pytestmark = pytest.mark.emulator

DISK = f"projects/{PROJECT}/zones/{ZONE}/disks/web-1"
DATA = f"projects/{PROJECT}/zones/{ZONE}/disks/web-1-data"


def seed_old(emulator, name, *, disk=DISK, days_before, managed=True, status="READY"):
    """A snapshot as a previous run would have left it, ``days_before`` the emulator's 'now'."""
    now = datetime.fromisoformat(emulator.clock.timestamp())
    labels = managed_snapshot_labels(group="web", instance="web-1", disk_source=disk) if managed else {}
    created = (now - timedelta(days=days_before)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    emulator.seed_snapshot(
        PROJECT,
        {"name": name, "sourceDisk": disk, "labels": labels, "creationTimestamp": created, "status": status},
    )


def backup_disks(emulator, context, disks=("web-1",), step=60, **snapshot_kwargs):
    record = PrecheckInstanceOperator(
        task_id="precheck", project_id=PROJECT, zone=ZONE, instance="web-1", disks=list(disks)
    ).execute(context.as_dict())
    sensor = SnapshotDisksOperator(task_id="snapshot", group="web", instance_record=record, **snapshot_kwargs)
    return record, converge(sensor, context, emulator, step=step)


def apply(context, record, records, **kwargs):
    kwargs.setdefault("policy", {"keep_last": 2})
    operator = ApplyRetentionOperator(
        task_id="retention", instance_record=record, snapshot_records=records, **kwargs
    )
    return operator.execute(context.as_dict())


def names(emulator):
    return {s["name"] for s in emulator.snapshots(PROJECT)}


def test_after_a_good_run_retention_deletes_the_expected_set_and_spares_foreign_snapshots(
    fast_emulator, context
):
    for day in (1, 2, 3, 4):
        seed_old(fast_emulator, f"web-1-old-{day}", days_before=day)
    seed_old(fast_emulator, "hand-made", days_before=90, managed=False)
    seed_old(fast_emulator, "web-1-data-old", disk=DATA, days_before=5)  # another disk: not ours to prune now
    record, records = backup_disks(fast_emulator, context)

    result = apply(context, record, records)

    new = records[0]["snapshot"]
    assert {d["snapshot"] for d in result["deleted"]} == {"web-1-old-2", "web-1-old-3", "web-1-old-4"}
    assert names(fast_emulator) == {new, "web-1-old-1", "hand-made", "web-1-data-old"}
    deletes = fast_emulator.calls_for("compute.snapshots.delete")
    assert len(deletes) == 3
    assert all(call.request_id for call in deletes)


def test_after_a_failed_snapshot_retention_deletes_nothing_for_that_disk(fast_emulator, context):
    for day in (1, 2, 3):
        seed_old(fast_emulator, f"web-1-old-{day}", days_before=day)
    fast_emulator.faults.fail_snapshot(PROJECT, name_prefix="web-1-us-central1-a")
    record = PrecheckInstanceOperator(
        task_id="precheck", project_id=PROJECT, zone=ZONE, instance="web-1", disks=["web-1"]
    ).execute(context.as_dict())
    sensor = SnapshotDisksOperator(task_id="snapshot", group="web", instance_record=record)
    with pytest.raises(OperationFailedError):
        converge(sensor, context, fast_emulator, step=30)
    failed_name = snapshot_name(
        instance="web-1", disk="web-1", zone_or_region=ZONE, run_time=RUN_TIME, run_id=context.run_id
    )
    claimed = [{"vm": "x", "disk_source": DISK, "snapshot": failed_name, "status": "FAILED"}]
    fast_emulator.clear_calls()  # the snapshot task deleted its FAILED snapshot itself

    result = apply(context, record, claimed, policy={"keep_last": 1})

    assert result["deleted"] == []
    assert fast_emulator.calls_for("compute.snapshots.delete") == []
    assert names(fast_emulator) == {"web-1-old-1", "web-1-old-2", "web-1-old-3"}


def test_listing_beyond_one_page_finds_every_old_snapshot(fast_emulator, context):
    for index in range(23):
        seed_old(fast_emulator, f"web-1-old-{index:02d}", days_before=1 + index)
    record, records = backup_disks(fast_emulator, context)

    result = apply(context, record, records, policy={"keep_last": 3}, max_results=5)

    assert len(fast_emulator.calls_for("compute.snapshots.list")) == 5  # 24 snapshots, 5 a page
    assert len(result["deleted"]) == 21
    assert names(fast_emulator) == {records[0]["snapshot"], "web-1-old-00", "web-1-old-01"}


def test_dry_run_lists_and_plans_but_never_deletes(fast_emulator, context):
    for day in (1, 2, 3):
        seed_old(fast_emulator, f"web-1-old-{day}", days_before=day)
    record, records = backup_disks(fast_emulator, context)

    result = apply(context, record, records, policy={"keep_last": 1}, plan_only=True)

    assert {d["snapshot"] for d in result["would_delete"]} == {"web-1-old-1", "web-1-old-2", "web-1-old-3"}
    assert fast_emulator.calls_for("compute.snapshots.delete") == []
    assert len(names(fast_emulator)) == 4


def test_planning_again_after_retention_deletes_nothing_more(fast_emulator, context):
    for day in range(1, 6):
        seed_old(fast_emulator, f"web-1-old-{day}", days_before=day)
    record, records = backup_disks(fast_emulator, context)
    apply(context, record, records, policy={"keep_last": 2, "gfs": {"weekly": 1}})
    fast_emulator.clear_calls()

    again = apply(context, record, records, policy={"keep_last": 2, "gfs": {"weekly": 1}})

    assert again["deleted"] == []
    assert fast_emulator.calls_for("compute.snapshots.delete") == []


def test_verification_waits_out_uploading_after_an_early_restart(fast_emulator, context):
    _, records = backup_disks(fast_emulator, context, step=16, ready_when="UPLOADING")
    assert [r["status"] for r in records] == ["UPLOADING"]
    verify = VerifySnapshotsOperator(task_id="verify", snapshot_records=records, poke_interval=1)
    verified = converge(verify, context, fast_emulator, step=5)
    assert [r["status"] for r in verified] == ["READY"]
    assert verified[0]["storage_bytes"] > 0
