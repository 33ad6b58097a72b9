"""Instant mode (instant_ops, instant_convert) against the emulator, through the package's own hook."""

from __future__ import annotations

import json
import time
import uuid
from unittest.mock import create_autospec

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from gce_vm_backup.backup.capture import CaptureSettings
from gce_vm_backup.backup.instant import (
    MAX_INSTANT_PER_DISK,
    TARGET_LABEL,
    ConvertInstantSnapshotsOperator,
    capture_instant,
    choose_mode,
    disk_types,
    instant_capable,
    instant_name,
    precheck_instant,
    prepare_instant,
    settle_instant,
    standard_name,
)
from gce_vm_backup.compute.hook import ComputeBackupHook
from gce_vm_backup.compute.naming import snapshot_name
from gce_vm_backup.config.labels import managed_snapshot_labels, run_label
from gce_vm_backup.errors import (
    BackupError,
    OperationFailedError,
    OperationTimeoutError,
    ResourceNotFoundError,
    VmStateError,
)
from gce_vm_backup.runtime.base import RunKey

from .conftest import PROJECT, ZONE_A, ZONE_B, converge

pytestmark = pytest.mark.emulator

REGION = "us-central1"
WEB_DISK = f"projects/{PROJECT}/zones/{ZONE_A}/disks/web-1"
DATA_DISK = f"projects/{PROJECT}/zones/{ZONE_A}/disks/web-1-data"
SHARED = f"projects/{PROJECT}/regions/{REGION}/disks/shared-data"


def group_settings(**overrides):
    """The group's capture settings, as the downtime task builds them (snapshot_ops.CaptureSettings)."""
    return CaptureSettings(**{"deployment": "test", "group": "web", "labels": {"team": "shop"}, **overrides})


def disk(name, zone=ZONE_A, region=None):
    where = f"regions/{region}" if region else f"zones/{zone}"
    return {
        "name": name,
        "source": f"projects/{PROJECT}/{where}/disks/{name}",
        "boot": name.endswith("-1"),
        "size_gb": 10,
        "location": region or zone,
        "regional": bool(region),
    }


WEB = {
    "project_id": PROJECT,
    "zone": ZONE_A,
    "instance": "web-1",
    "disks": [disk("web-1"), disk("web-1-data")],
}
DB = {
    "project_id": PROJECT,
    "zone": ZONE_B,
    "instance": "db-1",
    "disks": [disk("db-1", zone=ZONE_B), disk("shared-data", region=REGION)],
}


@pytest.fixture
def hook(emulator):
    with emulator.world.lock:  # real time here: a modelled 2 s creation would make every capture wait 2 s
        emulator.world.timings["instant_snapshot_create"] = 0.2
    return ComputeBackupHook(retry_initial=0.001, retry_max=0.002)


def run_key(context, try_number=1, run_id=None):
    context.ti.try_number = try_number
    if run_id:
        context.run_id = run_id
    return RunKey.from_context(context.as_dict())


def raw_instant(emulator):
    opts = {"api_endpoint": emulator.url}
    return compute_v1.InstantSnapshotsClient(credentials=AnonymousCredentials(), client_options=opts)


def seed_instant(emulator, name, source=WEB_DISK, labels=None):
    """An instant snapshot made by someone else (a test client, not the package)."""
    raw_instant(emulator).insert_unary(
        request={
            "project": PROJECT,
            "zone": ZONE_A,
            "instant_snapshot_resource": compute_v1.InstantSnapshot(
                name=name, source_disk=source, labels=labels or {}
            ),
            "request_id": str(uuid.uuid4()),
        }
    )
    emulator.clock.advance(31)  # READY, and past the 30 s rule


def package_calls(emulator, method):
    return [call for call in emulator.calls_for(method) if call.client[:1] == ("gce-vm-backup",)]


