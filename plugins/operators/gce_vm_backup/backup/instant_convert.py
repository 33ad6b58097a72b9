"""Task ``convert`` of ``snapshot_mode: instant``: each instant snapshot becomes this run's standard snapshot
of its disk, then goes. Imported as ``gce_vm_backup.backup.instant.ConvertInstantSnapshotsOperator``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gce_vm_backup.backup.instant_names import (
    disk_parts,
    instant_name,
    location_kwargs,
    ownership_mismatch,
    standard_name,
)
from gce_vm_backup.backup.plan import snapshot_description
from gce_vm_backup.compute.paths import SnapshotRef, VmRef
from gce_vm_backup.errors import BackupError, ConfigError, OperationFailedError, ResourceNotFoundError
from gce_vm_backup.runtime.base import RunKey, check_choice
from gce_vm_backup.runtime.links import ConsoleLinks
from gce_vm_backup.runtime.waits import SlotFreeWait

SNAPSHOT_TYPES = ("STANDARD", "ARCHIVE")
DELETE_TIMEOUT = 300.0  # seconds to wait for the deletion of a FAILED snapshot of ours


def instant_records(value: Any) -> list[dict[str, Any]]:
    """The downtime task's records (its result's ``snapshots``, or that result itself), checked. Raises
    ConfigError naming the parameter when they are not."""
    if isinstance(value, dict) and "snapshots" in value:
        value = value["snapshots"]
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(item, dict)
        and {"vm", "disk", "disk_source"} <= item.keys()
        and ({"instant_snapshot", "instant_scope"} <= item.keys() or "snapshot" in item)
        for item in value
    ):
        raise ConfigError(
            "The parameter 'instant_records' must be the downtime task's list of records (each with 'vm', "
            f"'disk', 'disk_source' and 'instant_snapshot' + 'instant_scope', or 'snapshot'), got {value!r}"
        )
    return value


class ConvertInstantSnapshotsOperator(ConsoleLinks, SlotFreeWait):
    """Convert each instant snapshot of this run into a standard (or archive) snapshot, wait until READY,
    then delete the instant snapshot; slot-free between looks (waits.SlotFreeWait: ``wait_mode``,
    ``timeout``, ``poke_interval``).

    The standard snapshot is ``snapshots.insert`` with ``sourceInstantSnapshot``, in the VM's project,
    named as this run's standard snapshot of the disk (naming.snapshot_name: what standard mode would have
    made), with the group's ``labels`` plus the reserved ones, ``storage_locations`` and
    ``snapshot_type``: retention treats it like any other. A snapshot of that name is adopted only when
    it is this scope's of the disk AND was made from this instant snapshot; an instant snapshot is
    converted only when it is this scope's of the disk. A record that is already a SnapshotRecord
    (``instant_fallback: standard`` backed that VM up the standard way) is waited for until READY.

    Returns SnapshotRecords (READY). Raises ResourceNotFoundError when an instant snapshot is gone before
    its conversion (deleted with its disk: nothing else is deleted), OperationFailedError when the
    conversion ended with an error or the snapshot turned FAILED (the instant snapshot is kept for the
    retry; a FAILED snapshot of ours is deleted first), BackupError for a name taken by something else,
    AirflowSensorTimeout past ``timeout``.
    """

    template_fields: Sequence[str] = ("instant_records", "instance_record", "labels", "description")

    def __init__(
        self,
        *,
        instant_records: Any,
        deployment: str,
        instance_record: Any = None,
        group: str,
        labels: dict[str, str] | None = None,
        storage_locations: list[str] | None = None,
        snapshot_type: str | None = None,
        description: str | None = None,
        **kwargs: Any,
    ) -> None:
        from gce_vm_backup.config.labels import check_deployment, check_group

        super().__init__(**kwargs)
        self.deployment, self.group = check_deployment(deployment), check_group(group)
        if snapshot_type is not None:
            check_choice(snapshot_type, SNAPSHOT_TYPES, name="snapshot_type")
        self.instant_records, self.labels, self.description = instant_records, labels or {}, description
        # the precheck's record: names the VM in messages; its manifest is each snapshot's description
        self.instance_record = instance_record
        self.storage_locations, self.snapshot_type = storage_locations, snapshot_type
        self._pending: list[str] = []

    def describe(self) -> str:
        vms = sorted({str(item["vm"]) for item in instant_records(self.instant_records)})
        record = self.instance_record if isinstance(self.instance_record, dict) else {}
        if not vms and record.get("instance"):
            vms = [VmRef(record["project_id"], record["zone"], record["instance"]).path]
        return f"the instant snapshots of {', '.join(vms) or 'no VM'}"

    def pending(self) -> str:
        return "; ".join(self._pending)

    def poke(self, context: Any) -> Any:
        from airflow.sdk.bases.sensor import PokeReturnValue

        run = RunKey.from_context(context, deployment=self.deployment)
        done, pending = [], []
        for item in instant_records(self.instant_records):
            self.failure_subject = f"conversion of disk {item['disk']}"  # names the disk in the run report
            record, waiting = self._converge(item, run)
            if waiting:
                pending.append(waiting)
            else:
                done.append(record)
        self.failure_subject = None
        self._pending = pending
        if pending:
            self.log.info("Waiting for: %s", "; ".join(pending))
            return False
        self.console_snapshots = done  # the task's "Snapshots" link (links.py)
        return PokeReturnValue(True, done)

    def _converge(self, item: dict[str, Any], run: RunKey) -> tuple[dict[str, Any], str]:
        """(the SnapshotRecord, "" when done, else what it waits for); acts when something is missing."""
        location = disk_parts(item["disk_source"])[2]
        vm = VmRef.parse(item["vm"])
        project = vm.project  # snapshots are made in the VM's project, as in standard mode
        names = dict(instance=vm.name, disk=item["disk"], location=location, run=run)
        if "instant_snapshot" not in item:  # backed up the standard way (instant_fallback: standard)
            name, source = str(item["snapshot"]), ""
        else:
            name = standard_name(**names, deployment=self.deployment, group=self.group)
            expected = instant_name(**names, deployment=self.deployment, group=self.group)
            if item["instant_snapshot"] != expected:
                raise BackupError(
                    f"Instant record of disk {item['disk_source']} names {item['instant_snapshot']}, not "
                    f"this run's instant snapshot {expected}; refusing to convert it"
                )
            source = f"{item['instant_scope']}/instantSnapshots/{item['instant_snapshot']}"
        snapshot = self.hook.get_snapshot(project_id=project, name=name)
        record = {
            "vm": item["vm"],
            "disk": item["disk"],
            "disk_source": item["disk_source"],
            "snapshot": name,
            "status": "CREATING",
            "storage_bytes": 0,
        }
        if snapshot is None:
            if not source:
                raise ResourceNotFoundError(
                    f"Snapshot {SnapshotRef(project, name)} of disk {item['disk_source']} no "
                    "longer exists; this run has no usable backup of that disk"
                )
            return record, self._convert(item, project, name, source, run)
        self._check_snapshot(snapshot, item, project, name, source)
        record.update(status=str(snapshot.status), storage_bytes=int(snapshot.storage_bytes or 0))
        if snapshot.status == "FAILED":
            self._delete_failed(project, name, item, run)
        if snapshot.status != "READY":
            return record, f"snapshot {name} of disk {item['disk_source']} ({snapshot.status})"
        if not source:
            return record, ""
        return record, self._delete_converted(item, source, run)

    def _instant(self, item: dict[str, Any]) -> Any:
        return self.hook.get_instant_snapshot(
            **location_kwargs(item["instant_scope"]), name=item["instant_snapshot"]
        )

    def _convert(self, item: dict[str, Any], project: str, name: str, source: str, run: RunKey) -> str:
        from google.cloud import compute_v1

        from gce_vm_backup.compute.operations import is_done, raise_if_failed
        from gce_vm_backup.config.labels import managed_snapshot_labels, run_label

        instant = self._instant(item)
        if instant is None:
            raise ResourceNotFoundError(
                f"Instant snapshot {source} of disk {item['disk_source']} no longer exists (an instant "
                "snapshot is deleted with its disk), so it cannot be converted: this run has no backup of "
                "that disk. Nothing was deleted."
            )
        disk = {"source": item["disk_source"]}
        why = ownership_mismatch(instant, disk, deployment=self.deployment, group=self.group)
        if why is not None:
            raise BackupError(
                f"Instant snapshot {source} is not this backup's of disk {item['disk_source']}: {why}"
            )
        if instant.status == "CREATING":
            return f"instant snapshot {source} (CREATING)"
        if instant.status != "READY":
            raise OperationFailedError(
                f"Instant snapshot {source} of disk {item['disk_source']} is {instant.status}: it cannot be "
                "converted; it is kept",
                operation="",
                resource=source,
                codes=[f"INSTANT_SNAPSHOT_{instant.status}"],
            )
        labels = managed_snapshot_labels(
            deployment=self.deployment,
            group=self.group,
            instance=VmRef.parse(item["vm"]).name,
            disk_source=item["disk_source"],
            extra=self.labels,
            run=run_label(run.dag_id, run.run_id),
        )
        snapshot = compute_v1.Snapshot(
            name=name,
            labels=labels,
            description=snapshot_description(  # the VM's manifest (restore_sets groups by it)
                self.instance_record if isinstance(self.instance_record, dict) else {},
                disk,
                fallback=self.description or f"gce-vm-backup of {item['disk_source']} (VM {item['vm']})",
            ),
        )
        if self.storage_locations:
            snapshot.storage_locations = list(self.storage_locations)
        if self.snapshot_type:
            snapshot.snapshot_type = self.snapshot_type
        operation = self.hook.insert_snapshot(
            project_id=project,
            snapshot=snapshot,
            request_id=run.request_id(name, "convert"),
            source_instant_snapshot=source,
        )
        self.log.info("Converting %s into snapshot %s (operation %s)", source, name, operation.name)
        if is_done(operation):  # a failure may be in the operation at once; the instant snapshot is kept
            raise_if_failed(operation)
        return f"snapshot {name} of disk {item['disk_source']} (conversion sent)"

    def _check_snapshot(
        self, snapshot: Any, item: dict[str, Any], project: str, name: str, source: str
    ) -> None:
        from gce_vm_backup.config.labels import disk_path, scope_mismatch

        why = scope_mismatch(
            dict(snapshot.labels),
            snapshot.source_disk,
            item["disk_source"],
            deployment=self.deployment,
            group=self.group,
        )
        made_from = snapshot.source_instant_snapshot
        if why is None and source and (not made_from or disk_path(made_from) != source):
            why = (
                f"it was not made from instant snapshot {source} (but from {made_from or 'the disk itself'})"
            )
        if why is not None:
            raise BackupError(
                f"Snapshot {SnapshotRef(project, name)} exists with this run's name but is not "
                f"gce-vm-backup's (deployment {self.deployment}, group {self.group}) snapshot of disk "
                f"{item['disk_source']}: {why}; refusing to adopt or replace it"
            )

    def _delete_failed(self, project: str, name: str, item: dict[str, Any], run: RunKey) -> None:
        operation = self.hook.delete_snapshot(
            project_id=project, name=name, request_id=run.request_id(name, "delete-failed")
        )
        self.hook.wait_operation(operation, timeout=DELETE_TIMEOUT)
        raise OperationFailedError(
            f"Snapshot {name} of disk {item['disk_source']} FAILED; it was deleted so that the task's retry "
            "converts again (the instant snapshot is kept)",
            operation=operation.name,
            resource=SnapshotRef(project, name).path,
            codes=["SNAPSHOT_FAILED"],
        )

    def _delete_converted(self, item: dict[str, Any], source: str, run: RunKey) -> str:
        """ "" once the converted instant snapshot is gone; deletes it (once) otherwise."""
        instant = self._instant(item)
        if instant is None:
            return ""
        if instant.status != "DELETING":
            operation = self.hook.delete_instant_snapshot(
                **location_kwargs(item["instant_scope"]),
                name=item["instant_snapshot"],
                request_id=run.request_id(source, "delete-converted"),
            )
            self.log.info(
                "Snapshot of %s READY: deleting %s (operation %s)",
                item["disk_source"],
                source,
                operation.name,
            )
        return f"deletion of the converted instant snapshot {source}"
