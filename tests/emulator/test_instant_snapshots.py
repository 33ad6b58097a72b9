"""The emulator's instant snapshots, through the real google-cloud-compute clients (InstantSnapshotsClient,
RegionInstantSnapshotsClient, SnapshotsClient) over loopback."""

from __future__ import annotations

import uuid

import pytest
from google.api_core import exceptions as api_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED

pytestmark = pytest.mark.emulator

P, ZA, ZB, R = "demo-project", "us-central1-a", "us-central1-b", "us-central1"
WEB_DISK = f"projects/{P}/zones/{ZA}/disks/web-1"
DATA_DISK = f"projects/{P}/zones/{ZA}/disks/web-1-data"
SHARED = f"projects/{P}/regions/{R}/disks/shared-data"
DONE = compute_v1.Operation.Status.DONE


def rid() -> str:
    return str(uuid.uuid4())


class Clients:
    def __init__(self, emulator: Emulator):
        opts, creds = {"api_endpoint": emulator.url}, AnonymousCredentials()
        self.instant = compute_v1.InstantSnapshotsClient(credentials=creds, client_options=opts)
        self.region_instant = compute_v1.RegionInstantSnapshotsClient(credentials=creds, client_options=opts)
        self.snapshots = compute_v1.SnapshotsClient(credentials=creds, client_options=opts)
        self.disks = compute_v1.DisksClient(credentials=creds, client_options=opts)
        self.zone_ops = compute_v1.ZoneOperationsClient(credentials=creds, client_options=opts)
        self.region_ops = compute_v1.RegionOperationsClient(credentials=creds, client_options=opts)
        self.global_ops = compute_v1.GlobalOperationsClient(credentials=creds, client_options=opts)


@pytest.fixture
def clients(gce_emulator):
    return Clients(gce_emulator)


def insert(clients, name, disk=WEB_DISK, zone=ZA, request_id=None, **fields):
    resource = compute_v1.InstantSnapshot(name=name, source_disk=disk, **fields)
    return clients.instant.insert_unary(
        request={
            "project": P,
            "zone": zone,
            "instant_snapshot_resource": resource,
            "request_id": request_id or rid(),
        }
    )


def insert_regional(clients, name, disk=SHARED, request_id=None):
    resource = compute_v1.InstantSnapshot(name=name, source_disk=disk)
    return clients.region_instant.insert_unary(
        request={
            "project": P,
            "region": R,
            "instant_snapshot_resource": resource,
            "request_id": request_id or rid(),
        }
    )


def zone_op(clients, op, zone=ZA):
    return clients.zone_ops.get(project=P, zone=zone, operation=op.name)


def convert(clients, name, source, request_id=None, **fields):
    snapshot = compute_v1.Snapshot(name=name, source_instant_snapshot=source, **fields)
    return clients.snapshots.insert_unary(
        request={"project": P, "snapshot_resource": snapshot, "request_id": request_id or rid()}
    )


def test_a_zonal_instant_snapshot_is_creating_then_ready_with_its_disk_fields_and_a_zone_operation(
    gce_emulator, clients
):
    op = insert(clients, "ips-1", labels={"a": "b"}, description="before upgrade")
    assert op.zone.endswith(f"/zones/{ZA}")
    assert op.operation_type == "insert"
    got = clients.instant.get(project=P, zone=ZA, instant_snapshot="ips-1")
    assert got.status == "CREATING"
    gce_emulator.clock.advance(3)
    got = clients.instant.get(project=P, zone=ZA, instant_snapshot="ips-1")
    disk = clients.disks.get(project=P, zone=ZA, disk="web-1")
    assert got.status == "READY"
    assert got.source_disk.endswith(WEB_DISK)
    assert got.source_disk.startswith("http")
    assert got.source_disk_id == str(disk.id)
    assert got.disk_size_gb == 10
    assert dict(got.labels) == {"a": "b"}
    assert got.description == "before upgrade"
    assert got.zone.endswith(f"zones/{ZA}")
    assert got.self_link.endswith(f"{ZA}/instantSnapshots/ips-1")
    done = clients.zone_ops.wait(project=P, zone=ZA, operation=op.name)
    assert done.status == DONE
    assert not done.error.errors


