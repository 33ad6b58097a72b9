"""The emulator, driven through the real google-cloud-compute clients over loopback."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from google.api_core import exceptions as api_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from gce_emulator import Emulator

pytestmark = pytest.mark.emulator

P, ZA, ZB, R = "demo-project", "us-central1-a", "us-central1-b", "us-central1"
DONE = compute_v1.Operation.Status.DONE


def rid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def clients(gce_emulator):
    opts = {"api_endpoint": gce_emulator.url}
    creds = AnonymousCredentials()

    class Clients:
        instances = compute_v1.InstancesClient(credentials=creds, client_options=opts)
        disks = compute_v1.DisksClient(credentials=creds, client_options=opts)
        region_disks = compute_v1.RegionDisksClient(credentials=creds, client_options=opts)
        snapshots = compute_v1.SnapshotsClient(credentials=creds, client_options=opts)
        zone_ops = compute_v1.ZoneOperationsClient(credentials=creds, client_options=opts)
        region_ops = compute_v1.RegionOperationsClient(credentials=creds, client_options=opts)
        global_ops = compute_v1.GlobalOperationsClient(credentials=creds, client_options=opts)

    return Clients


def stop(clients, name="web-1", zone=ZA, request_id=None, **extra):
    request = {"project": P, "zone": zone, "instance": name, "request_id": request_id or rid(), **extra}
    return clients.instances.stop_unary(request=request)


def insert_snapshot(clients, name, disk=f"projects/{P}/zones/{ZA}/disks/web-1", request_id=None, **fields):
    snapshot = compute_v1.Snapshot(name=name, source_disk=disk, **fields)
    request = {"project": P, "snapshot_resource": snapshot, "request_id": request_id or rid()}
    return clients.snapshots.insert_unary(request=request)


def status(clients, name="web-1", zone=ZA):
    return clients.instances.get(project=P, zone=zone, instance=name).status


def test_stop_goes_through_stopping_to_terminated_and_its_operation_is_done(gce_emulator, clients):
    op = stop(clients)
    assert op.status != DONE
    assert status(clients) == "STOPPING"
    gce_emulator.clock.advance(31)
    assert status(clients) == "TERMINATED"
    assert clients.zone_ops.get(project=P, zone=ZA, operation=op.name).status == DONE


def test_start_goes_through_staging_to_running(gce_emulator, clients):
    op = clients.instances.start_unary(
        request={"project": P, "zone": ZA, "instance": "batch-1", "request_id": rid()}
    )
    assert status(clients, "batch-1") == "STAGING"
    gce_emulator.clock.advance(21)
    assert status(clients, "batch-1") == "RUNNING"
    assert clients.zone_ops.get(project=P, zone=ZA, operation=op.name).status == DONE


def test_resume_only_from_suspended_and_start_refuses_suspended(gce_emulator, clients):
    with pytest.raises(api_exceptions.BadRequest, match="only a SUSPENDED VM can be resumed"):
        clients.instances.resume_unary(request={"project": P, "zone": ZA, "instance": "web-1"})
    gce_emulator.set_instance_status(P, ZA, "web-1", "SUSPENDED")
    with pytest.raises(api_exceptions.BadRequest, match="use resume"):
        clients.instances.start_unary(request={"project": P, "zone": ZA, "instance": "web-1"})
    clients.instances.resume_unary(request={"project": P, "zone": ZA, "instance": "web-1"})
    gce_emulator.clock.advance(21)
    assert status(clients) == "RUNNING"


def test_stop_of_a_terminated_vm_is_done_at_once(clients):
    op = stop(clients, "batch-1")
    assert op.status == DONE
    assert not op.error.errors


def test_local_ssd_vm_needs_discard_choice(gce_emulator, clients):
    seeded = Emulator({"projects": {P: {"zones": {ZA: {"instances": [{"name": "ssd-1", "local_ssds": 1}]}}}}})
    with seeded:
        instances = compute_v1.InstancesClient(
            credentials=AnonymousCredentials(), client_options={"api_endpoint": seeded.url}
        )
        with pytest.raises(api_exceptions.BadRequest, match="discardLocalSsd"):
            instances.stop_unary(request={"project": P, "zone": ZA, "instance": "ssd-1"})
        op = instances.stop_unary(
            request={"project": P, "zone": ZA, "instance": "ssd-1", "discard_local_ssd": True}
        )
        assert op.name
        assert seeded.calls_for("compute.instances.stop")[-1].path.endswith("/ssd-1/stop")


def test_repeated_request_id_returns_the_original_operation_and_acts_once(gce_emulator, clients):
    request_id = rid()
    first = stop(clients, request_id=request_id)
    gce_emulator.clock.advance(31)
    again = stop(clients, request_id=request_id)
    assert again.name == first.name
    assert again.status == DONE
    assert [c.request_id for c in gce_emulator.calls_for("compute.instances.stop")] == [
        request_id,
        request_id,
    ]


def test_snapshot_goes_creating_uploading_ready_with_storage_bytes(gce_emulator, clients):
    op = insert_snapshot(clients, "snap-1", labels={"managed-by": "gce-vm-backup"}, storage_locations=["eu"])
    snapshot = clients.snapshots.get(project=P, snapshot="snap-1")
    assert snapshot.status == "CREATING"
    assert snapshot.labels == {"managed-by": "gce-vm-backup"}
    assert list(snapshot.storage_locations) == ["eu"]
    gce_emulator.clock.advance(16)
    assert clients.snapshots.get(project=P, snapshot="snap-1").status == "UPLOADING"
    gce_emulator.clock.advance(5 + 10)  # 5 s + 1 s/GB for a 10 GB disk
    ready = clients.snapshots.get(project=P, snapshot="snap-1")
    assert ready.status == "READY"
    assert ready.storage_bytes > 0
    assert clients.global_ops.get(project=P, operation=op.name).status == DONE


def test_snapshots_record_their_source_disk_url_and_id_as_the_api_does(gce_emulator, clients):
    web_disk = clients.disks.get(project=P, zone=ZA, disk="web-1")
    insert_snapshot(clients, "by-path", disk=f"projects/{P}/zones/{ZA}/disks/web-1")
    inserted = clients.snapshots.get(project=P, snapshot="by-path")
    assert inserted.source_disk == web_disk.self_link  # a full URL, whatever form the request used
    assert inserted.source_disk_id == str(web_disk.id)
    clients.region_disks.create_snapshot_unary(
        request={
            "project": P,
            "region": R,
            "disk": "shared-data",
            "snapshot_resource": compute_v1.Snapshot(name="regional"),
            "request_id": rid(),
        }
    )
    regional_disk = clients.region_disks.get(project=P, region=R, disk="shared-data")
    regional = clients.snapshots.get(project=P, snapshot="regional")
    assert regional.source_disk == regional_disk.self_link
    assert regional.source_disk_id == str(regional_disk.id)
    gce_emulator.seed_snapshot(P, {"name": "seeded", "sourceDisk": f"projects/{P}/zones/{ZA}/disks/web-1"})
    seeded = clients.snapshots.get(project=P, snapshot="seeded")
    assert (seeded.source_disk, seeded.source_disk_id) == (web_disk.self_link, str(web_disk.id))
    gce_emulator.seed_snapshot(
        P,
        {"name": "of-a-gone-disk", "sourceDisk": f"projects/{P}/zones/{ZA}/disks/gone", "sourceDiskId": "42"},
    )
    assert clients.snapshots.get(project=P, snapshot="of-a-gone-disk").source_disk_id == "42"


def test_zonal_and_regional_create_snapshot_use_their_own_operations(gce_emulator, clients):
    zonal = clients.disks.create_snapshot_unary(
        request={
            "project": P,
            "zone": ZA,
            "disk": "web-1-data",
            "snapshot_resource": {"name": "z1"},
            "guest_flush": True,
        }
    )
    regional = clients.region_disks.create_snapshot_unary(
        request={"project": P, "region": R, "disk": "shared-data", "snapshot_resource": {"name": "r1"}}
    )
    assert zonal.zone.endswith(f"/zones/{ZA}")
    assert regional.region.endswith(f"/regions/{R}")
    gce_emulator.clock.advance(200)
    assert clients.zone_ops.get(project=P, zone=ZA, operation=zonal.name).status == DONE
    assert clients.region_ops.get(project=P, region=R, operation=regional.name).status == DONE
    assert clients.snapshots.get(project=P, snapshot="z1").guest_flush is True
    assert clients.snapshots.get(project=P, snapshot="r1").source_disk.endswith(
        f"/regions/{R}/disks/shared-data"
    )


@pytest.mark.parametrize("code", ["QUOTA_EXCEEDED", "RATE_LIMIT_EXCEEDED", "INTERNAL_ERROR"])
def test_operation_can_end_done_with_an_error(gce_emulator, clients, code):
    gce_emulator.faults.fail_operation("compute.snapshots.insert", code, "injected")
    op = insert_snapshot(clients, "snap-f")
    gce_emulator.clock.advance(2)
    done = clients.global_ops.get(project=P, operation=op.name)
    assert done.status == DONE
    assert [(e.code, e.message) for e in done.error.errors] == [(code, "injected")]
    with pytest.raises(api_exceptions.NotFound):
        clients.snapshots.get(project=P, snapshot="snap-f")


def test_failed_stop_leaves_the_vm_running(gce_emulator, clients):
    gce_emulator.faults.fail_operation("compute.instances.stop", "INTERNAL_ERROR")
    op = stop(clients)
    gce_emulator.clock.advance(2)
    assert (
        clients.zone_ops.get(project=P, zone=ZA, operation=op.name).error.errors[0].code == "INTERNAL_ERROR"
    )
    assert status(clients) == "RUNNING"


def test_hung_operation_never_finishes(gce_emulator, clients):
    gce_emulator.faults.hang_operation("compute.instances.stop")
    op = stop(clients)
    gce_emulator.clock.advance(10_000)
    assert clients.zone_ops.get(project=P, zone=ZA, operation=op.name).status != DONE
    assert status(clients) == "STOPPING"


def test_fail_snapshot_turns_it_failed(gce_emulator, clients):
    gce_emulator.faults.fail_snapshot(P, name_prefix="bad-")
    op = insert_snapshot(clients, "bad-1")
    gce_emulator.clock.advance(100)
    assert clients.snapshots.get(project=P, snapshot="bad-1").status == "FAILED"
    assert clients.global_ops.get(project=P, operation=op.name).error.errors[0].code == "SNAPSHOT_FAILED"


def test_second_snapshot_of_a_disk_within_ten_minutes_is_rate_limited(gce_emulator, clients):
    insert_snapshot(clients, "first")
    op = insert_snapshot(clients, "second")
    assert op.error.errors[0].code == "RATE_LIMIT_EXCEEDED"
    gce_emulator.clock.advance(601)
    later = insert_snapshot(clients, "third")
    gce_emulator.clock.advance(100)
    assert not clients.global_ops.get(project=P, operation=later.name).error.errors


def test_invalid_name_is_400_and_duplicate_is_409(gce_emulator, clients):
    with pytest.raises(api_exceptions.BadRequest, match="Must be a match of regex"):
        insert_snapshot(clients, "Bad_Name")
    with pytest.raises(api_exceptions.BadRequest):
        insert_snapshot(clients, "x" * 64)
    insert_snapshot(clients, "dup")
    with pytest.raises(api_exceptions.Conflict, match="already exists"):
        insert_snapshot(clients, "dup", disk=f"projects/{P}/zones/{ZA}/disks/web-1-data")


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.instances.get(project=P, zone=ZA, instance="nope"),
        lambda c: c.instances.get(project=P, zone="mars-1", instance="web-1"),
        lambda c: c.instances.get(project="other", zone=ZA, instance="web-1"),
        lambda c: c.disks.get(project=P, zone=ZA, disk="nope"),
        lambda c: c.snapshots.get(project=P, snapshot="nope"),
        lambda c: c.zone_ops.get(project=P, zone=ZA, operation="operation-nope"),
    ],
)
def test_unknown_resources_are_404(clients, call):
    with pytest.raises(api_exceptions.NotFound):
        call(clients)


# ---- list filters (the documented grammar: see gce_emulator/filters.py) ---------------------------
def vm_names(clients, filter, zone=ZA):
    return sorted(
        i.name for i in clients.instances.list(request={"project": P, "zone": zone, "filter": filter})
    )


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ('labels.tier = "web"', ["web-1"]),
        ("labels.tier = web", ["web-1"]),
        ("labels.tier=web", ["web-1"]),
        ('(labels.tier = "web")', ["web-1"]),
        ('labels.tier != "web"', ["batch-1"]),
        ("status = TERMINATED", ["batch-1"]),
        ('name != "web-1"', ["batch-1"]),
        ('(labels.app = "shop") (status = "RUNNING")', ["web-1"]),  # AND by default
        ('(labels.app = "shop") AND (status = "RUNNING")', ["web-1"]),
        ('(labels.tier = "web") OR (labels.tier = "batch")', ["batch-1", "web-1"]),
        ('(labels.tier = "web") OR (labels.tier = "none") OR (status = "TERMINATED")', ["batch-1", "web-1"]),
        ('(labels.app = "shop")  AND  (labels.tier = "db")', []),
        ("labels.backup:*", ["batch-1", "web-1"]),
        ("labels.owner:*", []),
        ('(labels.tier:*) (labels.tier != "web")', ["batch-1"]),
        ('labels.tier = "we)b"', []),  # a parenthesis inside a quoted value is just a character
    ],
)
def test_filters_in_the_documented_form_select_what_they_say(clients, filter, expected):
    assert vm_names(clients, filter) == expected


@pytest.mark.parametrize(
    ("filter", "why"),
    [
        ('labels.app = "shop" labels.tier = "web"', "not one 'field op value' expression"),
        ("labels.app=shop status = TERMINATED", "not one 'field op value' expression"),
        ('labels.app = "shop" AND labels.tier = "web"', "not one 'field op value' expression"),
        ('(labels.app = "shop") labels.tier = "web"', "must be within parentheses"),
        ('(labels.app = "shop")(labels.tier = "web")', "separated by whitespace, AND or OR"),
        ('(labels.a = "x") OR (labels.b = "y") AND (labels.c = "z")', "mixes AND and OR"),
        ('(labels.a = "x") OR (labels.b = "y") (labels.c = "z")', "mixes AND and OR"),
        ('((labels.a = "x") OR (labels.b = "y")) AND (labels.c = "z")', "nested parentheses"),
        ('(labels.a = "x") AND', "must be within parentheses"),
        ('AND (labels.a = "x")', "not one 'field op value' expression"),
        ('(labels.a = "x") and (labels.b = "y")', "must be within parentheses"),
        ('(labels.a = "x"', "unbalanced"),
        ('labels.tier = "x" OR labels.tier != "x"', "not one 'field op value' expression"),  # an injection
        ('(labels.tier = "x" OR labels.tier != "x")', "not one 'field op value' expression"),
        ('labels.tier = "we"b"', "not one 'field op value' expression"),
        ('labels.tier = "we\\"b"', "not one 'field op value' expression"),  # no escapes are documented
        ("labels.tier = 'web'", "not one 'field op value' expression"),
        ("labels.tier ~ web", "not one 'field op value' expression"),
        ("labels.tier eq web", "not one 'field op value' expression"),  # the regex form: not modelled
        ("labels.tier:web", "not one 'field op value' expression"),
        ("labels.tier = *", "not one 'field op value' expression"),
        ('cpuPlatform = "Intel Skylake"', "unsupported field 'cpuPlatform'"),
        ('scheduling.automaticRestart = "true"', "unsupported field 'scheduling.automaticRestart'"),
        ('labels.Tier = "web"', "unsupported field 'labels.Tier'"),
        ("labels.tier =", "not one 'field op value' expression"),
        ("()", "not one 'field op value' expression"),
    ],
)
def test_anything_outside_the_documented_grammar_is_a_400_naming_the_filter(clients, filter, why):
    with pytest.raises(api_exceptions.BadRequest) as raised:
        vm_names(clients, filter)
    assert f"Invalid value for field 'filter': {filter!r}" in raised.value.message
    assert why in raised.value.message


def test_aggregated_list_applies_the_same_grammar(clients):
    request = {"project": P, "filter": '(labels.app = "shop") (labels.tier = "db")'}
    found = [
        i.name for _, scoped in clients.instances.aggregated_list(request=request) for i in scoped.instances
    ]
    assert found == ["db-1"]
    with pytest.raises(api_exceptions.BadRequest, match="filter"):
        list(
            clients.instances.aggregated_list(
                request={"project": P, "filter": "labels.app = shop labels.tier = db"}
            )
        )


def test_snapshot_filters_compare_timestamps_and_labels(gce_emulator, clients):
    for day in (1, 2, 3):
        gce_emulator.seed_snapshot(
            P,
            {
                "name": f"s-{day}",
                "labels": {"k": "v", "n": str(day * 5)},
                "creationTimestamp": f"2026-01-0{day}T00:00:00.000Z",
            },
        )

    def snaps(filter):
        return sorted(s.name for s in clients.snapshots.list(request={"project": P, "filter": filter}))

    assert snaps('creationTimestamp > "2026-01-01T12:00:00Z"') == ["s-2", "s-3"]
    assert snaps('(creationTimestamp <= "2026-01-02T00:00:00.000Z") (labels.k = "v")') == ["s-1", "s-2"]
    assert snaps("labels.n >= 10") == ["s-2", "s-3"]  # numbers compare as numbers (5 < 10 < 15)
    assert snaps("labels.n < 10") == ["s-1"]
    assert snaps('(labels.n = "5") OR (labels.n = "15")') == ["s-1", "s-3"]


def test_aggregated_list_spans_zones_and_pages(gce_emulator, clients):
    pager = clients.instances.aggregated_list(
        request={"project": P, "max_results": 1, "filter": "labels.app = shop"}
    )
    found = sorted((zone, i.name) for zone, scoped in pager for i in scoped.instances)
    assert found == [
        ("zones/us-central1-a", "batch-1"),
        ("zones/us-central1-a", "web-1"),
        ("zones/us-central1-b", "db-1"),
    ]
    assert len(gce_emulator.calls_for("compute.instances.aggregatedList")) == 3


def test_snapshot_list_paginates_and_filters(gce_emulator, clients):
    for index in range(7):
        gce_emulator.seed_snapshot(
            P, {"name": f"s-{index}", "labels": {"k": "even" if index % 2 == 0 else "odd"}}
        )
    pager = clients.snapshots.list(request={"project": P, "max_results": 2, "filter": 'labels.k = "even"'})
    assert sorted(s.name for s in pager) == ["s-0", "s-2", "s-4", "s-6"]
    assert len(gce_emulator.calls_for("compute.snapshots.list")) == 2


def test_delete_snapshot_goes_deleting_then_gone(gce_emulator, clients):
    gce_emulator.seed_snapshot(P, {"name": "old"})
    op = clients.snapshots.delete_unary(request={"project": P, "snapshot": "old", "request_id": rid()})
    assert clients.snapshots.get(project=P, snapshot="old").status == "DELETING"
    gce_emulator.clock.advance(6)
    assert clients.global_ops.get(project=P, operation=op.name).status == DONE
    with pytest.raises(api_exceptions.NotFound):
        clients.snapshots.get(project=P, snapshot="old")


def test_http_error_fault_hits_the_next_calls_only(gce_emulator, clients):
    gce_emulator.faults.http_error("compute.instances.stop", 503, times=1)
    with pytest.raises(api_exceptions.ServiceUnavailable):
        stop(clients)
    assert stop(clients).name
    assert [c.status for c in gce_emulator.calls_for("compute.instances.stop")] == [503, 200]


def test_the_client_library_retries_a_get_on_503_by_itself(gce_emulator, clients):
    gce_emulator.faults.http_error("compute.instances.get", 503, times=1)
    assert status(clients) == "RUNNING"
    assert [c.status for c in gce_emulator.calls_for("compute.instances.get")] == [503, 200]


@pytest.mark.parametrize("code", [429, 500])
def test_http_error_fault_statuses(gce_emulator, clients, code):
    gce_emulator.faults.http_error("compute.snapshots.insert", code)
    with pytest.raises(api_exceptions.GoogleAPICallError) as info:
        insert_snapshot(clients, "x1")
    assert info.value.code == code


def test_wait_returns_before_done_after_its_long_poll(clients):
    emulator = Emulator({"projects": {P: {"zones": {ZA: {"instances": [{"name": "vm"}]}}}}}, wait_timeout=0.2)
    with emulator:
        instances = compute_v1.InstancesClient(
            credentials=AnonymousCredentials(), client_options={"api_endpoint": emulator.url}
        )
        ops = compute_v1.ZoneOperationsClient(
            credentials=AnonymousCredentials(), client_options={"api_endpoint": emulator.url}
        )
        op = instances.stop_unary(request={"project": P, "zone": ZA, "instance": "vm"})
        assert ops.wait(project=P, zone=ZA, operation=op.name).status != DONE
        emulator.clock.advance(31)
        assert ops.wait(project=P, zone=ZA, operation=op.name).status == DONE


def test_deleted_instance_is_404_mid_run(gce_emulator, clients):
    gce_emulator.delete_instance(P, ZA, "web-1")
    with pytest.raises(api_exceptions.NotFound):
        stop(clients)


def test_call_log_records_method_resource_and_request_id(gce_emulator, clients):
    request_id = rid()
    stop(clients, request_id=request_id)
    call = gce_emulator.calls_for("compute.instances.stop")[0]
    assert (call.resource, call.request_id, call.http_method, call.status) == (
        f"projects/{P}/zones/{ZA}/instances/web-1",
        request_id,
        "POST",
        200,
    )


def test_time_scale_runs_state_machines_faster(clients):
    with Emulator(
        {"projects": {P: {"zones": {ZA: {"instances": [{"name": "vm"}]}}}}}, time_scale=1000
    ) as emulator:
        instances = compute_v1.InstancesClient(
            credentials=AnonymousCredentials(), client_options={"api_endpoint": emulator.url}
        )
        ops = compute_v1.ZoneOperationsClient(
            credentials=AnonymousCredentials(), client_options={"api_endpoint": emulator.url}
        )
        op = instances.stop_unary(request={"project": P, "zone": ZA, "instance": "vm"})
        assert ops.wait(project=P, zone=ZA, operation=op.name).status == DONE  # 30 s simulated = 30 ms real


def test_standalone_process_serves_the_real_client_and_stops_on_sigterm(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "gce_emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        url = line.split("listening on ", 1)[1].split()[0]
        instances = compute_v1.InstancesClient(
            credentials=AnonymousCredentials(), client_options={"api_endpoint": url}
        )
        assert instances.get(project=P, zone=ZA, instance="web-1").status == "RUNNING"
        process.terminate()
        assert process.wait(timeout=10) == 0
        assert "stopped" in process.stdout.read()
    finally:
        process.kill()


def test_unknown_timing_is_refused():
    with pytest.raises(ValueError, match="unknown timings"):
        Emulator(timings={"stopp": 1})


def test_on_call_runs_an_action_before_the_chosen_call(gce_emulator, clients):
    seen = []
    gce_emulator.faults.on_call(
        "compute.instances.get",
        lambda: gce_emulator.set_instance_status(P, ZA, "web-1", "SUSPENDED") or seen.append(1),
        after=1,
    )
    assert status(clients) == "RUNNING"  # the first call passes untouched
    assert status(clients) == "SUSPENDED"  # the action ran just before the second was handled
    assert status(clients) == "SUSPENDED"
    assert seen == [1]  # once only


def test_http_error_after_apply_acts_then_fails_and_the_same_request_id_adopts(gce_emulator, clients):
    gce_emulator.faults.http_error_after_apply("compute.instances.stop", 503, times=1)
    request_id = rid()
    with pytest.raises(api_exceptions.ServiceUnavailable):
        stop(clients, request_id=request_id)
    assert status(clients) == "STOPPING"  # the stop took effect although the caller saw a 503
    again = stop(clients, request_id=request_id)
    stops = [op for op in gce_emulator.world.operations.values() if op.operation_type == "stop"]
    assert [op.name for op in stops] == [again.name]  # the repeat adopted the one operation
    assert [c.status for c in gce_emulator.calls_for("compute.instances.stop")] == [503, 200]


def test_faults_clear_removes_triggers_and_after_apply_faults(gce_emulator, clients):
    gce_emulator.faults.on_call("compute.instances.get", lambda: pytest.fail("cleared"))
    gce_emulator.faults.http_error_after_apply("compute.instances.get", 500)
    gce_emulator.faults.clear()
    assert status(clients) == "RUNNING"
