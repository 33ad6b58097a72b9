"""The hook's exact requests, retries and errors, with create_autospec of the real client classes."""

from __future__ import annotations

import json
from unittest.mock import create_autospec

import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import compute_v1

from gce_vm_backup.compute.hook import ComputeBackupHook
from gce_vm_backup.errors import ApiError, OperationFailedError, RateLimitedError, ResourceNotFoundError

ZONE_URL = "https://compute.googleapis.com/compute/v1/projects/p/zones/z"


@pytest.fixture
def hook(monkeypatch):
    connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": "http://127.0.0.1:1"}}
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
    hook = ComputeBackupHook(retry_initial=0.001, retry_max=0.002)
    hook.__dict__["instances"] = create_autospec(compute_v1.InstancesClient, instance=True)
    hook.__dict__["snapshots"] = create_autospec(compute_v1.SnapshotsClient, instance=True)
    hook.__dict__["zone_operations"] = create_autospec(compute_v1.ZoneOperationsClient, instance=True)
    hook.__dict__["global_operations"] = create_autospec(compute_v1.GlobalOperationsClient, instance=True)
    return hook


def op(status="RUNNING", errors=(), zone=ZONE_URL, operation_type="stop"):
    return compute_v1.Operation(
        name="operation-1",
        status=status,
        zone=zone,
        operation_type=operation_type,
        self_link=f"{zone or 'https://x/compute/v1/projects/p/global'}/operations/operation-1",
        target_link="https://x/compute/v1/projects/p/zones/z/instances/vm",
        error=compute_v1.Error(errors=[compute_v1.Errors(code=c, message=m) for c, m in errors]),
    )


def test_stop_sends_request_id_and_discard_local_ssd_in_the_request(hook):
    hook.instances.stop_unary.return_value = op()
    hook.stop_instance(project_id="p", zone="z", name="vm", request_id="rid-1", discard_local_ssd=True)
    hook.instances.stop_unary.assert_called_once_with(
        request={
            "project": "p",
            "zone": "z",
            "instance": "vm",
            "request_id": "rid-1",
            "discard_local_ssd": True,
        },
        retry=None,  # the hook's tenacity is the only retry layer
    )


def test_stop_without_local_ssd_choice_omits_the_field(hook):
    hook.instances.stop_unary.return_value = op()
    hook.stop_instance(project_id="p", zone="z", name="vm", request_id="rid-1")
    assert "discard_local_ssd" not in hook.instances.stop_unary.call_args.kwargs["request"]


def test_snapshot_insert_carries_source_disk_labels_and_request_id(hook):
    hook.snapshots.insert_unary.return_value = op(zone="", operation_type="insert")
    snapshot = compute_v1.Snapshot(name="s", source_disk="projects/p/zones/z/disks/d", labels={"a": "b"})
    hook.insert_snapshot(project_id="p", snapshot=snapshot, request_id="rid-2")
    hook.snapshots.insert_unary.assert_called_once_with(
        request={"project": "p", "snapshot_resource": snapshot, "request_id": "rid-2"}, retry=None
    )


def test_transient_503_is_retried_then_succeeds(hook):
    hook.instances.start_unary.side_effect = [api_exceptions.ServiceUnavailable("busy"), op()]
    assert hook.start_instance(project_id="p", zone="z", name="vm", request_id="r").name == "operation-1"
    assert hook.instances.start_unary.call_count == 2


def test_transient_errors_stop_after_the_attempt_bound(hook):
    hook.instances.get.side_effect = api_exceptions.TooManyRequests("slow down")
    with pytest.raises(ApiError, match="get VM projects/p/zones/z/instances/vm failed: HTTP 429"):
        hook.get_instance(project_id="p", zone="z", name="vm")
    assert hook.instances.get.call_count == 5


def test_non_transient_error_is_raised_at_once_as_a_typed_error(hook):
    hook.instances.get.side_effect = api_exceptions.Forbidden("no permission compute.instances.get")
    with pytest.raises(ApiError, match="HTTP 403"):
        hook.get_instance(project_id="p", zone="z", name="vm")
    assert hook.instances.get.call_count == 1


