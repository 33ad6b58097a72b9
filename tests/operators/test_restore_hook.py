"""RestoreHook: its exact requests (create_autospec of the real clients), and a restore against the emulator."""

from __future__ import annotations

import json
from unittest.mock import create_autospec

import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import compute_v1

from gce_emulator.restore_guest import write_guest_attribute
from gce_vm_backup.compute.hook import ComputeBackupHook
from gce_vm_backup.compute.permissions import (
    API_METHOD_PERMISSIONS,
    CLIENT_PRODUCT,
    RESTORE_API_METHOD_PERMISSIONS,
    RESTORE_CLIENT_PRODUCT,
)
from gce_vm_backup.compute.restore_hook import RestoreHook
from gce_vm_backup.config.labels import label_filter
from gce_vm_backup.errors import ApiError, OperationFailedError

REGION_URL = "https://compute.googleapis.com/compute/v1/projects/p/regions/r"
ZONE_URL = "https://compute.googleapis.com/compute/v1/projects/p/zones/z"
CLIENTS = {
    "instances": compute_v1.InstancesClient,
    "snapshots": compute_v1.SnapshotsClient,
    "disks": compute_v1.DisksClient,
    "region_disks": compute_v1.RegionDisksClient,
    "zone_operations": compute_v1.ZoneOperationsClient,
    "region_operations": compute_v1.RegionOperationsClient,
    "global_operations": compute_v1.GlobalOperationsClient,
}


@pytest.fixture
def hook(monkeypatch):
    connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": "http://127.0.0.1:1"}}
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
    hook = RestoreHook(retry_initial=0.001, retry_max=0.002)
    for name, cls in CLIENTS.items():
        hook.__dict__[name] = create_autospec(cls, instance=True)
    return hook


def op(status="RUNNING", *, zone=ZONE_URL, region="", errors=(), operation_type="insert"):
    scope = zone or region
    return compute_v1.Operation(
        name="operation-1",
        status=status,
        zone=zone,
        region=region,
        operation_type=operation_type,
        self_link=f"{scope}/operations/operation-1",
        target_link=f"{scope}/disks/d",
        error=compute_v1.Error(errors=[compute_v1.Errors(code=c, message=m) for c, m in errors]),
    )


# ---- exact requests ------------------------------------------------------------------------------
def test_zonal_disk_insert_sends_the_snapshot_type_size_labels_and_request_id(hook):
    hook.disks.insert_unary.return_value = op()
    hook.insert_disk(
        project_id="p",
        zone="z",
        name="d",
        source_snapshot="projects/p/global/snapshots/s",
        disk_type="pd-ssd",
        size_gb=20,
        labels={"drill": "r1"},
        request_id="rid-1",
    )
    hook.disks.insert_unary.assert_called_once_with(
        request={
            "project": "p",
            "zone": "z",
            "disk_resource": compute_v1.Disk(
                name="d",
                source_snapshot="projects/p/global/snapshots/s",
                labels={"drill": "r1"},
                type_="projects/p/zones/z/diskTypes/pd-ssd",
                size_gb=20,
            ),
            "request_id": "rid-1",
        },
        retry=None,
    )
    hook.region_disks.insert_unary.assert_not_called()


def test_regional_disk_insert_goes_to_the_region_client_with_replica_zones(hook):
    hook.region_disks.insert_unary.return_value = op(zone="", region=REGION_URL)
    hook.insert_disk(
        project_id="p",
        region="r",
        name="d",
        source_snapshot="projects/p/global/snapshots/s",
        labels={},
        replica_zones=["r-a", "projects/p/zones/r-b"],
        request_id="rid-2",
    )
    request = hook.region_disks.insert_unary.call_args.kwargs["request"]
    assert request["region"] == "r"
    assert "zone" not in request
    assert request["request_id"] == "rid-2"
    assert list(request["disk_resource"].replica_zones) == ["projects/p/zones/r-a", "projects/p/zones/r-b"]
    assert not request["disk_resource"].size_gb  # None: the snapshot's size
    hook.disks.insert_unary.assert_not_called()


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"zone": "z", "region": "r"}, "exactly one of zone and region"),
        ({}, "exactly one of zone and region"),
        ({"region": "r"}, "needs replica_zones"),
        ({"zone": "z", "replica_zones": ["z"]}, "takes no replica_zones"),
    ],
)
def test_contradictory_disk_arguments_are_refused_before_any_call(hook, where, message):
    with pytest.raises(ValueError, match=message):
        hook.insert_disk(project_id="p", name="d", source_snapshot="s", labels={}, request_id="r", **where)
    hook.disks.insert_unary.assert_not_called()
    hook.region_disks.insert_unary.assert_not_called()


