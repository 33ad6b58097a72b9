"""Names, scopes and the ownership check of instant mode's resources (no Airflow, no Google: only labels)."""

from __future__ import annotations

from typing import Any

from gce_vm_backup.compute.paths import DiskRef
from gce_vm_backup.config.labels import INSTANT_TARGET_KEY

# The standard snapshot an instant snapshot is meant to become: lets a later run tell a converted leftover
# (its standard snapshot exists) from one whose conversion is still running. Reserved (labels.py).
TARGET_LABEL = INSTANT_TARGET_KEY


def disk_parts(disk_source: str) -> tuple[str, str, str, str]:
    """(project, "zones"|"regions", zone or region, name) of a disk path or URL."""
    disk = DiskRef.parse(disk_source)
    return disk.project, disk.kind, disk.location, disk.name


def instant_scope(disk_source: str) -> str:
    """Where the disk's instant snapshots live: ``projects/P/zones/Z`` or ``projects/P/regions/R``."""
    return DiskRef.parse(disk_source).location_path


def location_kwargs(scope: str) -> dict[str, str]:
    parts = scope.split("/")
    return {"project_id": parts[1], ("zone" if parts[2] == "zones" else "region"): parts[3]}


def standard_name(*, instance: str, disk: str, location: str, run: Any, deployment: str, group: str) -> str:
    """This run's standard snapshot name of the disk, exactly as standard mode names it."""
    from gce_vm_backup.compute.naming import snapshot_name

    return snapshot_name(
        instance=instance,
        disk=disk,
        zone_or_region=location,
        run_time=run.run_time,
        run_id=run.run_id,
        scope=f"{deployment}/{group}",
    )


def instant_name(*, instance: str, disk: str, location: str, run: Any, deployment: str, group: str) -> str:
    """This run's instant snapshot name of the disk: ``...-ips-...`` and hashed over another scope, so it
    never equals a standard snapshot's name of this or any run; the same for every try of the run."""
    from gce_vm_backup.compute.naming import snapshot_name

    return snapshot_name(
        instance=instance,
        disk=f"{disk}-ips",
        zone_or_region=location,
        run_time=run.run_time,
        run_id=run.run_id,
        scope=f"{deployment}/{group}#instant",
    )


def ownership_mismatch(item: Any, disk: dict[str, Any], *, deployment: str, group: str) -> str | None:
    """Why an instant snapshot is not this scope's of ``disk`` (labels, sourceDisk, sourceDiskId)."""
    from gce_vm_backup.config.labels import scope_mismatch

    why = scope_mismatch(
        dict(item.labels), item.source_disk, disk["source"], deployment=deployment, group=group
    )
    if why is None and disk.get("id") and str(item.source_disk_id) != str(disk["id"]):
        why = f"it was made from disk id {item.source_disk_id or '(none)'}, not from id {disk['id']}"
    return why
