"""The operators through the real client against the emulator: the whole stop -> snapshot -> start path."""

from __future__ import annotations

import pytest

from gce_vm_backup.errors import (
    BackupError,
    ConfigError,
    OperationFailedError,
    OperationTimeoutError,
    RateLimitedError,
    ResourceNotFoundError,
    VmStateError,
)
from gce_vm_backup.instance_ops import NO_VM
from gce_vm_backup.labels import (
    DEPLOYMENT_KEY,
    MANAGED_BY_KEY,
    is_managed_snapshot_of,
    managed_snapshot_labels,
)
from gce_vm_backup.naming import snapshot_name
from gce_vm_backup.operators import (
    PrecheckInstanceOperator,
    ResolveTargetsOperator,
    SnapshotDisksOperator,
    StartInstanceOperator,
    StopInstanceOperator,
)
from gce_vm_backup.permissions import API_METHOD_PERMISSIONS, CLIENT_PRODUCT

from .conftest import PROJECT, RUN_TIME, ZONE_A, ZONE_B, converge

pytestmark = pytest.mark.emulator
SCOPE = {"deployment": "test", "group": "web"}
WEB_DISK = f"projects/{PROJECT}/zones/{ZONE_A}/disks/web-1"
DATA_DISK = f"projects/{PROJECT}/zones/{ZONE_A}/disks/web-1-data"


def precheck(context, instance="web-1", zone=ZONE_A, **kwargs):
    operator = PrecheckInstanceOperator(
        task_id="precheck", project_id=PROJECT, zone=zone, instance=instance, **kwargs
    )
    return operator.execute(context.as_dict())


def sensors(record, **kwargs):
    common = {"instance_record": record, "poke_interval": 1, "timeout": 600, **kwargs}
    return (
        StopInstanceOperator(task_id="stop", **common),
        SnapshotDisksOperator(task_id="snapshot", **SCOPE, labels={"team": "shop"}, **common),
        StartInstanceOperator(task_id="start", **common),
    )


def backup(emulator, context, instance="web-1", zone=ZONE_A, **kwargs):
    record = precheck(context, instance, zone)
    stop, snapshot, start = sensors(record, **kwargs)
    stopped = converge(stop, context, emulator)
    snapshots = converge(snapshot, context, emulator)
    started = converge(start, context, emulator)
    return record, stopped, snapshots, started


def test_happy_path_stops_snapshots_every_disk_and_starts_again(emulator, context):
    record, stopped, snapshots, started = backup(emulator, context)

    assert record["prior_status"] == "RUNNING"
    assert [d["name"] for d in record["disks"]] == ["web-1", "web-1-data"]
    assert stopped["stopped"] is True
    assert started["started"] is True
    assert emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"
    made = emulator.snapshots(PROJECT)
    assert sorted(s["name"] for s in made) == sorted(s["snapshot"] for s in snapshots)
    assert all(s["status"] == "READY" for s in made)
    for item in snapshots:
        snap = next(s for s in made if s["name"] == item["snapshot"])
        assert is_managed_snapshot_of(snap["labels"], snap["sourceDisk"], item["disk_source"], **SCOPE)
        assert snap["labels"][DEPLOYMENT_KEY] == "test"
        assert snap["labels"]["team"] == "shop"
    assert len(emulator.calls_for("compute.instances.stop")) >= 1
    assert {c.request_id for c in emulator.calls_for("compute.instances.stop")} != {None}


def test_every_call_of_the_path_names_the_package_and_has_its_iam_permissions_listed(emulator, context):
    """The whole-suite equality (called == listed) is checked at session end by gce_emulator.pytest_plugin,
    from the calls that name the package, as every call of the backup path does."""
    backup(emulator, context)
    assert emulator.calls
    assert [call for call in emulator.calls if CLIENT_PRODUCT not in call.client] == []
    called = {call.method for call in emulator.calls}
    assert called <= set(API_METHOD_PERMISSIONS), called - set(API_METHOD_PERMISSIONS)


