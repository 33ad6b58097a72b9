"""Verification and retention through the real client against the emulator (loopback, no credentials)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from gce_vm_backup.backup.retention import ApplyRetentionOperator, VerifySnapshotsOperator
from gce_vm_backup.compute.naming import snapshot_name
from gce_vm_backup.config.labels import (
    DEPLOYMENT_KEY,
    GROUP_KEY,
    managed_disk_filter,
    managed_snapshot_labels,
)
from gce_vm_backup.errors import BackupError, OperationFailedError
from gce_vm_backup.operators import PrecheckInstanceOperator

from .conftest import PROJECT, RUN_TIME, ZONE, converge

pytestmark = pytest.mark.emulator

DISK = f"projects/{PROJECT}/zones/{ZONE}/disks/web-1"
DATA = f"projects/{PROJECT}/zones/{ZONE}/disks/web-1-data"


def seed_old(
    emulator,
    name,
    *,
    disk=DISK,
    days_before,
    managed=True,
    status="READY",
    group="web",
    deployment="test",
    source_disk=None,
):
    """A snapshot as a previous run (of ``deployment`` and ``group``) would have left it, ``days_before``
    the emulator's 'now'; ``source_disk`` makes it a snapshot of another disk that carries ``disk``'s
    labels."""
    now = datetime.fromisoformat(emulator.clock.timestamp())
    labels = (
        managed_snapshot_labels(deployment=deployment, group=group, instance="web-1", disk_source=disk)
        if managed
        else {}
    )
    created = (now - timedelta(days=days_before)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    emulator.seed_snapshot(
        PROJECT,
        {
            "name": name,
            "sourceDisk": source_disk or disk,
            "labels": labels,
            "creationTimestamp": created,
            "status": status,
        },
    )


class CaptureLooks:
    """The downtime task's capture step (snapshot_ops.capture_standard), one look per poke: the emulator's
    clock is advanced between looks."""

    task_id = "capture"

    def __init__(self, *, instance_record, deployment, group, ready_when="READY"):
        from gce_vm_backup.backup.capture import CaptureSettings

        self.record = instance_record
        self.settings = CaptureSettings(deployment, group, early_restart=ready_when == "UPLOADING")

    def poke(self, context):
        from gce_vm_backup.backup.capture import capture_standard
        from gce_vm_backup.compute.hook import ComputeBackupHook
        from gce_vm_backup.errors import OperationTimeoutError
        from gce_vm_backup.runtime.base import RunKey

        run = RunKey.from_context(context)
        try:
            return capture_standard(
                ComputeBackupHook(), self.record, run, deadline=0.0, settings=self.settings
            )
        except OperationTimeoutError:  # not there yet: look again after the clock moved
            return False


def backup_disks(
    emulator, context, disks=("web-1",), step=60, group="web", deployment="test", **snapshot_kwargs
):
    record = PrecheckInstanceOperator(
        task_id="precheck", project_id=PROJECT, zone=ZONE, instance="web-1", disks=list(disks)
    ).execute(context.as_dict())
    sensor = CaptureLooks(deployment=deployment, group=group, instance_record=record, **snapshot_kwargs)
    return record, converge(sensor, context, emulator, step=step)


def apply(context, record, records, **kwargs):
    kwargs.setdefault("policy", {"keep_last": 2})
    kwargs.setdefault("deployment", "test")
    kwargs.setdefault("group", "web")
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
    sensor = CaptureLooks(deployment="test", group="web", instance_record=record)
    with pytest.raises(OperationFailedError):
        converge(sensor, context, fast_emulator, step=30)
    failed_name = snapshot_name(
        instance="web-1",
        disk="web-1",
        zone_or_region=ZONE,
        run_time=RUN_TIME,
        run_id=context.run_id,
        scope="test/web",
    )
    claimed = [{"vm": "x", "disk_source": DISK, "snapshot": failed_name, "status": "FAILED"}]
    fast_emulator.clear_calls()  # the snapshot task deleted its FAILED snapshot itself

    with pytest.raises(BackupError, match=rf"not applied to disk {DISK}: this run's snapshot {failed_name}"):
        apply(context, record, claimed, policy={"keep_last": 1})

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


def next_run(emulator, context, run_id):
    """Another DAG run, past the per-disk snapshot rate limit."""
    emulator.clock.advance(601)
    context.run_id = run_id


def test_two_groups_on_one_disk_each_apply_their_own_policy_to_their_own_snapshots(fast_emulator, context):
    # nightly keeps 1, monthly keeps 3, both back up web-1's boot disk in the same deployment
    for day in (1, 2, 3):
        seed_old(fast_emulator, f"nightly-old-{day}", days_before=day, group="nightly")
    for month in (1, 2, 3, 4):
        seed_old(fast_emulator, f"monthly-old-{month}", days_before=30 * month, group="monthly")

    record, nightly = backup_disks(fast_emulator, context, group="nightly")
    result = apply(context, record, nightly, group="nightly", policy={"keep_last": 1})
    assert {d["snapshot"] for d in result["deleted"]} == {"nightly-old-1", "nightly-old-2", "nightly-old-3"}
    assert {f"monthly-old-{m}" for m in (1, 2, 3, 4)} <= names(fast_emulator)

    next_run(fast_emulator, context, "scheduled__monthly")
    record, monthly = backup_disks(fast_emulator, context, group="monthly")
    result = apply(context, record, monthly, group="monthly", policy={"keep_last": 3})
    assert {d["snapshot"] for d in result["deleted"]} == {"monthly-old-3", "monthly-old-4"}
    assert names(fast_emulator) == {
        nightly[0]["snapshot"],  # nightly's newest: monthly's policy never counts or deletes it
        monthly[0]["snapshot"],
        "monthly-old-1",
        "monthly-old-2",
    }


def test_one_deployment_never_deletes_another_deployments_snapshots(fast_emulator, context):
    for day in (1, 2, 3):
        seed_old(fast_emulator, f"prod-old-{day}", days_before=day, deployment="prod")
        seed_old(fast_emulator, f"staging-old-{day}", days_before=day, deployment="staging")
    record, records = backup_disks(fast_emulator, context, deployment="staging")
    new = fast_emulator.world.snapshots[f"projects/{PROJECT}/global/snapshots/{records[0]['snapshot']}"]
    assert new["labels"][DEPLOYMENT_KEY] == "staging"

    result = apply(context, record, records, deployment="staging", policy={"keep_last": 1})

    assert {d["snapshot"] for d in result["deleted"]} == {"staging-old-1", "staging-old-2", "staging-old-3"}
    assert {"prod-old-1", "prod-old-2", "prod-old-3"} <= names(fast_emulator)


def test_forged_labels_on_another_disks_snapshot_and_pre_deployment_snapshots_are_never_deleted(
    fast_emulator, context
):
    seed_old(fast_emulator, "ours-old", days_before=2)
    # carries exactly our labels for web-1's boot disk (anyone can compute them) but was made from another
    seed_old(fast_emulator, "forged", days_before=3, source_disk=DATA)
    # made before snapshots carried a deployment label: never a candidate
    before = managed_snapshot_labels(deployment="test", group="web", instance="web-1", disk_source=DISK)
    before.pop(DEPLOYMENT_KEY)
    fast_emulator.seed_snapshot(PROJECT, {"name": "pre-deployment", "sourceDisk": DISK, "labels": before})
    record, records = backup_disks(fast_emulator, context)

    result = apply(context, record, records, policy={"keep_last": 1})

    assert [d["snapshot"] for d in result["deleted"]] == ["ours-old"]
    assert {"forged", "pre-deployment"} <= names(fast_emulator)
    kept = {k["snapshot"]: k["reasons"] for k in result["kept"]}
    assert kept["forged"] == ["not made by gce-vm-backup for this deployment, group and disk"]
    assert "pre-deployment" not in kept  # the server-side filter never even listed it


def test_a_new_snapshot_relabelled_after_verify_fails_retention_naming_disk_and_filter(
    fast_emulator, context
):
    for day in (1, 2):
        seed_old(fast_emulator, f"web-1-old-{day}", days_before=day)
    record, records = backup_disks(fast_emulator, context)
    new = fast_emulator.world.snapshots[f"projects/{PROJECT}/global/snapshots/{records[0]['snapshot']}"]
    new["labels"][GROUP_KEY] = "someone-else"  # the filter no longer finds this run's copy

    with pytest.raises(BackupError) as raised:
        apply(context, record, records, policy={"keep_last": 1})

    message = str(raised.value)
    assert f"Retention policy not applied to disk {DISK}" in message
    assert f"this run's snapshot {records[0]['snapshot']} is READY but missing from the listing" in message
    assert managed_disk_filter(DISK, deployment="test", group="web") in message
    assert fast_emulator.calls_for("compute.snapshots.delete") == []
    assert {"web-1-old-1", "web-1-old-2"} <= names(fast_emulator)
