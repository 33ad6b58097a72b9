"""Snapshot sets: every snapshot of one VM made by one backup run, the unit a restore or a drill takes.

A snapshot belongs to a set only when it is this deployment's and group's (labels ``managed-by``,
``gce-vm-backup-deployment``, ``gce-vm-backup-group``, checked here client-side whatever the list filter
said). Snapshots of one VM (project from ``sourceDisk``, ``gce-vm-backup-instance``) are grouped by
their ``gce-vm-backup-run`` label; older ones, made before that label, by the timestamp part of their
name (``naming.snapshot_name``: ``<stem>-<YYYYmmddHHMMSS>-<hash8>``). A snapshot with neither is in no set.

A set is COMPLETE when every disk it records (distinct ``sourceDisk``) has a READY snapshot in it; it is
READY when every snapshot in it is READY. A disk whose snapshot never got made at all (the run failed
before) is not recorded anywhere, so "complete" is relative to the disks the set saw; replace-disks checks
the set against the VM's attached disks again before it acts.

Which disk was the boot disk is not in the labels: the restore takes the one whose ``sourceDisk`` is the
VM's boot disk at restore time (``SetSnapshot.boot`` stays None until then).

Works on ``compute_v1.Snapshot`` objects and on the REST JSON (camelCase dicts) alike. Imports no
Google library.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
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
    label_filter,
    label_value,
)
from gce_vm_backup.vm_manifest import Manifest

NEWEST = "newest"
NAME_STAMP = re.compile(r"-(\d{14})-[0-9a-f]{8}$")
READY = "READY"


@dataclass(frozen=True)
class SetSnapshot:
    """One disk's snapshot in a set."""

    name: str
    disk_source: str  # projects/P/(zones|regions)/L/disks/D
    status: str
    storage_bytes: int
    created_at: datetime | None
    boot: bool | None = None  # None: not known from the snapshot (see the module docstring)

    @property
    def disk_name(self) -> str:
        return self.disk_source.rsplit("/", 1)[-1]

    @property
    def disk_location(self) -> str:
        return self.disk_source.split("/")[3]

    @property
    def regional(self) -> bool:
        return self.disk_source.split("/")[2] == "regions"