def test_a_regional_disk_gets_a_regional_instant_snapshot_and_a_region_operation(gce_emulator, clients):
    op = insert_regional(clients, "shared-ips")
    assert op.region.endswith(f"regions/{R}")
    assert not op.zone
    gce_emulator.clock.advance(3)
    done = clients.region_ops.wait(project=P, region=R, operation=op.name)
    assert done.status == DONE
    assert not done.error.errors
    got = clients.region_instant.get(project=P, region=R, instant_snapshot="shared-ips")
    assert got.status == "READY"
    assert got.source_disk.endswith(SHARED)
    assert got.region.endswith(R)
    with pytest.raises(api_exceptions.NotFound):  # a regional one is not listed under a zone
        clients.instant.get(project=P, zone=ZA, instant_snapshot="shared-ips")


def test_a_repeated_request_id_returns_the_first_operation_and_makes_nothing_twice(gce_emulator, clients):
    request_id = rid()
    first = insert(clients, "ips-1", request_id=request_id)
    again = insert(clients, "ips-1", request_id=request_id)
    assert again.name == first.name
    assert [i["name"] for i in gce_emulator.instant_snapshots(P)] == ["ips-1"]


def test_refusals_name_what_is_wrong(gce_emulator, clients):
    insert(clients, "ips-1")
    with pytest.raises(api_exceptions.Conflict, match="already exists"):
        insert(clients, "ips-1")
    with pytest.raises(api_exceptions.NotFound):
        insert(clients, "ips-2", disk=f"projects/{P}/zones/{ZA}/disks/nope")
    with pytest.raises(api_exceptions.BadRequest, match="same zone/region"):
        insert(clients, "ips-3", zone=ZB)  # web-1 lives in ZA
    with pytest.raises(api_exceptions.BadRequest, match="sourceDisk"):
        clients.instant.insert_unary(
            request={
                "project": P,
                "zone": ZA,
                "instant_snapshot_resource": compute_v1.InstantSnapshot(name="x"),
            }
        )
    with pytest.raises(api_exceptions.BadRequest, match=r"Invalid value for field 'resource\.name'"):
        insert(clients, "Bad_Name")


def test_a_disk_type_without_instant_snapshots_is_refused_with_400_naming_the_type(gce_emulator, clients):
    with gce_emulator.world.lock:
        gce_emulator.world.instant_disk_types = frozenset({"hyperdisk-balanced"})
    with pytest.raises(
        api_exceptions.BadRequest, match=r"not supported for disk .*web-1' of type 'pd-balanced'"
    ):
        insert(clients, "ips-1")
    assert gce_emulator.instant_snapshots(P) == []


def test_partial_source_disk_urls_are_accepted(gce_emulator, clients):
    insert(clients, "ips-1", disk=f"zones/{ZA}/disks/web-1")
    (made,) = gce_emulator.instant_snapshots(P)
    assert made["sourceDisk"].endswith(WEB_DISK)


def test_list_filters_by_label_and_pages_like_the_other_resources(gce_emulator, clients):
    insert(clients, "ips-a", labels={"k": "x"})
    insert(clients, "ips-b", disk=DATA_DISK, labels={"k": "x"})
    gce_emulator.clock.advance(31)
    insert(clients, "ips-c", labels={"k": "y"})
    pages = clients.instant.list(
        request={"project": P, "zone": ZA, "filter": 'labels.k = "x"', "max_results": 1}
    )
    assert [i.name for i in pages] == ["ips-a", "ips-b"]
    raw = clients.instant.list(request={"project": P, "zone": ZA, "max_results": 2}).pages
    assert [len(page.items) for page in raw] == [2, 1]
    with pytest.raises(api_exceptions.BadRequest, match="filter"):
        list(
            clients.instant.list(
                request={"project": P, "zone": ZA, "filter": 'labels.k = "x" labels.j = "y"'}
            )
        )


