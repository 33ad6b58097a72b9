"""Snapshot every disk of a VM: one deterministic name per disk and DAG run, adopted on retry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gce_vm_backup._base import RunKey, as_bool, check_choice
from gce_vm_backup.errors import BackupError, OperationFailedError
from gce_vm_backup.instance_ops import ConvergeSensor, _vm_path

READY_WHEN = ("READY", "UPLOADING")
SNAPSHOT_TYPES = ("STANDARD", "ARCHIVE")
PAST_CREATING = frozenset({"UPLOADING", "READY"})


class SnapshotDisksOperator(ConvergeSensor):
    """Snapshot every disk in the precheck's record, and wait until each is usable.

    Each snapshot's name is derived from the DAG run (naming.snapshot_name), so a retried, rescheduled or
    crashed task finds its own snapshot and adopts it instead of making a second one. Snapshots carry the
    project's labels (labels.managed_snapshot_labels: managed-by, ``deployment``, ``group``, instance, disk,
    location, disk key) plus the group's ``labels``. A snapshot of that name is adopted only when it
    carries this deployment's, group's and disk's labels AND its ``sourceDisk`` is the disk being backed
    up (and its ``sourceDiskId`` is the disk entry's ``id``, when the record has one).

    Done when every snapshot is READY, or, with ``ready_when="UPLOADING"`` (the early-restart opt-in), as
    soon as each has left CREATING: the disk may be written again, but the snapshot is not yet usable,
    so a verification task must still wait for READY.

    Returns a list of SnapshotRecord dicts. Raises OperationFailedError if the create operation ended
    with an error (RateLimitedError for the per-disk rate limit) or a snapshot turned FAILED (a FAILED
    snapshot of ours is deleted first, so the task's retry makes a fresh one), BackupError naming both
    disks if a snapshot of that name exists but is not this deployment's and group's snapshot of this
    disk, and ConfigError (at construction) for a bad ``deployment`` or ``group``.
    """

    template_fields: Sequence[str] = ("instance_record", "labels", "description")

    def __init__(
        self,
        *,
        deployment: str,
        group: str,
        labels: dict[str, str] | None = None,
        storage_locations: list[str] | None = None,
        snapshot_type: str | None = None,
        guest_flush: bool | str = False,
        description: str | None = None,
        ready_when: str = "READY",
        **kwargs: Any,
    ) -> None:
        from gce_vm_backup.labels import check_deployment, check_group

        super().__init__(**kwargs)
        self.deployment = check_deployment(deployment)
        check_group(group)
        check_choice(ready_when, READY_WHEN, name="ready_when")
        if snapshot_type is not None:
            check_choice(snapshot_type, SNAPSHOT_TYPES, name="snapshot_type")
        self.group, self.labels, self.storage_locations = group, labels or {}, storage_locations
        self.snapshot_type, self.guest_flush, self.description = snapshot_type, guest_flush, description
        self.ready_when = ready_when

    def poke(self, context: Any) -> Any:
        from airflow.sdk.bases.sensor import PokeReturnValue

        from gce_vm_backup.naming import snapshot_name

        record = self.record
        run = RunKey.from_context(context)
        results = []
        for disk in record["disks"]:
            if disk.get("carried_by"):  # shared with another VM of this run, whose backup snapshots it
                self.log.info(
                    "Disk %s: snapshotted by %s's backup in this run", disk["source"], disk["carried_by"]
                )
                continue
            self.failure_subject = f"snapshot of disk {disk['name']}"  # names the disk in the run report
            name = snapshot_name(
                instance=record["instance"],
                disk=disk["name"],
                zone_or_region=disk["location"],
                run_time=run.run_time,
                run_id=run.run_id,
                scope=f"{self.deployment}/{self.group}",
            )
            results.append(self._converge_disk(record, disk, name, run))
        self.failure_subject = None
        if all(
            item["status"] == "READY" or (self.ready_when == "UPLOADING" and item["status"] in PAST_CREATING)
            for item in results
        ):
            return PokeReturnValue(True, results)
        return False

    def _converge_disk(
        self, record: dict[str, Any], disk: dict[str, Any], name: str, run: RunKey
    ) -> dict[str, Any]:
        from gce_vm_backup.labels import disk_path, scope_mismatch

        hook, project = self.hook, record["project_id"]
        snapshot = hook.get_snapshot(project_id=project, name=name)
        if snapshot is None:
            self._create(record, disk, name, run)
            return self._result(disk, name, "CREATING", 0)
        mismatch = scope_mismatch(
            dict(snapshot.labels),
            snapshot.source_disk,
            disk["source"],
            deployment=self.deployment,
            group=self.group,
        )
        if mismatch is None and disk.get("id") and str(snapshot.source_disk_id) != str(disk["id"]):
            mismatch = (
                f"it was made from disk id {snapshot.source_disk_id or '(none)'}, not from id {disk['id']} "
                "(a disk of the same name, deleted and made again)"
            )
        if mismatch is not None:
            made_from = disk_path(snapshot.source_disk) if "projects/" in snapshot.source_disk else "(none)"
            if "made from disk" not in mismatch:
                mismatch += f"; it was made from disk {made_from}"
            raise BackupError(
                f"Snapshot projects/{project}/global/snapshots/{name} exists with this run's name but is not "
                f"gce-vm-backup's snapshot (deployment {self.deployment}, group {self.group}) of disk "
                f"{disk_path(disk['source'])}: {mismatch}; refusing to adopt or replace it"
            )
        status = snapshot.status
        if status == "FAILED":
            self._delete_failed(project, name, disk, run)
        self.log.info("Snapshot %s of %s is %s", name, disk["source"], status)
        return self._result(disk, name, status, int(snapshot.storage_bytes or 0))

    def _create(self, record: dict[str, Any], disk: dict[str, Any], name: str, run: RunKey) -> None:
        from google.cloud import compute_v1

        from gce_vm_backup.labels import managed_snapshot_labels
        from gce_vm_backup.operations import is_done, raise_if_failed

        labels = managed_snapshot_labels(
            deployment=self.deployment,
            group=self.group,
            instance=record["instance"],
            disk_source=disk["source"],
            extra=self.labels,
        )
        snapshot = compute_v1.Snapshot(
            name=name,
            source_disk=disk["source"],
            labels=labels,
            description=self.description or f"gce-vm-backup of {disk['source']} (VM {record['instance']})",
            guest_flush=as_bool(self.guest_flush, name="guest_flush"),
        )
        if self.storage_locations:
            snapshot.storage_locations = list(self.storage_locations)
        if self.snapshot_type:
            snapshot.snapshot_type = self.snapshot_type
        operation = self.hook.insert_snapshot(
            project_id=record["project_id"], snapshot=snapshot, request_id=run.request_id(name, "snapshot")
        )
        self.log.info("Creating snapshot %s of %s (operation %s)", name, disk["source"], operation.name)
        if is_done(operation):  # rate limits and quota errors arrive inside the operation
            raise_if_failed(operation)

    def _delete_failed(self, project: str, name: str, disk: dict[str, Any], run: RunKey) -> None:
        operation = self.hook.delete_snapshot(
            project_id=project, name=name, request_id=run.request_id(name, "delete-failed")
        )
        self.hook.wait_operation(operation, timeout=300)
        raise OperationFailedError(
            f"Snapshot {name} of disk {disk['source']} FAILED; it was deleted so that the task's retry can "
            "create it again",
            operation=operation.name,
            resource=f"projects/{project}/global/snapshots/{name}",
            codes=["SNAPSHOT_FAILED"],
        )

    def _result(self, disk: dict[str, Any], name: str, status: str, storage_bytes: int) -> dict[str, Any]:
        return {
            "vm": _vm_path(self.record),
            "disk": disk["name"],
            "disk_source": disk["source"],
            "snapshot": name,
            "status": status,
            "storage_bytes": storage_bytes,
        }

    def describe(self) -> str:
        return f"the snapshots of VM {_vm_path(self.record)}"
