"""The VM manifest written into snapshot descriptions: what it keeps, what it never keeps, its size."""

from __future__ import annotations

import json

import pytest
from google.cloud import compute_v1

from gce_vm_backup.config import manifest as vm_manifest

BOOT = "projects/p/zones/us-central1-a/disks/web-1"
DATA = "projects/p/zones/us-central1-a/disks/web-1-data"


def _instance(**overrides: object) -> compute_v1.Instance:
    fields: dict[str, object] = {
        "name": "web-1",
        "id": 4242,
        "machine_type": "https://compute.googleapis.com/compute/v1/projects/p/zones/us-central1-a/machineTypes/e2-small",
        "labels": {"team": "web", "gce-vm-backup-lease": "backup-1-abc"},
        "disks": [
            compute_v1.AttachedDisk(
                source=f"https://x/compute/v1/{BOOT}", boot=True, device_name="boot", type_="PERSISTENT"
            ),
            compute_v1.AttachedDisk(
                source=f"https://x/compute/v1/{DATA}", device_name="data", mode="READ_ONLY"
            ),
            compute_v1.AttachedDisk(type_="SCRATCH", device_name="local-ssd-0"),
        ],
        "network_interfaces": [
            compute_v1.NetworkInterface(
                network="https://x/compute/v1/projects/p/global/networks/vpc",
                subnetwork="https://x/compute/v1/projects/p/regions/us-central1/subnetworks/web",
                access_configs=[compute_v1.AccessConfig(nat_i_p="203.0.113.7")],
            )
        ],
        "metadata": compute_v1.Metadata(items=[compute_v1.Items(key="startup-script", value="echo secret")]),
        "scheduling": compute_v1.Scheduling(on_host_maintenance="MIGRATE"),
        "tags": compute_v1.Tags(items=["http"]),
    }
    fields.update(overrides)
    return compute_v1.Instance(**fields)


def test_manifest_keeps_identity_disks_and_spec_but_no_external_ip_or_metadata_value() -> None:
    manifest = vm_manifest.build(_instance(), project="p", zone="us-central1-a")

    assert manifest["vm"] == {"project": "p", "zone": "us-central1-a", "name": "web-1", "id": "4242"}
    assert [(d["source"], d["device"], d["boot"], d["mode"]) for d in manifest["disks"]] == [
        (BOOT, "boot", True, "READ_WRITE"),
        (DATA, "data", False, "READ_ONLY"),
    ]
    spec = manifest["spec"]
    assert spec["machine_type"] == "e2-small"
    assert spec["network_interfaces"] == [
        {
            "network": "projects/p/global/networks/vpc",
            "subnetwork": "projects/p/regions/us-central1/subnetworks/web",
        }
    ]
    assert "203.0.113.7" not in json.dumps(manifest)
    assert spec["metadata"] == {"startup-script": None}
    assert "echo secret" not in json.dumps(manifest)
    # the package's own labels (the lease) are never carried into a rebuilt VM
    assert spec["labels"] == {"team": "web"}
    # an unset optional field is absent, not its zero value (automatic_restart defaults to true in the API)
    assert spec["scheduling"] == {"onHostMaintenance": "MIGRATE"}


def test_metadata_values_only_when_opted_in() -> None:
    manifest = vm_manifest.build(_instance(), project="p", zone="us-central1-a", metadata_values=True)
    assert manifest["spec"]["metadata"] == {"startup-script": "echo secret"}


def test_rest_json_and_client_objects_give_the_same_manifest() -> None:
    instance = _instance()
    as_json = json.loads(compute_v1.Instance.to_json(instance))
    assert vm_manifest.build(as_json, project="p", zone="us-central1-a") == vm_manifest.build(
        instance, project="p", zone="us-central1-a"
    )


def test_description_round_trips_and_names_its_disk() -> None:
    manifest = vm_manifest.build(_instance(), project="p", zone="us-central1-a", note="nightly")
    parsed = vm_manifest.parse(vm_manifest.describe(manifest, disk_source=DATA))
    assert parsed is not None
    assert parsed.vm.path == "projects/p/zones/us-central1-a/instances/web-1"
    assert parsed.vm.id == "4242"
    assert parsed.disk == DATA
    assert parsed.boot_disk is not None
    assert parsed.boot_disk.source == BOOT
    assert parsed.disk_entry(DATA) is not None
    assert parsed.disk_entry(DATA).mode == "READ_ONLY"
    assert parsed.note == "nightly"
    assert parsed.cut == ()


def test_a_spec_too_big_is_cut_in_order_and_says_so() -> None:
    big = compute_v1.Metadata(items=[compute_v1.Items(key=f"key-{i}", value="v" * 100) for i in range(40)])
    manifest = vm_manifest.build(
        _instance(metadata=big), project="p", zone="us-central1-a", metadata_values=True
    )
    text = vm_manifest.describe(manifest, disk_source=BOOT)
    assert len(text) <= vm_manifest.MAX_DESCRIPTION
    parsed = vm_manifest.parse(text)
    assert parsed is not None
    assert parsed.cut == ("metadata",)
    assert parsed.spec["machine_type"] == "e2-small"


def test_identity_and_disks_that_cannot_fit_are_refused() -> None:
    disks = [
        compute_v1.AttachedDisk(source=f"https://x/compute/v1/projects/p/zones/z/disks/d-{i:03d}")
        for i in range(60)
    ]
    manifest = vm_manifest.build(_instance(disks=disks), project="p", zone="z")
    with pytest.raises(ValueError, match="does not fit"):
        vm_manifest.describe(manifest, disk_source="projects/p/zones/z/disks/d-000")


@pytest.mark.parametrize(
    "description",
    [
        None,
        "",
        "gce-vm-backup of disk web-1",
        vm_manifest.PREFIX + "{not json",
        vm_manifest.PREFIX + '{"vm": 3}',
    ],
)
def test_a_description_that_is_not_a_manifest_reads_as_none(description: str | None) -> None:
    assert vm_manifest.parse(description) is None
