"""``RestoreHook``: the Compute Engine calls of restores and drills, retried and bounded like the backup's.

A subclass of ComputeBackupHook (same connection, endpoint, retries and typed errors), adding disks made
from snapshots, VMs made from disks, attach/detach, and what the guest shows. Its clients name
``gce-vm-backup-restore/<version>`` (permissions.RESTORE_CLIENT_PRODUCT), so the emulator's call log
keeps the restore's API methods apart from the backup's: each set must equal its own IAM role
(permissions.py; the pytest plugin checks it over a full test session), and the backup role never gains
a create or a delete of a VM or a disk. Every mutation takes a ``request_id`` (retried safely: the server
ignores a repeat) and returns the Operation for ``wait_operation``; zonal disks and VMs have zone
operations, regional disks region operations (this hook waits on those too).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from google.cloud import compute_v1

from gce_vm_backup.compute.hook import NO_RETRY, ComputeBackupHook
from gce_vm_backup.compute.paths import DiskRef, SnapshotRef, VmRef
from gce_vm_backup.compute.permissions import RESTORE_CLIENT_PRODUCT
from gce_vm_backup.errors import ResourceNotFoundError


class RestoreHook(ComputeBackupHook):
    """Compute Engine calls for restores and drills. Connection, project and impersonation as the backup
    hook's (GoogleBaseHook); a restore service account is used through ``impersonation_chain``."""

    # Every client (disks, region_disks, region_operations, ... : the backup hook's properties) names
    # the restore product in its x-goog-api-client header; calls, retries and typed errors are the
    # backup hook's (_call, _label_call, _located, get_operation and wait_operation).
    client_product: ClassVar[str] = RESTORE_CLIENT_PRODUCT

    def _disk_client(self, zone: str | None, region: str | None, what: str) -> tuple[Any, dict[str, str]]:
        client, location, _ = self._located("disks", "region_disks", zone, region, what)
        return client, location

    @staticmethod
    def _disk_path(project_id: str, zone: str | None, region: str | None, name: str) -> str:
        return DiskRef.of(project_id, zone, region, name).path

    # ---- disks ---------------------------------------------------------------------------------
    def insert_disk(
        self,
        *,
        project_id: str,
        zone: str | None = None,
        region: str | None = None,
        name: str,
        source_snapshot: str,
        disk_type: str | None = None,
        size_gb: int | None = None,
        labels: dict[str, str],
        replica_zones: list[str] | None = None,
        request_id: str,
    ) -> compute_v1.Operation:
        """disks.insert (``zone``) or regionDisks.insert (``region``, with ``replica_zones``) from
        ``source_snapshot`` (a ``projects/P/global/snapshots/S`` path or URL). ``disk_type`` is a type
        name (pd-balanced) or a URL; ``size_gb`` None takes the snapshot's size. Raises ValueError for
        contradictory arguments, ResourceNotFoundError when the snapshot is gone, ApiError otherwise
        (e.g. HTTP 400 for a snapshot that is not READY, 409 for a taken name)."""
        what = f"create disk {self._disk_path(project_id, zone, region, name)} from {source_snapshot}"
        client, location = self._disk_client(zone, region, what)
        if region and not replica_zones:
            raise ValueError(f"{what}: a regional disk needs replica_zones")
        if zone and replica_zones:
            raise ValueError(f"{what}: a zonal disk takes no replica_zones")
        disk = compute_v1.Disk(name=name, source_snapshot=source_snapshot, labels=dict(labels))
        if disk_type:
            scope = f"zones/{zone}" if zone else f"regions/{region}"
            disk.type_ = (
                disk_type if "/" in disk_type else f"projects/{project_id}/{scope}/diskTypes/{disk_type}"
            )
        if size_gb is not None:
            disk.size_gb = size_gb
        if replica_zones:
            disk.replica_zones = [
                z if "/" in z else f"projects/{project_id}/zones/{z}" for z in replica_zones
            ]
        request = {"project": project_id, **location, "disk_resource": disk, "request_id": request_id}
        return self._call(what, lambda: client.insert_unary(request=request, retry=NO_RETRY))

    # c-instant's branch gives ComputeBackupHook a get_disk that raises ResourceNotFoundError; restore
    # asks "is it there yet?" at every idempotent step, so here a missing disk is None (RESTORE.md).
    def get_disk(  # type: ignore[override, unused-ignore]
        self, *, project_id: str, zone: str | None = None, region: str | None = None, name: str
    ) -> compute_v1.Disk | None:
        """The disk, or None if it does not exist (unlike the backup hook's, which raises)."""
        what = f"get disk {self._disk_path(project_id, zone, region, name)}"
        client, location = self._disk_client(zone, region, what)
        request = {"project": project_id, **location, "disk": name}
        try:
            return self._call(what, lambda: client.get(request=request, retry=NO_RETRY))
        except ResourceNotFoundError:
            return None

    def list_disks(
        self, *, project_id: str, zone: str | None = None, region: str | None = None, filter: str | None
    ) -> Iterator[compute_v1.Disk]:
        """Every disk of the zone or region matching ``filter`` (see labels.label_filter), all pages."""
        scope = f"zones/{zone}" if zone else f"regions/{region}"
        what = f"list disks in projects/{project_id}/{scope}"
        client, location = self._disk_client(zone, region, what)
        request: dict[str, Any] = {"project": project_id, **location}
        if filter:
            request["filter"] = filter
        yield from self._call(what, lambda: list(client.list(request=request, retry=NO_RETRY)))

    def delete_disk(
        self,
        *,
        project_id: str,
        zone: str | None = None,
        region: str | None = None,
        name: str,
        request_id: str,
    ) -> compute_v1.Operation:
        """disks.delete / regionDisks.delete. Raises ResourceNotFoundError when it is gone already,
        ApiError for a disk still attached (HTTP 400 resourceInUseByAnotherResource)."""
        what = f"delete disk {self._disk_path(project_id, zone, region, name)}"
        client, location = self._disk_client(zone, region, what)
        request = {"project": project_id, **location, "disk": name, "request_id": request_id}
        return self._call(what, lambda: client.delete_unary(request=request, retry=NO_RETRY))

    def set_disk_labels(
        self,
        *,
        project_id: str,
        zone: str | None = None,
        region: str | None = None,
        name: str,
        labels: dict[str, str],
        label_fingerprint: str,
        request_id: str,
    ) -> compute_v1.Operation:
        """disks.setLabels / regionDisks.setLabels: ``labels`` replace the disk's labels (pass the old
        ones merged in to keep them); ``label_fingerprint`` is the one read with the disk. Raises ApiError
        with HTTP 412 when the labels changed since (read the disk again)."""
        what = f"set labels of disk {self._disk_path(project_id, zone, region, name)}"
        client, location = self._disk_client(zone, region, what)
        request: dict[str, Any] = {
            "project": project_id,
            **location,
            "resource": name,
            "request_id": request_id,
        }
        if zone:
            request["zone_set_labels_request_resource"] = compute_v1.ZoneSetLabelsRequest(
                labels=dict(labels), label_fingerprint=label_fingerprint
            )
        else:
            request["region_set_labels_request_resource"] = compute_v1.RegionSetLabelsRequest(
                labels=dict(labels), label_fingerprint=label_fingerprint
            )
        return self._call(what, lambda: client.set_labels_unary(request=request, retry=NO_RETRY))

    # ---- snapshots -----------------------------------------------------------------------------
    def set_snapshot_labels(
        self, *, project_id: str, name: str, labels: dict[str, str], label_fingerprint: str
    ) -> compute_v1.Operation:
        """snapshots.setLabels (a global operation): ``labels`` replace the snapshot's labels (pass the old
        ones merged in to keep them); ``label_fingerprint`` is the one read with the snapshot. The method
        takes no request id: a repeat with the same fingerprint is refused once the first one applied.
        Raises ResourceNotFoundError when the snapshot is gone, LabelsChangedError (HTTP 412) when its
        labels changed since (read it again)."""
        request = {
            "project": project_id,
            "resource": name,
            "global_set_labels_request_resource": compute_v1.GlobalSetLabelsRequest(
                labels=dict(labels), label_fingerprint=label_fingerprint
            ),
        }
        return self._label_call(
            f"set labels of snapshot {SnapshotRef(project_id, name)}",
            lambda: self.snapshots.set_labels_unary(request=request, retry=NO_RETRY),
        )

    # ---- instances -----------------------------------------------------------------------------
    @staticmethod
    def _vm(project_id: str, zone: str, name: str) -> str:
        return VmRef(project_id, zone, name).path

    def insert_instance(
        self, *, project_id: str, zone: str, instance: compute_v1.Instance, request_id: str
    ) -> compute_v1.Operation:
        """instances.insert of ``instance`` (its disks existing ones, by ``source``). The operation can be
        DONE before the VM is RUNNING: read its status. Raises ApiError for a taken name (409) or a disk
        another VM uses (400 resourceInUseByAnotherResource)."""
        request = {
            "project": project_id,
            "zone": zone,
            "instance_resource": instance,
            "request_id": request_id,
        }
        return self._call(
            f"create VM {VmRef(project_id, zone, instance.name)}",
            lambda: self.instances.insert_unary(request=request, retry=NO_RETRY),
        )

    def delete_instance(
        self, *, project_id: str, zone: str, name: str, request_id: str
    ) -> compute_v1.Operation:
        """instances.delete: disks attached with autoDelete go with the VM, the others stay."""
        return self._instance_action(
            "delete", project_id=project_id, zone=zone, name=name, request_id=request_id
        )

    def attach_disk(
        self,
        *,
        project_id: str,
        zone: str,
        instance: str,
        attached_disk: compute_v1.AttachedDisk,
        request_id: str,
    ) -> compute_v1.Operation:
        """instances.attachDisk. A boot disk attaches only to a TERMINATED VM without one (ApiError,
        HTTP 400 invalidResourceUsage, otherwise)."""
        request = {
            "project": project_id,
            "zone": zone,
            "instance": instance,
            "attached_disk_resource": attached_disk,
            "request_id": request_id,
        }
        return self._call(
            f"attach disk {attached_disk.source} to VM {self._vm(project_id, zone, instance)}",
            lambda: self.instances.attach_disk_unary(request=request, retry=NO_RETRY),
        )

    def detach_disk(
        self, *, project_id: str, zone: str, instance: str, device_name: str, request_id: str
    ) -> compute_v1.Operation:
        """instances.detachDisk by device name. The boot disk detaches only from a TERMINATED VM (ApiError,
        HTTP 400 invalidResourceUsage, otherwise)."""
        request = {
            "project": project_id,
            "zone": zone,
            "instance": instance,
            "device_name": device_name,
            "request_id": request_id,
        }
        return self._call(
            f"detach disk {device_name} from VM {VmRef(project_id, zone, instance)}",
            lambda: self.instances.detach_disk_unary(request=request, retry=NO_RETRY),
        )

    def get_guest_attributes(
        self, *, project_id: str, zone: str, instance: str, query_path: str
    ) -> compute_v1.GuestAttributes | None:
        """The guest attributes under ``query_path`` (``namespace/`` or ``namespace/key``), or None when
        there are none (yet): guest attributes disabled, not written, or the VM not running."""
        request = {"project": project_id, "zone": zone, "instance": instance, "query_path": query_path}
        try:
            return self._call(
                f"get guest attributes {query_path} of VM {self._vm(project_id, zone, instance)}",
                lambda: self.instances.get_guest_attributes(request=request, retry=NO_RETRY),
            )
        except ResourceNotFoundError:
            return None

    def get_serial_port_output(
        self, *, project_id: str, zone: str, instance: str, start: int = 0
    ) -> compute_v1.SerialPortOutput:
        """Serial port 1 from byte ``start``; pass the answer's ``next_`` as the next ``start``."""
        request = {"project": project_id, "zone": zone, "instance": instance, "port": 1, "start": start}
        return self._call(
            f"get serial port output of VM {VmRef(project_id, zone, instance)}",
            lambda: self.instances.get_serial_port_output(request=request, retry=NO_RETRY),
        )
