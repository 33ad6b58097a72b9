"""A VM's manifest: who the VM was and how to rebuild it, written into each of its snapshots' descriptions.

A backup writes the manifest of the VM into the ``description`` of every snapshot it makes of that VM
(``describe``), so that a restore finds it with the VM gone and a snapshot set is grouped by the VM's
identity, not by a name another VM may share:

- ``vm``: project, zone, name and the instance ``id`` Compute Engine gave it (a VM deleted and made again
  under its name is another VM: another id);
- ``disk``: the path of the disk this snapshot is of (Compute Engine's own ``sourceDisk`` must say the
  same, see ``restore_sets``);
- ``disks``: every persistent disk attached at backup time: path, device name, boot flag, mode, and
  disk ``id`` and ``type`` where the backup knew them; ``"covered": false`` on a disk this VM's backup
  did not snapshot (left out by the group's ``disks:`` option, or snapshotted by another VM's backup);
- ``spec``: what a new VM needs (machine type, network interfaces without external IPs, service
  accounts, scheduling, labels, network tags, metadata keys; metadata values only when opted in);
- ``note``: the group's own snapshot description, if it has one.

The description is ``PREFIX`` followed by compact JSON and is kept to ``MAX_DESCRIPTION`` characters:
parts of ``spec`` that do not fit are dropped in the order of ``CUT_ORDER`` and named in ``cut``. The
Compute Engine reference gives no limit for a snapshot's description; 2,048 characters is the limit
Google documents for descriptions elsewhere, so it is the one assumed here.

A leaf module: imports neither Airflow nor Google. Works on ``compute_v1.Instance`` objects and on REST
JSON (camelCase dicts) alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gce_vm_backup.compute.paths import VmRef

PREFIX = "gce-vm-backup manifest v1 "
MAX_DESCRIPTION = 2048
# What is dropped first when the description would be too long (least needed for a rebuild first).
CUT_ORDER = ("metadata", "labels", "tags", "scheduling", "service_accounts", "network_interfaces", "note")
# Instance labels of this package's own (the lease) are never carried into a rebuilt VM.
OWN_LABEL_PREFIX = "gce-vm-backup-"


@dataclass(frozen=True)
class VmIdentity:
    """One VM, as Compute Engine knows it: its path and its instance id."""

    project: str
    zone: str
    name: str
    id: str  # the instance id ("" when unknown: a snapshot made before manifests)

    @property
    def path(self) -> str:
        return VmRef(self.project, self.zone, self.name).path


@dataclass(frozen=True)
class ManifestDisk:
    source: str  # projects/P/(zones|regions)/L/disks/D
    device: str
    boot: bool
    mode: str = "READ_WRITE"
    id: str | None = None
    type: str | None = None  # pd-balanced, pd-ssd, ... (the disk type's name), None when not known
    covered: bool = True  # False: this VM's backup did not snapshot it (``disks:``, or another VM's)


@dataclass(frozen=True)
class Manifest:
    vm: VmIdentity
    disk: str  # the path of the disk the snapshot carrying this manifest is of
    disks: tuple[ManifestDisk, ...]
    spec: Mapping[str, Any]
    cut: tuple[str, ...] = ()
    note: str | None = None

    def disk_entry(self, source: str) -> ManifestDisk | None:
        return next((disk for disk in self.disks if disk.source == source), None)

    @property
    def boot_disk(self) -> ManifestDisk | None:
        return next((disk for disk in self.disks if disk.boot), None)


def _get(obj: Any, snake: str, camel: str | None = None, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(camel or snake, obj.get(snake, default))
    try:
        # proto-plus messages answer ``in`` with field presence: an unset optional field (scheduling's
        # automatic_restart, whose API default is true) must read as absent, not as its zero value.
        if snake not in obj:
            return default
    except TypeError:
        pass
    return getattr(obj, snake, default)


def _path(url: str | None) -> str:
    text = str(url or "")
    return text[text.find("projects/") :] if "projects/" in text else text


def _tail(url: str | None) -> str:
    return str(url or "").rstrip("/").rsplit("/", 1)[-1]


def _attached(disk: Any) -> dict[str, Any] | None:
    if str(_get(disk, "type_", "type") or "PERSISTENT") == "SCRATCH":
        return None
    entry: dict[str, Any] = {
        "source": _path(_get(disk, "source")),
        "device": str(_get(disk, "device_name", "deviceName") or ""),
        "boot": bool(_get(disk, "boot")),
        "mode": str(_get(disk, "mode") or "READ_WRITE"),
    }
    return entry


def instance_spec(instance: Any, *, metadata_values: bool = False) -> dict[str, Any]:
    """What a new VM needs of ``instance`` (see the module docstring). External IPs (access configs)
    are never kept; metadata values only with ``metadata_values``."""
    interfaces = []
    for nic in _get(instance, "network_interfaces", "networkInterfaces") or []:
        entry = {"network": _path(_get(nic, "network"))}
        if _get(nic, "subnetwork"):
            entry["subnetwork"] = _path(_get(nic, "subnetwork"))
        interfaces.append(entry)
    accounts = [
        {
            "email": str(_get(account, "email") or ""),
            "scopes": sorted(str(s) for s in _get(account, "scopes") or []),
        }
        for account in _get(instance, "service_accounts", "serviceAccounts") or []
    ]
    scheduling_obj = _get(instance, "scheduling")
    scheduling: dict[str, Any] = {}
    if scheduling_obj is not None:
        for snake, camel in (
            ("preemptible", "preemptible"),
            ("automatic_restart", "automaticRestart"),
            ("on_host_maintenance", "onHostMaintenance"),
            ("provisioning_model", "provisioningModel"),
        ):
            value = _get(scheduling_obj, snake, camel)
            if value not in (None, ""):
                scheduling[camel] = value
    labels = {
        str(k): str(v)
        for k, v in dict(_get(instance, "labels") or {}).items()
        if not str(k).startswith(OWN_LABEL_PREFIX)
    }
    metadata_obj = _get(instance, "metadata")
    items = (_get(metadata_obj, "items") or []) if metadata_obj is not None else []
    metadata: dict[str, str | None] = {
        str(_get(item, "key")): (str(_get(item, "value") or "") if metadata_values else None)
        for item in items
    }
    tags_obj = _get(instance, "tags")
    tags = sorted(str(t) for t in (_get(tags_obj, "items") or [])) if tags_obj is not None else []
    return {
        "machine_type": _tail(_get(instance, "machine_type", "machineType")),
        "network_interfaces": interfaces,
        "service_accounts": accounts,
        "scheduling": scheduling,
        "labels": labels,
        "tags": tags,
        "metadata": metadata,
    }


def build(
    instance: Any,
    *,
    project: str,
    zone: str,
    disk_details: Mapping[str, Mapping[str, Any]] | None = None,
    metadata_values: bool = False,
    note: str | None = None,
) -> dict[str, Any]:
    """The manifest of ``instance`` as a JSON-ready dict (without ``disk``: ``describe`` adds it per
    snapshot). ``disk_details`` maps a disk path to ``{"id", "type"}`` known from elsewhere."""
    details = disk_details or {}
    disks = []
    for attached in _get(instance, "disks") or []:
        entry = _attached(attached)
        if entry is None:
            continue
        known = details.get(entry["source"]) or {}
        if known.get("id"):
            entry["id"] = str(known["id"])
        if known.get("type"):
            entry["type"] = _tail(known["type"])
        disks.append(entry)
    manifest: dict[str, Any] = {
        "vm": {
            "project": project,
            "zone": zone,
            "name": str(_get(instance, "name")),
            "id": str(_get(instance, "id") or ""),
        },
        "disks": disks,
        "spec": instance_spec(instance, metadata_values=metadata_values),
    }
    if note:
        manifest["note"] = note
    return manifest


def describe(manifest: Mapping[str, Any], *, disk_source: str, limit: int = MAX_DESCRIPTION) -> str:
    """The description of the snapshot of ``disk_source``: ``PREFIX`` + compact JSON, at most ``limit``
    characters. Parts of the spec are dropped (``CUT_ORDER``) until it fits; raises ValueError when the
    identity and the disk list alone do not fit (a VM with very many disks)."""
    body: dict[str, Any] = {**manifest, "disk": disk_source, "spec": dict(manifest.get("spec") or {})}
    cut: list[str] = []
    for part in (None, *CUT_ORDER):
        if part == "note":
            if body.pop("note", None) is not None:
                cut.append(part)
        elif part is not None and body["spec"].pop(part, None) is not None:
            cut.append(part)
        if cut:
            body["cut"] = list(cut)
        text = PREFIX + json.dumps(body, separators=(",", ":"), sort_keys=True)
        if len(text) <= limit:
            return text
    raise ValueError(
        f"the manifest of VM {manifest['vm']['name']} does not fit in a snapshot description "
        f"({len(text)} > {limit} characters) even without its spec"
    )


def parse(description: str | None) -> Manifest | None:
    """The manifest in a snapshot's description, or None when there is none or it is malformed (a
    snapshot made before manifests, or a description someone else wrote)."""
    if not description or not description.startswith(PREFIX):
        return None
    try:
        body = json.loads(description[len(PREFIX) :])
        vm = body["vm"]
        identity = VmIdentity(str(vm["project"]), str(vm["zone"]), str(vm["name"]), str(vm.get("id") or ""))
        disks = tuple(
            ManifestDisk(
                source=str(d["source"]),
                device=str(d.get("device") or ""),
                boot=bool(d.get("boot")),
                mode=str(d.get("mode") or "READ_WRITE"),
                id=str(d["id"]) if d.get("id") else None,
                type=str(d["type"]) if d.get("type") else None,
                covered=d.get("covered", True) is not False,
            )
            for d in body.get("disks") or []
        )
        spec = body.get("spec") or {}
        if not isinstance(spec, Mapping):
            return None
        return Manifest(
            vm=identity,
            disk=str(body["disk"]),
            disks=disks,
            spec=spec,
            cut=tuple(str(c) for c in body.get("cut") or ()),
            note=body.get("note"),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def sources(disks: Iterable[ManifestDisk]) -> set[str]:
    return {disk.source for disk in disks}