def capture(hook, record, run, settings=None):
    return capture_instant(
        hook, record, run, deadline=time.monotonic() + 60, settings=settings or group_settings()
    )


def test_capture_makes_one_instant_snapshot_per_disk_labelled_like_the_standard_one(emulator, hook, context):
    run = run_key(context)
    records = capture(hook, WEB, run)
    assert [(r["disk"], r["status"], r["instant_scope"]) for r in records] == [
        ("web-1", "READY", f"projects/{PROJECT}/zones/{ZONE_A}"),
        ("web-1-data", "READY", f"projects/{PROJECT}/zones/{ZONE_A}"),
    ]
    made = {item["name"]: item for item in emulator.instant_snapshots(PROJECT)}
    assert set(made) == {r["instant_snapshot"] for r in records}
    web = made[records[0]["instant_snapshot"]]
    standard = snapshot_name(
        instance="web-1",
        disk="web-1",
        zone_or_region=ZONE_A,
        run_time=run.run_time,
        run_id=run.run_id,
        scope="test/web",
    )
    expected = managed_snapshot_labels(
        deployment="test",
        group="web",
        instance="web-1",
        disk_source=WEB_DISK,
        extra={"team": "shop"},
        run=run_label(run.dag_id, run.run_id),
    )
    assert web["labels"] == {**expected, TARGET_LABEL: standard}
    assert records[0]["instant_snapshot"] != standard
    assert records[0]["vm"] == f"projects/{PROJECT}/zones/{ZONE_A}/instances/web-1"
    assert {c.client[0] for c in emulator.calls} == {"gce-vm-backup"}


def test_a_regional_disk_gets_a_regional_instant_snapshot(emulator, hook, context):
    records = capture(hook, DB, run_key(context))
    assert [r["instant_scope"] for r in records] == [
        f"projects/{PROJECT}/zones/{ZONE_B}",
        f"projects/{PROJECT}/regions/{REGION}",
    ]
    assert emulator.calls_for("compute.regionInstantSnapshots.insert")
    assert emulator.calls_for("compute.regionOperations.wait")


def test_a_disk_carried_by_another_vm_is_left_to_that_vm(emulator, hook, context):
    record = {
        **DB,
        "disks": [DB["disks"][0], {**DB["disks"][1], "carried_by": "projects/p/zones/z/instances/x"}],
    }
    records = capture(hook, record, run_key(context))
    assert [r["disk"] for r in records] == ["db-1"]
    assert not emulator.calls_for("compute.regionInstantSnapshots.insert")


def test_a_retried_capture_adopts_its_instant_snapshots_and_makes_no_duplicates(emulator, hook, context):
    first = capture(hook, WEB, run_key(context))
    again = capture(hook, WEB, run_key(context, try_number=2))
    assert [r["instant_snapshot"] for r in again] == [r["instant_snapshot"] for r in first]
    assert len(emulator.instant_snapshots(PROJECT)) == 2
    assert len(package_calls(emulator, "compute.instantSnapshots.insert")) == 2


def test_an_instant_snapshot_of_this_runs_name_that_is_not_ours_is_refused_and_kept(emulator, hook, context):
    run = run_key(context)
    name = instant_name(
        instance="web-1", disk="web-1", location=ZONE_A, run=run, deployment="test", group="web"
    )
    seed_instant(emulator, name, labels={"managed-by": "gce-vm-backup"})
    with pytest.raises(BackupError, match="exists with this run's name but is not gce-vm-backup's"):
        capture(hook, WEB, run)
    assert [i["name"] for i in emulator.instant_snapshots(PROJECT)] == [name]


