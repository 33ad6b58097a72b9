"""Snapshot sets: every snapshot of one VM made by one backup run, the unit a restore or a drill takes.

A VM is its identity, not its name: project, zone, name and the instance ``id`` Compute Engine gave it.
Each snapshot a backup makes carries the VM's manifest in its description (``vm_manifest``): that
identity, the disk the snapshot is of, and every disk attached at backup time. A snapshot joins a set
only when all of these hold:

1. it is this deployment's and group's (labels ``managed-by``, ``gce-vm-backup-deployment``,
   ``gce-vm-backup-group``, checked here client-side whatever the list filter said), and its
   ``gce-vm-backup-instance`` label is the manifest's VM name;
2. Compute Engine's own ``sourceDisk`` (normalised to ``projects/...``) is the manifest's ``disk``, in
   the VM's project (and, for a zonal disk, its zone): a description can be copied, ``sourceDisk`` cannot;
3. that disk is one of the VM's recorded disks (``manifest.disks``) and, where that entry has an ``id``,
   ``sourceDiskId`` is that id;
4. it agrees with the set on the recorded disk list: the set's manifest is its boot disk snapshot's (else
   the list most members share); a member recording another list is left out.

Sets are grouped by VM identity and run (``gce-vm-backup-run`` label, or the timestamp part of the name,
``naming.snapshot_name``: ``<stem>-<YYYYmmddHHMMSS>-<hash8>``, for older snapshots) and keyed by VM path:
two VMs named ``web-1`` in two zones or projects never share a set, and a VM deleted and made again under
its name (another id) keeps its predecessor's sets apart (``SnapshotSet.vm_id``).

Snapshots without a manifest (made before manifests) have no recorded identity. They are used only when
the caller says which disks the live VM of that name has attached now (``attached``: VM path -> disk
paths): such a snapshot joins the set of the one VM in its project whose name its instance label carries
and which has its ``sourceDisk`` attached; with no such VM, or more than one, it is left out.

A set is COMPLETE when every disk its manifest says this VM's backup snapshotted (``covered``: not a disk
left out by the group's ``disks:`` option, nor one another VM's backup snapshots) has a READY snapshot in
it; a set without a manifest, when every disk it has a snapshot of has a READY one. It is READY when every
snapshot in it is READY. ``SetSnapshot.boot`` comes from the manifest (None without one: the restore then
takes the VM's boot disk at restore time).

Works on ``compute_v1.Snapshot`` objects and on the REST JSON (camelCase dicts) alike. Imports no
Google library.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from gce_vm_backup.compute.paths import DiskRef
from gce_vm_backup.config import manifest as vm_manifest
from gce_vm_backup.config.labels import (
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
from gce_vm_backup.config.manifest import Manifest, VmIdentity

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
    boot: bool | None = None  # from the manifest; None: not known (a snapshot without one)

    @property
    def disk_name(self) -> str:
        return self.disk_source.rsplit("/", 1)[-1]

    @property
    def disk_location(self) -> str:
        return DiskRef.parse(self.disk_source).location

    @property
    def regional(self) -> bool:
        return DiskRef.parse(self.disk_source).regional


@dataclass(frozen=True)
class SnapshotSet:
    """Every snapshot of one VM from one backup run, newest snapshot time as ``created_at``."""

    run: str  # the gce-vm-backup-run label value, or the name stamp YYYYmmddHHMMSS
    created_at: datetime | None
    vm: str  # projects/P/zones/Z/instances/I
    snapshots: tuple[SetSnapshot, ...]
    vm_id: str = ""  # the instance id the manifest records; "" for a set without a manifest
    manifest: Manifest | None = None  # the boot disk snapshot's manifest (else a member's); None: none

    @property
    def disks(self) -> list[str]:
        return sorted({s.disk_source for s in self.snapshots})

    @property
    def expected_disks(self) -> list[str]:
        """The disks a complete set has a READY snapshot of: those the manifest says this VM's backup
        snapshotted; without a manifest, every disk the set has a snapshot of."""
        if self.manifest is None:
            return self.disks
        return sorted(d.source for d in self.manifest.disks if d.covered)

    @property
    def missing(self) -> list[str]:
        """The expected disks without a READY snapshot in the set."""
        return [d for d in self.expected_disks if self.for_disk(d) is None]

    @property
    def complete(self) -> bool:
        return bool(self.snapshots) and bool(self.expected_disks) and not self.missing

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
            "vm_id": self.vm_id,
            "complete": self.complete,
            "ready": self.ready,
            "storage_bytes": self.storage_bytes,
            "manifest": manifest_dict(self.manifest) if self.manifest is not None else None,
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


def manifest_dict(manifest: Manifest) -> dict[str, Any]:
    """A manifest as plain JSON-able data (lists, dicts, strings): ``vm``, ``disk``, ``disks``,
    ``spec``, ``cut``, ``note``."""
    body = asdict(manifest)
    body["disks"] = [dict(d) for d in body["disks"]]
    body["cut"] = list(body["cut"])
    body["spec"] = dict(manifest.spec)
    return body


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


def manifest_refusal(
    manifest: Manifest, *, disk: str, instance_label: str, source_disk_id: str | None
) -> str | None:
    """Why a snapshot of ``disk`` (its normalised ``sourceDisk``) carrying ``manifest`` joins no set of
    that manifest's VM, or None when it may (rules 1-3 of the module docstring)."""
    vm = manifest.vm
    if instance_label != label_value(vm.name):
        return f"its instance label {instance_label!r} is not the manifest's VM {vm.name}"
    if disk != manifest.disk:
        return f"it was made from disk {disk}, but its manifest says {manifest.disk}"
    parts = disk.split("/")
    if parts[1] != vm.project or (parts[2] == "zones" and parts[3] != vm.zone):
        return f"disk {disk} cannot be attached to VM {vm.path}"
    entry = manifest.disk_entry(disk)
    if entry is None:
        return f"disk {disk} is not one of the disks recorded for VM {vm.path}"
    if entry.id and str(source_disk_id or "") != entry.id:
        return (
            f"it was made from disk id {source_disk_id or '(none)'}, but VM {vm.path} had disk id "
            f"{entry.id} at {disk} (a disk of the same name, deleted and made again)"
        )
    return None


