"""Restore's API methods in the emulator, through the real google-cloud-compute clients over loopback."""

from __future__ import annotations

import uuid

import pytest
from google.api_core import exceptions as api_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED
from gce_emulator.restore_guest import configure_boot, write_guest_attribute

pytestmark = pytest.mark.emulator

P, ZA, ZB, R = "demo-project", "us-central1-a", "us-central1-b", "us-central1"
DONE = compute_v1.Operation.Status.DONE
SNAP = f"projects/{P}/global/snapshots/web-1-snap"


def rid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def emu():
    with Emulator(DEMO_SEED) as emulator:
        emulator.seed_snapshot(
            P, {"name": "web-1-snap", "sourceDisk": f"projects/{P}/zones/{ZA}/disks/web-1", "diskSizeGb": 10}
        )
        emulator.seed_snapshot(
            P,
            {
                "name": "data-snap",
                "sourceDisk": f"projects/{P}/zones/{ZA}/disks/web-1-data",
                "diskSizeGb": 50,
            },
        )
        yield emulator


@pytest.fixture
def c(emu):
    opts = {"api_endpoint": emu.url}
    creds = AnonymousCredentials()

    class Clients:
        instances = compute_v1.InstancesClient(credentials=creds, client_options=opts)
        disks = compute_v1.DisksClient(credentials=creds, client_options=opts)
        region_disks = compute_v1.RegionDisksClient(credentials=creds, client_options=opts)
        zone_ops = compute_v1.ZoneOperationsClient(credentials=creds, client_options=opts)
        region_ops = compute_v1.RegionOperationsClient(credentials=creds, client_options=opts)

    return Clients


def insert_disk(c, name, snapshot=SNAP, zone=ZA, request_id=None, **fields):
    disk = compute_v1.Disk(name=name, source_snapshot=snapshot, **fields)
    return c.disks.insert_unary(
        request={"project": P, "zone": zone, "disk_resource": disk, "request_id": request_id or rid()}
    )


def disk(c, name, zone=ZA):
    return c.disks.get(project=P, zone=zone, disk=name)


def vm(name, *disks, metadata=None, **fields):
    attached = [
        compute_v1.AttachedDisk(source=f"projects/{P}/zones/{ZA}/disks/{d}", boot=i == 0, device_name=d)
        for i, d in enumerate(disks)
    ]
    return compute_v1.Instance(
        name=name,
        machine_type=f"zones/{ZA}/machineTypes/e2-small",
        disks=attached,
        network_interfaces=[compute_v1.NetworkInterface(network="global/networks/default")],
        metadata=compute_v1.Metadata(
            items=[compute_v1.Items(key=k, value=v) for k, v in (metadata or {}).items()]
        ),
        **fields,
    )


def insert_vm(c, instance, request_id=None):
    return c.instances.insert_unary(
        request={"project": P, "zone": ZA, "instance_resource": instance, "request_id": request_id or rid()}
    )


def ready_disks(emu, c, *names):
    for name in names:
        insert_disk(c, name)
    emu.clock.advance(60)


def status(c, name):
    return c.instances.get(project=P, zone=ZA, instance=name).status


def stop(c, name):
    return c.instances.stop_unary(request={"project": P, "zone": ZA, "instance": name, "request_id": rid()})


# ---- disks from snapshots ----------------------------------------------------------------------------
def test_disk_from_a_ready_snapshot_goes_creating_to_ready_and_names_its_snapshot(emu, c):
    op = insert_disk(c, "restored", labels={"drill": "r1"})
    assert op.zone.endswith(f"/zones/{ZA}")
    assert op.operation_type == "insert"
    assert op.status != DONE
    created = disk(c, "restored")
    assert created.status == "CREATING"
    emu.clock.advance(60)
    created = disk(c, "restored")
    snapshot = emu.snapshots(P)[[s["name"] for s in emu.snapshots(P)].index("web-1-snap")]
    assert created.status == "READY"
    assert created.source_snapshot.endswith(SNAP)
    assert created.source_snapshot.startswith("http")
    assert created.source_snapshot_id == snapshot["id"]
    assert created.size_gb == 10
    assert created.labels == {"drill": "r1"}
    assert created.label_fingerprint
    assert created.type_.endswith(f"/zones/{ZA}/diskTypes/pd-standard")
    assert c.zone_ops.get(project=P, zone=ZA, operation=op.name).status == DONE


