"""Snapshot sets: grouped per VM and backup run, only this deployment's and group's, newest first."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from gce_vm_backup.config.labels import RUN_KEY, managed_snapshot_labels
from gce_vm_backup.restore.sets import choose_set, group_filter, newest_complete, snapshot_sets

P = "demo-project"
WEB = f"projects/{P}/zones/us-central1-a/disks/web-1"
DATA = f"projects/{P}/zones/us-central1-a/disks/web-1-data"
SHARED = f"projects/{P}/regions/us-central1/disks/shared-data"
VM = f"projects/{P}/zones/us-central1-a/instances/web-1"


def snap(name, disk, *, run=None, status="READY", day=1, group="web", deployment="test", instance="web-1"):
    labels = managed_snapshot_labels(
        deployment=deployment, group=group, instance=instance, disk_source=disk, run=run
    )
    return {
        "name": name,
        "sourceDisk": f"https://compute.googleapis.com/compute/v1/{disk}",
        "labels": labels,
        "status": status,
        "storageBytes": "1000",
        "creationTimestamp": datetime(2026, 11, day, 3, tzinfo=UTC).isoformat(),
    }


def sets_of(*snapshots, **kwargs):
    """Sets of snapshots made before manifests: grouped only for the live VM that has their disks attached
    (here web-1 with both of its disks, unless the test says otherwise)."""
    kwargs.setdefault("attached", {VM: [WEB, DATA]})
    return snapshot_sets(snapshots, group="web", deployment="test", **kwargs)


def test_snapshots_of_one_run_form_one_set_per_vm_newest_first():
    sets = sets_of(
        snap("a1", WEB, run="r1", day=1),
        snap("a2", DATA, run="r1", day=1),
        snap("b1", WEB, run="r2", day=2),
        snap("b2", DATA, run="r2", day=2),
    )

    assert list(sets) == [VM]
    assert [s.run for s in sets[VM]] == ["r2", "r1"]
    assert sets[VM][0].disks == sorted([WEB, DATA])
    assert sets[VM][0].complete
    assert sets[VM][0].ready
    assert sets[VM][0].storage_bytes == 2000


def test_snapshots_without_the_run_label_are_grouped_by_their_name_stamp():
    sets = sets_of(
        snap("web-1-us-central1-a-20261101030000-0123abcd", WEB),
        snap("web-1-data-us-central1-a-20261101030000-89abcdef", DATA),
        snap("no-stamp-here", WEB),
    )

    assert [s.run for s in sets[VM]] == ["20261101030000"]
    assert len(sets[VM][0].snapshots) == 2  # the unstamped one is in no set


def test_another_groups_or_deployments_or_hand_made_snapshots_are_left_out():
    hand_made = snap("x", WEB, run="r1")
    hand_made["labels"] = {RUN_KEY: "r1"}
    sets = sets_of(
        snap("mine", WEB, run="r1"),
        snap("other-group", WEB, run="r1", group="db"),
        snap("other-deployment", WEB, run="r1", deployment="prod"),
        hand_made,
    )

    assert [s.name for s in sets[VM][0].snapshots] == ["mine"]


def test_a_set_with_a_failed_disk_is_not_complete_and_newest_complete_skips_it():
    sets = sets_of(
        snap("a1", WEB, run="r1", day=1),
        snap("a2", DATA, run="r1", day=1),
        snap("b1", WEB, run="r2", day=2),
        snap("b2", DATA, run="r2", day=2, status="FAILED"),
        snap("c1", WEB, run="r3", day=3, status="CREATING"),
    )

    by_run = {s.run: s for s in sets[VM]}
    assert not by_run["r2"].complete
    assert not by_run["r3"].ready
    assert newest_complete(sets[VM]).run == "r1"


def test_choose_set_names_why_it_cannot_restore():
    sets = sets_of(snap("b1", WEB, run="r2", day=2), snap("b2", DATA, run="r2", status="FAILED"))[VM]

    assert choose_set(sets, "newest")[0] is None
    assert "no complete READY snapshot set" in choose_set(sets, "newest")[1]
    assert "not complete: no READY snapshot of " + DATA in choose_set(sets, "r2")[1]
    assert "no snapshot set 'r9'" in choose_set(sets, "r9")[1]
    assert "vm-backup backups" in choose_set(sets, "r9")[1]


def test_a_snapshot_without_a_manifest_belongs_to_the_live_vm_that_has_its_disk_attached():
    vm = f"projects/{P}/zones/us-central1-b/instances/db-1"
    sets = sets_of(snap("s", SHARED, run="r1", instance="db-1"), attached={vm: [SHARED]})

    assert list(sets) == [vm]
    # no live VM has it attached, or two VMs named db-1 do (a regional disk in two zones): in no set
    assert sets_of(snap("s", SHARED, run="r1", instance="db-1"), attached={}) == {}
    other = f"projects/{P}/zones/us-central1-c/instances/db-1"
    assert (
        sets_of(snap("s", SHARED, run="r1", instance="db-1"), attached={vm: [SHARED], other: [SHARED]}) == {}
    )


def test_with_boot_disk_marks_exactly_one_snapshot():
    chosen = sets_of(snap("a1", WEB, run="r1"), snap("a2", DATA, run="r1"))[VM][0].with_boot_disk(WEB)

    assert {s.disk_source: s.boot for s in chosen.snapshots} == {WEB: True, DATA: False}
    assert {s["disk_source"]: s["boot"] for s in chosen.as_dict()["snapshots"]} == {WEB: True, DATA: False}


def test_the_group_filter_is_the_documented_form():
    assert group_filter(deployment="test", group="web") == (
        '(labels.gce-vm-backup-deployment = "test") (labels.gce-vm-backup-group = "web") '
        '(labels.managed-by = "gce-vm-backup")'
    )


@pytest.mark.parametrize("hostile", ['web" OR labels.x != "y', "WEB"])
def test_a_hostile_group_cannot_go_into_the_filter(hostile):
    from gce_vm_backup.errors import ConfigError

    with pytest.raises(ConfigError):
        group_filter(deployment=hostile, group="web")


# ---- sets by VM identity (snapshots carrying the VM's manifest) -------------------------------------
def manifest(
    zone="us-central1-a", name="web-1", vm_id="42", disks=((WEB, True, "7001"), (DATA, False, "7002"))
):
    return {
        "vm": {"project": P, "zone": zone, "name": name, "id": vm_id},
        "disks": [
            {"source": d, "device": d.rsplit("/", 1)[-1], "boot": boot, "mode": "READ_WRITE", "id": disk_id}
            for d, boot, disk_id in disks
        ],
        "spec": {"machine_type": "e2-small"},
    }


def described(name, disk, *, body=None, source_id=None, **kwargs):
    from gce_vm_backup.config import manifest as vm_manifest

    snapshot = snap(name, disk, **kwargs)
    body = body or manifest()
    snapshot["description"] = vm_manifest.describe(body, disk_source=disk)
    entry = next((d for d in body["disks"] if d["source"] == disk), {})
    snapshot["sourceDiskId"] = source_id or entry.get("id", "1")
    return snapshot


def identity_sets(*snapshots):
    return snapshot_sets(snapshots, group="web", deployment="test")


def test_a_manifest_set_needs_no_live_vm_and_names_the_vm_its_id_and_its_boot_disk():
    (only,) = identity_sets(described("a1", WEB, run="r1"), described("a2", DATA, run="r1"))[VM]

    assert (only.vm_id, only.complete, only.manifest.vm.path) == ("42", True, VM)
    assert {s.disk_source: s.boot for s in only.snapshots} == {WEB: True, DATA: False}
    as_dict = only.as_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["manifest"]["disks"][0]["source"] == WEB
    assert as_dict["manifest"]["spec"] == {"machine_type": "e2-small"}


def test_a_vm_made_again_under_its_name_has_sets_of_its_own_id():
    sets = identity_sets(
        described("old", WEB, run="r1", day=1, body=manifest(vm_id="41", disks=((WEB, True, "7001"),))),
        described("new", WEB, run="r2", day=2, body=manifest(vm_id="42", disks=((WEB, True, "7001"),))),
    )[VM]

    assert [(s.run, s.vm_id) for s in sets] == [("r2", "42"), ("r1", "41")]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"source_id": "9999"}, "a disk of the same name, deleted and made again"),
        ({"instance": "batch-1"}, "labelled as another VM than the manifest names"),
        ({"body": manifest(zone="us-central1-b")}, "a zonal disk in another zone than the VM's"),
        ({"body": manifest(disks=((DATA, False, "7002"),))}, "a disk the VM did not have"),
    ],
)
def test_a_snapshot_that_its_manifest_does_not_vouch_for_joins_no_set(change, why):
    sets = identity_sets(described("a1", WEB, run="r1", **change), described("a2", DATA, run="r1"))

    assert [s.name for s in sets[VM][0].snapshots] == ["a2"], why
    assert not sets[VM][0].complete


def test_a_disk_recorded_as_not_covered_is_not_needed_for_a_complete_set():
    body = manifest()
    body["disks"][1]["covered"] = False

    (only,) = identity_sets(described("a1", WEB, run="r1", body=body))[VM]

    assert only.complete
    assert only.expected_disks == [WEB]
    (without,) = identity_sets(described("a1", WEB, run="r1"))[VM]
    assert not without.complete
    assert without.missing == [DATA]
