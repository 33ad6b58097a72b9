"""Snapshot sets: every snapshot of one VM made by one backup run, the unit drills and restores take whole.

A snapshot belongs to a set by its labels (labels.py): ``managed-by=gce-vm-backup``, the deployment, the
group, the instance and the run (``gce-vm-backup-run``, ``labels.run_label(dag_id, run_id)``). A snapshot
without the run label (made before it existed) is grouped by the run timestamp in its name
(``naming.snapshot_name``: ``<stem>-<YYYYmmddHHMMSS>-<hash8>``) with the same group and instance labels.
Snapshots of another deployment or group, or without the instance label, are left out: the list filter
asked for them, and this checks what it promised.

A set is COMPLETE when it holds a READY snapshot of every disk in it (the disks are known only from the
set's own snapshots, by ``sourceDisk``: a disk whose snapshot was never created, or was deleted after its
operation failed, is not seen); it is READY when every snapshot in it is READY. ``snapshot_sets`` gives,
per VM (``projects/P/zones/Z/instances/I``), its sets newest first. The VM's zone is that of its zonal
disks; a VM with only regional disks is named ``projects/P/regions/R/instances/I`` (no snapshot records
its zone). Imports no Google library: the input is any object with the Snapshot resource's fields
(``compute_v1.Snapshot`` or the REST JSON dict).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gce_vm_backup.labels import (
    DEPLOYMENT_KEY,
    GROUP_KEY,
    INSTANCE_KEY,
    MANAGED_BY_KEY,
    MANAGED_BY_VALUE,
    RUN_KEY,
    disk_path,
    label_value,
)

BOOT_KEY = "gce-vm-backup-boot"  # "true" on the boot disk's snapshot, when the backup path records it
NAME_STAMP = re.compile(r"-(\d{14})-[0-9a-f]{8}$")
READY = "READY"
_FIELDS = {  # attribute of compute_v1.Snapshot -> key of the REST JSON
    "name": "name",
    "labels": "labels",
    "status": "status",
    "source_disk": "sourceDisk",
    "storage_bytes": "storageBytes",
    "creation_timestamp": "creationTimestamp",
    "self_link": "selfLink",
}


@dataclass(frozen=True)
class SetSnapshot:
    """One disk's snapshot in a set."""

    name: str
    disk: str  # the disk's name
    disk_source: str  # projects/P/(zones|regions)/L/disks/D
    status: str
    storage_bytes: int
    created_at: datetime | None
    boot: bool | None  # None: not recorded on the snapshot


@dataclass(frozen=True)
class SnapshotSet:
    """Every snapshot of one VM from one backup run, one entry per snapshot (disk name order)."""

    run: str  # the gce-vm-backup-run label, or "stamp-<YYYYmmddHHMMSS>" from the names
    created_at: datetime  # the earliest creationTimestamp of its snapshots
    vm: str
    snapshots: tuple[SetSnapshot, ...]
    complete: bool  # a READY snapshot of every disk in the set
    ready: bool  # every snapshot READY

    @property
    def disks(self) -> tuple[str, ...]:
        """The disks' ``projects/...`` paths, each once, sorted."""
        return tuple(sorted({s.disk_source for s in self.snapshots}))

    @property
    def storage_bytes(self) -> int:
        return sum(s.storage_bytes for s in self.snapshots)

    @property
    def status(self) -> str:
        """READY when complete; else the statuses that are not READY (``FAILED``, ``CREATING+FAILED``)."""
        if self.complete and self.ready:
            return READY
        other = sorted({s.status for s in self.snapshots if s.status != READY})
        return "+".join(other) if other else "INCOMPLETE"


def _get(snapshot: Any, attribute: str) -> Any:
    if isinstance(snapshot, Mapping):
        return snapshot.get(_FIELDS[attribute], snapshot.get(attribute))
    return getattr(snapshot, attribute, None)


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (``2026-11-24T03:00:01.123-08:00`` or ``...Z``) as an aware datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def name_stamp(name: str) -> datetime | None:
    """The run time in a snapshot name made by ``naming.snapshot_name``, or None."""
    match = NAME_STAMP.search(name)
    if not match:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def _project(snapshot: Any, source: str | None) -> str | None:
    for text in (_get(snapshot, "self_link"), source):
        if text and "projects/" in str(text):
            return str(text).split("projects/", 1)[1].split("/", 1)[0]
    return None


