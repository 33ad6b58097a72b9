"""What a backup of one VM will do, computed in one place: its disks, their snapshot names, its states.

The resolve task's dry run, the precheck and the capture step all call these functions, so the plan a
dry run shows is the plan a real run follows. A leaf module: it imports neither Airflow nor Google, nor
any operator module (every operator module may import it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gce_vm_backup.compute.paths import DiskRef, VmRef

RESTARTABLE = "RUNNING"
# States a backup may begin from. A VM in transition (STAGING, STOPPING, REPAIRING...) is refused:
# we could not tell afterwards which state to give back.
STARTING_STATES = frozenset({"RUNNING", "TERMINATED"})
SUSPENDED_STATES = frozenset({"SUSPENDED", "SUSPENDING"})
STOPPING_STATES = frozenset({"PENDING_STOP", "STOPPING"})
# What a tier maps over when it has no VM this run (or in a dry run): every task passes it through.
NO_VM: dict[str, Any] = {"project_id": "", "zone": "", "instance": "", "disks": None, "carried_by": {}}
NO_VM_STATUS = "NO_VM"
NO_VM_RECORD: dict[str, Any] = {**NO_VM, "prior_status": NO_VM_STATUS, "has_local_ssd": False, "disks": []}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def vm_path(record: dict[str, Any]) -> str:
    """``projects/P/zones/Z/instances/I`` of a target, a resolved VM or an InstanceRecord."""
    return VmRef(record["project_id"], record["zone"], record["instance"]).path


def persistent_disks(instance: Any) -> list[str]:
    """The paths of a VM's persistent disks (local SSDs left out), from a compute_v1.Instance."""
    return [disk_entry(disk)["source"] for disk in instance.disks if disk.type_ != "SCRATCH"]


def disk_entry(attached: Any) -> dict[str, Any]:
    """One attached persistent disk (compute_v1.AttachedDisk) as the InstanceRecord keeps it:
    ``{"name", "source", "boot", "size_gb", "location", "regional"}``."""
    disk = DiskRef.parse(attached.source)
    return {
        "name": disk.name,
        "source": disk.path,
        "boot": bool(attached.boot),
        "size_gb": int(attached.disk_size_gb or 0),
        "location": disk.location,
        "regional": disk.regional,
    }


def backed_up_disks(
    instance: Any, *, vm: str, wanted: list[str] | None, carried_by: dict[str, str] | None
) -> list[dict[str, Any]]:
    """The disk entries a backup of ``instance`` covers: every persistent disk, or the ``wanted`` subset;
    a disk that another VM's backup of this run snapshots (``carried_by``: disk path -> VM path) carries
    ``"carried_by": <VM path>`` (capture, verify and retention of this VM leave it out).

    Raises ConfigError when ``wanted`` names a disk that is not attached.
    """
    from gce_vm_backup.errors import ConfigError

    attached = [disk_entry(disk) for disk in instance.disks if disk.type_ != "SCRATCH"]
    if wanted:
        known = {str(disk["name"]) for disk in attached}
        missing = [name for name in wanted if name not in known]
        if missing:
            raise ConfigError(
                f"The parameter 'disks' of VM {vm} names disk(s) not attached to it: "
                f"{', '.join(missing)}. Attached: {', '.join(sorted(known))}"
            )
        attached = [disk for disk in attached if disk["name"] in wanted]
    for entry in attached:
        carrier = (carried_by or {}).get(str(entry["source"]))
        if carrier and carrier != vm:
            entry["carried_by"] = carrier
    return attached


def planned_snapshot_name(
    *, instance: str, disk: dict[str, Any], run: Any, deployment: str, group: str
) -> str:
    """This run's snapshot name of ``disk`` (a disk entry): the same for every try, so a retry adopts it.
    ``run`` is the task's RunKey (run id and run time)."""
    from gce_vm_backup.compute.naming import snapshot_name

    return snapshot_name(
        instance=instance,
        disk=disk["name"],
        zone_or_region=disk["location"],
        run_time=run.run_time,
        run_id=run.run_id,
        scope=f"{deployment}/{group}",
    )


