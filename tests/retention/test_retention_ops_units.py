"""VerifySnapshotsOperator and ApplyRetentionOperator against create_autospec of the real hook."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest.mock import create_autospec

import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout
from google.cloud import compute_v1

from gce_vm_backup.backup.retention import ApplyRetentionOperator, VerifySnapshotsOperator
from gce_vm_backup.compute.hook import ComputeBackupHook
from gce_vm_backup.compute.naming import request_id
from gce_vm_backup.config.labels import GROUP_KEY, disk_key, managed_disk_filter, managed_snapshot_labels
from gce_vm_backup.errors import (
    BackupError,
    ConfigError,
    OperationFailedError,
    ResourceNotFoundError,
)

from .conftest import PROJECT, ZONE

DISK = f"projects/{PROJECT}/zones/{ZONE}/disks/web-1"
DATA = f"projects/{PROJECT}/zones/{ZONE}/disks/web-1-data"
VM = f"projects/{PROJECT}/zones/{ZONE}/instances/web-1"
OTHER_VM = f"projects/{PROJECT}/zones/{ZONE}/instances/web-2"
SCOPE = {"deployment": "test", "group": "web"}
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


def snapshot(
    name,
    *,
    disk=DISK,
    status="READY",
    age_days=0.0,
    managed=True,
    size=1 << 30,
    source_disk=None,
    deployment="test",
    group="web",
):
    """A listed snapshot; ``managed`` gives it the labels of ``deployment`` and ``group`` for ``disk``."""
    labels = (
        managed_snapshot_labels(deployment=deployment, group=group, instance="web-1", disk_source=disk)
        if managed
        else {}
    )
    created = NEW_TIME - timedelta(days=age_days)
    return compute_v1.Snapshot(
        name=name,
        status=status,
        labels=labels,
        creation_timestamp=created.isoformat(),
        storage_bytes=size,
        source_disk=f"https://compute.googleapis.com/compute/v1/{source_disk or disk}",
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
UPLOADING = "UPLOADING"  # what an early restart's downtime task read last: verify must read again


def test_verify_is_done_when_every_snapshot_is_ready_and_reports_sizes(hook, context):
    hook.get_snapshot.side_effect = [snapshot("a", size=123), snapshot("b", disk=DATA, size=456)]
    records = [new_record(name="a", status=UPLOADING), new_record(DATA, name="b", status=UPLOADING)]
    sensor = with_hook(VerifySnapshotsOperator(task_id="verify", snapshot_records=records), hook)
    result = sensor.poke(context.as_dict())
    assert [(r["status"], r["storage_bytes"]) for r in result.xcom_value] == [("READY", 123), ("READY", 456)]
    assert hook.get_snapshot.call_args_list[0].kwargs == {"project_id": PROJECT, "name": "a"}


def test_verify_takes_the_downtime_tasks_ready_read_without_an_api_call(hook, context):
    records = [
        {**new_record(name="a"), "storage_bytes": 123},
        {**new_record(DATA, name="b"), "storage_bytes": 456},
    ]
    sensor = VerifySnapshotsOperator(task_id="verify", snapshot_records={"vm": VM, "snapshots": records})
    result = sensor.poke(context.as_dict())
    assert result.is_done
    assert result.xcom_value == records
    assert sensor._hook is None  # no hook built: no Google client loaded for nothing


def test_verify_reads_every_snapshot_when_one_record_is_not_ready(hook, context):
    hook.get_snapshot.side_effect = [snapshot("a"), snapshot("b", disk=DATA, status=UPLOADING)]
    records = [new_record(name="a"), new_record(DATA, name="b", status=UPLOADING)]
    sensor = with_hook(VerifySnapshotsOperator(task_id="verify", snapshot_records=records), hook)
    assert sensor.poke(context.as_dict()) is False
    assert [c.kwargs["name"] for c in hook.get_snapshot.call_args_list] == ["a", "b"]


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
        VerifySnapshotsOperator(task_id="verify", snapshot_records=[new_record(name="a", status=UPLOADING)]),
        hook,
    )
    with pytest.raises(OperationFailedError, match=r"snapshots/a of disk .*/disks/web-1 FAILED"):
        sensor.poke(context.as_dict())


def test_verify_fails_when_the_snapshot_disappeared(hook, context):
    hook.get_snapshot.return_value = None
    sensor = with_hook(
        VerifySnapshotsOperator(task_id="verify", snapshot_records=[new_record(name="a", status=UPLOADING)]),
        hook,
    )
    with pytest.raises(ResourceNotFoundError, match="no longer exists"):
        sensor.poke(context.as_dict())


def test_verify_deadline_names_the_snapshots_still_not_ready(hook, context):
    hook.get_snapshot.return_value = snapshot("a", status="UPLOADING")
    sensor = with_hook(
        VerifySnapshotsOperator(
            task_id="verify",
            snapshot_records=[new_record(name="a", status=UPLOADING)],
            wait_mode="worker",
            timeout=0,
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
    """What the server returns for each disk's filter (anything it returns, the filter notwithstanding)."""

    def list_snapshots(*, project_id, filter, max_results=None, of=None):
        for disk, items in by_disk.items():
            if filter == managed_disk_filter(disk, **SCOPE):
                return iter(items)
        return iter([])

    return list_snapshots