def test_get_disk_is_none_when_missing_and_list_disks_sends_the_filter(hook):
    hook.region_disks.get.side_effect = api_exceptions.NotFound("gone")
    assert hook.get_disk(project_id="p", region="r", name="d") is None
    hook.region_disks.get.assert_called_once_with(
        request={"project": "p", "region": "r", "disk": "d"}, retry=None
    )
    hook.disks.list.return_value = [compute_v1.Disk(name="a"), compute_v1.Disk(name="b")]
    found = list(hook.list_disks(project_id="p", zone="z", filter='labels.x = "y"'))
    assert [d.name for d in found] == ["a", "b"]
    hook.disks.list.assert_called_once_with(
        request={"project": "p", "zone": "z", "filter": 'labels.x = "y"'}, retry=None
    )


def test_delete_and_set_labels_of_zonal_and_regional_disks(hook):
    hook.delete_disk(project_id="p", zone="z", name="d", request_id="r1")
    hook.disks.delete_unary.assert_called_once_with(
        request={"project": "p", "zone": "z", "disk": "d", "request_id": "r1"}, retry=None
    )
    hook.set_disk_labels(
        project_id="p", region="r", name="d", labels={"a": "b"}, label_fingerprint="fp", request_id="r2"
    )
    hook.region_disks.set_labels_unary.assert_called_once_with(
        request={
            "project": "p",
            "region": "r",
            "resource": "d",
            "request_id": "r2",
            "region_set_labels_request_resource": compute_v1.RegionSetLabelsRequest(
                labels={"a": "b"}, label_fingerprint="fp"
            ),
        },
        retry=None,
    )
    hook.set_disk_labels(
        project_id="p", zone="z", name="d", labels={}, label_fingerprint="fp", request_id="r3"
    )
    zonal = hook.disks.set_labels_unary.call_args.kwargs["request"]
    assert zonal["zone_set_labels_request_resource"] == compute_v1.ZoneSetLabelsRequest(
        label_fingerprint="fp"
    )


def test_instance_requests_carry_project_zone_and_request_id(hook):
    instance = compute_v1.Instance(name="vm")
    hook.insert_instance(project_id="p", zone="z", instance=instance, request_id="r1")
    hook.instances.insert_unary.assert_called_once_with(
        request={"project": "p", "zone": "z", "instance_resource": instance, "request_id": "r1"}, retry=None
    )
    hook.delete_instance(project_id="p", zone="z", name="vm", request_id="r2")
    hook.instances.delete_unary.assert_called_once_with(
        request={"project": "p", "zone": "z", "instance": "vm", "request_id": "r2"}, retry=None
    )
    attached = compute_v1.AttachedDisk(source="projects/p/zones/z/disks/d", boot=True, device_name="vm")
    hook.attach_disk(project_id="p", zone="z", instance="vm", attached_disk=attached, request_id="r3")
    hook.instances.attach_disk_unary.assert_called_once_with(
        request={
            "project": "p",
            "zone": "z",
            "instance": "vm",
            "attached_disk_resource": attached,
            "request_id": "r3",
        },
        retry=None,
    )
    hook.detach_disk(project_id="p", zone="z", instance="vm", device_name="vm", request_id="r4")
    hook.instances.detach_disk_unary.assert_called_once_with(
        request={"project": "p", "zone": "z", "instance": "vm", "device_name": "vm", "request_id": "r4"},
        retry=None,
    )