def test_delete_goes_through_deleting_then_the_instant_snapshot_is_gone(gce_emulator, clients):
    insert(clients, "ips-1")
    gce_emulator.clock.advance(3)
    op = clients.instant.delete_unary(
        request={"project": P, "zone": ZA, "instant_snapshot": "ips-1", "request_id": rid()}
    )
    assert clients.instant.get(project=P, zone=ZA, instant_snapshot="ips-1").status == "DELETING"
    gce_emulator.clock.advance(2)
    assert zone_op(clients, op).status == DONE
    with pytest.raises(api_exceptions.NotFound):
        clients.instant.get(project=P, zone=ZA, instant_snapshot="ips-1")
    with pytest.raises(api_exceptions.NotFound):
        clients.instant.delete_unary(
            request={"project": P, "zone": ZA, "instant_snapshot": "ips-1", "request_id": rid()}
        )


def test_a_second_instant_snapshot_of_a_disk_within_30_seconds_fails_inside_its_operation(
    gce_emulator, clients
):
    insert(clients, "ips-1")
    gce_emulator.clock.advance(10)
    op = insert(clients, "ips-2")
    assert op.status == DONE
    assert op.error.errors[0].code == "INSTANT_SNAPSHOT_TOO_RECENT"
    assert "wait at least 30 seconds" in op.error.errors[0].message
    assert [i["name"] for i in gce_emulator.instant_snapshots(P)] == ["ips-1"]
    insert(clients, "ips-3", disk=DATA_DISK)  # the rule is per disk
    gce_emulator.clock.advance(25)
    assert not insert(clients, "ips-4").error.errors


def test_a_disk_holds_at_most_32_instant_snapshots():
    with Emulator(DEMO_SEED, timings={"instant_snapshot_min_interval": 0}) as emulator:
        clients = Clients(emulator)
        for number in range(32):
            assert not insert(clients, f"ips-{number}").error.errors
        refused = insert(clients, "ips-32")
        assert refused.status == DONE
        assert refused.error.errors[0].code == "INSTANT_SNAPSHOT_LIMIT"
        assert "can't have more than 32 instant snapshots" in refused.error.errors[0].message
        assert not insert(clients, "other-disk", disk=DATA_DISK).error.errors
        clients.instant.delete_unary(
            request={"project": P, "zone": ZA, "instant_snapshot": "ips-0", "request_id": rid()}
        )
        emulator.clock.advance(2)
        assert not insert(clients, "ips-33").error.errors


def test_a_standard_snapshot_made_from_an_instant_snapshot_names_both_sources(gce_emulator, clients):
    insert(clients, "ips-1", labels={"a": "b"})
    gce_emulator.clock.advance(3)
    instant = clients.instant.get(project=P, zone=ZA, instant_snapshot="ips-1")
    op = convert(clients, "snap-1", f"projects/{P}/zones/{ZA}/instantSnapshots/ips-1", labels={"c": "d"})
    assert op.operation_type == "insert"
    assert not op.zone
    assert not op.region
    gce_emulator.clock.advance(60)
    snapshot = clients.snapshots.get(project=P, snapshot="snap-1")
    disk = clients.disks.get(project=P, zone=ZA, disk="web-1")
    assert snapshot.status == "READY"
    assert snapshot.source_instant_snapshot.endswith(f"zones/{ZA}/instantSnapshots/ips-1")
    assert snapshot.source_instant_snapshot_id == str(instant.id)
    assert snapshot.source_disk.endswith(WEB_DISK)
    assert snapshot.source_disk_id == str(disk.id)
    assert dict(snapshot.labels) == {"c": "d"}  # the request's labels, not the instant snapshot's


def test_a_regional_instant_snapshot_converts_from_a_partial_url(gce_emulator, clients):
    insert_regional(clients, "shared-ips")
    gce_emulator.clock.advance(3)
    convert(clients, "snap-r", f"regions/{R}/instantSnapshots/shared-ips")
    gce_emulator.clock.advance(60)
    snapshot = clients.snapshots.get(project=P, snapshot="snap-r")
    assert snapshot.status == "READY"
    assert snapshot.source_disk.endswith(SHARED)


