"""Run safety at the operator level, through the real client against the emulator:
a slow shutdown cannot leave a VM stopped, a shared disk is snapshotted once per run, the run's conf
decides what is acted on whatever Airflow's settings, and every failed try records why it failed."""

from __future__ import annotations

import json

import pytest

from gce_emulator import Emulator
from gce_vm_backup.backup.capture import CaptureSettings, capture_standard
from gce_vm_backup.backup.resolve import disk_carriers
from gce_vm_backup.backup.stages import DOWN_XCOM_KEY
from gce_vm_backup.errors import ApiError, ConfigError, OperationFailedError, OperationTimeoutError
from gce_vm_backup.operators import (
    EnsureRunningOperator,
    PrecheckInstanceOperator,
    ResolveTargetsOperator,
    StopSnapshotStartOperator,
)
from gce_vm_backup.runtime.base import ERROR_XCOM_KEY, failure_cause

from .conftest import PROJECT, ZONE_A, ZONE_B

pytestmark = pytest.mark.emulator

VM = f"projects/{PROJECT}/zones/{ZONE_A}/instances"
DISK = f"projects/{PROJECT}/zones/{ZONE_A}/disks"
REGIONAL = f"projects/{PROJECT}/regions/us-central1/disks/regional"


def precheck(context, instance="web-1", zone=ZONE_A, **kwargs):
    operator = PrecheckInstanceOperator(
        task_id="precheck", project_id=PROJECT, zone=zone, instance=instance, **kwargs
    )
    return operator.execute(context.as_dict())


def downtime(record, **kwargs):
    args = {"stop_timeout": 30, "snapshot_timeout": 30, "start_timeout": 30, **kwargs}
    return StopSnapshotStartOperator(
        task_id="tier_1.stop_snapshot_start", instance_record=record, deployment="test", group="web", **args
    )


# ---- item 12: every failed try records its cause ------------------------------------------------------
def test_a_failed_snapshot_records_the_disk_and_the_operations_error_before_raising(fast_emulator, context):
    fast_emulator.faults.fail_operation(
        "compute.snapshots.insert", "QUOTA_EXCEEDED", "Quota 'SNAPSHOTS' exceeded", times=10
    )
    record = precheck(context, "batch-1")  # TERMINATED: captured, not stopped
    with pytest.raises(OperationFailedError):
        downtime(record).execute(context.as_dict())
    error = context.ti.pushed[ERROR_XCOM_KEY]
    assert error["task"] == "tier_1.stop_snapshot_start"
    assert error["error"] == "OperationFailedError"
    assert error["cause"].startswith(
        "snapshot of disk batch-1 failed: QUOTA_EXCEEDED: Quota 'SNAPSHOTS' exceeded (operation operation-"
    )


def test_a_stop_timeout_is_recorded_too(fast_emulator, context):
    fast_emulator.faults.hang_operation("compute.instances.stop", times=10)
    with pytest.raises(OperationTimeoutError):
        downtime(precheck(context), stop_timeout=0, start_timeout=0).execute(context.as_dict())
    assert context.ti.pushed[ERROR_XCOM_KEY]["cause"] == (
        f"stop failed: The stop of VM {VM}/web-1 did not finish within 0 seconds (the VM is STOPPING)"
    )


def test_an_error_of_the_hook_in_the_first_task_is_recorded(emulator, context):
    emulator.faults.http_error("compute.instances.list", 403, times=10)
    resolve = ResolveTargetsOperator(
        deployment="test",
        group="web",
        task_id="resolve_tier_1",
        targets=[{"project_id": PROJECT, "zones": [ZONE_A], "labels": {"app": "shop"}}],
    )
    with pytest.raises(ApiError):
        resolve.execute(context.as_dict())
    assert context.ti.pushed[ERROR_XCOM_KEY]["cause"].startswith(
        f"resolve_tier_1 failed: list VMs in projects/{PROJECT}/zones/{ZONE_A} failed: HTTP 403"
    )


def test_the_cause_line_is_the_first_line_and_names_a_foreign_exceptions_type():
    failed = OperationFailedError(
        "The insert operation op-7 on x finished with an error: RATE_LIMIT_EXCEEDED: too often\nmore",
        operation="op-7",
        resource="x",
        codes=["RATE_LIMIT_EXCEEDED"],
    )
    assert failure_cause("snapshot of disk d", failed) == (
        "snapshot of disk d failed: RATE_LIMIT_EXCEEDED: too often (operation op-7)"
    )
    assert failure_cause("stop", ApiError("stop VM v failed: HTTP 503: x\ntrace")) == (
        "stop failed: stop VM v failed: HTTP 503: x"
    )
    assert failure_cause("precheck", KeyError("disks")) == "precheck failed: KeyError: 'disks'"


# ---- item 4: bringing a VM back outlasts a slow shutdown, and its timeout is retried ------------------------
def ensure_running(record, **kwargs):
    return EnsureRunningOperator(
        task_id="tier_1.ensure_running",
        instance_record=record,
        downtime_task="tier_1.stop_snapshot_start",
        **kwargs,
    )