def test_guest_attributes_none_when_absent_and_serial_port_one_from_start(hook):
    hook.instances.get_guest_attributes.side_effect = api_exceptions.NotFound("none")
    assert hook.get_guest_attributes(project_id="p", zone="z", instance="vm", query_path="app/") is None
    hook.instances.get_guest_attributes.assert_called_once_with(
        request={"project": "p", "zone": "z", "instance": "vm", "query_path": "app/"}, retry=None
    )
    hook.instances.get_serial_port_output.return_value = compute_v1.SerialPortOutput(contents="x", next_=1)
    assert hook.get_serial_port_output(project_id="p", zone="z", instance="vm", start=7).contents == "x"
    hook.instances.get_serial_port_output.assert_called_once_with(
        request={"project": "p", "zone": "z", "instance": "vm", "port": 1, "start": 7}, retry=None
    )


def test_a_retried_insert_repeats_the_same_request_id(hook):
    hook.disks.insert_unary.side_effect = [api_exceptions.ServiceUnavailable("busy"), op()]
    hook.insert_disk(project_id="p", zone="z", name="d", source_snapshot="s", labels={}, request_id="same")
    ids = [call.kwargs["request"]["request_id"] for call in hook.disks.insert_unary.call_args_list]
    assert ids == ["same", "same"]


def test_a_disk_in_use_is_a_typed_error_naming_the_disk(hook):
    hook.disks.delete_unary.side_effect = api_exceptions.BadRequest("already being used by vm")
    with pytest.raises(ApiError, match="delete disk projects/p/zones/z/disks/d failed: HTTP 400"):
        hook.delete_disk(project_id="p", zone="z", name="d", request_id="r")


def test_region_operations_are_waited_on_with_the_region_client(hook):
    hook.region_operations.wait.return_value = op("DONE", zone="", region=REGION_URL)
    hook.wait_operation(op(zone="", region=REGION_URL), timeout=100)
    kwargs = hook.region_operations.wait.call_args.kwargs
    assert kwargs["request"] == {"project": "p", "region": "r", "operation": "operation-1"}
    assert kwargs["timeout"] >= 150  # outlasts the server's two-minute hold
    hook.zone_operations.wait.return_value = op("DONE")
    hook.wait_operation(op(), timeout=100)
    assert hook.zone_operations.wait.call_args.kwargs["request"] == {
        "project": "p",
        "zone": "z",
        "operation": "operation-1",
    }


def test_a_region_operation_done_with_an_error_is_a_failure(hook):
    failed = op(
        "DONE", zone="", region=REGION_URL, errors=[("QUOTA_EXCEEDED", "Quota 'DISKS_TOTAL_GB' exceeded")]
    )
    with pytest.raises(OperationFailedError, match="QUOTA_EXCEEDED"):
        hook.wait_operation(failed, timeout=10)


def test_restore_methods_stay_out_of_the_backup_hook_and_its_role():
    """The backup account never creates or deletes a VM or a disk: its hook has no such method and its
    IAM map no such API method."""
    for name in (
        "insert_disk",
        "delete_disk",
        "insert_instance",
        "delete_instance",
        "attach_disk",
        "detach_disk",
    ):
        assert not hasattr(ComputeBackupHook, name), name
    mutations = {
        "compute.instances.insert",
        "compute.instances.delete",
        "compute.disks.insert",
        "compute.disks.delete",
    }
    assert not mutations & set(API_METHOD_PERMISSIONS)
    assert mutations <= set(RESTORE_API_METHOD_PERMISSIONS)


# ---- against the emulator -------------------------------------------------------------------------
P, ZA, ZB, R = "demo-project", "us-central1-a", "us-central1-b", "us-central1"


