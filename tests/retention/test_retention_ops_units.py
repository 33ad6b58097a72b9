"""VerifySnapshotsOperator and ApplyRetentionOperator against create_autospec of the real hook."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest.mock import create_autospec

import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout
from google.cloud import compute_v1

from gce_vm_backup.errors import (
    BackupError,
    ConfigError,
    OperationFailedError,
    ResourceNotFoundError,
)
from gce_vm_backup.hook import ComputeBackupHook
from gce_vm_backup.labels import managed_disk_filter, managed_snapshot_labels
from gce_vm_backup.naming import request_id
from gce_vm_backup.retention_ops import ApplyRetentionOperator, VerifySnapshotsOperator

from .conftest import PROJECT, ZONE

DISK = f"projects/{PROJECT}/zones/{ZONE}/disks/web-1"
DATA = f"projects/{PROJECT}/zones/{ZONE}/disks/web-1-data"
VM = f"projects/{PROJECT}/zones/{ZONE}/instances/web-1"
NEW_TIME = datetime(2026, 11, 24, 3, 5, tzinfo=UTC)
RECORD = {
    "project_id": PROJECT,
    "zone": ZONE,
    "instance": "web-1",
    "prior_status": "RUNNING",
    "disks": [{"name": "web-1", "source": DISK}, {"name": "web-1-data", "source": DATA}],
}


def new_record(disk=DISK, name="web-1-new", status="READY"):
    return {
        "vm": VM,
        "disk": disk.rsplit("/", 1)[-1],
        "disk_source": disk,
        "snapshot": name,
        "status": status,
    }


def snapshot(name, *, disk=DISK, status="READY", age_days=0.0, managed=True, size=1 << 30):
    labels = managed_snapshot_labels(group="web", instance="web-1", disk_source=disk) if managed else {}
    created = NEW_TIME - timedelta(days=age_days)
    return compute_v1.Snapshot(
        name=name,
        status=status,
        labels=labels,
        creation_timestamp=created.isoformat(),
        storage_bytes=size,
        source_disk=disk,
    )


def operation(name="operation-del"):
    return compute_v1.Operation(name=name, status="DONE")


@pytest.fixture
def hook():
    return create_autospec(ComputeBackupHook, instance=True)


def with_hook(operator, hook):
    operator._hook = hook
    return operator


# ---- verification ------------------------------------------------------------------------------
def test_verify_is_done_when_every_snapshot_is_ready_and_reports_sizes(hook, context):
    hook.get_snapshot.side_effect = [snapshot("a", size=123), snapshot("b", disk=DATA, size=456)]
    sensor = with_hook(
        VerifySnapshotsOperator(
            task_id="verify", snapshot_records=[new_record(name="a"), new_record(DATA, name="b")]
        ),
        hook,
    )
    result = sensor.poke(context.as_dict())
    assert [r["storage_bytes"] for r in result.xcom_value] == [123, 456]
    assert hook.get_snapshot.call_args_list[0].kwargs == {"project_id": PROJECT, "name": "a"}


def test_verify_keeps_waiting_while_a_snapshot_is_uploading(hook, context):
    hook.get_snapshot.return_value = snapshot("a", status="UPLOADING")
    sensor = with_hook(
        VerifySnapshotsOperator(
            task_id="verify", snapshot_records=[new_record(name="a", status="UPLOADING")]
        ),
        hook,
    )
    assert sensor.poke(context.as_dict()) is False


def test_verify_fails_naming_disk_and_snapshot_when_a_snapshot_failed(hook, context):
    hook.get_snapshot.return_value = snapshot("a", status="FAILED")
    sensor = with_hook(
        VerifySnapshotsOperator(task_id="verify", snapshot_records=[new_record(name="a")]), hook
    )
    with pytest.raises(OperationFailedError, match=r"snapshots/a of disk .*/disks/web-1 FAILED"):
        sensor.poke(context.as_dict())


def test_verify_fails_when_the_snapshot_disappeared(hook, context):
    hook.get_snapshot.return_value = None
    sensor = with_hook(
        VerifySnapshotsOperator(task_id="verify", snapshot_records=[new_record(name="a")]), hook
    )
    with pytest.raises(ResourceNotFoundError, match="no longer exists"):
        sensor.poke(context.as_dict())


def test_verify_deadline_names_the_snapshots_still_not_ready(hook, context):
    hook.get_snapshot.return_value = snapshot("a", status="UPLOADING")
    sensor = with_hook(
        VerifySnapshotsOperator(
            task_id="verify", snapshot_records=[new_record(name="a")], wait_mode="worker", timeout=0
        ),
        hook,
    )
    with pytest.raises(
        AirflowSensorTimeout, match=r"not READY within 0 seconds: a of disk .*web-1 \(UPLOADING\)"
    ):
        sensor.execute(context.as_dict())


def test_verify_with_no_snapshots_succeeds_without_an_api_call(hook, context):
    sensor = with_hook(VerifySnapshotsOperator(task_id="verify", snapshot_records=[]), hook)
    assert sensor.poke(context.as_dict()).xcom_value == []
    assert hook.method_calls == []


def test_verify_rejects_input_that_is_not_snapshot_records(hook, context):
    sensor = with_hook(VerifySnapshotsOperator(task_id="verify", snapshot_records={"x": 1}), hook)
    with pytest.raises(ConfigError, match="'snapshot_records' must be the snapshot task's list"):
        sensor.poke(context.as_dict())


def test_verify_refuses_an_unknown_wait_mode():
    with pytest.raises(ConfigError, match="'wait_mode' must be one of defer, reschedule, worker"):
        VerifySnapshotsOperator(task_id="verify", snapshot_records=[], wait_mode="deferrable")


# ---- retention ---------------------------------------------------------------------------------
def listing(by_disk):
    def list_snapshots(*, project_id, filter, max_results=None, of=None):
        for disk, items in by_disk.items():
            if filter == managed_disk_filter(disk):
                return iter(items)
        return iter([])

    return list_snapshots


def retention(hook, *, records=None, policy=None, **kwargs):
    operator = ApplyRetentionOperator(
        task_id="retention",
        instance_record=RECORD,
        snapshot_records=[new_record()] if records is None else records,
        policy=policy or {"keep_last": 2},
        **kwargs,
    )
    return with_hook(operator, hook)


def test_retention_deletes_what_the_policy_lets_go_with_deterministic_request_ids(hook, context):
    hook.list_snapshots.side_effect = listing(
        {DISK: [snapshot("web-1-new"), snapshot("old-1", age_days=1), snapshot("old-2", age_days=2)]}
    )
    hook.delete_snapshot.return_value = operation()
    result = retention(hook).execute(context.as_dict())

    assert [d["snapshot"] for d in result["deleted"]] == ["old-2"]
    expected_id = request_id(
        dag_id="gce_vm_backup__test",
        run_id=context.run_id,
        map_index=0,
        resource=f"projects/{PROJECT}/global/snapshots/old-2",
        action="retention-delete",
        try_number=1,
    )
    hook.delete_snapshot.assert_called_once_with(project_id=PROJECT, name="old-2", request_id=expected_id)
    hook.wait_operation.assert_called_once_with(hook.delete_snapshot.return_value, timeout=600.0)
    assert {k["snapshot"]: k["reasons"] for k in result["kept"]} == {
        "web-1-new": ["keep_last=2"],
        "old-1": ["keep_last=2"],
    }
    assert result["not_pruned"] == [{"disk_source": DATA, "reason": "this run made no snapshot of it"}]


def test_retention_lists_each_disk_with_the_managed_label_filter(hook, context):
    hook.list_snapshots.side_effect = listing({})
    retention(hook, max_results=7).execute(context.as_dict())
    assert [c.kwargs for c in hook.list_snapshots.call_args_list] == [
        {"project_id": PROJECT, "filter": managed_disk_filter(DISK), "max_results": 7, "of": DISK},
        {"project_id": PROJECT, "filter": managed_disk_filter(DATA), "max_results": 7, "of": DATA},
    ]


def test_retention_deletes_nothing_for_a_disk_whose_new_snapshot_is_not_ready(hook, context):
    hook.list_snapshots.side_effect = listing(
        {DISK: [snapshot("web-1-new", status="UPLOADING"), snapshot("old-1", age_days=30)]}
    )
    result = retention(hook, policy={"keep_last": 1}).execute(context.as_dict())
    hook.delete_snapshot.assert_not_called()
    assert result["not_pruned"][0] == {
        "disk_source": DISK,
        "reason": "this run's snapshot web-1-new is not READY",
    }


def test_retention_never_deletes_a_listed_snapshot_without_our_labels(hook, context):
    hook.list_snapshots.side_effect = listing(
        {DISK: [snapshot("web-1-new"), snapshot("foreign", age_days=30, managed=False)]}
    )
    result = retention(hook, policy={"keep_last": 1}).execute(context.as_dict())
    hook.delete_snapshot.assert_not_called()
    assert {"disk_source": DISK, "snapshot": "foreign", "reasons": ["not made by gce-vm-backup"]} in result[
        "kept"
    ]


def test_retention_measures_ages_from_this_runs_snapshot_not_the_worker_clock(hook, context):
    # Both old snapshots are younger than keep_days counted from the new snapshot, though far older
    # than that by the worker's clock (the new snapshot is dated in the past on purpose).
    hook.list_snapshots.side_effect = listing(
        {
            DISK: [
                snapshot("web-1-new", age_days=400),
                snapshot("old-1", age_days=401),
                snapshot("old-2", age_days=402),
            ]
        }
    )
    result = retention(hook, policy={"keep_last": 1, "keep_days": 3}).execute(context.as_dict())
    assert result["deleted"] == []
    hook.delete_snapshot.assert_not_called()


def test_retention_dry_run_logs_the_plan_and_deletes_nothing(hook, context, capsys):
    hook.list_snapshots.side_effect = listing({DISK: [snapshot("web-1-new"), snapshot("old-1", age_days=9)]})
    result = retention(hook, policy={"keep_last": 1}, plan_only="True").execute(context.as_dict())
    hook.delete_snapshot.assert_not_called()
    assert result["dry_run"] is True
    assert [d["snapshot"] for d in result["would_delete"]] == ["old-1"]
    assert "DRY RUN: would delete old-1" in capsys.readouterr().out  # Airflow logs through structlog


def test_retention_goes_on_after_a_failed_delete_and_then_fails_naming_it(hook, context):
    hook.list_snapshots.side_effect = listing(
        {DISK: [snapshot("web-1-new"), snapshot("old-1", age_days=1), snapshot("old-2", age_days=2)]}
    )
    hook.delete_snapshot.side_effect = [operation("op-2"), operation("op-1")]
    hook.wait_operation.side_effect = [
        OperationFailedError("delete failed: RESOURCE_IN_USE", operation="op-2", resource="x", codes=["X"]),
        operation("op-1"),
    ]
    with pytest.raises(
        BackupError, match=r"could not delete 1 snapshot\(s\).*snapshots/old-2: delete failed"
    ):
        retention(hook, policy={"keep_last": 1}).execute(context.as_dict())
    assert [c.kwargs["name"] for c in hook.delete_snapshot.call_args_list] == ["old-2", "old-1"]


def test_retention_counts_a_snapshot_already_gone_as_deleted(hook, context):
    hook.list_snapshots.side_effect = listing({DISK: [snapshot("web-1-new"), snapshot("old-1", age_days=1)]})
    hook.delete_snapshot.side_effect = ResourceNotFoundError("gone")
    result = retention(hook, policy={"keep_last": 1}).execute(context.as_dict())
    assert [d["snapshot"] for d in result["deleted"]] == ["old-1"]


def test_retention_for_a_tier_without_a_vm_makes_no_api_call(hook, context):
    operator = ApplyRetentionOperator(
        task_id="retention",
        instance_record={"project_id": "", "zone": "", "instance": "", "prior_status": "NO_VM", "disks": []},
        snapshot_records=[],
        policy={"keep_last": 1},
    )
    assert with_hook(operator, hook).execute(context.as_dict())["deleted"] == []
    assert hook.method_calls == []


def test_a_bad_policy_is_refused_when_the_dag_is_built_naming_the_key():
    with pytest.raises(ConfigError, match=r"'policy', key gfs\.yearly: Extra inputs are not permitted"):
        ApplyRetentionOperator(
            task_id="r", instance_record=RECORD, snapshot_records=[], policy={"gfs": {"yearly": 2}}
        )
    with pytest.raises(
        ConfigError, match=r"'policy', key keep_last: Input should be greater than or equal to 1"
    ):
        ApplyRetentionOperator(
            task_id="r", instance_record=RECORD, snapshot_records=[], policy={"keep_last": 0}
        )


def test_retention_refuses_an_instance_record_that_is_not_one(hook, context):
    operator = with_hook(
        ApplyRetentionOperator(task_id="r", instance_record="oops", snapshot_records=[], policy={}), hook
    )
    with pytest.raises(ConfigError, match="'instance_record' must be the precheck's result"):
        operator.execute(context.as_dict())