def test_regional_disk_replicates_to_two_zones_with_a_region_operation(emu, c):
    disk_resource = compute_v1.Disk(
        name="shared-restored",
        source_snapshot=SNAP,
        type_=f"regions/{R}/diskTypes/pd-balanced",
        replica_zones=[f"zones/{ZA}", f"projects/{P}/zones/{ZB}"],
    )
    op = c.region_disks.insert_unary(
        request={"project": P, "region": R, "disk_resource": disk_resource, "request_id": rid()}
    )
    assert op.region.endswith(f"/regions/{R}")
    assert not op.zone
    emu.clock.advance(60)
    assert c.region_ops.get(project=P, region=R, operation=op.name).status == DONE
    created = c.region_disks.get(project=P, region=R, disk="shared-restored")
    assert created.status == "READY"
    assert [z.rsplit("/", 1)[-1] for z in created.replica_zones] == [ZA, ZB]
    with pytest.raises(api_exceptions.BadRequest, match="two zones"):
        c.region_disks.insert_unary(
            request={
                "project": P,
                "region": R,
                "disk_resource": compute_v1.Disk(
                    name="one-zone", source_snapshot=SNAP, replica_zones=[f"zones/{ZA}"]
                ),
            }
        )


@pytest.mark.parametrize("snapshot_status", ["CREATING", "UPLOADING", "FAILED", "DELETING"])
def test_disk_from_a_snapshot_that_is_not_ready_is_refused(emu, c, snapshot_status):
    emu.seed_snapshot(P, {"name": "not-ready", "status": snapshot_status, "diskSizeGb": 10})
    with pytest.raises(api_exceptions.BadRequest, match="is not ready"):
        insert_disk(c, "from-not-ready", snapshot=f"projects/{P}/global/snapshots/not-ready")
    with pytest.raises(api_exceptions.NotFound):
        disk(c, "from-not-ready")


def test_disk_from_a_missing_snapshot_is_404_and_smaller_than_the_snapshot_is_400(c):
    with pytest.raises(api_exceptions.NotFound, match="global/snapshots/gone"):
        insert_disk(c, "from-gone", snapshot="global/snapshots/gone")
    with pytest.raises(api_exceptions.BadRequest, match="smaller than the snapshot size"):
        insert_disk(c, "too-small", snapshot=f"projects/{P}/global/snapshots/data-snap", size_gb=20)
    with pytest.raises(api_exceptions.BadRequest, match=r"resource\.type"):
        insert_disk(c, "wrong-zone-type", type_=f"zones/{ZB}/diskTypes/pd-ssd")


def test_disk_insert_repeat_request_id_returns_the_same_operation_and_a_taken_name_is_409(emu, c):
    request_id = rid()
    first = insert_disk(c, "once", request_id=request_id)
    again = insert_disk(c, "once", request_id=request_id)
    assert again.name == first.name
    assert [d for d in emu.world.disks if d.endswith("/disks/once")] == [
        f"projects/{P}/zones/{ZA}/disks/once"
    ]
    with pytest.raises(api_exceptions.Conflict):
        insert_disk(c, "once")
    with pytest.raises(api_exceptions.Conflict):
        insert_disk(c, "web-1")  # the seeded VM's boot disk