def retention(hook, *, records=None, policy=None, record=None, **kwargs):
    kwargs = {**SCOPE, **kwargs}
    operator = ApplyRetentionOperator(
        task_id="retention",
        instance_record=RECORD if record is None else record,
        snapshot_records=[new_record(), new_record(DATA, "web-1-data-new")] if records is None else records,
        policy=policy or {"keep_last": 2},
        **kwargs,
    )
    return with_hook(operator, hook)


def both_disks(disk_items, data_items=None):
    """A listing of both disks of RECORD, each with this run's READY snapshot."""
    return listing({DISK: disk_items, DATA: data_items or [snapshot("web-1-data-new", disk=DATA)]})


def test_retention_deletes_what_the_policy_lets_go_with_deterministic_request_ids(hook, context):
    hook.list_snapshots.side_effect = both_disks(
        [snapshot("web-1-new"), snapshot("old-1", age_days=1), snapshot("old-2", age_days=2)]
    )
    hook.delete_snapshot.return_value = operation()
    result = retention(hook).execute(context.as_dict())

    assert [d["snapshot"] for d in result["deleted"]] == ["old-2"]
    expected_id = request_id(
        deployment="test",
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
        "web-1-data-new": ["keep_last=2"],
    }
    assert result["not_pruned"] == []


def test_retention_lists_each_disk_with_the_documented_filter_on_all_four_labels(hook, context):
    hook.list_snapshots.side_effect = both_disks([snapshot("web-1-new")])
    retention(hook, max_results=7).execute(context.as_dict())
    assert [c.kwargs for c in hook.list_snapshots.call_args_list] == [
        {"project_id": PROJECT, "filter": managed_disk_filter(DISK, **SCOPE), "max_results": 7, "of": DISK},
        {"project_id": PROJECT, "filter": managed_disk_filter(DATA, **SCOPE), "max_results": 7, "of": DATA},
    ]
    assert hook.list_snapshots.call_args_list[0].kwargs["filter"] == (
        '(labels.gce-vm-backup-deployment = "test") '
        f'(labels.gce-vm-backup-disk-key = "{disk_key(DISK)}") '
        '(labels.gce-vm-backup-group = "web") (labels.managed-by = "gce-vm-backup")'
    )


@pytest.mark.parametrize(
    ("stranger", "why"),
    [
        (snapshot("monthly-old", age_days=30, group="monthly"), "another group's"),
        (snapshot("prod-old", age_days=30, deployment="prod"), "another deployment's"),
        (snapshot("forged", age_days=30, source_disk=f"projects/{PROJECT}/zones/{ZONE}/disks/x"), "forged"),
        (snapshot("foreign", age_days=30, managed=False), "unlabelled"),
    ],
    ids=["other-group", "other-deployment", "forged-labels-other-source-disk", "unlabelled"],
)
def test_retention_never_deletes_a_listed_snapshot_that_is_not_this_scopes_of_this_disk(
    hook, context, stranger, why
):
    # The server "ignored" the filter and returned it anyway: the client-side check still spares it.
    hook.list_snapshots.side_effect = both_disks([snapshot("web-1-new"), stranger])
    result = retention(hook, policy={"keep_last": 1}).execute(context.as_dict())
    hook.delete_snapshot.assert_not_called()
    assert {
        "disk_source": DISK,
        "snapshot": stranger.name,
        "reasons": ["not made by gce-vm-backup for this deployment, group and disk"],
    } in result["kept"], why