def test_leftovers_of_earlier_runs_are_deleted_before_the_capture_and_nothing_else(emulator, hook, context):
    old = run_key(context, run_id="scheduled__2026-11-23T03:00:00+00:00")
    leftovers = capture(hook, WEB, old)  # a run whose conversion never happened
    emulator.clock.advance(31)
    ours = managed_snapshot_labels(deployment="test", group="web", instance="web-1", disk_source=WEB_DISK)
    other_group = managed_snapshot_labels(
        deployment="test", group="db", instance="web-1", disk_source=WEB_DISK
    )
    seed_instant(emulator, "other-group", labels=other_group)
    seed_instant(emulator, "copied-labels", source=DATA_DISK, labels=ours)  # labels of web-1, made from data
    seed_instant(emulator, "manual", labels={})
    records = capture(hook, WEB, run_key(context, run_id="scheduled__2026-11-24T03:00:00+00:00"))
    names = {item["name"] for item in emulator.instant_snapshots(PROJECT)}
    assert not names & {r["instant_snapshot"] for r in leftovers}
    assert names == {"other-group", "copied-labels", "manual"} | {r["instant_snapshot"] for r in records}


def test_a_leftover_whose_conversion_is_running_is_kept(emulator, hook, context):
    old = run_key(context, run_id="scheduled__2026-11-23T03:00:00+00:00")
    leftover = capture(hook, WEB, old)
    convert = operator(leftover, context)
    convert.poke(context.as_dict())  # conversion sent; the snapshots are CREATING
    emulator.clock.advance(5)
    prepare_instant(
        hook,
        WEB,
        run_key(context, run_id="scheduled__2026-11-24"),
        deadline=time.monotonic() + 30,
        deployment="test",
        group="web",
    )
    assert {r["instant_snapshot"] for r in leftover} <= {
        i["name"] for i in emulator.instant_snapshots(PROJECT)
    }


def test_a_disk_near_the_32_limit_is_refused_before_any_instant_snapshot_is_made(hook, context, monkeypatch):
    from gce_emulator import Emulator
    from gce_emulator.__main__ import DEMO_SEED

    with Emulator(DEMO_SEED, timings={"instant_snapshot_min_interval": 0}) as emulator:
        monkeypatch.setenv(
            "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT",
            f'{{"conn_type": "google_cloud_platform", "extra": {{"compute_endpoint": "{emulator.url}"}}}}',
        )
        for number in range(MAX_INSTANT_PER_DISK):
            seed_instant(emulator, f"someone-else-{number}")
        with pytest.raises(
            BackupError, match=r"already has 32 instant snapshots.*refuses before stopping the VM"
        ):
            capture(ComputeBackupHook(), WEB, run_key(context))
        assert not package_calls(emulator, "compute.instantSnapshots.insert")
        assert not package_calls(emulator, "compute.instantSnapshots.delete")
        assert len(emulator.instant_snapshots(PROJECT)) == MAX_INSTANT_PER_DISK


def test_disk_types_are_read_from_the_disks_zonal_and_regional(emulator, hook):
    assert disk_types(hook, DB) == {DB["disks"][0]["source"]: "pd-balanced", SHARED: "pd-balanced"}
    assert disk_types(hook, {**WEB, "disks": [{**WEB["disks"][0], "type": "hyperdisk-ml"}]}) == {
        WEB_DISK: "hyperdisk-ml"
    }
    assert emulator.calls_for("compute.disks.get")
    assert emulator.calls_for("compute.regionDisks.get")


def test_instant_capable_and_the_fallback_rule():
    assert instant_capable("pd-balanced")
    assert instant_capable(
        "https://compute.googleapis.com/compute/v1/projects/p/zones/z/diskTypes/hyperdisk-balanced"
    )
    assert not instant_capable("hyperdisk-ml")
    types = {WEB_DISK: "pd-ssd", DATA_DISK: "hyperdisk-throughput"}
    vm = "projects/p/zones/z/instances/web-1"
    with pytest.raises(
        VmStateError, match=r"cannot have instant snapshots: .*web-1-data \(hyperdisk-throughput\)"
    ):
        choose_mode(types, vm=vm, snapshot_mode="instant", instant_fallback="refuse")
    assert choose_mode(types, vm=vm, snapshot_mode="instant", instant_fallback="standard") == "standard"
    assert (
        choose_mode({WEB_DISK: "pd-ssd"}, vm=vm, snapshot_mode="instant", instant_fallback="refuse")
        == "instant"
    )
    assert choose_mode(types, vm=vm, snapshot_mode="standard", instant_fallback="refuse") == "standard"