def test_disk_list_filters_by_label_and_paginates(emu, c):
    for index in range(3):
        insert_disk(c, f"drill-{index}", labels={"drill-run": "r1"})
    insert_disk(c, "other", labels={"drill-run": "r2"})
    pager = c.disks.list(
        request={"project": P, "zone": ZA, "filter": 'labels.drill-run = "r1"', "max_results": 2}
    )
    assert sorted(d.name for d in pager) == ["drill-0", "drill-1", "drill-2"]
    with pytest.raises(api_exceptions.BadRequest, match="filter"):
        list(c.disks.list(request={"project": P, "zone": ZA, "filter": "labels.drill-run = r1 labels.x = y"}))


def test_delete_of_an_attached_disk_is_refused_and_of_a_free_one_goes_deleting_then_gone(emu, c):
    with pytest.raises(api_exceptions.BadRequest, match="already being used by") as caught:
        c.disks.delete_unary(request={"project": P, "zone": ZA, "disk": "web-1", "request_id": rid()})
    assert "resourceInUseByAnotherResource" in str(caught.value.errors) or caught.value.code == 400
    ready_disks(emu, c, "scratch")
    op = c.disks.delete_unary(request={"project": P, "zone": ZA, "disk": "scratch", "request_id": rid()})
    assert disk(c, "scratch").status == "DELETING"
    emu.clock.advance(10)
    assert c.zone_ops.get(project=P, zone=ZA, operation=op.name).status == DONE
    with pytest.raises(api_exceptions.NotFound):
        disk(c, "scratch")


def test_set_labels_needs_the_current_fingerprint(emu, c):
    old = disk(c, "web-1-data")
    assert old.label_fingerprint
    request = compute_v1.ZoneSetLabelsRequest(
        labels={"restore-old": "r1"}, label_fingerprint=old.label_fingerprint
    )
    c.disks.set_labels_unary(
        request={
            "project": P,
            "zone": ZA,
            "resource": "web-1-data",
            "zone_set_labels_request_resource": request,
        }
    )
    new = disk(c, "web-1-data")
    assert new.labels == {"restore-old": "r1"}
    assert new.label_fingerprint != old.label_fingerprint
    with pytest.raises(api_exceptions.PreconditionFailed):
        c.disks.set_labels_unary(
            request={
                "project": P,
                "zone": ZA,
                "resource": "web-1-data",
                "zone_set_labels_request_resource": request,
            }
        )


# ---- VMs from existing disks -------------------------------------------------------------------------
def test_vm_from_existing_disks_goes_provisioning_staging_running_without_external_ip(emu, c):
    ready_disks(emu, c, "r-boot", "r-data")
    op = insert_vm(c, vm("restored-vm", "r-boot", "r-data", labels={"drill": "r1"}))
    assert status(c, "restored-vm") == "PROVISIONING"
    emu.clock.advance(11)
    assert c.zone_ops.get(project=P, zone=ZA, operation=op.name).status == DONE
    assert status(c, "restored-vm") == "STAGING"  # DONE does not mean RUNNING
    emu.clock.advance(21)
    created = c.instances.get(project=P, zone=ZA, instance="restored-vm")
    assert created.status == "RUNNING"
    assert created.labels == {"drill": "r1"}
    assert [(d.device_name, d.boot, d.mode, d.auto_delete) for d in created.disks] == [
        ("r-boot", True, "READ_WRITE", False),
        ("r-data", False, "READ_WRITE", False),
    ]
    assert not created.network_interfaces[0].access_configs
    assert created.network_interfaces[0].subnetwork.endswith(f"/regions/{R}/subnetworks/default")
    assert disk(c, "r-boot").users == [created.self_link]