def test_retention_fails_when_this_runs_ready_snapshot_is_missing_from_the_listing(hook, context):
    # The new snapshot's labels were changed by someone: the filter no longer finds it. Deleting the
    # others "because there is no new copy" is impossible, but so is a green run.
    hook.list_snapshots.side_effect = both_disks(
        [snapshot("old-1", age_days=1), snapshot("old-2", age_days=2)],
        [snapshot("web-1-data-new", disk=DATA), snapshot("data-old", disk=DATA, age_days=3)],
    )
    hook.delete_snapshot.return_value = operation()
    with pytest.raises(BackupError) as raised:
        retention(hook, policy={"keep_last": 1}).execute(context.as_dict())
    message = str(raised.value)
    assert message.startswith(f"Retention policy not applied to disk {DISK}: this run's snapshot web-1-new")
    assert "is READY but missing from the listing with filter" in message
    assert managed_disk_filter(DISK, **SCOPE) in message
    assert "its labels changed or the filter was not applied" in message
    assert DATA not in message
    # the other disk was still pruned
    assert [c.kwargs["name"] for c in hook.delete_snapshot.call_args_list] == ["data-old"]


def test_retention_fails_when_this_runs_snapshot_is_listed_but_from_another_disk(hook, context):
    other = f"projects/{PROJECT}/zones/{ZONE}/disks/elsewhere"
    hook.list_snapshots.side_effect = both_disks(
        [snapshot("web-1-new", source_disk=other), snapshot("old-1", age_days=1)]
    )
    with pytest.raises(
        BackupError,
        match=rf"disk {DISK}: this run's snapshot web-1-new is listed, but "
        rf"it was made from disk {other}",
    ):
        retention(hook, policy={"keep_last": 1}).execute(context.as_dict())
    hook.delete_snapshot.assert_not_called()


def test_retention_fails_when_this_runs_snapshot_carries_another_groups_label(hook, context):
    relabelled = snapshot("web-1-new")
    relabelled.labels[GROUP_KEY] = "monthly"
    hook.list_snapshots.side_effect = both_disks([relabelled, snapshot("old-1", age_days=1)])
    with pytest.raises(BackupError, match=r"web-1-new is listed, but its labels are not ours"):
        retention(hook, policy={"keep_last": 1}).execute(context.as_dict())
    hook.delete_snapshot.assert_not_called()


def test_retention_fails_for_a_disk_whose_new_snapshot_is_not_ready(hook, context):
    hook.list_snapshots.side_effect = both_disks(
        [snapshot("web-1-new", status="UPLOADING"), snapshot("old-1", age_days=30)]
    )
    with pytest.raises(
        BackupError, match=rf"policy not applied to disk {DISK}: this run's snapshot web-1-new is UPLOADING"
    ):
        retention(hook, policy={"keep_last": 1}).execute(context.as_dict())
    hook.delete_snapshot.assert_not_called()


def test_retention_fails_for_a_disk_of_which_this_run_made_no_snapshot(hook, context):
    hook.list_snapshots.side_effect = both_disks([snapshot("web-1-new"), snapshot("old-1", age_days=1)])
    hook.delete_snapshot.return_value = operation()
    with pytest.raises(BackupError, match=rf"not applied to disk {DATA}: this run made no snapshot of it"):
        retention(hook, records=[new_record()], policy={"keep_last": 1}).execute(context.as_dict())
    assert [c.kwargs["name"] for c in hook.delete_snapshot.call_args_list] == ["old-1"]


def test_retention_skips_a_disk_carried_by_another_vms_backup_and_says_so(hook, context):
    record = {
        **RECORD,
        "disks": [
            {"name": "web-1", "source": DISK},
            {"name": "web-1-data", "source": DATA, "carried_by": OTHER_VM},
        ],
    }
    hook.list_snapshots.side_effect = both_disks([snapshot("web-1-new"), snapshot("old-1", age_days=1)])
    hook.delete_snapshot.return_value = operation()
    result = retention(hook, record=record, records=[new_record()], policy={"keep_last": 1}).execute(
        context.as_dict()
    )
    assert [d["snapshot"] for d in result["deleted"]] == ["old-1"]
    assert [c.kwargs["of"] for c in hook.list_snapshots.call_args_list] == [DISK]  # DATA not even listed
    assert result["not_pruned"] == [
        {
            "disk_source": DATA,
            "reason": f"snapshotted in this run by the backup of VM {OTHER_VM}, which shares the disk; "
            "the policy is applied there",
        }
    ]