@dataclass(frozen=True)
class SnapshotSet:
    """Every snapshot of one VM from one backup run, newest snapshot time as ``created_at``."""

    run: str  # the gce-vm-backup-run label value, or the name stamp YYYYmmddHHMMSS
    created_at: datetime | None
    vm: str  # projects/P/zones/Z/instances/I (zone from a zonal disk; see vm_path_of)
    snapshots: tuple[SetSnapshot, ...]
    vm_id: str = ""  # the instance id the set's manifest records ("" when unknown)
    manifest: Manifest | None = None  # the VM's manifest from the snapshots' descriptions, if any

    @property
    def disks(self) -> list[str]:
        return sorted({s.disk_source for s in self.snapshots})

    @property
    def complete(self) -> bool:
        ready = {s.disk_source for s in self.snapshots if s.status == READY}
        return bool(self.snapshots) and ready == set(self.disks)

    @property
    def ready(self) -> bool:
        return bool(self.snapshots) and all(s.status == READY for s in self.snapshots)

    @property
    def storage_bytes(self) -> int:
        return sum(s.storage_bytes for s in self.snapshots)

    def for_disk(self, disk_source: str) -> SetSnapshot | None:
        """The READY snapshot of that disk in this set (the newest, if a disk has several), or None."""
        wanted = disk_path(disk_source)
        ready = [s for s in self.snapshots if s.disk_source == wanted and s.status == READY]
        return max(ready, key=lambda s: (s.created_at or _EPOCH, s.name)) if ready else None

    def with_boot_disk(self, boot_disk_source: str | None) -> SnapshotSet:
        """The same set with ``boot`` set on every snapshot (True for the one of ``boot_disk_source``)."""
        wanted = disk_path(boot_disk_source) if boot_disk_source else None
        return replace(
            self, snapshots=tuple(replace(s, boot=s.disk_source == wanted) for s in self.snapshots)
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able form (XCom, the restore plan, the CLI)."""
        return {
            "run": self.run,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "vm": self.vm,
            "complete": self.complete,
            "ready": self.ready,
            "storage_bytes": self.storage_bytes,
            "snapshots": [
                {
                    "name": s.name,
                    "disk_source": s.disk_source,
                    "status": s.status,
                    "storage_bytes": s.storage_bytes,
                    "created_at": s.created_at.isoformat() if s.created_at else None,
                    "boot": s.boot,
                }
                for s in sorted(self.snapshots, key=lambda s: (s.disk_source, s.name))
            ],
        }


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _get(snapshot: Any, attr: str, key: str) -> Any:
    if isinstance(snapshot, Mapping):
        return snapshot.get(key)
    return getattr(snapshot, attr, None)


def _created(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def group_filter(*, deployment: str, group: str) -> str:
    """The snapshots.list filter of every snapshot this deployment made for this group."""
    return label_filter(
        {MANAGED_BY_KEY: MANAGED_BY_VALUE, DEPLOYMENT_KEY: deployment, GROUP_KEY: label_value(group)}
    )


def vm_path_of(project: str, instance_label: str, disks: Iterable[str], vms: Iterable[str] = ()) -> str:
    """The VM path of a set: one of ``vms`` (known VM paths) in ``project`` whose instance name labels as
    ``instance_label``, else the zone of the set's first zonal disk; a VM with only regional disks and
    no known path gets ``projects/P/zones/-/instances/I`` (``-``: zone unknown)."""
    for vm in sorted(vms):
        parts = vm.split("/")
        if parts[1] == project and label_value(parts[-1]) == instance_label:
            return vm
    zones = sorted(d.split("/")[3] for d in disks if d.split("/")[2] == "zones")
    return f"projects/{project}/zones/{zones[0] if zones else '-'}/instances/{instance_label}"


def snapshot_sets(
    snapshots: Iterable[Any], *, group: str, deployment: str, vms: Iterable[str] = ()
) -> dict[str, list[SnapshotSet]]:
    """Every VM's snapshot sets, newest first (``created_at``, then run), keyed by VM path.

    ``vms``: the VM paths the caller knows (the group's), used to name each set's VM exactly. Snapshots
    not labelled as this deployment's and group's, or without a source disk, are left out.
    """
    known = list(vms)
    buckets: dict[tuple[str, str, str], list[SetSnapshot]] = {}
    for snapshot in snapshots:
        labels = dict(_get(snapshot, "labels", "labels") or {})
        if (
            labels.get(MANAGED_BY_KEY) != MANAGED_BY_VALUE
            or labels.get(DEPLOYMENT_KEY) != deployment
            or labels.get(GROUP_KEY) != label_value(group)
            or not labels.get(INSTANCE_KEY)
        ):
            continue
        source = _get(snapshot, "source_disk", "sourceDisk")
        name = str(_get(snapshot, "name", "name") or "")
        if not source or "projects/" not in source or not name:
            continue
        run = labels.get(RUN_KEY)
        if not run:
            stamp = NAME_STAMP.search(name)
            if stamp is None:
                continue
            run = stamp.group(1)
        disk = disk_path(source)
        project = disk.split("/")[1]
        buckets.setdefault((project, labels[INSTANCE_KEY], run), []).append(
            SetSnapshot(
                name=name,
                disk_source=disk,
                status=str(_get(snapshot, "status", "status") or ""),
                storage_bytes=int(_get(snapshot, "storage_bytes", "storageBytes") or 0),
                created_at=_created(_get(snapshot, "creation_timestamp", "creationTimestamp")),
            )
        )
    sets: dict[str, list[SnapshotSet]] = {}
    for (project, instance, run), members in buckets.items():
        times = [s.created_at for s in members if s.created_at is not None]
        vm = vm_path_of(project, instance, (s.disk_source for s in members), known)
        sets.setdefault(vm, []).append(
            SnapshotSet(
                run=run,
                created_at=max(times) if times else None,
                vm=vm,
                snapshots=tuple(sorted(members, key=lambda s: (s.disk_source, s.name))),
            )
        )
    for vm_sets in sets.values():
        vm_sets.sort(key=lambda s: (s.created_at or _EPOCH, s.run), reverse=True)
    return sets


def newest_complete(sets: Iterable[SnapshotSet]) -> SnapshotSet | None:
    """The newest complete READY set, or None."""
    usable = [s for s in sets if s.complete and s.ready]
    return max(usable, key=lambda s: (s.created_at or _EPOCH, s.run)) if usable else None


def choose_set(sets: Iterable[SnapshotSet], wanted: str) -> tuple[SnapshotSet | None, str]:
    """The set a restore takes: ``newest`` (the newest complete READY one) or the set whose run is
    ``wanted``; with a reason when there is none or it cannot be restored whole."""
    sets = list(sets)
    if wanted == NEWEST:
        chosen = newest_complete(sets)
        if chosen is None:
            seen = ", ".join(f"{s.run} ({'complete' if s.complete else 'incomplete'})" for s in sets[:5])
            return None, f"no complete READY snapshot set (sets seen: {seen or 'none'})"
        return chosen, ""
    chosen = next((s for s in sets if s.run == wanted), None)
    if chosen is None:
        runs = ", ".join(s.run for s in sets[:10]) or "none"
        return None, f"no snapshot set {wanted!r} (newest first: {runs}; list them with `vm-backup backups`)"
    if not chosen.complete:
        missing = [d for d in chosen.disks if chosen.for_disk(d) is None]
        return None, f"snapshot set {wanted!r} is not complete: no READY snapshot of {', '.join(missing)}"
    return chosen, ""