def test_vm_already_stopped_is_snapshotted_but_neither_stopped_nor_started(emulator, context):
    record, stopped, snapshots, started = backup(emulator, context, instance="batch-1")
    assert record["prior_status"] == "TERMINATED"
    assert stopped == {"stopped": False, "at": None}
    assert started == {"started": False, "at": None}
    assert emulator.calls_for("compute.instances.stop") == []
    assert emulator.calls_for("compute.instances.start") == []
    assert emulator.instance(PROJECT, ZONE_A, "batch-1")["status"] == "TERMINATED"
    assert [s["status"] for s in snapshots] == ["READY"]


def test_zonal_and_regional_disks_are_both_snapshotted(emulator, context):
    record, _, snapshots, _ = backup(emulator, context, instance="db-1", zone=ZONE_B)
    assert [(d["name"], d["regional"]) for d in record["disks"]] == [("db-1", False), ("shared-data", True)]
    assert {s["disk_source"] for s in snapshots} == {
        f"projects/{PROJECT}/zones/{ZONE_B}/disks/db-1",
        f"projects/{PROJECT}/regions/us-central1/disks/shared-data",
    }


def test_a_503_on_stop_is_retried_with_the_same_request_id(emulator, context):
    emulator.faults.http_error("compute.instances.stop", 503, times=1)
    backup(emulator, context)
    stops = emulator.calls_for("compute.instances.stop")
    assert stops[0].status == 503
    assert stops[1].status == 200
    assert len({c.request_id for c in stops}) == 1


def test_snapshot_operation_done_with_quota_exceeded_fails_and_the_vm_is_still_restarted(emulator, context):
    record = precheck(context)
    stop, snapshot, start = sensors(record)
    converge(stop, context, emulator)
    emulator.faults.fail_operation("compute.snapshots.insert", "QUOTA_EXCEEDED", "Quota 'SNAPSHOTS' exceeded")
    with pytest.raises(OperationFailedError, match="QUOTA_EXCEEDED: Quota 'SNAPSHOTS' exceeded"):
        converge(snapshot, context, emulator, step=5)
    converge(start, context, emulator)
    assert emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"


def test_operation_that_never_finishes_hits_the_deadline_in_worker_mode(emulator, context):
    from gce_vm_backup.hook import ComputeBackupHook

    emulator.faults.hang_operation("compute.instances.stop")
    hook = ComputeBackupHook()
    operation = hook.stop_instance(
        project_id=PROJECT, zone=ZONE_A, name="web-1", request_id=context.run_id[:8]
    )
    with pytest.raises(
        OperationTimeoutError, match=r"stop operation .* on projects/demo-project/zones/.*/web-1"
    ):
        hook.wait_operation(operation, timeout=0.5)


def test_retry_after_a_crash_between_request_and_ready_adopts_the_snapshot(emulator, context):
    record = precheck(context)
    stop, snapshot, start = sensors(record)
    converge(stop, context, emulator)
    assert not snapshot.poke(context.as_dict())  # snapshot requested, then the worker "dies"
    context.ti.try_number = 2  # Airflow retries the task
    _, retried, _ = sensors(record)
    records = converge(retried, context, emulator)
    converge(start, context, emulator)

    inserts = [c for c in emulator.calls_for("compute.snapshots.insert") if c.status == 200]
    assert len(inserts) == 2  # one per disk, none from the retry
    assert len(emulator.snapshots(PROJECT)) == 2
    assert {r["snapshot"] for r in records} == {s["name"] for s in emulator.snapshots(PROJECT)}


def test_second_run_within_ten_minutes_is_rate_limited_with_a_plain_message(emulator, context):
    backup(emulator, context)
    context.run_id = "manual__second"
    record = precheck(context)
    _, snapshot, _ = sensors(record)
    with pytest.raises(RateLimitedError, match="one snapshot per disk every 10 minutes"):
        snapshot.poke(context.as_dict())


def test_failed_snapshot_is_deleted_and_reported_then_the_retry_makes_a_good_one(emulator, context):
    emulator.faults.fail_snapshot(PROJECT, name_prefix="web-1-us-central1-a")
    record = precheck(context, disks=["web-1"])
    stop, snapshot, start = sensors(record)
    converge(stop, context, emulator)
    with pytest.raises(OperationFailedError, match="FAILED; it was deleted"):
        converge(snapshot, context, emulator, step=30)
    assert emulator.snapshots(PROJECT) == []
    emulator.clock.advance(601)  # the rate limit
    context.ti.try_number = 2
    _, retried, _ = sensors(record)
    assert [r["status"] for r in converge(retried, context, emulator)] == ["READY"]
    converge(start, context, emulator)
    assert emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"