def test_a_restore_through_the_hook_against_the_emulator(emulator):
    """Drill and replace-disks in miniature, every restore method once: each call names the restore
    product (not the backup's), so the session's IAM check counts it against the restore role."""
    emulator.seed_snapshot(
        P,
        {
            "name": "web-1-s",
            "sourceDisk": f"projects/{P}/zones/{ZA}/disks/web-1",
            "labels": {"managed-by": "gce-vm-backup"},
        },
    )
    hook = RestoreHook()

    def wait(operation):
        emulator.clock.advance(120)
        return hook.wait_operation(operation, timeout=30)

    snapshots = list(hook.list_snapshots(project_id=P, filter=label_filter({"managed-by": "gce-vm-backup"})))
    assert [s.name for s in snapshots] == ["web-1-s"]
    snapshot = snapshots[0]
    assert [i.name for _, i in hook.list_instances(project_id=P, zone=ZA, filter='labels.tier = "web"')] == [
        "web-1"
    ]
    assert [
        (z, i.name) for z, i in hook.list_instances(project_id=P, zone=None, filter='labels.tier = "db"')
    ] == [(ZB, "db-1")]
    labels = {"gce-vm-backup-restore": "r1"}
    wait(
        hook.insert_disk(
            project_id=P,
            zone=ZA,
            name="new-boot",
            source_snapshot=snapshot.self_link,
            labels=labels,
            request_id="00000000-0000-4000-8000-000000000001",
        )
    )
    wait(
        hook.insert_disk(
            project_id=P,
            region=R,
            name="new-shared",
            source_snapshot=snapshot.self_link,
            labels=labels,
            replica_zones=[ZA, ZB],
            request_id="00000000-0000-4000-8000-000000000002",
        )
    )
    shared = hook.get_disk(project_id=P, region=R, name="new-shared")
    assert shared.status == "READY"
    wait(
        hook.set_disk_labels(
            project_id=P,
            region=R,
            name="new-shared",
            labels={**shared.labels, "seen": "yes"},
            label_fingerprint=shared.label_fingerprint,
            request_id="00000000-0000-4000-8000-00000000000c",
        )
    )
    assert [d.name for d in hook.list_disks(project_id=P, zone=ZA, filter=label_filter(labels))] == [
        "new-boot"
    ]

    # The hold on the chosen set (holds.py): the snapshot's labels, written with its labelFingerprint.
    held = hook.get_snapshot(project_id=P, name="web-1-s")
    wait(
        hook.set_snapshot_labels(
            project_id=P,
            name="web-1-s",
            labels={**held.labels, "gce-vm-backup-hold-r1": "20261208t000000z"},
            label_fingerprint=held.label_fingerprint,
        )
    )
    assert (
        hook.get_snapshot(project_id=P, name="web-1-s").labels["gce-vm-backup-hold-r1"] == "20261208t000000z"
    )

    # A throwaway VM from the new disk, no external IP, guest attributes on.
    instance = compute_v1.Instance(
        name="drill-vm",
        machine_type=f"zones/{ZA}/machineTypes/e2-small",
        disks=[
            compute_v1.AttachedDisk(
                source=f"projects/{P}/zones/{ZA}/disks/new-boot", boot=True, device_name="web-1"
            )
        ],
        network_interfaces=[compute_v1.NetworkInterface(network="global/networks/default")],
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key="enable-guest-attributes", value="TRUE")]),
        labels=labels,
    )
    wait(
        hook.insert_instance(
            project_id=P, zone=ZA, instance=instance, request_id="00000000-0000-4000-8000-000000000003"
        )
    )
    assert hook.get_guest_attributes(project_id=P, zone=ZA, instance="drill-vm", query_path="app/") is None
    emulator.clock.advance(60)
    assert hook.get_instance(project_id=P, zone=ZA, name="drill-vm").status == "RUNNING"
    write_guest_attribute(emulator, P, ZA, "drill-vm", "app/ready", "yes")
    found = hook.get_guest_attributes(project_id=P, zone=ZA, instance="drill-vm", query_path="app/")
    assert [(i.key, i.value) for i in found.query_value.items] == [("ready", "yes")]
    serial = hook.get_serial_port_output(project_id=P, zone=ZA, instance="drill-vm")
    assert "Reached target Multi-User System" in serial.contents
    wait(
        hook.delete_instance(
            project_id=P, zone=ZA, name="drill-vm", request_id="00000000-0000-4000-8000-000000000004"
        )
    )

    # replace-disks on batch-1 (TERMINATED): swap its boot disk, label the old one, start it.
    old = hook.get_disk(project_id=P, zone=ZA, name="batch-1")
    wait(
        hook.detach_disk(
            project_id=P,
            zone=ZA,
            instance="batch-1",
            device_name="batch-1",
            request_id="00000000-0000-4000-8000-000000000005",
        )
    )
    wait(
        hook.set_disk_labels(
            project_id=P,
            zone=ZA,
            name="batch-1",
            labels={**old.labels, "gce-vm-backup-replaced": "r1"},
            label_fingerprint=old.label_fingerprint,
            request_id="00000000-0000-4000-8000-000000000006",
        )
    )
    attached = compute_v1.AttachedDisk(
        source=f"projects/{P}/zones/{ZA}/disks/new-boot", boot=True, device_name="batch-1"
    )
    wait(
        hook.attach_disk(
            project_id=P,
            zone=ZA,
            instance="batch-1",
            attached_disk=attached,
            request_id="00000000-0000-4000-8000-000000000007",
        )
    )
    wait(
        hook.start_instance(
            project_id=P, zone=ZA, name="batch-1", request_id="00000000-0000-4000-8000-000000000008"
        )
    )
    wait(
        hook.stop_instance(
            project_id=P, zone=ZA, name="batch-1", request_id="00000000-0000-4000-8000-000000000009"
        )
    )
    assert (
        hook.get_instance(project_id=P, zone=ZA, name="batch-1").disks[0].source.endswith("/disks/new-boot")
    )
    wait(
        hook.delete_disk(
            project_id=P, zone=ZA, name="batch-1", request_id="00000000-0000-4000-8000-00000000000b"
        )
    )
    assert hook.get_disk(project_id=P, zone=ZA, name="batch-1") is None
    vm = hook.get_instance(project_id=P, zone=ZA, name="batch-1")  # the VM's lease (lease.py)
    wait(
        hook.set_instance_labels(
            project_id=P,
            zone=ZA,
            name="batch-1",
            labels={**vm.labels, "gce-vm-backup-lease": "restore-1-0123456789abcdef"},
            label_fingerprint=vm.label_fingerprint,
            request_id="00000000-0000-4000-8000-00000000000c",
        )
    )

    called = {call.method for call in emulator.calls}
    assert called == set(RESTORE_API_METHOD_PERMISSIONS)  # every restore method, nothing else
    assert {call.client[0] for call in emulator.calls} == {RESTORE_CLIENT_PRODUCT}
    assert all(CLIENT_PRODUCT not in call.client for call in emulator.calls)


def test_a_lost_response_is_retried_with_the_same_request_id_and_makes_one_disk(emulator):
    emulator.seed_snapshot(P, {"name": "s", "sourceDisk": f"projects/{P}/zones/{ZA}/disks/web-1"})
    emulator.faults.http_error_after_apply("compute.disks.insert", 503)
    hook = RestoreHook(retry_initial=0.01, retry_max=0.02)
    operation = hook.insert_disk(
        project_id=P,
        zone=ZA,
        name="once",
        source_snapshot=f"projects/{P}/global/snapshots/s",
        labels={},
        request_id="00000000-0000-4000-8000-0000000000aa",
    )
    calls = emulator.calls_for("compute.disks.insert")
    assert [call.status for call in calls] == [503, 200]
    assert {call.request_id for call in calls} == {"00000000-0000-4000-8000-0000000000aa"}
    emulator.clock.advance(60)
    hook.wait_operation(operation, timeout=30)
    assert [d.name for d in hook.list_disks(project_id=P, zone=ZA, filter='name = "once"')] == ["once"]
