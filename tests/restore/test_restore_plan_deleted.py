"""The restore plan of a VM that no longer exists, against an autospec of the restore hook and snapshot
sets built here: rebuilt from the set's manifest, or refused in one line that says why, never a raw
ResourceNotFoundError."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from google.cloud import compute_v1

from gce_vm_backup.config.manifest import Manifest, ManifestDisk, VmIdentity
from gce_vm_backup.errors import BackupError, ConfigError, ResourceNotFoundError
from gce_vm_backup.restore import plan as restore_plan
from gce_vm_backup.restore.plan import NOT_FOUND, RestorePlanOperator, plan_text
from gce_vm_backup.restore.sets import SetSnapshot, SnapshotSet
from gce_vm_backup.restore.steps import RESTORE_KEY

from .hook_spec import RestoreHookSpec

P, ZA, ZB = "demo-project", "us-central1-a", "us-central1-b"
VM = f"projects/{P}/zones/{ZA}/instances/web-1"
BOOT, DATA = f"projects/{P}/zones/{ZA}/disks/web-1", f"projects/{P}/zones/{ZA}/disks/web-1-data"
EXPLICIT = [{"project_id": P, "zone": ZA, "instance": "web-1", "disks": None}]
SELECTOR = [{"project_id": P, "zones": None, "labels": {"tier": "web"}}]
SPEC = {
    "machine_type": "n2-standard-2",
    "network_interfaces": [
        {
            "network": f"projects/{P}/global/networks/prod",
            "subnetwork": f"projects/{P}/regions/us-central1/subnetworks/a",
        }
    ],
    "service_accounts": [{"email": "web@demo-project.iam.gserviceaccount.com", "scopes": ["https://x/y"]}],
    "scheduling": {"automaticRestart": True, "onHostMaintenance": "MIGRATE"},
    "labels": {"app": "shop", "tier": "web"},
    "tags": ["http-server"],
    "metadata": {"startup-script": "echo up", "ssh-keys": None},
}


class Ti:
    dag_id = "gce_vm_backup_restore__web"

    def __init__(self):
        self.pushed = {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


def manifest(vm=VM, spec=SPEC, cut=(), disks=None):
    project, zone, name = vm.split("/")[1], vm.split("/")[3], vm.split("/")[5]
    return Manifest(
        vm=VmIdentity(project, zone, name, "1234"),
        disk=BOOT,
        disks=disks
        or (
            ManifestDisk(BOOT, "boot", True, "READ_WRITE", "11", "pd-ssd"),
            ManifestDisk(DATA, "data", False, "READ_ONLY", "12", "pd-balanced"),
        ),
        spec=spec,
        cut=tuple(cut),
    )


def snapshot_set(vm=VM, run="run-2", with_manifest=True, disks=(BOOT, DATA), **manifest_args):
    created = datetime(2026, 5, 1, tzinfo=UTC)
    return SnapshotSet(
        run=run,
        created_at=created,
        vm=vm,
        snapshots=tuple(
            SetSnapshot(f"{d.rsplit('/', 1)[-1]}-{run}", d, "READY", 1 << 30, created) for d in disks
        ),
        vm_id="1234",
        manifest=manifest(vm, **manifest_args) if with_manifest else None,
    )


@pytest.fixture
def hook():
    hook = create_hook()
    hook.get_instance.side_effect = ResourceNotFoundError("get VM ...: not found")
    hook.list_instances.return_value = []
    hook.list_snapshots.return_value = []
    return hook


def create_hook():
    from unittest.mock import create_autospec

    return create_autospec(RestoreHookSpec, instance=True)


def plan(hook, monkeypatch, sets, *, targets=EXPLICIT, vm="us-central1-a/web-1", **form):
    monkeypatch.setattr(restore_plan, "snapshot_sets", lambda snapshots, **kwargs: sets)
    form.setdefault("mode", "new-vm")
    operator = RestorePlanOperator(
        task_id="plan", targets=targets, vm=vm, deployment="test", group="web", **form
    )
    operator._hook = hook
    return operator.execute({"ti": Ti(), "run_id": "manual__1"})


def refused(hook, monkeypatch, sets, **kwargs):
    with pytest.raises(BackupError) as raised:
        plan(hook, monkeypatch, sets, **kwargs)
    assert not isinstance(raised.value, ResourceNotFoundError)
    message = str(raised.value)
    assert "\n" not in message
    assert message.endswith("Nothing was done.")
    return message


def test_a_gone_vm_is_planned_as_a_rebuild_from_its_manifest(hook, monkeypatch):
    result = plan(hook, monkeypatch, {VM: [snapshot_set()]})

    assert result["prior_status"] == NOT_FOUND
    assert result["mode"] == "new-vm"
    assert [
        (d["device_name"], d["boot"], d["mode"], d["disk_type"], d["location"]) for d in result["disks"]
    ] == [
        ("boot", True, "READ_WRITE", "pd-ssd", ZA),
        ("data", False, "READ_ONLY", "pd-balanced", ZA),
    ]
    new_vm = result["new_vm"]
    assert new_vm["name"] == "web-1"  # its old name
    assert new_vm["rebuilt"] is True
    assert new_vm["machine_type"] == "n2-standard-2"
    assert new_vm["network_interfaces"] == [
        {
            "network": f"projects/{P}/global/networks/prod",
            "subnetwork": f"projects/{P}/regions/us-central1/subnetworks/a",
        }
    ]
    assert new_vm["metadata"] == {"startup-script": "echo up"}
    assert new_vm["metadata_not_restored"] == ["ssh-keys"]
    assert new_vm["labels"] == {"app": "shop", "tier": "web"}
    assert "metadata keys not restored (no value in the manifest): ssh-keys" in plan_text(result)
    assert "no external IP" in plan_text(result)
    hook.insert_disk.assert_not_called()
    hook.insert_instance.assert_not_called()


def test_a_form_network_and_machine_type_override_the_manifests(hook, monkeypatch):
    result = plan(
        hook, monkeypatch, {VM: [snapshot_set()]}, network="scratch", machine_type="e2-small", new_name="w2"
    )

    assert result["new_vm"]["network_interfaces"] == [{"network": "scratch", "subnetwork": None}]
    assert (result["new_vm"]["machine_type"], result["new_vm"]["name"]) == ("e2-small", "w2")


def test_a_set_made_before_manifests_cannot_rebuild_and_says_so_in_one_line(hook, monkeypatch):
    message = refused(hook, monkeypatch, {VM: [snapshot_set(with_manifest=False)]})

    assert message.startswith(
        f"Cannot rebuild {VM}: it does not exist any more and snapshot set run-2 was made"
    )


def test_replace_disks_of_a_gone_vm_is_refused_before_any_set_is_chosen(hook, monkeypatch):
    message = refused(hook, monkeypatch, {VM: [snapshot_set()]}, mode="replace-disks")

    assert "the VM does not exist any more" in message
    assert "mode new-vm" in message


def test_a_gone_vm_without_sets_is_a_clear_error_not_a_not_found(hook, monkeypatch):
    message = refused(hook, monkeypatch, {})

    assert "it does not exist any more, and no snapshot set of group web records it" in message


def test_a_manifest_without_network_interfaces_needs_the_form_network(hook, monkeypatch):
    spec = {k: v for k, v in SPEC.items() if k != "network_interfaces"}
    sets = {VM: [snapshot_set(spec=spec, cut=("metadata", "network_interfaces"))]}

    message = refused(hook, monkeypatch, sets)
    assert "records no network interface" in message
    assert "give network" in message

    result = plan(hook, monkeypatch, sets, network="prod")
    assert result["new_vm"]["network_interfaces"] == [{"network": "prod", "subnetwork": None}]
    assert result["new_vm"]["not_recorded"] == ["metadata", "network_interfaces"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"tags": ["Bad Tag"]}, "network tags"),
        ({"metadata": {"bad key": "x"}}, "metadata"),
        ({"labels": {"x" * 64: "v"}}, "labels"),
        ({"labels": {f"k{i}": "v" for i in range(61)}}, "labels"),  # 61 + this run's 4 > 64
        ({"scheduling": {"nodeAffinities": []}}, "scheduling"),
        ({"service_accounts": [{"email": "a@b", "scopes": ["cloud-platform"]}]}, "service accounts"),
        ({"machine_type": "zones/x/machineTypes/../../y"}, "machine type"),
        (
            {
                "network_interfaces": [
                    {
                        "network": f"projects/{P}/global/networks/prod",
                        "subnetwork": f"projects/{P}/regions/europe-west1/subnetworks/a",
                    }
                ]
            },
            "network interface 0",
        ),
    ],
)
def test_hostile_or_broken_manifest_values_are_refused_before_anything_is_made(
    hook, monkeypatch, change, named
):
    message = refused(hook, monkeypatch, {VM: [snapshot_set(spec={**SPEC, **change})]})

    assert named in message


def test_a_manifest_of_another_vm_or_without_the_boot_disk_snapshot_is_refused(hook, monkeypatch):
    other = snapshot_set()
    other = dataclasses.replace(other, manifest=manifest(vm=f"projects/{P}/zones/{ZB}/instances/web-1"))
    assert "is of VM projects/demo-project/zones/us-central1-b/instances/web-1" in refused(
        hook, monkeypatch, {VM: [other]}
    )
    # the manifest records the boot disk, so a set without its snapshot is not complete
    assert "no complete READY snapshot set (sets seen: run-2 (incomplete))" in refused(
        hook, monkeypatch, {VM: [snapshot_set(disks=(DATA,))]}
    )


def test_a_new_name_taken_by_another_vm_is_refused(hook, monkeypatch):
    def get_instance(*, project_id, zone, name):
        if name == "web-1":
            raise ResourceNotFoundError("not found")
        return compute_v1.Instance(name=name, status="RUNNING", labels={"app": "other"})

    hook.get_instance.side_effect = get_instance

    assert "a VM of that name exists" in refused(hook, monkeypatch, {VM: [snapshot_set()]}, new_name="taken")


def test_a_vm_a_selector_no_longer_matches_is_found_by_its_sets(hook, monkeypatch):
    gone_b = f"projects/{P}/zones/{ZB}/instances/web-1"
    sets = {VM: [snapshot_set()], gone_b: [snapshot_set(vm=gone_b)]}

    with pytest.raises(ConfigError, match=rf"matches 2 VMs \({VM}, {gone_b}\)"):
        plan(hook, monkeypatch, sets, targets=SELECTOR, vm="web-1")
    assert plan(hook, monkeypatch, sets, targets=SELECTOR, vm=VM)["vm"] == VM
    with pytest.raises(ConfigError, match="matches no VM"):
        plan(
            hook,
            monkeypatch,
            sets,
            targets=SELECTOR,
            vm="projects/other-project/zones/us-central1-a/instances/web-1",
        )
    with pytest.raises(ConfigError, match="is not instance, zone/instance or projects/P/zones/Z/instances/I"):
        plan(hook, monkeypatch, sets, targets=SELECTOR, vm="us-central1-a/../web-1")


def test_a_restored_vm_that_exists_keeps_the_plan_it_had(hook, monkeypatch):
    web_1 = compute_v1.Instance(
        name="web-1",
        status="RUNNING",
        machine_type=f"zones/{ZA}/machineTypes/e2-small",
        disks=[
            compute_v1.AttachedDisk(
                source=BOOT, device_name="web-1", boot=True, mode="READ_WRITE", type_="PERSISTENT"
            ),
            compute_v1.AttachedDisk(
                source=DATA, device_name="web-1-data", mode="READ_WRITE", type_="PERSISTENT"
            ),
        ],
        network_interfaces=[compute_v1.NetworkInterface(network=f"projects/{P}/global/networks/default")],
    )

    def get_instance(*, project_id, zone, name):
        if name != "web-1":
            raise ResourceNotFoundError("not found")
        return web_1

    hook.get_instance.side_effect = get_instance
    result = plan(hook, monkeypatch, {VM: [snapshot_set()]}, new_name="copy")

    assert result["prior_status"] == "RUNNING"
    assert "rebuilt" not in result["new_vm"]
    assert [d["device_name"] for d in result["disks"]] == ["web-1", "web-1-data"]  # its attachments'
    assert RESTORE_KEY not in result["new_vm"]


def test_a_dry_run_of_a_gone_vm_shows_the_rebuild_and_changes_nothing(hook, monkeypatch):
    result = plan(hook, monkeypatch, {VM: [snapshot_set()]}, dry_run=True)

    text = plan_text(result)
    assert text.startswith(
        f"DRY RUN - Rebuild {VM} (new-vm, the VM does not exist any more) from snapshot set"
    )
    assert "- not rebuilt: external and static IPs" in text
    for method in ("insert_disk", "insert_instance", "delete_disk", "delete_instance", "stop_instance"):
        getattr(hook, method).assert_not_called()
