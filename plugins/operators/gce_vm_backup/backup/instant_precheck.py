"""Which VMs can be backed up with instant snapshots: the disk types, and the ``instant_fallback`` rule
the precheck applies (``instant_ops.precheck_instant`` is the precheck's one call)."""

from __future__ import annotations

import logging
from typing import Any

from gce_vm_backup.backup.instant_names import disk_parts
from gce_vm_backup.errors import BackupError, VmStateError

_log = logging.getLogger(__name__)
# The disk types that can have instant snapshots, as in the emulator (gce_emulator.instant, which says
# where the list comes from and that it is unconfirmed): Persistent Disk and Hyperdisk Balanced (HA) and
# Extreme. A type outside it is refused at precheck, or backed up the standard way (instant_fallback).
INSTANT_DISK_TYPES = frozenset(
    {
        "pd-standard",
        "pd-balanced",
        "pd-ssd",
        "pd-extreme",
        "hyperdisk-balanced",
        "hyperdisk-balanced-high-availability",
        "hyperdisk-extreme",
    }
)
FALLBACKS = ("refuse", "standard")


def instant_capable(disk_type: str) -> bool:
    """Whether a disk of ``disk_type`` (a name such as ``pd-balanced`` or a diskTypes URL) can have
    instant snapshots."""
    return disk_type.rstrip("/").rsplit("/", 1)[-1] in INSTANT_DISK_TYPES


def disk_types(hook: Any, record: dict[str, Any]) -> dict[str, str]:
    """The type name of every disk of ``record`` this VM's backup carries (disk path -> type): a disk entry's
    ``type`` when the precheck put one there, else read with disks.get / regionDisks.get (a VM's
    attached-disk entries do not carry the type)."""
    types = {}
    for disk in record["disks"]:
        if disk.get("carried_by"):
            continue
        kind = disk.get("type")
        if not kind:
            project, where, location, name = disk_parts(disk["source"])
            scope = {"zone": location} if where == "zones" else {"region": location}
            kind = hook.get_disk(project_id=project, name=name, **scope).type_
        types[disk["source"]] = str(kind).rstrip("/").rsplit("/", 1)[-1]
    return types


def choose_mode(types: dict[str, str], *, vm: str, snapshot_mode: str, instant_fallback: str) -> str:
    """The snapshot mode this VM is backed up with: ``snapshot_mode`` unless it is ``instant`` and a disk's
    type cannot have instant snapshots; then ``standard`` for the whole VM (``instant_fallback:
    standard``), or VmStateError naming the disks and types (``refuse``, the default). ``types`` is
    ``disk_types(...)``."""
    if instant_fallback not in FALLBACKS:
        raise BackupError(f"instant_fallback must be one of {', '.join(FALLBACKS)}, not {instant_fallback!r}")
    if snapshot_mode != "instant":
        return snapshot_mode
    unable = {disk: kind for disk, kind in types.items() if not instant_capable(kind)}
    if not unable:
        return "instant"
    listed = ", ".join(f"{disk} ({kind})" for disk, kind in sorted(unable.items()))
    if instant_fallback == "standard":
        _log.warning("VM %s: no instant snapshots for %s; backing it up the standard way", vm, listed)
        return "standard"
    raise VmStateError(
        f"VM {vm}: snapshot_mode is instant but these disks cannot have instant snapshots: {listed} "
        f"(supported types: {', '.join(sorted(INSTANT_DISK_TYPES))}). Set 'instant_fallback: standard' to "
        "back such VMs up the standard way, or use 'snapshot_mode: standard' for the group."
    )
