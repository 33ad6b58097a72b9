"""``ComputeBackupHook``: every Compute Engine call the package makes, retried and bounded.

Clients are created lazily, all with the same endpoint and credentials (see endpoint.py), and all name
the package (``gce-vm-backup/<version>`` in the ``x-goog-api-client`` header), so the emulator's call log
tells the package's calls from a test's own. Transient
errors (429, 5xx, connection resets) are retried with tenacity: exponential backoff with jitter, bounded
in attempts and time. Mutating calls are retried too, which is safe only because every one of them carries
a request id: a repeat is recognised by the server and does nothing twice. Other errors are raised at once
as ApiError / ResourceNotFoundError.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable, Iterator, Sequence
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TypeVar

import requests
import tenacity
from airflow.exceptions import AirflowNotFoundException
from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
from google.api_core import exceptions as api_exceptions
from google.api_core.gapic_v1.client_info import ClientInfo
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from gce_vm_backup.compute.endpoint import ComputeEndpoint
from gce_vm_backup.compute.operations import is_done, project_of, raise_if_failed, scope_of, target_of
from gce_vm_backup.compute.paths import SnapshotRef, VmRef
from gce_vm_backup.compute.permissions import CLIENT_PRODUCT
from gce_vm_backup.compute.polling import poll_until
from gce_vm_backup.errors import ApiError, LabelsChangedError, OperationTimeoutError, ResourceNotFoundError

if TYPE_CHECKING:
    from airflow.sdk import Connection

T = TypeVar("T")
TRANSIENT = (
    api_exceptions.TooManyRequests,
    api_exceptions.InternalServerError,
    api_exceptions.BadGateway,
    api_exceptions.ServiceUnavailable,
    api_exceptions.GatewayTimeout,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    ConnectionResetError,
)
MAX_WAIT_CALL = 60.0  # seconds one operations.wait long-poll may take before we look again
# operations.wait takes no duration: the server holds the call for up to about 2 minutes whatever we ask,
# so the HTTP timeout of a wait must outlast that hold, or a slow operation ends in a read timeout.
SERVER_WAIT_HOLD = 120.0
# The client library retries some calls on its own (GETs on 503, up to 600 s); inside our tenacity
# attempts that would stretch the documented bound (5 attempts / 120 s), so every call passes retry=None.
NO_RETRY = None


@cache
def client_info(product: str = CLIENT_PRODUCT) -> ClientInfo:
    """``<product>/<version of the gce-vm-backup package>`` (``unknown`` when the package is synced to
    plugins/, not installed): ``gce-vm-backup/...`` for backups, ``gce-vm-backup-restore/...`` for
    restores (permissions.py)."""
    try:
        version = importlib.metadata.version(CLIENT_PRODUCT)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return ClientInfo(user_agent=f"{product}/{version}")


class ComputeBackupHook(GoogleBaseHook):
    """Compute Engine calls for backups. Connection, project and impersonation come from GoogleBaseHook."""

    # The product every client of this hook names in its x-goog-api-client header (see client_info).
    client_product: ClassVar[str] = CLIENT_PRODUCT

    def __init__(
        self,
        *,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        retry_attempts: int = 5,
        retry_deadline: float = 120.0,
        retry_initial: float = 1.0,
        retry_max: float = 30.0,
    ) -> None:
        super().__init__(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain)
        self.endpoint = ComputeEndpoint.resolve(self.extras)
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TRANSIENT),
            wait=tenacity.wait_exponential_jitter(initial=retry_initial, max=retry_max),
            stop=tenacity.stop_after_attempt(retry_attempts) | tenacity.stop_after_delay(retry_deadline),
            before_sleep=lambda state: self.log.warning(
                "Transient Compute Engine error, retrying (attempt %s): %s",
                state.attempt_number,
                state.outcome.exception() if state.outcome else None,
            ),
            reraise=True,
        )

    @classmethod
    def get_connection(cls, conn_id: str) -> Connection:
        """The Airflow connection ``conn_id``; an empty one of the Google type when none is defined.

        No connection is fine: a loopback emulator endpoint from the environment is used anonymously,
        otherwise Application Default Credentials (the provider's path for a connection without keys).
        """
        try:
            return super().get_connection(conn_id)
        except AirflowNotFoundException:
            from airflow.sdk import Connection

            return Connection(conn_id=conn_id, conn_type="google_cloud_platform")

    # ---- clients -------------------------------------------------------------------------------
    def _client(self, cls: type[T]) -> T:
        credentials = AnonymousCredentials() if self.endpoint.anonymous else self.get_credentials()
        return cls(  # type: ignore[call-arg]
            credentials=credentials,
            client_options=self.endpoint.client_options(),
            client_info=client_info(self.client_product),
        )

    @cached_property
    def instances(self) -> compute_v1.InstancesClient:
        return self._client(compute_v1.InstancesClient)

    @cached_property
    def snapshots(self) -> compute_v1.SnapshotsClient:
        return self._client(compute_v1.SnapshotsClient)

    @cached_property
    def instant_snapshots(self) -> compute_v1.InstantSnapshotsClient:
        return self._client(compute_v1.InstantSnapshotsClient)

    @cached_property
    def region_instant_snapshots(self) -> compute_v1.RegionInstantSnapshotsClient:
        return self._client(compute_v1.RegionInstantSnapshotsClient)

    @cached_property
    def disks(self) -> compute_v1.DisksClient:
        return self._client(compute_v1.DisksClient)

    @cached_property
    def region_disks(self) -> compute_v1.RegionDisksClient:
        return self._client(compute_v1.RegionDisksClient)

    @cached_property
    def zone_operations(self) -> compute_v1.ZoneOperationsClient:
        return self._client(compute_v1.ZoneOperationsClient)

    @cached_property
    def region_operations(self) -> compute_v1.RegionOperationsClient:
        return self._client(compute_v1.RegionOperationsClient)

    @cached_property
    def global_operations(self) -> compute_v1.GlobalOperationsClient:
        return self._client(compute_v1.GlobalOperationsClient)

    # ---- calling -------------------------------------------------------------------------------
    def _call(self, what: str, call: Callable[[], T]) -> T:
        """Run ``call`` with retries on transient errors; translate the rest into typed errors."""
        try:
            return self._retrying(call)
        except api_exceptions.NotFound as exc:
            raise ResourceNotFoundError(f"{what}: not found ({exc.message})") from exc
        except api_exceptions.GoogleAPICallError as exc:
            raise ApiError(f"{what} failed: HTTP {exc.code}: {exc.message}") from exc
        except TRANSIENT as exc:
            raise ApiError(f"{what} failed after retries: {exc}") from exc

    # ---- instances -----------------------------------------------------------------------------
    def get_instance(self, *, project_id: str, zone: str, name: str) -> compute_v1.Instance:
        return self._call(
            f"get VM {VmRef(project_id, zone, name)}",
            lambda: self.instances.get(project=project_id, zone=zone, instance=name, retry=NO_RETRY),
        )

    def list_instances(
        self, *, project_id: str, zone: str | None, filter: str | None = None
    ) -> Iterator[tuple[str, compute_v1.Instance]]:
        """(zone, instance) for every match, all pages; ``zone=None`` lists every zone (aggregatedList)."""
        request: dict[str, Any] = {"project": project_id}
        if filter:
            request["filter"] = filter
        if zone is not None:
            instances = self._call(
                f"list VMs in projects/{project_id}/zones/{zone}",
                lambda: list(self.instances.list(request={**request, "zone": zone}, retry=NO_RETRY)),
            )
            for instance in instances:
                yield zone, instance
            return
        aggregated = self._call(
            f"list VMs in every zone of {project_id}",
            lambda: list(self.instances.aggregated_list(request=request, retry=NO_RETRY)),
        )
        for scope, scoped in aggregated:
            for instance in scoped.instances:
                yield scope.rsplit("/", 1)[-1], instance

    def _instance_action(
        self, action: str, *, project_id: str, zone: str, name: str, request_id: str, **extra: Any
    ):
        request = {"project": project_id, "zone": zone, "instance": name, "request_id": request_id, **extra}
        method = getattr(self.instances, f"{action}_unary")
        return self._call(
            f"{action} VM {VmRef(project_id, zone, name)}",
            lambda: method(request=request, retry=NO_RETRY),
        )

    def stop_instance(
        self, *, project_id: str, zone: str, name: str, request_id: str, discard_local_ssd: bool | None = None
    ) -> compute_v1.Operation:
        extra = {} if discard_local_ssd is None else {"discard_local_ssd": discard_local_ssd}
        return self._instance_action(
            "stop", project_id=project_id, zone=zone, name=name, request_id=request_id, **extra
        )

    def start_instance(
        self, *, project_id: str, zone: str, name: str, request_id: str
    ) -> compute_v1.Operation:
        return self._instance_action(
            "start", project_id=project_id, zone=zone, name=name, request_id=request_id
        )

    def resume_instance(
        self, *, project_id: str, zone: str, name: str, request_id: str
    ) -> compute_v1.Operation:
        return self._instance_action(
            "resume", project_id=project_id, zone=zone, name=name, request_id=request_id
        )

    def set_instance_labels(
        self,
        *,
        project_id: str,
        zone: str,
        name: str,
        labels: dict[str, str],
        label_fingerprint: str,
        request_id: str,
    ) -> compute_v1.Operation:
        """instances.setLabels: ``labels`` replace ALL the VM's labels (pass the others unchanged to keep
        them); ``label_fingerprint`` is the one read with the VM. Returns the zonal operation. Raises
        LabelsChangedError when Compute Engine refuses the fingerprint (HTTP 412 conditionNotMet: the
        labels changed since the read; read again), ApiError otherwise."""
        resource = compute_v1.InstancesSetLabelsRequest(
            labels=dict(labels), label_fingerprint=label_fingerprint
        )
        request = {
            "project": project_id,
            "zone": zone,
            "instance": name,
            "instances_set_labels_request_resource": resource,
            "request_id": request_id,
        }
        what = f"set labels of VM {VmRef(project_id, zone, name)}"
        return self._label_call(
            what, lambda: self.instances.set_labels_unary(request=request, retry=NO_RETRY)
        )

    def _label_call(self, what: str, call: Callable[[], T]) -> T:
        """``_call`` for a setLabels method: a refused fingerprint (HTTP 412 conditionNotMet) is
        LabelsChangedError, which a compare-and-set answers by reading again."""
        try:
            return self._call(what, call)
        except ApiError as exc:
            if isinstance(exc.__cause__, api_exceptions.PreconditionFailed):
                raise LabelsChangedError(f"{what}: its labels changed since they were read") from exc
            raise

    # ---- disks and snapshots -------------------------------------------------------------------
    def insert_snapshot(
        self,
        *,
        project_id: str,
        snapshot: compute_v1.Snapshot,
        request_id: str,
        source_instant_snapshot: str | None = None,
    ) -> compute_v1.Operation:
        """snapshots.insert with ``source_disk`` set (zonal and regional disks alike), or, with
        ``source_instant_snapshot`` (a ``projects/...`` path), the conversion of that instant snapshot.
        The two sources exclude each other: ValueError when both are given."""
        if source_instant_snapshot:
            if snapshot.source_disk:
                raise ValueError(
                    f"snapshot {snapshot.name}: source_disk and source_instant_snapshot exclude each other"
                )
            snapshot.source_instant_snapshot = source_instant_snapshot
        request = {"project": project_id, "snapshot_resource": snapshot, "request_id": request_id}
        source = source_instant_snapshot or snapshot.source_disk
        return self._call(
            f"create snapshot {snapshot.name} of {source}",
            lambda: self.snapshots.insert_unary(request=request, retry=NO_RETRY),
        )

    def get_snapshot(self, *, project_id: str, name: str) -> compute_v1.Snapshot | None:
        """The snapshot, or None if it does not exist."""
        try:
            return self._call(
                f"get snapshot {SnapshotRef(project_id, name)}",
                lambda: self.snapshots.get(project=project_id, snapshot=name, retry=NO_RETRY),
            )
        except ResourceNotFoundError:
            return None

    def list_snapshots(
        self, *, project_id: str, filter: str, max_results: int | None = None, of: str | None = None
    ) -> Iterator[compute_v1.Snapshot]:
        """Every snapshot of the project matching ``filter``, all pages. ``of`` names what is listed in
        errors (e.g. the disk), instead of the project."""
        request: dict[str, Any] = {"project": project_id, "filter": filter}
        if max_results:
            request["max_results"] = max_results
        # Every page is fetched inside _call, so a 429/5xx on a later page is retried and translated too.
        yield from self._call(
            f"list snapshots of {of or project_id}",
            lambda: list(self.snapshots.list(request=request, retry=NO_RETRY)),
        )

    def delete_snapshot(self, *, project_id: str, name: str, request_id: str) -> compute_v1.Operation:
        request = {"project": project_id, "snapshot": name, "request_id": request_id}
        return self._call(
            f"delete snapshot {SnapshotRef(project_id, name)}",
            lambda: self.snapshots.delete_unary(request=request, retry=NO_RETRY),
        )

    # ---- zonal or regional: one choice for every such call ---------------------------------------
    def _located(
        self, zonal: str, regional: str, zone: str | None, region: str | None, what: str = ""
    ) -> tuple[Any, dict[str, str], str]:
        """The client (the property named ``zonal`` for ``zone``, ``regional`` for ``region``), the
        request's location (``{"zone": Z}`` or ``{"region": R}``) and its path (``zones/Z`` or
        ``regions/R``). Only that client is built. Raises ValueError, naming ``what``, unless exactly one
        of ``zone`` (a zonal resource) and ``region`` (a regional one) is given."""
        if bool(zone) == bool(region):
            raise ValueError(
                f"{what + ': ' if what else ''}give exactly one of zone and region "
                f"(got zone={zone!r}, region={region!r})"
            )
        if zone:
            return getattr(self, zonal), {"zone": zone}, f"zones/{zone}"
        return getattr(self, regional), {"region": str(region)}, f"regions/{region}"

    # ---- instant snapshots (zonal: zone=..., regional: region=...) -------------------------------
    def _instant(self, zone: str | None, region: str | None) -> tuple[Any, dict[str, str], str]:
        return self._located(
            "instant_snapshots", "region_instant_snapshots", zone, region, "instant snapshot"
        )

    def insert_instant_snapshot(
        self,
        *,
        project_id: str,
        zone: str | None = None,
        region: str | None = None,
        name: str,
        source_disk: str,
        labels: dict[str, str],
        request_id: str,
        description: str | None = None,
    ) -> compute_v1.Operation:
        """instantSnapshots.insert (``zone``) or regionInstantSnapshots.insert (``region``): a zone or
        region operation. The disk must be in that zone or region."""
        client, where, scope = self._instant(zone, region)
        resource = compute_v1.InstantSnapshot(name=name, source_disk=source_disk, labels=labels)
        if description:
            resource.description = description
        request = {
            "project": project_id,
            **where,
            "instant_snapshot_resource": resource,
            "request_id": request_id,
        }
        return self._call(
            f"create instant snapshot projects/{project_id}/{scope}/instantSnapshots/{name} of {source_disk}",
            lambda: client.insert_unary(request=request, retry=NO_RETRY),
        )

    def get_instant_snapshot(
        self, *, project_id: str, zone: str | None = None, region: str | None = None, name: str
    ) -> compute_v1.InstantSnapshot | None:
        """The instant snapshot, or None if it does not exist."""
        client, where, scope = self._instant(zone, region)
        request = {"project": project_id, **where, "instant_snapshot": name}
        try:
            return self._call(
                f"get instant snapshot projects/{project_id}/{scope}/instantSnapshots/{name}",
                lambda: client.get(request=request, retry=NO_RETRY),
            )
        except ResourceNotFoundError:
            return None

    def list_instant_snapshots(
        self, *, project_id: str, zone: str | None = None, region: str | None = None, filter: str
    ) -> Iterator[compute_v1.InstantSnapshot]:
        """Every instant snapshot of that zone or region matching ``filter``, all pages."""
        client, where, scope = self._instant(zone, region)
        request = {"project": project_id, **where, **({"filter": filter} if filter else {})}
        yield from self._call(
            f"list instant snapshots in projects/{project_id}/{scope}",
            lambda: list(client.list(request=request, retry=NO_RETRY)),
        )

    def delete_instant_snapshot(
        self,
        *,
        project_id: str,
        zone: str | None = None,
        region: str | None = None,
        name: str,
        request_id: str,
    ) -> compute_v1.Operation:
        client, where, scope = self._instant(zone, region)
        request = {"project": project_id, **where, "instant_snapshot": name, "request_id": request_id}
        return self._call(
            f"delete instant snapshot projects/{project_id}/{scope}/instantSnapshots/{name}",
            lambda: client.delete_unary(request=request, retry=NO_RETRY),
        )

    def get_disk(
        self, *, project_id: str, zone: str | None = None, region: str | None = None, name: str
    ) -> compute_v1.Disk:
        """disks.get / regionDisks.get: the attached-disk entries of a VM do not carry the disk's type."""
        client, where, scope = self._located("disks", "region_disks", zone, region, f"get disk {name}")
        request = {"project": project_id, **where, "disk": name}
        return self._call(
            f"get disk projects/{project_id}/{scope}/disks/{name}",
            lambda: client.get(request=request, retry=NO_RETRY),
        )

    # ---- operations ----------------------------------------------------------------------------
    def get_operation(self, operation: compute_v1.Operation, *, wait_seconds: float) -> compute_v1.Operation:
        """Long-poll (``operations.wait``) the operation for up to ``wait_seconds``; its state then.

        Zonal (stop, start, resume, instant snapshots of zonal disks), regional (instant snapshots of
        regional disks) or global (snapshots insert and delete, zonal and regional disks alike): IAM grants
        exactly what is called (permissions.py)."""
        kind, location = scope_of(operation)
        project = project_of(operation)
        what = f"wait operation {operation.name} on {target_of(operation)}"
        if wait_seconds <= 0:
            raise ValueError(f"{what}: wait_seconds must be positive, not {wait_seconds}")
        if kind == "region" and not location:
            raise ApiError(f"{what}: the operation names no region")
        timeout = max(wait_seconds, SERVER_WAIT_HOLD) + 30
        if kind == "zone":
            client: Any = self.zone_operations
            request = {"project": project, "zone": location, "operation": operation.name}
        elif kind == "region":
            client = self.region_operations
            request = {"project": project, "region": location, "operation": operation.name}
        else:
            client = self.global_operations
            request = {"project": project, "operation": operation.name}
        return self._call(what, lambda: client.wait(request=request, retry=NO_RETRY, timeout=timeout))

    def wait_operation(self, operation: compute_v1.Operation, *, timeout: float) -> compute_v1.Operation:
        """Wait until DONE, at most ``timeout`` seconds (plus one server hold, about 2 minutes, for the
        last long-poll), then check it.

        Raises OperationFailedError / RateLimitedError when DONE with errors, and
        OperationTimeoutError when the deadline passes first.
        """
        deadline = time.monotonic() + timeout
        current = operation

        def timed_out(last: compute_v1.Operation) -> NoReturn:
            raise OperationTimeoutError(
                f"The {last.operation_type or ''} operation {last.name} on "
                f"{target_of(last)} did not finish within {timeout:.0f} seconds"
            )

        def long_poll() -> compute_v1.Operation:
            nonlocal current
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out(current)
            current = self.get_operation(current, wait_seconds=min(remaining, MAX_WAIT_CALL))
            return current

        if not is_done(operation):
            operation = poll_until(
                long_poll,
                is_done,
                deadline=deadline,
                pause=lambda remaining: None,  # the next long-poll is the pause
                on_timeout=timed_out,
                clock=time.monotonic,
                sleep=time.sleep,
            )
        raise_if_failed(operation)
        return operation