def test_snapshot_name_taken_by_a_foreign_snapshot_is_refused(emulator, context):
    record = precheck(context, disks=["web-1"])
    _, snapshot, _ = sensors(record)
    assert not snapshot.poke(context.as_dict())
    name = emulator.snapshots(PROJECT)[0]["name"]
    emulator.world.snapshots[f"projects/{PROJECT}/global/snapshots/{name}"]["labels"].pop(MANAGED_BY_KEY)
    with pytest.raises(BackupError, match=r"exists with this run's name but is not gce-vm-backup's snapshot"):
        snapshot.poke(context.as_dict())


def test_early_restart_is_done_when_snapshots_leave_creating(emulator, context):
    record = precheck(context, disks=["web-1"])
    snapshot = SnapshotDisksOperator(task_id="s", **SCOPE, instance_record=record, ready_when="UPLOADING")
    records = converge(snapshot, context, emulator, step=16)
    assert [r["status"] for r in records] == ["UPLOADING"]


def test_vm_suspended_before_the_backup_is_refused(emulator, context):
    emulator.set_instance_status(PROJECT, ZONE_A, "web-1", "SUSPENDED")
    with pytest.raises(VmStateError, match="SUSPENDED\\. Backups refuse suspended VMs"):
        precheck(context)


def test_vm_suspended_mid_run_is_resumed_by_start(emulator, context):
    record = precheck(context)
    stop, _, start = sensors(record)
    converge(stop, context, emulator)
    emulator.set_instance_status(PROJECT, ZONE_A, "web-1", "SUSPENDED")
    converge(start, context, emulator)
    assert emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"
    assert len(emulator.calls_for("compute.instances.resume")) == 1


def test_vm_deleted_mid_run_fails_stop_with_its_name(emulator, context):
    record = precheck(context)
    stop, _, _ = sensors(record)
    emulator.delete_instance(PROJECT, ZONE_A, "web-1")
    with pytest.raises(ResourceNotFoundError, match="web-1"):
        stop.poke(context.as_dict())


def test_unknown_disk_in_subset_is_a_clear_error(emulator, context):
    with pytest.raises(ConfigError, match="names disk\\(s\\) not attached to it: nope"):
        precheck(context, disks=["nope"])


def test_resolve_expands_label_selectors_in_all_zones_and_filters_by_only(emulator, context):
    operator = ResolveTargetsOperator(
        task_id="resolve",
        **SCOPE,
        targets=[
            {"project_id": PROJECT, "zones": None, "labels": {"app": "shop"}},
            {"project_id": PROJECT, "zone": ZONE_A, "instance": "web-1", "disks": ["web-1"]},
        ],
    )
    vms = operator.execute(context.as_dict())
    assert [(v["zone"], v["instance"]) for v in vms] == [
        (ZONE_A, "batch-1"),
        (ZONE_A, "web-1"),
        (ZONE_B, "db-1"),
    ]
    operator.only = ["db-1", f"{ZONE_A}/web-1"]
    assert [v["instance"] for v in operator.execute(context.as_dict())] == ["web-1", "db-1"]
    operator.only = ["ghost"]
    with pytest.raises(ConfigError, match="not targets of this group: ghost"):
        operator.execute(context.as_dict())


def test_tiers_are_resolved_separately_and_a_vm_belongs_to_its_first_tier(emulator, context):
    operator = ResolveTargetsOperator(
        task_id="resolve",
        **SCOPE,
        tiers=[
            [{"project_id": PROJECT, "zones": None, "labels": {"tier": "web"}}],
            [{"project_id": PROJECT, "zones": None, "labels": {"app": "shop"}}],
        ],
    )
    assert [v["instance"] for v in operator.execute(context.as_dict())] == ["web-1"]
    operator.tier = 2
    assert [v["instance"] for v in operator.execute(context.as_dict())] == ["batch-1", "db-1"]