def test_not_found_is_resource_not_found(hook):
    hook.instances.get.side_effect = api_exceptions.NotFound("gone")
    with pytest.raises(ResourceNotFoundError, match="instances/vm: not found"):
        hook.get_instance(project_id="p", zone="z", name="vm")


def test_get_snapshot_returns_none_when_missing(hook):
    hook.snapshots.get.side_effect = api_exceptions.NotFound("gone")
    assert hook.get_snapshot(project_id="p", name="s") is None


def test_wait_long_polls_the_zone_client_chosen_from_the_operation(hook):
    hook.zone_operations.wait.return_value = op(status="DONE")
    assert hook.wait_operation(op(), timeout=100).status == compute_v1.Operation.Status.DONE
    request = hook.zone_operations.wait.call_args.kwargs["request"]
    assert request == {"project": "p", "zone": "z", "operation": "operation-1"}


def test_wait_uses_the_global_client_for_global_operations(hook):
    hook.global_operations.wait.return_value = op(status="DONE", zone="")
    hook.wait_operation(op(zone=""), timeout=100)
    assert hook.global_operations.wait.call_args.kwargs["request"] == {
        "project": "p",
        "operation": "operation-1",
    }


def test_done_with_error_errors_only_is_a_failure_in_plain_words(hook):
    failed = op(status="DONE", errors=[("QUOTA_EXCEEDED", "Quota 'SNAPSHOTS' exceeded")])
    with pytest.raises(OperationFailedError) as info:
        hook.wait_operation(failed, timeout=10)
    assert str(info.value) == (
        "The stop operation operation-1 on projects/p/zones/z/instances/vm finished with an error: "
        "QUOTA_EXCEEDED: Quota 'SNAPSHOTS' exceeded"
    )
    assert info.value.codes == ["QUOTA_EXCEEDED"]


def test_rate_limit_error_is_its_own_type(hook):
    with pytest.raises(RateLimitedError, match="10 minutes"):
        hook.wait_operation(op(status="DONE", errors=[("RATE_LIMIT_EXCEEDED", "Too frequent")]), timeout=10)


def test_a_long_poll_outlasts_the_servers_two_minute_hold(hook):
    hook.zone_operations.wait.return_value = op(status="DONE")

    hook.get_operation(op(), wait_seconds=60)

    assert hook.zone_operations.wait.call_args.kwargs["timeout"] >= 150


def test_a_regional_operation_is_waited_on_with_the_region_operations_client(hook):
    """Instant snapshots of regional disks return region operations (instant_ops)."""
    hook.__dict__["region_operations"] = create_autospec(compute_v1.RegionOperationsClient, instance=True)
    regional = op(zone="")
    regional.region = "https://x/compute/v1/projects/p/regions/r"
    regional.self_link = "https://x/compute/v1/projects/p/regions/r/operations/operation-1"
    hook.region_operations.wait.return_value = op(status="DONE", zone="")
    hook.wait_operation(regional, timeout=10)
    assert hook.region_operations.wait.call_args.kwargs["request"] == {
        "project": "p",
        "region": "r",
        "operation": "operation-1",
    }
    hook.zone_operations.wait.assert_not_called()


def test_every_client_names_the_package_on_the_wire(gce_emulator, monkeypatch):
    """The x-goog-api-client header starts with gce-vm-backup/<version>: how the emulator's call log (and
    the session-end IAM check) tells the package's calls from a test's own."""
    connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": gce_emulator.url}}
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
    hook = ComputeBackupHook()
    hook.get_instance(project_id="demo-project", zone="us-central1-a", name="web-1")
    assert hook.get_snapshot(project_id="demo-project", name="nope") is None
    assert [call.client[0] for call in gce_emulator.calls] == ["gce-vm-backup", "gce-vm-backup"]