def test_ensure_runnings_bound_covers_the_stops_and_its_timeout_is_retryable(emulator, context):
    record = precheck(context)  # the default emulator runs in real time: the stop takes 30 s
    hook = ensure_running(record).hook
    hook.stop_instance(
        project_id=PROJECT, zone=ZONE_A, name="web-1", request_id="00000000-0000-4000-8000-000000000001"
    )
    context.ti.pushed[DOWN_XCOM_KEY] = {"down": True}  # the downtime task stopped it, then died
    context.ti.xcom_pull = lambda task_ids, key="return_value", map_indexes=None: context.ti.pushed.get(key)
    with pytest.raises(
        OperationTimeoutError, match=rf"The start of VM {VM}/web-1 did not finish within 0 seconds"
    ):
        ensure_running(record, timeout=0, stop_timeout=0).execute(context.as_dict())
    assert context.ti.pushed[ERROR_XCOM_KEY]["error"] == "OperationTimeoutError"
    assert fast_start_calls(emulator) == []  # STOPPING: no start was sent
    bounded = ensure_running(record, timeout=900, stop_timeout=300)
    assert (bounded.timeout, bounded.stop_timeout) == (900, 300)


def fast_start_calls(emulator):
    return emulator.calls_for("compute.instances.start")


def test_ensure_running_waits_out_stopping_then_starts(fast_emulator, context):
    record = precheck(context)
    hook = ensure_running(record).hook
    hook.stop_instance(
        project_id=PROJECT, zone=ZONE_A, name="web-1", request_id="00000000-0000-4000-8000-000000000002"
    )
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "STOPPING"
    context.ti.pushed[DOWN_XCOM_KEY] = {"down": True}
    context.ti.xcom_pull = lambda task_ids, key="return_value", map_indexes=None: context.ti.pushed.get(key)
    result = ensure_running(record, timeout=60, stop_timeout=60).execute(context.as_dict())
    assert result["started"] is True
    assert fast_emulator.instance(PROJECT, ZONE_A, "web-1")["status"] == "RUNNING"
    start = fast_start_calls(fast_emulator)
    stop = next(op for op in fast_emulator.world.operations.values() if op.operation_type == "stop")
    assert start
    assert min(c.time for c in start) >= stop.end_time  # the start came after the VM was TERMINATED


# ---- item 6: the run's conf decides, not Airflow's params handling ------------------------------------
def shop_resolve(**kwargs):
    """Tier 1's resolve task over the VMs labelled app=shop, with the trigger-form arguments given."""
    return ResolveTargetsOperator(
        deployment="test",
        group="web",
        task_id="resolve_tier_1",
        targets=[{"project_id": PROJECT, "zones": None, "labels": {"app": "shop"}}],
        **kwargs,
    )


@pytest.mark.parametrize(
    ("conf", "only", "plan_only", "message"),
    [
        (
            {"dry_run": True, "vms": []},
            [],
            False,
            "the conf's dry_run is True but the run would act as dry_run=False",
        ),
        ({"dry_run": "true"}, [], "False", "dry_run=False"),
        (
            {"vms": ["web-1"], "dry_run": False},
            [],
            False,
            "the conf's vms is \\['web-1'\\] but the run would back up the whole group",
        ),
        ({"vms": ["web-1"]}, ["batch-1"], False, "would back up batch-1"),
    ],
)
def test_a_run_that_would_act_on_something_else_than_its_conf_is_refused_before_any_call(
    emulator, context, conf, only, plan_only, message
):
    resolve = shop_resolve(only=only, plan_only=plan_only, conf=conf)
    with pytest.raises(ConfigError, match=f"Refusing to run: .*{message}.*dag_run_conf_overrides_params"):
        resolve.execute(context.as_dict())
    assert emulator.calls == []


@pytest.mark.parametrize(
    ("conf", "only", "plan_only"),
    [
        ({}, [], False),
        ({"vms": [], "dry_run": False}, [], False),
        ({"vms": ["web-1"], "dry_run": True}, ["web-1"], True),
    ],
)
def test_a_run_that_acts_on_what_its_conf_says_goes_ahead(emulator, context, conf, only, plan_only):
    resolve = shop_resolve(only=only, plan_only=plan_only, conf=conf)
    assert resolve.execute(context.as_dict())


# ---- item 5: a disk attached to several VMs of a run is snapshotted once ------------------------------
SHARED_SEED = {
    "projects": {
        PROJECT: {
            "regions": {
                "us-central1": {
                    "disks": [{"name": "regional", "size_gb": 20, "replica_zones": [ZONE_A, ZONE_B]}]
                }
            },
            "zones": {
                ZONE_A: {
                    "instances": [
                        {
                            "name": "web-1",
                            "labels": {"app": "shop"},
                            "disks": [
                                {"name": "web-1", "boot": True},
                                {"name": "assets"},
                                {"region_disk": "us-central1/regional"},
                            ],
                        },
                        {
                            "name": "web-2",
                            "labels": {"app": "shop"},
                            "disks": [{"name": "web-2", "boot": True}, {"name": "assets"}],
                        },
                    ]
                },
                ZONE_B: {
                    "instances": [
                        {
                            "name": "db-1",
                            "labels": {"app": "shop"},
                            "disks": [
                                {"name": "db-1", "boot": True},
                                {"region_disk": "us-central1/regional"},
                            ],
                        }
                    ]
                },
            },
        }
    }
}
TIERS = [
    [{"project_id": PROJECT, "zone": ZONE_A, "instance": "web-2", "disks": None}],
    [{"project_id": PROJECT, "zones": None, "labels": {"app": "shop"}}],
]