def test_selector_matching_nothing_resolves_to_an_empty_list(emulator, context):
    operator = ResolveTargetsOperator(
        task_id="resolve",
        **SCOPE,
        targets=[{"project_id": PROJECT, "zones": [ZONE_B], "labels": {"tier": "web"}}],
    )
    assert operator.execute(context.as_dict()) == [NO_VM]
    record = PrecheckInstanceOperator(task_id="p", **NO_VM).execute(context.as_dict())
    stop, snapshot, start = sensors(record)
    assert stop.poke(context.as_dict()).xcom_value == {"stopped": False, "at": None}
    assert snapshot.poke(context.as_dict()).xcom_value == []
    assert start.poke(context.as_dict()).xcom_value == {"started": False, "at": None}
    assert emulator.calls == [c for c in emulator.calls if c.method == "compute.instances.list"]


def test_dry_run_plans_and_mutates_nothing(emulator, context, caplog):
    operator = ResolveTargetsOperator(
        task_id="resolve",
        **SCOPE,
        targets=[{"project_id": PROJECT, "zones": None, "labels": {"app": "shop"}}],
        plan_only="True",
    )
    assert operator.execute(context.as_dict()) == [NO_VM]
    mutating = {"stop", "start", "resume", "insert", "delete", "createSnapshot"}
    assert not [c for c in emulator.calls if c.method.rsplit(".", 1)[-1] in mutating]
    plan = context.ti.pushed["dry_run_plan"]
    assert sorted(p["vm"].rsplit("/", 1)[-1] for p in plan) == ["batch-1", "db-1", "web-1"]
    assert all(p["would_delete"] is None for p in plan)  # no retention policy given


def test_stop_is_sent_once_and_not_again_while_the_vm_is_stopping(emulator, context):
    record = precheck(context)
    stop, _, _ = sensors(record)

    assert stop.poke(context.as_dict()) is False  # sent; the VM is STOPPING now
    for _ in range(3):
        assert stop.poke(context.as_dict()) is False
    emulator.clock.advance(600)
    assert stop.poke(context.as_dict()).xcom_value["stopped"] is True

    assert len(emulator.calls_for("compute.instances.stop")) == 1


# ---- adoption: a snapshot with this run's name is this run's only if it is ours, of this disk -----------
def this_runs_name(context, disk="web-1"):
    return snapshot_name(
        instance="web-1",
        disk=disk,
        zone_or_region=ZONE_A,
        run_time=RUN_TIME,
        run_id=context.run_id,
        scope="{deployment}/{group}".format(**SCOPE),
    )


def seed_named(emulator, context, *, source_disk, labels_for=WEB_DISK, **scope):
    labels = managed_snapshot_labels(instance="web-1", disk_source=labels_for, **{**SCOPE, **scope})
    emulator.seed_snapshot(
        PROJECT, {"name": this_runs_name(context), "sourceDisk": source_disk, "labels": labels}
    )


def test_a_snapshot_with_this_runs_name_and_our_labels_but_of_another_disk_is_not_adopted(emulator, context):
    record = precheck(context, disks=["web-1"])
    seed_named(emulator, context, source_disk=DATA_DISK)  # our exact labels for web-1, made from web-1-data
    _, snapshot, _ = sensors(record)
    with pytest.raises(BackupError) as raised:
        snapshot.poke(context.as_dict())
    message = str(raised.value)
    assert f"of disk {WEB_DISK}" in message
    assert f"made from disk {DATA_DISK}" in message
    assert "refusing to adopt or replace it" in message
    assert emulator.calls_for("compute.snapshots.insert") == []


@pytest.mark.parametrize(
    ("scope", "why"),
    [({"group": "monthly"}, "gce-vm-backup-group='monthly'"), ({"deployment": "prod"}, "deployment='prod'")],
    ids=["another-group", "another-deployment"],
)
def test_a_snapshot_with_this_runs_name_from_another_group_or_deployment_is_not_adopted(
    emulator, context, scope, why
):
    record = precheck(context, disks=["web-1"])
    seed_named(emulator, context, source_disk=WEB_DISK, **scope)
    _, snapshot, _ = sensors(record)
    with pytest.raises(BackupError, match=rf"its labels are not ours \(.*{why}"):
        snapshot.poke(context.as_dict())