def _vm_path(project: str, instance: str, sources: Iterable[str]) -> str:
    """The VM's path: the zone of a zonal disk of the set; else the region of a regional one."""
    scopes = sorted({tuple(source.split("/")[2:4]) for source in sources})
    zonal = [location for kind, location in scopes if kind == "zones"]
    if zonal:
        return f"projects/{project}/zones/{zonal[0]}/instances/{instance}"
    kind, location = scopes[0] if scopes else ("zones", "unknown")
    return f"projects/{project}/{kind}/{location}/instances/{instance}"


def snapshot_sets(snapshots: Iterable[Any], *, group: str, deployment: str) -> dict[str, list[SnapshotSet]]:
    """The snapshot sets of the group's VMs, per VM path, newest first. Raises nothing: a snapshot that
    is not this deployment's and group's, or lacks its instance label or a usable ``sourceDisk``, is
    left out."""
    wanted_group = label_value(group)
    members: dict[tuple[str, str, str], list[tuple[Any, str, str]]] = {}
    for snapshot in snapshots:
        labels = dict(_get(snapshot, "labels") or {})
        if (
            labels.get(MANAGED_BY_KEY) != MANAGED_BY_VALUE
            or labels.get(DEPLOYMENT_KEY) != deployment
            or labels.get(GROUP_KEY) != wanted_group
            or not labels.get(INSTANCE_KEY)
        ):
            continue
        source = _get(snapshot, "source_disk")
        if not source or "projects/" not in str(source):
            continue
        source = disk_path(str(source))
        project = _project(snapshot, source)
        name = str(_get(snapshot, "name") or "")
        run = labels.get(RUN_KEY)
        if not run:
            stamp = NAME_STAMP.search(name)
            if not stamp:
                continue
            run = f"stamp-{stamp.group(1)}"
        if project is None:
            continue
        members.setdefault((project, labels[INSTANCE_KEY], run), []).append((snapshot, source, name))
    result: dict[str, list[SnapshotSet]] = {}
    for (project, instance, run), found in members.items():
        entries = tuple(
            sorted(
                (
                    SetSnapshot(
                        name=name,
                        disk=source.rsplit("/", 1)[-1],
                        disk_source=source,
                        status=str(_get(snapshot, "status") or ""),
                        storage_bytes=int(_get(snapshot, "storage_bytes") or 0),
                        created_at=parse_time(_get(snapshot, "creation_timestamp")),
                        boot=_boot(_get(snapshot, "labels") or {}),
                    )
                    for snapshot, source, name in found
                ),
                key=lambda s: (s.disk, s.name),
            )
        )
        times = [s.created_at for s in entries if s.created_at is not None]
        created = min(times) if times else (name_stamp(entries[0].name) or datetime.min.replace(tzinfo=UTC))
        ready_disks = {s.disk_source for s in entries if s.status == READY}
        vm = _vm_path(project, instance, (s.disk_source for s in entries))
        result.setdefault(vm, []).append(
            SnapshotSet(
                run=run,
                created_at=created,
                vm=vm,
                snapshots=entries,
                complete=ready_disks == {s.disk_source for s in entries},
                ready=all(s.status == READY for s in entries),
            )
        )
    for sets in result.values():
        sets.sort(key=lambda s: (s.created_at, s.run), reverse=True)
    return dict(sorted(result.items()))


def _boot(labels: Mapping[str, str]) -> bool | None:
    value = dict(labels).get(BOOT_KEY)
    return None if value is None else value == "true"


def newest_complete(sets: Iterable[SnapshotSet]) -> SnapshotSet | None:
    """The newest set that is complete and READY (what drills and restores take by default), or None."""
    return next((s for s in sets if s.complete and s.ready), None)