def test_vm_insert_refuses_a_taken_name_a_disk_in_use_and_no_boot_disk(emu, c):
    ready_disks(emu, c, "r-boot", "r-boot-2")
    with pytest.raises(api_exceptions.Conflict):
        insert_vm(c, vm("web-1", "r-boot"))
    with pytest.raises(api_exceptions.BadRequest, match=r"already being used by .*instances/web-1"):
        insert_vm(c, vm("thief", "web-1-data"))  # web-1 holds it READ_WRITE
    no_boot = vm("no-boot", "r-boot")
    no_boot.disks[0].boot = False
    with pytest.raises(api_exceptions.BadRequest, match="boot disk"):
        insert_vm(c, no_boot)
    no_network = vm("no-network", "r-boot")
    no_network.network_interfaces = []
    with pytest.raises(api_exceptions.BadRequest, match="networkInterfaces"):
        insert_vm(c, no_network)
    insert_vm(c, vm("first", "r-boot"))
    with pytest.raises(api_exceptions.BadRequest, match=r"already being used by .*instances/first"):
        insert_vm(c, vm("second", "r-boot-2", "r-boot"))
    assert disk(c, "r-boot-2").users == []  # the refused request took nothing


def test_vm_insert_default_device_names_and_repeat_request_id(emu, c):
    ready_disks(emu, c, "r-boot")
    instance = vm("named", "r-boot")
    instance.disks[0].device_name = ""
    request_id = rid()
    first = insert_vm(c, instance, request_id)
    assert insert_vm(c, instance, request_id).name == first.name
    assert emu.instance(P, ZA, "named")["disks"][0]["deviceName"] == "persistent-disk-0"


def test_vm_delete_takes_its_auto_delete_disks_and_leaves_the_others_detached(emu, c):
    ready_disks(emu, c, "r-boot", "r-data")
    instance = vm("throwaway", "r-boot", "r-data")
    instance.disks[0].auto_delete = True
    insert_vm(c, instance)
    emu.clock.advance(40)
    op = c.instances.delete_unary(
        request={"project": P, "zone": ZA, "instance": "throwaway", "request_id": rid()}
    )
    assert status(c, "throwaway") == "STOPPING"
    emu.clock.advance(30)
    assert c.zone_ops.get(project=P, zone=ZA, operation=op.name).status == DONE
    with pytest.raises(api_exceptions.NotFound):
        status(c, "throwaway")
    with pytest.raises(api_exceptions.NotFound):
        disk(c, "r-boot")
    assert disk(c, "r-data").users == []


# ---- attach / detach ---------------------------------------------------------------------------------
def detach(c, device, instance="web-1"):
    return c.instances.detach_disk_unary(
        request={"project": P, "zone": ZA, "instance": instance, "device_name": device, "request_id": rid()}
    )


def attach(c, name, instance="web-1", **fields):
    attached = compute_v1.AttachedDisk(source=f"projects/{P}/zones/{ZA}/disks/{name}", **fields)
    return c.instances.attach_disk_unary(
        request={
            "project": P,
            "zone": ZA,
            "instance": instance,
            "attached_disk_resource": attached,
            "request_id": rid(),
        }
    )


def test_the_boot_disk_of_a_running_vm_neither_detaches_nor_attaches(emu, c):
    with pytest.raises(
        api_exceptions.BadRequest, match="To detach the boot disk, the instance must be in TERMINATED"
    ):
        detach(c, "web-1")
    ready_disks(emu, c, "new-boot")
    with pytest.raises(api_exceptions.BadRequest, match=r"To attach the boot disk"):
        attach(c, "new-boot", boot=True, device_name="web-1")
    with pytest.raises(api_exceptions.BadRequest, match="No such disk"):
        detach(c, "no-such-device")