def test_our_snapshot_of_this_disk_is_adopted_and_its_disk_id_is_checked_when_the_record_has_one(
    emulator, context
):
    seed_named(emulator, context, source_disk=WEB_DISK)
    record = precheck(context, disks=["web-1"])
    _, snapshot, _ = sensors(record)
    assert [r["status"] for r in snapshot.poke(context.as_dict()).xcom_value] == ["READY"]
    assert emulator.calls_for("compute.snapshots.insert") == []

    disk_id = emulator.world.disks[WEB_DISK]["id"]
    with_id = {**record, "disks": [{**record["disks"][0], "id": disk_id}]}
    _, adopting, _ = sensors(with_id)
    assert adopting.poke(context.as_dict())
    recreated = {**record, "disks": [{**record["disks"][0], "id": "123"}]}  # same name, another disk
    _, refusing, _ = sensors(recreated)
    with pytest.raises(BackupError, match=rf"made from disk id {disk_id}, not from id 123"):
        refusing.poke(context.as_dict())


def test_the_snapshot_operator_requires_a_valid_deployment_naming_the_parameter(emulator, context):
    record = precheck(context, disks=["web-1"])
    with pytest.raises(TypeError, match="deployment"):
        SnapshotDisksOperator(task_id="s", group="web", instance_record=record)
    with pytest.raises(ConfigError, match=r"parameter 'deployment'.*'Prod'"):
        SnapshotDisksOperator(task_id="s", group="web", deployment="Prod", instance_record=record)
    with pytest.raises(ConfigError, match="parameter 'group'"):
        SnapshotDisksOperator(task_id="s", group="", deployment="test", instance_record=record)


# ---- selectors and the dry run's retention preview ------------------------------------------------------
def test_a_multi_label_selector_is_sent_in_the_documented_form_and_matches(emulator, context):
    # The strict emulator answers 400 to the unparenthesized form the package used to send.
    operator = ResolveTargetsOperator(
        task_id="resolve",
        **SCOPE,
        targets=[{"project_id": PROJECT, "zones": None, "labels": {"app": "shop", "tier": "db"}}],
    )
    assert [v["instance"] for v in operator.execute(context.as_dict())] == ["db-1"]


def test_a_selector_value_that_would_rewrite_the_filter_is_refused_before_any_call(emulator, context):
    operator = ResolveTargetsOperator(
        task_id="resolve",
        **SCOPE,
        targets=[{"project_id": PROJECT, "zones": None, "labels": {"env": 'x" OR labels.env != "x'}}],
    )
    with pytest.raises(ConfigError, match="not a Compute Engine label value"):
        operator.execute(context.as_dict())
    assert emulator.calls == []


def test_the_resolve_task_requires_a_valid_deployment(emulator):
    targets = [{"project_id": PROJECT, "zones": None, "labels": {"app": "shop"}}]
    with pytest.raises(TypeError, match="deployment"):
        ResolveTargetsOperator(task_id="r", group="web", targets=targets)
    with pytest.raises(ConfigError, match="parameter 'deployment'"):
        ResolveTargetsOperator(task_id="r", group="web", deployment="a_b", targets=targets)


def test_dry_run_preview_counts_only_this_deployments_and_groups_snapshots(emulator, context):
    from datetime import datetime, timedelta

    now = datetime.fromisoformat(emulator.clock.timestamp())
    for day, scope in enumerate(
        [SCOPE, SCOPE, {"deployment": "test", "group": "monthly"}, {"deployment": "prod", "group": "web"}], 1
    ):
        labels = managed_snapshot_labels(instance="web-1", disk_source=WEB_DISK, **scope)
        created = (now - timedelta(days=day)).isoformat().replace("+00:00", "Z")
        emulator.seed_snapshot(
            PROJECT,
            {"name": f"old-{day}", "sourceDisk": WEB_DISK, "labels": labels, "creationTimestamp": created},
        )
    operator = ResolveTargetsOperator(
        task_id="resolve",
        **SCOPE,
        targets=[{"project_id": PROJECT, "zone": ZONE_A, "instance": "web-1", "disks": ["web-1"]}],
        plan_only="True",
        retention={"keep_last": 1},
    )
    assert operator.execute(context.as_dict()) == [NO_VM]
    [plan] = context.ti.pushed["dry_run_plan"]
    assert sorted(plan["would_delete"]) == ["old-1", "old-2"]  # not monthly's old-3, not prod's old-4