def test_a_conversion_refuses_two_sources_an_instant_snapshot_not_ready_and_an_unknown_one(
    gce_emulator, clients
):
    source = f"projects/{P}/zones/{ZA}/instantSnapshots/ips-1"
    insert(clients, "ips-1")
    with pytest.raises(api_exceptions.BadRequest, match="not ready"):
        convert(clients, "snap-1", source)
    gce_emulator.clock.advance(3)
    with pytest.raises(api_exceptions.BadRequest, match="not both"):
        convert(clients, "snap-1", source, source_disk=WEB_DISK)
    with pytest.raises(api_exceptions.NotFound):
        convert(clients, "snap-1", f"projects/{P}/zones/{ZA}/instantSnapshots/nope")
    assert gce_emulator.snapshots(P) == []


def test_a_repeated_conversion_request_returns_its_operation_even_once_the_instant_snapshot_is_gone(
    gce_emulator, clients
):
    request_id = rid()
    insert(clients, "ips-1")
    gce_emulator.clock.advance(3)
    first = convert(clients, "snap-1", f"zones/{ZA}/instantSnapshots/ips-1", request_id=request_id)
    gce_emulator.clock.advance(60)
    clients.instant.delete_unary(
        request={"project": P, "zone": ZA, "instant_snapshot": "ips-1", "request_id": rid()}
    )
    gce_emulator.clock.advance(2)
    assert (
        convert(clients, "snap-1", f"zones/{ZA}/instantSnapshots/ips-1", request_id=request_id).name
        == first.name
    )


def test_deleting_a_disk_deletes_its_instant_snapshots_and_no_others(gce_emulator, clients):
    insert(clients, "web-ips")
    insert(clients, "data-ips", disk=DATA_DISK)
    gce_emulator.clock.advance(3)
    assert gce_emulator.delete_disk(DATA_DISK) == [f"projects/{P}/zones/{ZA}/instantSnapshots/data-ips"]
    assert [i["name"] for i in gce_emulator.instant_snapshots(P)] == ["web-ips"]
    with pytest.raises(api_exceptions.NotFound):
        convert(clients, "snap-1", f"zones/{ZA}/instantSnapshots/data-ips")
    instance = gce_emulator.instance(P, ZA, "web-1")
    assert [d["deviceName"] for d in instance["disks"]] == ["web-1"]


def test_injected_faults_reach_instant_snapshot_calls_and_operations(gce_emulator, clients):
    gce_emulator.faults.fail_operation("compute.instantSnapshots.insert", "QUOTA_EXCEEDED", "no room")
    op = insert(clients, "ips-1")
    gce_emulator.clock.advance(2)
    done = zone_op(clients, op)
    assert done.status == DONE
    assert done.error.errors[0].code == "QUOTA_EXCEEDED"
    assert gce_emulator.instant_snapshots(P) == []  # a failed insert leaves nothing behind
    gce_emulator.faults.http_error("compute.regionInstantSnapshots.get", 503)
    with pytest.raises(api_exceptions.ServiceUnavailable):
        clients.region_instant.get(project=P, region=R, instant_snapshot="x", retry=None)


def test_a_failed_instant_snapshot_is_kept_failed_and_its_operation_carries_the_error(gce_emulator, clients):
    gce_emulator.faults.fail_instant_snapshot(P, name_prefix="ips")
    op = insert(clients, "ips-1")
    gce_emulator.clock.advance(3)
    done = zone_op(clients, op)
    assert done.error.errors[0].code == "INSTANT_SNAPSHOT_FAILED"
    assert clients.instant.get(project=P, zone=ZA, instant_snapshot="ips-1").status == "FAILED"
    insert(clients, "other", disk=DATA_DISK)  # the fault was for one insert only
    gce_emulator.clock.advance(3)
    assert clients.instant.get(project=P, zone=ZA, instant_snapshot="other").status == "READY"
