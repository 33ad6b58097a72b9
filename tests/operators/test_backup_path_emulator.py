"""The operators through the real client against the emulator (600x): the whole stop -> capture -> start path."""

from __future__ import annotations

import contextlib

import pytest

from gce_vm_backup.backup.capture import CaptureSettings, capture_standard
from gce_vm_backup.backup.plan import NO_VM
from gce_vm_backup.compute.naming import snapshot_name
from gce_vm_backup.compute.permissions import API_METHOD_PERMISSIONS, CLIENT_PRODUCT
from gce_vm_backup.config.labels import (
    DEPLOYMENT_KEY,
    MANAGED_BY_KEY,
    is_managed_snapshot_of,
    managed_snapshot_labels,
)
from gce_vm_backup.errors import (
    BackupError,
    ConfigError,
    OperationFailedError,
    OperationTimeoutError,
    RateLimitedError,
    ResourceNotFoundError,
    VmStateError,
)
from gce_vm_backup.operators import (
    PrecheckInstanceOperator,
    ResolveTargetsOperator,
    StopSnapshotStartOperator,
)

from .conftest import FAST, PROJECT, RUN_TIME, ZONE_A, ZONE_B

pytestmark = pytest.mark.emulator
SCOPE = {"deployment": "test", "group": "web"}
WEB_DISK = f"projects/{PROJECT}/zones/{ZONE_A}/disks/web-1"
DATA_DISK = f"projects/{PROJECT}/zones/{ZONE_A}/disks/web-1-data"


def precheck(context, instance="web-1", zone=ZONE_A, **kwargs):
    operator = PrecheckInstanceOperator(
        task_id="precheck", project_id=PROJECT, zone=zone, instance=instance, **kwargs
    )
    return operator.execute(context.as_dict())


@pytest.fixture
def emulator(monkeypatch):
    """The demo emulator at 600x with its per-disk snapshot rate limit (10 simulated minutes = 1 s)."""
    import json

    from gce_emulator import Emulator
    from gce_emulator.__main__ import DEMO_SEED
    from gce_vm_backup.backup import capture as snapshot_ops
    from gce_vm_backup.backup import instance as instance_ops

    monkeypatch.setattr(instance_ops, "POLL", 0.02)
    monkeypatch.setattr(snapshot_ops, "POLL", 0.02)
    with Emulator(DEMO_SEED, time_scale=FAST) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
        yield emulator


def downtime(record, **kwargs):
    args = {
        "stop_timeout": 60,
        "snapshot_timeout": 60,
        "start_timeout": 60,
        "labels": {"team": "shop"},
        **kwargs,
    }
    return StopSnapshotStartOperator(
        task_id="tier_1.stop_snapshot_start", instance_record=record, **SCOPE, **args
    )


def capture(record, context, *, timeout=60.0, **settings):
    """The capture step alone (what the downtime task does between stop and start)."""
    import time

    from gce_vm_backup.runtime.base import RunKey

    hook = PrecheckInstanceOperator(task_id="p", project_id=PROJECT, zone=ZONE_A, instance="x").hook
    run = RunKey.from_context(context.as_dict())
    return capture_standard(
        hook, record, run, deadline=time.monotonic() + timeout, settings=CaptureSettings(**SCOPE, **settings)
    )


def backup(emulator, context, instance="web-1", zone=ZONE_A, **kwargs):
    record = precheck(context, instance, zone)
    return record, downtime(record, **kwargs).execute(context.as_dict())


def test_happy_path_stops_snapshots_every_disk_and_starts_again(emulator, context):
    record, result = backup(emulator, context)
    snapshots = result["snapshots"]

    assert record["prior_status"] == "RUNNING"
    assert [d["name"] for d in record["disks"]] == ["web-1", "web-1-data"]
    assert result["stopped"] is True
    assert result["started"] is True
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
    record, result = backup(emulator, context, instance="batch-1")
    snapshots = result["snapshots"]
    assert record["prior_status"] == "TERMINATED"
    assert (result["stopped"], result["stop_requested_at"]) == (False, None)
    assert (result["started"], result["running_at"]) == (False, None)
    assert emulator.calls_for("compute.instances.stop") == []
    assert emulator.calls_for("compute.instances.start") == []
    assert emulator.instance(PROJECT, ZONE_A, "batch-1")["status"] == "TERMINATED"
    assert [s["status"] for s in snapshots] == ["READY"]


