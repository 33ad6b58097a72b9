"""Instant mode: the standard snapshot made from an instant snapshot carries the VM's manifest, so it forms
the VM's snapshot set like a standard capture's (restore_sets), against the emulator."""

from __future__ import annotations

import time

import pytest

from gce_vm_backup.backup.capture import CaptureSettings
from gce_vm_backup.backup.instant import ConvertInstantSnapshotsOperator, capture_instant
from gce_vm_backup.compute.hook import ComputeBackupHook
from gce_vm_backup.config import manifest as vm_manifest
from gce_vm_backup.operators import PrecheckInstanceOperator
from gce_vm_backup.restore.sets import snapshot_sets
from gce_vm_backup.runtime.base import RunKey

from .conftest import PROJECT, ZONE_A, converge

pytestmark = pytest.mark.emulator
VM = f"projects/{PROJECT}/zones/{ZONE_A}/instances/web-1"


def test_the_converted_snapshots_carry_the_manifest_and_form_the_vms_set(emulator, context):
    with emulator.world.lock:
        emulator.world.timings["instant_snapshot_create"] = 0.2
    record = PrecheckInstanceOperator(
        task_id="precheck", project_id=PROJECT, zone=ZONE_A, instance="web-1", description="nightly"
    ).execute(context.as_dict())
    run = RunKey.from_context(context.as_dict())
    settings = CaptureSettings(deployment="test", group="web", description="nightly")
    instants = capture_instant(
        ComputeBackupHook(), record, run, deadline=time.monotonic() + 60, settings=settings
    )
    convert = ConvertInstantSnapshotsOperator(
        task_id="convert",
        instant_records=instants,
        instance_record=record,
        deployment="test",
        group="web",
        description="nightly",
    )

    converted = converge(convert, context, emulator)

    snapshots = [s for s in emulator.snapshots(PROJECT) if s["name"] in {r["snapshot"] for r in converted}]
    assert len(snapshots) == len(record["disks"]) == 2
    for snapshot in snapshots:
        manifest = vm_manifest.parse(snapshot["description"])
        assert manifest is not None
        assert manifest.vm.path == VM
        assert manifest.vm.id == record["id"]
        assert manifest.note == "nightly"
        assert snapshot["sourceDisk"].endswith(manifest.disk)
    (only,) = snapshot_sets(snapshots, group="web", deployment="test")[VM]
    assert only.complete
    assert only.vm_id == record["id"]