@pytest.fixture
def shared_emulator(monkeypatch):
    with Emulator(SHARED_SEED, time_scale=600.0) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
        yield emulator


def resolve_all(context, **kwargs):
    return [
        vm
        for tier in (1, 2)
        for vm in ResolveTargetsOperator(
            deployment="test", group="web", task_id=f"resolve_tier_{tier}", tiers=TIERS, tier=tier, **kwargs
        ).execute(context.as_dict())
    ]


def test_the_carrier_of_a_shared_disk_is_the_first_vm_in_tier_then_name_order(shared_emulator, context):
    vms = {vm["instance"]: vm for vm in resolve_all(context)}
    assert vms["web-2"]["carried_by"] == {}  # tier 1: it carries the disk 'assets' it shares with web-1
    assert vms["web-1"]["carried_by"] == {f"{DISK}/assets": f"{VM}/web-2"}
    # web-1 (zone a) sorts before db-1 (zone b) in tier 2: it carries the regional disk of both
    assert vms["db-1"]["carried_by"] == {REGIONAL: f"{VM}/web-1"}
    assert resolve_all(context) == list(vms.values())  # a retry computes the same


def test_a_vm_whose_disk_subset_leaves_the_shared_disk_out_does_not_carry_it(shared_emulator, context):
    tiers = [[{"project_id": PROJECT, "zone": ZONE_A, "instance": "web-2", "disks": ["web-2"]}], TIERS[1]]
    vms = ResolveTargetsOperator(deployment="test", group="web", task_id="r", tiers=tiers, tier=2).execute(
        context.as_dict()
    )
    assert {vm["instance"]: vm["carried_by"] for vm in vms}["web-1"] == {}


def test_each_shared_disk_is_snapshotted_once_by_the_backup_of_its_carrier(shared_emulator, context):
    import time

    from gce_vm_backup.runtime.base import RunKey

    snapshotted: dict[str, list[str]] = {}
    settings = CaptureSettings(deployment="test", group="web")
    for vm in resolve_all(context):
        record = precheck(context, vm["instance"], vm["zone"], carried_by=vm["carried_by"])
        hook = PrecheckInstanceOperator(task_id="p", project_id=PROJECT, zone=ZONE_A, instance="x").hook
        run = RunKey.from_context(context.as_dict())
        for item in capture_standard(hook, record, run, deadline=time.monotonic() + 30, settings=settings):
            snapshotted.setdefault(item["disk_source"], []).append(vm["instance"])
        if vm["instance"] == "web-1":
            assert {d["source"]: d.get("carried_by") for d in record["disks"]}[
                f"{DISK}/assets"
            ] == f"{VM}/web-2"
    assert snapshotted[f"{DISK}/assets"] == ["web-2"]
    assert snapshotted[REGIONAL] == ["web-1"]
    assert all(len(vms) == 1 for vms in snapshotted.values())
    inserts = [c for c in shared_emulator.calls_for("compute.snapshots.insert")]
    assert len(inserts) == 5  # web-2, assets, web-1, regional, db-1


def test_disk_carriers_never_leaves_a_disk_to_a_vm_whose_disks_could_not_be_read():
    a, b = ({"project_id": "p", "zone": "z", "instance": name} for name in ("a", "b"))
    paths = {name: f"projects/p/zones/z/instances/{name}" for name in ("a", "b")}
    assert disk_carriers([a, b], {paths["a"]: ["d"], paths["b"]: ["d"]}) == {"d": paths["a"]}
    assert disk_carriers([a, b], {paths["a"]: None, paths["b"]: ["d"]}) == {"d": paths["b"]}


def test_the_dry_run_plans_a_shared_disk_once_and_names_its_carrier(shared_emulator, context):
    operator = ResolveTargetsOperator(
        deployment="test", group="web", task_id="resolve_tier_2", tiers=TIERS, tier=2, plan_only=True
    )
    operator.execute(context.as_dict())
    plan = {p["vm"].rsplit("/", 1)[-1]: p for p in context.ti.pushed["dry_run_plan"]}
    assert [s["disk_source"] for s in plan["web-1"]["snapshots"]] == [f"{DISK}/web-1", REGIONAL]
    assert plan["web-1"]["carried_by"] == {f"{DISK}/assets": f"{VM}/web-2"}
    assert [s["disk_source"] for s in plan["db-1"]["snapshots"]] == [
        f"projects/{PROJECT}/zones/{ZONE_B}/disks/db-1"
    ]
    mutating = {"stop", "start", "resume", "insert", "delete", "createSnapshot"}
    assert not [c for c in shared_emulator.calls if c.method.rsplit(".", 1)[-1] in mutating]