def test_zonal_and_regional_disks_are_both_snapshotted(emulator, context):
    record, result = backup(emulator, context, instance="db-1", zone=ZONE_B)
    snapshots = result["snapshots"]
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
    emulator.faults.fail_operation("compute.snapshots.insert", "QUOTA_EXCEEDED", "Quota 'SNAPSHOTS' exceeded")
    with pytest.raises(OperationFailedError, match="QUOTA_EXCEEDED: Quota 'SNAPSHOTS' exceeded"):
        downtime(record).execute(context.as_dict())
    assert emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"
    assert len(emulator.calls_for("compute.instances.start")) == 1


def test_operation_that_never_finishes_hits_the_deadline_in_worker_mode(emulator, context):
    from gce_vm_backup.compute.hook import ComputeBackupHook

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
    from gce_vm_backup.compute.hook import ComputeBackupHook
    from gce_vm_backup.runtime.lease import Holder, acquire

    record = precheck(context)
    holder = Holder.of_run("backup", deployment="test", dag_id=context.ti.dag_id, run_id=context.run_id)
    vm = {"project_id": PROJECT, "zone": ZONE_A, "name": "web-1"}
    acquire(ComputeBackupHook(), vm, holder, duration=600, wait=0)  # the killed try took the VM's lease,
    emulator.set_instance_status(PROJECT, ZONE_A, "web-1", "TERMINATED")  # stopped it ...
    with pytest.raises(OperationTimeoutError):  # ... sent both inserts, then died
        capture(record, context, timeout=0)
    context.ti.try_number = 2  # Airflow retries the task: it adopts both snapshots, whether they are
    # READY or still uploading at this instant (on a loaded machine the emulator's clock may have got
    # there), and sends no insert of its own
    with contextlib.suppress(OperationTimeoutError):
        capture(record, context, timeout=0)
    records = downtime(record).execute(context.as_dict())["snapshots"]

    inserts = [c for c in emulator.calls_for("compute.snapshots.insert") if c.status == 200]
    assert len(inserts) == 2  # one per disk, none from the retry
    assert len(emulator.snapshots(PROJECT)) == 2
    assert {r["snapshot"] for r in records} == {s["name"] for s in emulator.snapshots(PROJECT)}


def test_second_run_within_ten_minutes_is_rate_limited_with_a_plain_message(emulator, context):
    backup(emulator, context)
    context.run_id = "manual__second"
    record = precheck(context)
    with pytest.raises(RateLimitedError, match="one snapshot per disk every 10 minutes"):
        capture(record, context)


def test_failed_snapshot_is_deleted_and_reported_then_the_retry_makes_a_good_one(emulator, context):
    emulator.faults.fail_snapshot(PROJECT, name_prefix="web-1-us-central1-a")
    record = precheck(context, disks=["web-1"])
    with pytest.raises(OperationFailedError, match="FAILED; it was deleted"):
        downtime(record).execute(context.as_dict())
    assert emulator.snapshots(PROJECT) == []
    assert emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"  # started again at once
    emulator.clock.advance(601)  # the rate limit
    context.ti.try_number = 2
    assert [r["status"] for r in downtime(record).execute(context.as_dict())["snapshots"]] == ["READY"]
    assert emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"


def test_snapshot_name_taken_by_a_foreign_snapshot_is_refused(emulator, context):
    record = precheck(context, disks=["web-1"])
    capture(record, context)
    name = emulator.snapshots(PROJECT)[0]["name"]
    emulator.world.snapshots[f"projects/{PROJECT}/global/snapshots/{name}"]["labels"].pop(MANAGED_BY_KEY)
    with pytest.raises(BackupError, match=r"exists with this run's name but is not gce-vm-backup's snapshot"):
        capture(record, context)