def snapshot_record(
    record: dict[str, Any], disk: dict[str, Any], name: str, status: str, storage_bytes: int
) -> dict[str, Any]:
    """A SnapshotRecord: ``{"vm", "disk", "disk_source", "snapshot", "status", "storage_bytes"}``."""
    return {
        "vm": vm_path(record),
        "disk": disk["name"],
        "disk_source": disk["source"],
        "snapshot": name,
        "status": status,
        "storage_bytes": storage_bytes,
    }


def disk_details(hook: Any, instance: Any) -> dict[str, dict[str, str]]:
    """``{"id", "type"}`` (the type's name) of every persistent disk attached to ``instance``, by path: one
    disks.get / regionDisks.get each (a VM's attached-disk entries carry neither). Raises the hook's
    ApiError (ResourceNotFoundError for a disk deleted meanwhile)."""
    details = {}
    for source in persistent_disks(instance):
        ref = DiskRef.parse(source)
        disk = hook.get_disk(project_id=ref.project, name=ref.name, **ref.where)
        details[source] = {"id": str(disk.id), "type": str(disk.type_).rstrip("/").rsplit("/", 1)[-1]}
    return details


def vm_manifest_of(
    instance: Any,
    *,
    project: str,
    zone: str,
    disks: list[dict[str, Any]],
    details: dict[str, dict[str, str]] | None = None,
    note: str | None = None,
    metadata_values: bool = False,
) -> dict[str, Any]:
    """The VM's manifest (``vm_manifest.build``) as the InstanceRecord keeps it: every attached persistent
    disk (with its ``id`` and ``type`` from ``details``, see ``disk_details``), ``"covered": false`` on each
    one this VM's backup does not snapshot (not in ``disks``, the backed-up disk entries, or carried by
    another VM), the group's snapshot description as ``note``.

    When the description of one of its snapshots cannot hold the manifest even without its rebuild spec
    (a VM with many disks), the disk entries are made lean: ``LEAN_DISK_FIELDS`` are left out in order
    (named in the manifest's ``lean``) until it fits. Raises VmStateError, naming the VM, when even the
    disk paths and boot flags do not fit: the backup refuses the VM before anything is stopped, rather
    than make snapshots no restore can place.
    """
    from gce_vm_backup.config import manifest as vm_manifest
    from gce_vm_backup.errors import VmStateError

    manifest = vm_manifest.build(
        instance,
        project=project,
        zone=zone,
        disk_details=details,
        metadata_values=metadata_values,
        note=note,
    )
    covered = {str(disk["source"]) for disk in disks if not disk.get("carried_by")}
    for entry in manifest["disks"]:
        if entry["source"] not in covered:
            entry["covered"] = False
    problem = _fits(manifest, covered)
    for fields in LEAN_DISK_FIELDS:
        if problem is None:
            break
        # Too many disks for the full entries: leave out what only a rebuild's fidelity needs, never
        # what a set needs (path, boot flag, covered), and say so in the manifest.
        for entry in manifest["disks"]:
            for key in fields:
                if key != "mode" or entry.get("mode") == "READ_WRITE":  # READ_WRITE is parse's default
                    entry.pop(key, None)
        manifest["lean"] = [*manifest.get("lean", []), *fields]
        problem = _fits(manifest, covered)
    if problem is not None:
        raise VmStateError(
            f"VM {VmRef(project, zone, manifest['vm']['name'])} cannot be backed up: "
            f"{problem}. Its snapshots would carry no record of the VM, so no restore could place them."
        )
    return manifest


# The disk entries' fields left out, in this order, of a manifest whose disk list does not fit in a
# snapshot description otherwise (named in the manifest's ``lean``).
LEAN_DISK_FIELDS = (("type",), ("id",), ("device", "mode"))


def _fits(manifest: dict[str, Any], covered: set[str]) -> str | None:
    from gce_vm_backup.config import manifest as vm_manifest

    try:
        for source in sorted(covered):
            vm_manifest.describe(manifest, disk_source=source)
    except ValueError as exc:
        return str(exc)
    return None


def snapshot_description(record: dict[str, Any], disk: dict[str, Any], *, fallback: str) -> str:
    """The description of this run's snapshot of ``disk``: the VM's manifest (``vm_manifest.describe``)
    from the InstanceRecord, or ``fallback`` for a record without one."""
    from gce_vm_backup.config import manifest as vm_manifest

    manifest = record.get("manifest")
    if not manifest:
        return fallback
    return vm_manifest.describe(manifest, disk_source=str(disk["source"]))