def test_swap_the_disks_of_a_stopped_vm_keeping_device_names(emu, c):
    ready_disks(emu, c, "new-boot", "new-data")
    stop(c, "web-1")
    emu.clock.advance(31)
    detach(c, "web-1")
    detach(c, "web-1-data")
    emu.clock.advance(5)
    assert emu.instance(P, ZA, "web-1")["disks"] == []
    assert disk(c, "web-1").users == []
    with pytest.raises(api_exceptions.BadRequest, match="no boot disk"):
        c.instances.start_unary(request={"project": P, "zone": ZA, "instance": "web-1", "request_id": rid()})
    attach(c, "new-data", device_name="web-1-data")
    attach(c, "new-boot", boot=True, device_name="web-1")
    emu.clock.advance(5)
    swapped = c.instances.get(project=P, zone=ZA, instance="web-1")
    assert [(d.device_name, d.boot, d.source.rsplit("/", 1)[-1]) for d in swapped.disks] == [
        ("web-1", True, "new-boot"),
        ("web-1-data", False, "new-data"),
    ]
    c.instances.start_unary(request={"project": P, "zone": ZA, "instance": "web-1", "request_id": rid()})
    emu.clock.advance(21)
    assert status(c, "web-1") == "RUNNING"


def test_attach_refuses_a_disk_in_use_a_taken_device_name_and_a_second_boot_disk(emu, c):
    with pytest.raises(api_exceptions.BadRequest, match=r"already being used by .*instances/web-1"):
        attach(c, "web-1-data", instance="batch-1")
    ready_disks(emu, c, "extra", "extra-2")
    with pytest.raises(api_exceptions.BadRequest, match="in use"):
        attach(c, "extra", device_name="web-1-data")
    with pytest.raises(api_exceptions.BadRequest, match="already has a boot disk"):
        attach(c, "extra", instance="batch-1", boot=True)  # batch-1 is TERMINATED, with its boot disk
    attach(c, "extra")  # a data disk on a RUNNING VM is fine
    emu.clock.advance(5)
    assert "persistent-disk-2" in [
        d.device_name for d in c.instances.get(project=P, zone=ZA, instance="web-1").disks
    ]


# ---- the guest: attributes and serial port -----------------------------------------------------------
def guest(c, instance, path="guestInventory/"):
    request = {"project": P, "zone": ZA, "instance": instance, "query_path": path}
    return c.instances.get_guest_attributes(request=request)


def test_guest_attributes_appear_after_boot_only_when_enabled_in_metadata(emu, c):
    ready_disks(emu, c, "on-boot", "off-boot")
    insert_vm(c, vm("on", "on-boot", metadata={"enable-guest-attributes": "TRUE"}))
    insert_vm(c, vm("off", "off-boot"))
    emu.clock.advance(31)
    assert status(c, "on") == "RUNNING"
    with pytest.raises(api_exceptions.NotFound):
        guest(c, "on")  # the guest has not written yet
    emu.clock.advance(16)
    found = guest(c, "on")
    assert {(i.namespace, i.key, i.value) for i in found.query_value.items} == {
        ("guestInventory", "ShortName", "debian"),
        ("guestInventory", "Version", "12"),
    }
    assert guest(c, "on", "guestInventory/ShortName").query_value.items[0].value == "debian"
    with pytest.raises(api_exceptions.NotFound):
        guest(c, "off")  # enable-guest-attributes was not set


def test_boot_profile_per_vm_and_a_value_written_by_the_guest(emu, c):
    configure_boot(emu, P, ZA, "custom", guest_attributes={"app/ready": "yes"}, boot_delay=0)
    ready_disks(emu, c, "custom-boot")
    insert_vm(c, vm("custom", "custom-boot", metadata={"enable-guest-attributes": "true"}))
    emu.clock.advance(31)
    assert guest(c, "custom", "app/ready").query_value.items[0].value == "yes"
    write_guest_attribute(emu, P, ZA, "custom", "app/phase", "serving")
    assert {i.key for i in guest(c, "custom", "app/").query_value.items} == {"ready", "phase"}


def serial(c, instance, **extra):
    return c.instances.get_serial_port_output(
        request={"project": P, "zone": ZA, "instance": instance, **extra}
    )