# ---- conversion -------------------------------------------------------------------------------------
def operator(records, context, **kwargs):
    return ConvertInstantSnapshotsOperator(
        task_id="convert",
        instant_records=records,
        deployment="test",
        group="web",
        labels={"team": "shop"},
        **kwargs,
    )


def test_conversion_makes_this_runs_standard_snapshots_then_deletes_the_instant_ones(emulator, hook, context):
    run = run_key(context)
    records = capture(hook, DB, run)
    result = converge(
        operator(records, context, storage_locations=["us-central1"], snapshot_type="ARCHIVE"),
        context,
        emulator,
    )
    names = [
        standard_name(instance="db-1", disk=d, location=loc, run=run, deployment="test", group="web")
        for d, loc in (("db-1", ZONE_B), ("shared-data", REGION))
    ]
    assert [(r["snapshot"], r["status"]) for r in result] == [(names[0], "READY"), (names[1], "READY")]
    assert all(r["storage_bytes"] > 0 for r in result)
    snapshots = {s["name"]: s for s in emulator.snapshots(PROJECT)}
    shared = snapshots[names[1]]
    assert shared["labels"] == managed_snapshot_labels(
        deployment="test",
        group="web",
        instance="db-1",
        disk_source=SHARED,
        extra={"team": "shop"},
        run=run_label(run.dag_id, run.run_id),
    )
    assert shared["storageLocations"] == ["us-central1"]
    assert shared["snapshotType"] == "ARCHIVE"
    assert shared["sourceDisk"].endswith(SHARED)
    assert shared["sourceInstantSnapshot"].endswith(records[1]["instant_snapshot"])
    assert emulator.instant_snapshots(PROJECT) == []
    assert emulator.calls_for("compute.regionInstantSnapshots.delete")


def test_a_retried_conversion_adopts_its_snapshots_and_sends_no_second_insert(emulator, hook, context):
    records = capture(hook, WEB, run_key(context))
    first = converge(operator(records, context), context, emulator)
    inserts = len(emulator.calls_for("compute.snapshots.insert"))
    context.ti.try_number = 2
    assert converge(operator(records, context), context, emulator) == first
    assert len(emulator.calls_for("compute.snapshots.insert")) == inserts


def test_a_failed_conversion_keeps_the_instant_snapshot_and_fails_clearly(emulator, hook, context):
    records = capture(hook, WEB, run_key(context))
    emulator.faults.fail_operation("compute.snapshots.insert", "QUOTA_EXCEEDED", "Quota 'SNAPSHOTS' exceeded")
    with pytest.raises(OperationFailedError, match="QUOTA_EXCEEDED: Quota 'SNAPSHOTS' exceeded"):
        converge(operator(records, context), context, emulator, step=5)
    assert {r["instant_snapshot"] for r in records} == {
        i["name"] for i in emulator.instant_snapshots(PROJECT)
    }
    context.ti.try_number = 2  # the retry converts what was kept
    assert [r["status"] for r in converge(operator(records, context), context, emulator)] == [
        "READY",
        "READY",
    ]


def test_a_disk_deleted_before_its_conversion_fails_clearly_and_nothing_is_deleted(emulator, hook, context):
    records = capture(hook, WEB, run_key(context))
    emulator.seed_snapshot(PROJECT, {"name": "older-backup", "sourceDisk": DATA_DISK})
    emulator.delete_disk(DATA_DISK)
    with pytest.raises(
        ResourceNotFoundError, match=r"no longer exists .*deleted with its disk.*Nothing was deleted"
    ):
        converge(operator(records, context), context, emulator)
    assert not emulator.calls_for("compute.snapshots.delete")
    assert not emulator.calls_for("compute.instantSnapshots.delete")
    assert "older-backup" in {s["name"] for s in emulator.snapshots(PROJECT)}