def test_retention_measures_ages_from_this_runs_snapshot_not_the_worker_clock(hook, context):
    # Both old snapshots are younger than keep_days counted from the new snapshot, though far older
    # than that by the worker's clock (the new snapshot is dated in the past on purpose).
    hook.list_snapshots.side_effect = both_disks(
        [
            snapshot("web-1-new", age_days=400),
            snapshot("old-1", age_days=401),
            snapshot("old-2", age_days=402),
        ],
        [snapshot("web-1-data-new", disk=DATA, age_days=400)],
    )
    result = retention(hook, policy={"keep_last": 1, "keep_days": 3}).execute(context.as_dict())
    assert result["deleted"] == []
    hook.delete_snapshot.assert_not_called()


def test_retention_dry_run_logs_the_plan_and_deletes_nothing(hook, context, capsys):
    hook.list_snapshots.side_effect = both_disks([snapshot("web-1-new"), snapshot("old-1", age_days=9)])
    result = retention(hook, policy={"keep_last": 1}, plan_only="True").execute(context.as_dict())
    hook.delete_snapshot.assert_not_called()
    assert result["dry_run"] is True
    assert [d["snapshot"] for d in result["would_delete"]] == ["old-1"]
    assert "DRY RUN: would delete old-1" in capsys.readouterr().out  # Airflow logs through structlog


def test_retention_goes_on_after_a_failed_delete_and_then_fails_naming_it(hook, context):
    hook.list_snapshots.side_effect = both_disks(
        [snapshot("web-1-new"), snapshot("old-1", age_days=1), snapshot("old-2", age_days=2)]
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
    hook.list_snapshots.side_effect = both_disks([snapshot("web-1-new"), snapshot("old-1", age_days=1)])
    hook.delete_snapshot.side_effect = ResourceNotFoundError("gone")
    result = retention(hook, policy={"keep_last": 1}).execute(context.as_dict())
    assert [d["snapshot"] for d in result["deleted"]] == ["old-1"]


def test_retention_for_a_tier_without_a_vm_makes_no_api_call(hook, context):
    operator = ApplyRetentionOperator(
        task_id="retention",
        instance_record={"project_id": "", "zone": "", "instance": "", "prior_status": "NO_VM", "disks": []},
        snapshot_records=[],
        policy={"keep_last": 1},
        **SCOPE,
    )
    assert with_hook(operator, hook).execute(context.as_dict())["deleted"] == []
    assert hook.method_calls == []


def test_a_bad_policy_is_refused_when_the_dag_is_built_naming_the_key():
    with pytest.raises(ConfigError, match=r"'policy', key gfs\.yearly: Extra inputs are not permitted"):
        ApplyRetentionOperator(
            task_id="r", instance_record=RECORD, snapshot_records=[], policy={"gfs": {"yearly": 2}}, **SCOPE
        )
    with pytest.raises(
        ConfigError, match=r"'policy', key keep_last: Input should be greater than or equal to 1"
    ):
        ApplyRetentionOperator(
            task_id="r", instance_record=RECORD, snapshot_records=[], policy={"keep_last": 0}, **SCOPE
        )


def test_deployment_and_group_are_required_and_checked_naming_the_parameter():
    args = {"task_id": "r", "instance_record": RECORD, "snapshot_records": [], "policy": {}}
    with pytest.raises(TypeError, match="deployment"):
        ApplyRetentionOperator(**args, group="web")
    with pytest.raises(ConfigError, match=r"parameter 'deployment' must be this deployment's id.*'Prod'"):
        ApplyRetentionOperator(**args, deployment="Prod", group="web")
    with pytest.raises(ConfigError, match="parameter 'group'"):
        ApplyRetentionOperator(**args, deployment="test", group="")


def test_retention_refuses_an_instance_record_that_is_not_one(hook, context):
    operator = with_hook(
        ApplyRetentionOperator(task_id="r", instance_record="oops", snapshot_records=[], policy={}, **SCOPE),
        hook,
    )
    with pytest.raises(ConfigError, match="'instance_record' must be the precheck's result"):
        operator.execute(context.as_dict())