def test_serial_port_shows_the_boot_line_after_running_and_pages_with_next(emu, c):
    ready_disks(emu, c, "s-boot")
    insert_vm(c, vm("serial", "s-boot"))
    with pytest.raises(api_exceptions.BadRequest, match="not ready"):
        serial(c, "serial")
    emu.clock.advance(31)
    assert serial(c, "serial").contents == ""
    emu.clock.advance(16)
    output = serial(c, "serial")
    assert "Reached target Multi-User System" in output.contents
    assert output.start == 0
    later = serial(c, "serial", start=output.next_)
    assert later.contents == ""
    assert later.start == output.next_
    tail = serial(c, "serial", start=-8)
    assert tail.contents == "System.\n"


def test_an_os_that_never_comes_up_writes_nothing(emu, c):
    configure_boot(emu, P, ZA, "hung", serial_lines=[], guest_attributes={})
    ready_disks(emu, c, "hung-boot")
    insert_vm(c, vm("hung", "hung-boot", metadata={"enable-guest-attributes": "TRUE"}))
    emu.clock.advance(600)
    assert serial(c, "hung").contents == ""
    with pytest.raises(api_exceptions.NotFound):
        guest(c, "hung")


def test_seed_sets_boot_profiles_per_project_and_vm():
    seed = {
        "projects": {
            P: {
                "boot": {"serial_lines": ["project line"], "guest_attributes_enabled": True},
                "zones": {ZA: {"instances": [{"name": "vm-a", "boot": {"guest_attributes": {"x/y": "z"}}}]}},
            }
        }
    }
    with Emulator(seed) as emulator:
        client = compute_v1.InstancesClient(
            credentials=AnonymousCredentials(), client_options={"api_endpoint": emulator.url}
        )
        answer = client.get_guest_attributes(
            request={"project": P, "zone": ZA, "instance": "vm-a", "query_path": "x/y"}
        )
        assert answer.query_value.items[0].value == "z"
        assert (
            client.get_serial_port_output(request={"project": P, "zone": ZA, "instance": "vm-a"}).contents
            == "project line\n"
        )
    with pytest.raises(ValueError, match="unknown boot profile keys"):
        Emulator({"projects": {P: {"boot": {"serial": []}}}})


# ---- faults ------------------------------------------------------------------------------------------
def test_a_failed_disk_insert_ends_done_with_its_error_and_leaves_no_disk(emu, c):
    emu.faults.fail_operation("compute.disks.insert", "QUOTA_EXCEEDED", "Quota 'SSD_TOTAL_GB' exceeded")
    op = insert_disk(c, "no-quota")
    emu.clock.advance(2)
    done = c.zone_ops.get(project=P, zone=ZA, operation=op.name)
    assert done.status == DONE
    assert done.error.errors[0].code == "QUOTA_EXCEEDED"
    with pytest.raises(api_exceptions.NotFound):
        disk(c, "no-quota")


def test_a_hung_vm_insert_stays_provisioning(emu, c):
    ready_disks(emu, c, "h-boot")
    emu.faults.hang_operation("compute.instances.insert")
    op = insert_vm(c, vm("hung-insert", "h-boot"))
    emu.clock.advance(3600)
    assert c.zone_ops.get(project=P, zone=ZA, operation=op.name).status != DONE
    assert status(c, "hung-insert") == "PROVISIONING"


def test_a_lost_response_then_the_same_request_id_adopts_the_operation(emu, c):
    emu.faults.http_error_after_apply("compute.instances.detachDisk", 503)
    request_id = rid()
    request = {
        "project": P,
        "zone": ZA,
        "instance": "web-1",
        "device_name": "web-1-data",
        "request_id": request_id,
    }
    with pytest.raises(api_exceptions.ServiceUnavailable):
        c.instances.detach_disk_unary(request=request, retry=None)
    adopted = c.instances.detach_disk_unary(request=request)
    emu.clock.advance(5)
    assert c.zone_ops.get(project=P, zone=ZA, operation=adopted.name).status == DONE
    assert [d["deviceName"] for d in emu.instance(P, ZA, "web-1")["disks"]] == ["web-1"]
    assert len([call for call in emu.calls_for("compute.instances.detachDisk") if call.status == 200]) == 1