def test_a_snapshot_of_this_runs_name_not_made_from_the_instant_snapshot_is_refused(emulator, hook, context):
    run = run_key(context)
    records = capture(hook, WEB, run)
    name = standard_name(
        instance="web-1", disk="web-1", location=ZONE_A, run=run, deployment="test", group="web"
    )
    labels = managed_snapshot_labels(deployment="test", group="web", instance="web-1", disk_source=WEB_DISK)
    emulator.seed_snapshot(PROJECT, {"name": name, "sourceDisk": WEB_DISK, "labels": labels})
    with pytest.raises(
        BackupError, match=r"not made from instant snapshot .* refusing to adopt or replace it"
    ):
        converge(operator(records, context), context, emulator)
    assert len(emulator.instant_snapshots(PROJECT)) == 2


def test_a_record_backed_up_the_standard_way_is_waited_for_until_ready(emulator, hook, context):
    labels = managed_snapshot_labels(deployment="test", group="web", instance="web-1", disk_source=WEB_DISK)
    emulator.seed_snapshot(
        PROJECT, {"name": "std-1", "sourceDisk": WEB_DISK, "status": "UPLOADING", "labels": labels}
    )
    record = {
        "vm": f"projects/{PROJECT}/zones/{ZONE_A}/instances/web-1",
        "disk": "web-1",
        "disk_source": WEB_DISK,
        "snapshot": "std-1",
        "status": "UPLOADING",
        "storage_bytes": 0,
    }
    convert = operator([record], context)
    assert convert.poke(context.as_dict()) is False
    assert "std-1 of disk" in convert.pending()
    with emulator.world.lock:
        emulator.world.snapshots[f"projects/{PROJECT}/global/snapshots/std-1"]["status"] = "READY"
    assert [r["status"] for r in convert.poke(context.as_dict()).xcom_value] == ["READY"]


def test_records_that_are_not_the_downtime_tasks_are_refused_with_the_parameter_name(context):
    from gce_vm_backup.errors import ConfigError

    with pytest.raises(ConfigError, match="'instant_records' must be the downtime task's list"):
        operator([{"disk": "x"}], context).poke(context.as_dict())


def test_the_hook_refuses_two_sources_and_an_ambiguous_location():
    hook = ComputeBackupHook.__new__(ComputeBackupHook)
    hook.__dict__["snapshots"] = create_autospec(compute_v1.SnapshotsClient, instance=True)
    snapshot = compute_v1.Snapshot(name="s", source_disk=WEB_DISK)
    with pytest.raises(ValueError, match="exclude each other"):
        hook.insert_snapshot(
            project_id=PROJECT, snapshot=snapshot, request_id="r", source_instant_snapshot="x"
        )
    hook.snapshots.insert_unary.assert_not_called()
    with pytest.raises(ValueError, match="exactly one of zone"):
        hook.get_instant_snapshot(project_id=PROJECT, zone=ZONE_A, region=REGION, name="x")
    with pytest.raises(ValueError, match="exactly one of zone"):
        hook.get_disk(project_id=PROJECT, name="x")