def _disk_list(manifest: Manifest) -> tuple[vm_manifest.ManifestDisk, ...]:
    return tuple(sorted(manifest.disks, key=lambda d: d.source))


def _reference(members: list[tuple[SetSnapshot, Manifest]]) -> Manifest:
    """The manifest a set goes by: its boot disk snapshot's (the first by name), else the disk list most
    members record (ties: the first member by name)."""
    ordered = sorted(members, key=lambda m: m[0].name)
    boot = [manifest for member, manifest in ordered if member.boot]
    if boot:
        return boot[0]
    counts = Counter(_disk_list(manifest) for _, manifest in ordered)
    top = max(counts.values())
    return next(manifest for _, manifest in ordered if counts[_disk_list(manifest)] == top)


def attached_of(instance: Any) -> list[str]:
    """The paths of the persistent disks attached to ``instance`` (a ``compute_v1.Instance`` or its REST
    JSON): what a caller passes as ``attached`` for a live VM."""
    paths = []
    for disk in _get(instance, "disks", "disks") or []:
        kind = _get(disk, "type_", "type") or "PERSISTENT"
        source = str(_get(disk, "source", "source") or "")
        if kind != "SCRATCH" and "projects/" in source:
            paths.append(disk_path(source))
    return paths


def _legacy_vm(disk: str, instance_label: str, attached: Mapping[str, Iterable[str]]) -> str | None:
    """The one live VM a snapshot without a manifest belongs to (see the module docstring), or None."""
    project = disk.split("/")[1]
    owners = [
        vm
        for vm, disks in attached.items()
        if vm.split("/")[1] == project
        and label_value(vm.rsplit("/", 1)[-1]) == instance_label
        and disk in {disk_path(d) for d in disks}
    ]
    return owners[0] if len(owners) == 1 else None


def snapshot_sets(
    snapshots: Iterable[Any],
    *,
    group: str,
    deployment: str,
    vms: Iterable[str] = (),
    attached: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, list[SnapshotSet]]:
    """Every VM's snapshot sets, newest first (``created_at``, then run), keyed by VM path
    (``projects/P/zones/Z/instances/NAME``); one path may hold sets of several instance ids.

    ``attached``: the live VMs the caller knows, VM path -> the paths of the disks attached now; only
    snapshots without a manifest use it (see the module docstring). ``vms`` is accepted for callers
    that name their VMs; a mapping there counts as ``attached``. Snapshots that fail the rules of the
    module docstring are left out.
    """
    live: dict[str, Iterable[str]] = dict(vms) if isinstance(vms, Mapping) else {}
    live.update(attached or {})
    by_vm: dict[tuple[VmIdentity, str], list[tuple[SetSnapshot, Manifest]]] = {}
    legacy: dict[tuple[str, str], list[SetSnapshot]] = {}
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
        member = SetSnapshot(
            name=name,
            disk_source=disk,
            status=str(_get(snapshot, "status", "status") or ""),
            storage_bytes=int(_get(snapshot, "storage_bytes", "storageBytes") or 0),
            created_at=_created(_get(snapshot, "creation_timestamp", "creationTimestamp")),
        )
        manifest = vm_manifest.parse(_get(snapshot, "description", "description"))
        if manifest is None:
            vm = _legacy_vm(disk, labels[INSTANCE_KEY], live)
            if vm is not None:
                legacy.setdefault((vm, run), []).append(member)
            continue
        source_id = _get(snapshot, "source_disk_id", "sourceDiskId")
        if manifest_refusal(
            manifest, disk=disk, instance_label=labels[INSTANCE_KEY], source_disk_id=source_id
        ):
            continue
        entry = manifest.disk_entry(disk)
        by_vm.setdefault((manifest.vm, run), []).append(
            (replace(member, boot=bool(entry and entry.boot)), manifest)
        )
    sets: dict[str, list[SnapshotSet]] = {}
    for (identity, run), pairs in by_vm.items():
        reference = _reference(pairs)
        agreed = [member for member, manifest in pairs if _disk_list(manifest) == _disk_list(reference)]
        sets.setdefault(identity.path, []).append(
            _make_set(run, identity.path, agreed, vm_id=identity.id, manifest=reference)
        )
    for (vm, run), members in legacy.items():
        sets.setdefault(vm, []).append(_make_set(run, vm, members))
    for vm_sets in sets.values():
        vm_sets.sort(key=lambda s: (s.created_at or _EPOCH, s.run), reverse=True)
    return sets


def _make_set(
    run: str, vm: str, members: list[SetSnapshot], *, vm_id: str = "", manifest: Manifest | None = None
) -> SnapshotSet:
    times = [s.created_at for s in members if s.created_at is not None]
    return SnapshotSet(
        run=run,
        created_at=max(times) if times else None,
        vm=vm,
        snapshots=tuple(sorted(members, key=lambda s: (s.disk_source, s.name))),
        vm_id=vm_id,
        manifest=manifest,
    )


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
        missing = chosen.missing or ["any disk"]
        return None, f"snapshot set {wanted!r} is not complete: no READY snapshot of {', '.join(missing)}"
    return chosen, ""