def test_early_restart_is_done_when_snapshots_leave_creating(emulator, context):
    record = precheck(context, disks=["web-1"])
    emulator.world.timings["snapshot_uploading"] = 6000.0  # 10 s of real time: a wait for READY times out
    records = capture(record, context, timeout=5, early_restart=True)
    assert [r["status"] for r in records] == ["UPLOADING"]


def test_vm_suspended_before_the_backup_is_refused(emulator, context):
    emulator.set_instance_status(PROJECT, ZONE_A, "web-1", "SUSPENDED")
    with pytest.raises(VmStateError, match="SUSPENDED\\. Backups refuse suspended VMs"):
        precheck(context)


def test_vm_suspended_after_this_run_stopped_it_is_resumed(emulator, context):
    from gce_vm_backup.backup.instance import start_vm
    from gce_vm_backup.runtime.base import RunKey

    record = precheck(context)
    emulator.set_instance_status(PROJECT, ZONE_A, "web-1", "SUSPENDED")  # e.g. by hand while it was down
    hook = downtime(record).hook
    start_vm(hook, record, RunKey.from_context(context.as_dict()), deadline=float("inf"), timeout=60)
    assert emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"
    assert len(emulator.calls_for("compute.instances.resume")) == 1


def test_vm_deleted_mid_run_fails_stop_with_its_name(emulator, context):
    record = precheck(context)
    emulator.delete_instance(PROJECT, ZONE_A, "web-1")
    with pytest.raises(ResourceNotFoundError, match="web-1"):
        downtime(record).execute(context.as_dict())


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
    result = downtime(record).execute(context.as_dict())
    assert (result["stopped"], result["started"], result["snapshots"]) == (False, False, [])
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
    from gce_vm_backup.backup.instance import stop_vm
    from gce_vm_backup.runtime.base import RunKey

    record = precheck(context)
    hook = downtime(record).hook
    run = RunKey.from_context(context.as_dict())
    emulator.world.timings["stop"] = 600.0  # 1 s of real time
    with pytest.raises(OperationTimeoutError):
        stop_vm(hook, record, run, deadline=0.0, timeout=0)  # sent; the VM is STOPPING now
    context.ti.try_number = 2  # a retry finds it STOPPING: it waits, and sends nothing
    stop_vm(hook, record, RunKey.from_context(context.as_dict()), deadline=float("inf"), timeout=60)

    assert len(emulator.calls_for("compute.instances.stop")) == 1
    assert emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "TERMINATED"


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
    with pytest.raises(BackupError) as raised:
        capture(record, context)
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
    with pytest.raises(BackupError, match=rf"its labels are not ours \(.*{why}"):
        capture(record, context)


def test_our_snapshot_of_this_disk_is_adopted_and_its_disk_id_is_checked_when_the_record_has_one(
    emulator, context
):
    seed_named(emulator, context, source_disk=WEB_DISK)
    record = precheck(context, disks=["web-1"])
    assert [r["status"] for r in capture(record, context)] == ["READY"]
    assert emulator.calls_for("compute.snapshots.insert") == []

    disk_id = emulator.world.disks[WEB_DISK]["id"]
    with_id = {**record, "disks": [{**record["disks"][0], "id": disk_id}]}
    assert capture(with_id, context)
    recreated = {**record, "disks": [{**record["disks"][0], "id": "123"}]}  # same name, another disk
    with pytest.raises(BackupError, match=rf"made from disk id {disk_id}, not from id 123"):
        capture(recreated, context)


def test_the_downtime_operator_requires_a_valid_deployment_naming_the_parameter(emulator, context):
    record = precheck(context, disks=["web-1"])
    with pytest.raises(TypeError, match="deployment"):
        StopSnapshotStartOperator(task_id="s", group="web", instance_record=record)
    with pytest.raises(ConfigError, match=r"parameter 'deployment'.*'Prod'"):
        StopSnapshotStartOperator(task_id="s", group="web", deployment="Prod", instance_record=record)
    with pytest.raises(ConfigError, match="parameter 'group'"):
        StopSnapshotStartOperator(task_id="s", group="", deployment="test", instance_record=record)
    with pytest.raises(ConfigError, match="parameter 'snapshot_mode'"):
        StopSnapshotStartOperator(task_id="s", **SCOPE, instance_record=record, snapshot_mode="fast")


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