def test_precheck_instant_chooses_the_mode_and_cleans_up_only_in_instant_mode(emulator, hook, context):
    old = run_key(context, run_id="scheduled__2026-11-23T03:00:00+00:00")
    leftovers = {r["instant_snapshot"] for r in capture(hook, WEB, old)}
    emulator.clock.advance(31)
    emulator.clear_calls()
    now = run_key(context, run_id="scheduled__2026-11-24T03:00:00+00:00")
    kwargs = dict(deployment="test", group="web", deadline=time.monotonic() + 30)
    assert (
        precheck_instant(hook, WEB, now, snapshot_mode="standard", instant_fallback="refuse", **kwargs)
        == "standard"
    )
    assert emulator.calls == []  # standard mode: no call at all
    assert (
        precheck_instant(hook, WEB, now, snapshot_mode="instant", instant_fallback="refuse", **kwargs)
        == "instant"
    )
    assert not leftovers & {i["name"] for i in emulator.instant_snapshots(PROJECT)}
    with emulator.world.lock:
        emulator.world.disks[DATA_DISK]["type"] = (
            "https://x/compute/v1/projects/p/zones/z/diskTypes/hyperdisk-ml"
        )
    with pytest.raises(VmStateError, match="hyperdisk-ml"):
        precheck_instant(hook, WEB, now, snapshot_mode="instant", instant_fallback="refuse", **kwargs)
    assert (
        precheck_instant(hook, WEB, now, snapshot_mode="instant", instant_fallback="standard", **kwargs)
        == "standard"
    )


# ---- the hook's instant snapshot requests (create_autospec of the real clients) ----------------------
@pytest.fixture
def unit_hook(monkeypatch):
    connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": "http://127.0.0.1:1"}}
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
    hook = ComputeBackupHook(retry_initial=0.001, retry_max=0.002)
    hook.__dict__["instant_snapshots"] = create_autospec(compute_v1.InstantSnapshotsClient, instance=True)
    hook.__dict__["region_instant_snapshots"] = create_autospec(
        compute_v1.RegionInstantSnapshotsClient, instance=True
    )
    return hook


def test_zonal_and_regional_inserts_send_the_resource_and_request_id_to_their_own_client(unit_hook):
    unit_hook.insert_instant_snapshot(
        project_id=PROJECT, zone=ZONE_A, name="i", source_disk=WEB_DISK, labels={"a": "b"}, request_id="r1"
    )
    unit_hook.insert_instant_snapshot(
        project_id=PROJECT, region=REGION, name="j", source_disk=SHARED, labels={}, request_id="r2"
    )
    zonal = unit_hook.instant_snapshots.insert_unary.call_args.kwargs
    assert zonal["retry"] is None
    assert zonal["request"] == {
        "project": PROJECT,
        "zone": ZONE_A,
        "instant_snapshot_resource": compute_v1.InstantSnapshot(
            name="i", source_disk=WEB_DISK, labels={"a": "b"}
        ),
        "request_id": "r1",
    }
    regional = unit_hook.region_instant_snapshots.insert_unary.call_args.kwargs["request"]
    assert regional["region"] == REGION
    assert regional["request_id"] == "r2"
    assert "zone" not in regional


def test_a_transient_error_on_insert_is_retried_with_the_same_request_id(unit_hook):
    from google.api_core import exceptions as api_exceptions

    unit_hook.instant_snapshots.insert_unary.side_effect = [
        api_exceptions.ServiceUnavailable("busy"),
        compute_v1.Operation(name="op"),
    ]
    op = unit_hook.insert_instant_snapshot(
        project_id=PROJECT, zone=ZONE_A, name="i", source_disk=WEB_DISK, labels={}, request_id="r1"
    )
    assert op.name == "op"
    ids = [
        call.kwargs["request"]["request_id"]
        for call in unit_hook.instant_snapshots.insert_unary.call_args_list
    ]
    assert ids == ["r1", "r1"]


def test_get_of_a_missing_instant_snapshot_is_none_and_list_sends_no_empty_filter(unit_hook):
    from google.api_core import exceptions as api_exceptions

    unit_hook.region_instant_snapshots.get.side_effect = api_exceptions.NotFound("gone")
    assert unit_hook.get_instant_snapshot(project_id=PROJECT, region=REGION, name="x") is None
    unit_hook.instant_snapshots.list.return_value = iter([])
    assert list(unit_hook.list_instant_snapshots(project_id=PROJECT, zone=ZONE_A, filter="")) == []
    assert unit_hook.instant_snapshots.list.call_args.kwargs["request"] == {
        "project": PROJECT,
        "zone": ZONE_A,
    }
    unit_hook.instant_snapshots.delete_unary.return_value = compute_v1.Operation(name="d")
    unit_hook.delete_instant_snapshot(project_id=PROJECT, zone=ZONE_A, name="x", request_id="r9")
    assert unit_hook.instant_snapshots.delete_unary.call_args.kwargs["request"] == {
        "project": PROJECT,
        "zone": ZONE_A,
        "instant_snapshot": "x",
        "request_id": "r9",
    }


def test_settle_deletes_this_runs_instant_snapshot_still_creating_and_keeps_ready_and_strangers(
    emulator, hook, context
):
    run = run_key(context)
    emulator.faults.hang_operation("compute.instantSnapshots.insert")  # web-1's stays CREATING
    with pytest.raises(OperationTimeoutError):
        capture_instant(hook, WEB, run, deadline=time.monotonic() + 3, settings=group_settings())
    ready = instant_name(
        instance="web-1", disk="web-1-data", location=ZONE_A, run=run, deployment="test", group="web"
    )
    problems = settle_instant(hook, WEB, run, deadline=time.monotonic() + 1, settings=group_settings())
    assert problems == []
    emulator.clock.advance(31)  # the deletion done, and past the 30 s rule for the next one of web-1
    assert [i["name"] for i in emulator.instant_snapshots(PROJECT)] == [ready]
    stranger = instant_name(
        instance="web-1", disk="web-1", location=ZONE_A, run=run, deployment="test", group="web"
    )
    seed_instant(emulator, stranger, labels={})
    with emulator.world.lock:
        emulator.world.instant_snapshots[f"projects/{PROJECT}/zones/{ZONE_A}/instantSnapshots/{stranger}"][
            "status"
        ] = "FAILED"
    problems = settle_instant(hook, WEB, run, deadline=time.monotonic() + 1, settings=group_settings())
    assert len(problems) == 1
    assert "is not ours" in problems[0]
    assert stranger in {i["name"] for i in emulator.instant_snapshots(PROJECT)}


def test_capture_refuses_a_disk_type_without_instant_snapshots_before_any_insert(emulator, hook, context):
    with emulator.world.lock:
        emulator.world.disks[DATA_DISK]["type"] = (
            "https://x/compute/v1/projects/p/zones/z/diskTypes/hyperdisk-ml"
        )
    with pytest.raises(VmStateError, match=r"web-1-data \(hyperdisk-ml\)"):
        capture(hook, WEB, run_key(context))
    assert not package_calls(emulator, "compute.instantSnapshots.insert")


def test_capture_trusts_the_mode_the_precheck_chose_and_reads_no_disk(emulator, hook, context):
    capture(hook, {**WEB, "snapshot_mode": "instant"}, run_key(context))
    assert not emulator.calls_for("compute.disks.get")
    assert len(package_calls(emulator, "compute.instantSnapshots.insert")) == 2


def test_a_failed_instant_snapshot_fails_the_capture_and_the_retry_remakes_it(emulator, hook, context):
    emulator.faults.fail_instant_snapshot(PROJECT, name_prefix="web-1-data-ips")
    with pytest.raises(OperationFailedError, match="INSTANT_SNAPSHOT_FAILED"):
        capture(hook, WEB, run_key(context))
    with pytest.raises(OperationFailedError, match="was FAILED; it was deleted so that the task's retry"):
        capture(hook, WEB, run_key(context, try_number=2))
    emulator.clock.advance(31)
    records = capture(hook, WEB, run_key(context, try_number=3))
    assert [r["status"] for r in records] == ["READY", "READY"]
    assert len(emulator.instant_snapshots(PROJECT)) == 2
