"""Restore's Compute Engine methods: disks from snapshots, VMs from existing disks, attach and detach.

Modelled on the v1 API reference (https://cloud.google.com/compute/docs/reference/rest/v1/): ``disks``
and ``regionDisks`` (insert, delete, setLabels; get and list are server.py's), ``instances`` (insert,
delete, attachDisk, detachDisk). Guest attributes and serial port output are restore_guest.py's. Same
fidelity as the backup methods: a repeated ``requestId`` returns the original operation and does nothing
(checked before anything else, as in compute.py); mutations are zone or region operations; the
``Faults`` hooks (http_error, fail_operation, hang_operation, on_call, http_error_after_apply) apply to
every method by its discovery id; 404 for a missing resource, 409 for a taken name. Where the reference is
silent the emulator is strict (400) and says so in the message, so the package cannot come to rely on a
leniency the real API may not have. Callers hold ``world.lock`` and have called ``tick()``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from gce_emulator.model import DEFAULT_TIMINGS, ApiError, Operation, World, resource_path, validate_name

Json = dict[str, Any]

RESTORE_TIMINGS: dict[str, float] = {
    "disk_create": 10.0,  # disk CREATING -> READY, plus per GB restored from the snapshot
    "disk_create_per_gb": 0.1,
    "disk_delete": 5.0,
    "disk_set_labels": 1.0,
    "snapshot_set_labels": 1.0,
    "instance_provision": 10.0,  # instances.insert: PROVISIONING -> STAGING; STAGING -> RUNNING is "start"
    "instance_delete": 20.0,
    "attach_disk": 3.0,
    "detach_disk": 3.0,
    "guest_boot": 15.0,  # RUNNING -> guest attributes and serial boot lines written by the guest
}
# Emulator(timings=...) accepts only keys of DEFAULT_TIMINGS; restore's join them here (this module is
# imported by server.py) so that model.py stays the backup path's.
DEFAULT_TIMINGS.update(RESTORE_TIMINGS)

# Disk types a disk may be created with (https://cloud.google.com/compute/docs/disks#disk-types); the
# regional ones are those regionDisks.insert accepts.
ZONAL_DISK_TYPES = frozenset(
    {"pd-standard", "pd-balanced", "pd-ssd", "pd-extreme", "hyperdisk-balanced", "hyperdisk-throughput"}
)
REGIONAL_DISK_TYPES = frozenset(
    {"pd-standard", "pd-balanced", "pd-ssd", "hyperdisk-balanced-high-availability"}
)
DISK_FIELDS = frozenset({"name", "description", "sizeGb", "sourceSnapshot", "type", "labels", "replicaZones"})
INSTANCE_FIELDS = frozenset(
    {
        "name",
        "description",
        "machineType",
        "disks",
        "networkInterfaces",
        "labels",
        "metadata",
        "tags",
        "serviceAccounts",
        "scheduling",
        "deletionProtection",
    }
)
ATTACHED_DISK_FIELDS = frozenset({"source", "boot", "deviceName", "mode", "autoDelete", "type", "interface"})
NIC_FIELDS = frozenset({"network", "subnetwork", "accessConfigs", "networkIP"})
DEVICE_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
MACHINE_TYPE_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)+$")
LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
MAX_LABELS = 64


class PreconditionFailed(ApiError):
    """HTTP 412 (``conditionNotMet``): a stale or missing fingerprint."""

    def __init__(self, message: str):
        super().__init__(412, "conditionNotMet", message)

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["status"] = "FAILED_PRECONDITION"
        return body


# ---- helpers -------------------------------------------------------------------------------------
def strict(message: str) -> ApiError:
    """A 400 for what the reference does not document: the emulator refuses rather than guesses."""
    return ApiError(400, "invalid", f"{message} (not documented: the emulator refuses it)")


def in_use(disk_path: str, users: list[str]) -> ApiError:
    """The error seen for a disk another VM holds (instances.insert, attachDisk, disks.delete): 400
    ``resourceInUseByAnotherResource``, "The disk resource '...' is already being used by '...'"."""
    user = resource_path(users[0]) if users else "another resource"
    return ApiError(
        400,
        "resourceInUseByAnotherResource",
        f"The disk resource '{disk_path}' is already being used by '{user}'",
    )


def not_ready(path: str, status: str) -> ApiError:
    return ApiError(400, "resourceNotReady", f"The resource '{path}' is not ready (status {status})")


def fingerprint(value: Any) -> str:
    """An opaque fingerprint that changes whenever ``value`` does (like the API's labelFingerprint)."""
    digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def repeat(world: World, project: str, query: Mapping[str, str]) -> Operation | None:
    """The operation a repeated ``requestId`` already started (the reference: "the server will know to
    ignore the request if it has already been completed"), or None."""
    request_id = query.get("requestId")
    return world.request_ids.get((project, request_id)) if request_id else None


def reference(project: str, value: Any, field: str) -> str:
    """A full or partial URL (``projects/P/...``, or ``zones/Z/...`` / ``regions/R/...`` / ``global/...``
    within the request's project) -> ``projects/P/...``; a bare name is refused."""
    if not isinstance(value, str) or not value:
        raise ApiError(400, "invalid", f"Invalid value for field '{field}': {value!r}")
    if "projects/" in value:
        return resource_path(value)
    if value.startswith(("zones/", "regions/", "global/")):
        return f"projects/{project}/{value}"
    raise ApiError(400, "invalid", f"Invalid value for field '{field}': '{value}'. Expected a URL")


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def check_labels(labels: Any, field: str) -> dict[str, str]:
    """Label rules of https://cloud.google.com/compute/docs/labeling-resources: at most 64, keys
    ``[a-z][a-z0-9_-]{0,62}``, values ``[a-z0-9_-]{0,63}`` (the ASCII subset)."""
    if labels is None:
        return {}
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        raise ApiError(400, "invalid", f"Invalid value for field '{field}': at most {MAX_LABELS} labels")
    for key, value in labels.items():
        if not LABEL_KEY_RE.match(str(key)) or not isinstance(value, str) or not LABEL_VALUE_RE.match(value):
            raise ApiError(400, "invalid", f"Invalid value for field '{field}': label {key!r}={value!r}")
    return dict(labels)


def check_fields(body: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(set(body) - allowed - {"kind"})
    if unknown:
        raise strict(f"{what}: field(s) {', '.join(unknown)} are not modelled by this emulator")


def disk_scope(path: str) -> str:
    """'projects/p/zones/z/disks/d' -> 'zones/z'."""
    parts = path.split("/")
    return f"{parts[2]}/{parts[3]}"


def find_disk(world: World, project: str, value: Any, field: str) -> tuple[str, Json]:
    path = reference(project, value, field)
    if not re.fullmatch(r"projects/[^/]+/(zones|regions)/[^/]+/disks/[^/]+", path):
        raise ApiError(400, "invalid", f"Invalid value for field '{field}': '{value}'. Not a disk")
    return path, world.find(world.disks, path)


def check_disk_usable_in_zone(world: World, path: str, disk: Json, zone: str, field: str) -> None:
    """A zonal disk must be in the VM's zone; a regional one must replicate to it; both READY."""
    scope = disk_scope(path)
    if scope.startswith("zones/") and scope != f"zones/{zone}":
        raise ApiError(400, "invalid", f"Invalid value for field '{field}': disk '{path}' is not in {zone}")
    if scope.startswith("regions/"):
        replicas = {url.rsplit("/", 1)[-1] for url in disk.get("replicaZones") or []}
        if zone not in replicas:
            raise ApiError(
                400,
                "invalid",
                f"Invalid value for field '{field}': regional disk '{path}' has no replica in {zone}",
            )
    if disk.get("status") != "READY":
        raise not_ready(path, disk.get("status", ""))


def check_not_in_use(world: World, path: str, disk: Json, mode: str) -> None:
    """A disk attached READ_WRITE belongs to that VM alone; READ_ONLY may be shared only with other
    READ_ONLY users (https://cloud.google.com/compute/docs/disks/sharing-disks-between-vms; multi-writer
    mode is not modelled)."""
    users = disk.get("users") or []
    if not users:
        return
    if mode == "READ_WRITE":
        raise in_use(path, users)
    for user in users:
        instance = world.instances.get(resource_path(user)) or {}
        for attached in instance.get("disks", []):
            if (
                resource_path(attached.get("source", "x/projects/")) == path
                and attached["mode"] == "READ_WRITE"
            ):
                raise in_use(path, [user])


# ---- disks ---------------------------------------------------------------------------------------
def insert_disk(
    world: World, project: str, scope: str, body: Mapping[str, Any], query: Mapping[str, str]
) -> Operation:
    """disks.insert (scope ``zones/Z``) and regionDisks.insert (scope ``regions/R``) from a snapshot.

    Reference: https://cloud.google.com/compute/docs/reference/rest/v1/disks/insert and
    .../regionDisks/insert; the Disk resource (.../v1/disks). ``sourceSnapshot``: "The source snapshot
    used to create this disk", a full or partial URL; the snapshot must exist (404) and be READY (400
    ``resourceNotReady``: a CREATING, UPLOADING, FAILED or DELETING snapshot cannot be read). ``sizeGb``
    defaults to the snapshot's ``diskSizeGb`` and "must not be less than the size of the snapshot" (400).
    Without ``sourceSnapshot`` an empty disk is made (the reference: "create an empty 500 GB data disk by
    omitting all properties"); ``sourceImage`` / ``sourceDisk`` are not modelled (400). ``type`` defaults
    to pd-standard and must be in the request's zone or region. Regional disks need ``replicaZones``:
    "URLs of the zones where the disk should be replicated to", two zones of the disk's region. The new
    disk is CREATING (status values CREATING, RESTORING, FAILED, READY, DELETING) and READY when the
    operation is DONE; it fills ``sourceSnapshot`` (a full URL) and ``sourceSnapshotId``, "The unique ID
    of the snapshot used to create this disk". A name already taken in the scope is 409.
    """
    world.check_location(project, scope)
    existing = repeat(world, project, query)
    if existing is not None:
        return existing
    check_fields(body, DISK_FIELDS, "disk")
    name = body.get("name") or ""
    validate_name(name)
    path = f"projects/{project}/{scope}/disks/{name}"
    if path in world.disks:
        raise ApiError(409, "alreadyExists", f"The resource '{path}' already exists")
    regional = scope.startswith("regions/")
    location = scope.split("/", 1)[1]
    snapshot: Json | None = None
    if body.get("sourceSnapshot"):
        snapshot_path = reference(project, body["sourceSnapshot"], "resource.sourceSnapshot")
        if not re.fullmatch(r"projects/[^/]+/global/snapshots/[^/]+", snapshot_path):
            raise ApiError(
                400, "invalid", f"Invalid value for field 'resource.sourceSnapshot': '{snapshot_path}'"
            )
        snapshot = world.find(world.snapshots, snapshot_path)
        if snapshot["status"] != "READY":
            raise not_ready(snapshot_path, snapshot["status"])
    minimum = int(snapshot["diskSizeGb"]) if snapshot else 1
    try:
        size_gb = int(body.get("sizeGb") or (snapshot["diskSizeGb"] if snapshot else 500))
    except (TypeError, ValueError):
        raise ApiError(
            400, "invalid", f"Invalid value for field 'resource.sizeGb': {body.get('sizeGb')!r}"
        ) from None
    if not minimum <= size_gb <= 65536:
        raise ApiError(
            400,
            "invalid",
            f"Invalid value for field 'resource.sizeGb': '{size_gb}'. Requested disk size cannot be smaller "
            f"than the snapshot size ({minimum} GB)"
            if snapshot
            else f"Invalid value for field 'resource.sizeGb': '{size_gb}'",
        )
    type_path = reference(project, body.get("type") or f"{scope}/diskTypes/pd-standard", "resource.type")
    type_match = re.fullmatch(
        rf"projects/{re.escape(project)}/{re.escape(scope)}/diskTypes/([a-z0-9-]+)", type_path
    )
    allowed_types = REGIONAL_DISK_TYPES if regional else ZONAL_DISK_TYPES
    if not type_match or type_match.group(1) not in allowed_types:
        raise ApiError(400, "invalid", f"Invalid value for field 'resource.type': '{body.get('type')}'")
    labels = check_labels(body.get("labels"), "resource.labels")
    disk: Json = {
        "kind": "compute#disk",
        "id": world.new_id(path + str(world.clock.now())),
        "name": name,
        "sizeGb": str(size_gb),
        "type": world.url(type_path),
        "status": "CREATING",
        "selfLink": world.url(path),
        "labels": labels,
        "labelFingerprint": fingerprint(labels),
        "users": [],
        "creationTimestamp": world.clock.timestamp(),
    }
    if body.get("description"):
        disk["description"] = str(body["description"])
    if regional:
        disk["region"] = world.url(f"projects/{project}/{scope}")
        disk["replicaZones"] = [
            world.url(f"projects/{project}/zones/{z}") for z in _replica_zones(world, project, location, body)
        ]
    else:
        if body.get("replicaZones"):
            raise ApiError(
                400, "invalid", "Invalid value for field 'resource.replicaZones': a zonal disk has none"
            )
        disk["zone"] = world.url(f"projects/{project}/{scope}")
    if snapshot is not None:
        disk["sourceSnapshot"] = snapshot["selfLink"]
        disk["sourceSnapshotId"] = snapshot["id"]

    def ready() -> dict[str, str] | None:
        if world.disks.get(path) is disk:
            disk["status"] = "READY"
        return None

    def failed() -> None:
        if world.disks.get(path) is disk:
            del world.disks[path]

    world.disks[path] = disk
    per_gb = world.timings["disk_create_per_gb"] * size_gb if snapshot else 0.0
    op, _ = world.start_operation(
        method=f"compute.{'regionDisks' if regional else 'disks'}.insert",
        project=project,
        scope=scope,
        operation_type="insert",
        target=path,
        request_id=query.get("requestId"),
        duration=world.timings["disk_create"] + per_gb,
        on_done=ready,
        on_fail=failed,
    )
    return op


def _replica_zones(world: World, project: str, region: str, body: Mapping[str, Any]) -> list[str]:
    zones = []
    for value in body.get("replicaZones") or []:
        path = reference(project, value, "resource.replicaZones")
        match = re.fullmatch(rf"projects/{re.escape(project)}/zones/([a-z0-9-]+)", path)
        if not match or region_of(match.group(1)) != region or match.group(1) not in world.zones[project]:
            raise ApiError(
                400,
                "invalid",
                f"Invalid value for field 'resource.replicaZones': '{value}' is not in {region}",
            )
        zones.append(match.group(1))
    if len(zones) != 2 or zones[0] == zones[1]:
        raise ApiError(
            400, "invalid", "Invalid value for field 'resource.replicaZones': a regional disk needs two zones"
        )
    return zones


def delete_disk(world: World, project: str, scope: str, name: str, query: Mapping[str, str]) -> Operation:
    """disks.delete / regionDisks.delete (.../v1/disks/delete): "Deletes the specified persistent disk.
    Deleting a disk removes its data permanently". A disk attached to a VM (``users`` not empty) is
    refused with 400 ``resourceInUseByAnotherResource``; a disk not READY (CREATING, DELETING) is refused
    400 ``resourceNotReady`` (strict). The disk is DELETING until the operation is DONE, then gone."""
    world.check_location(project, scope)
    existing = repeat(world, project, query)
    if existing is not None:
        return existing
    path = f"projects/{project}/{scope}/disks/{name}"
    disk = world.find(world.disks, path)
    if disk.get("users"):
        raise in_use(path, disk["users"])
    if disk.get("status") not in ("READY", "FAILED"):
        raise not_ready(path, disk.get("status", ""))
    prior = disk["status"]

    def gone() -> dict[str, str] | None:
        if world.disks.get(path) is disk:
            del world.disks[path]
        return None

    def failed() -> None:
        disk["status"] = prior

    op, _ = world.start_operation(
        method=f"compute.{'regionDisks' if scope.startswith('regions/') else 'disks'}.delete",
        project=project,
        scope=scope,
        operation_type="delete",
        target=path,
        request_id=query.get("requestId"),
        duration=world.timings["disk_delete"],
        on_done=gone,
        on_fail=failed,
    )
    disk["status"] = "DELETING"
    return op


def set_disk_labels(
    world: World, project: str, scope: str, name: str, body: Mapping[str, Any], query: Mapping[str, str]
) -> Operation:
    """disks.setLabels / regionDisks.setLabels (.../v1/disks/setLabels): body ``{labels,
    labelFingerprint}``. The reference: "labelFingerprint: The fingerprint of the previous set of labels
    for this resource, used to detect conflicts ... You must always provide an up-to-date fingerprint hash
    in order to update or change labels"; a missing or stale one is HTTP 412 ``conditionNotMet``. The
    labels replace the old ones at once (a new fingerprint); the operation is DONE shortly after."""
    world.check_location(project, scope)
    existing = repeat(world, project, query)
    if existing is not None:
        return existing
    check_fields(body, frozenset({"labels", "labelFingerprint"}), "setLabels")
    path = f"projects/{project}/{scope}/disks/{name}"
    disk = world.find(world.disks, path)
    if body.get("labelFingerprint") != disk.get("labelFingerprint"):
        raise PreconditionFailed(
            f"Labels fingerprint either invalid or resource labels have changed (resource '{path}')"
        )
    labels = check_labels(body.get("labels"), "labels")
    op, _ = world.start_operation(
        method=f"compute.{'regionDisks' if scope.startswith('regions/') else 'disks'}.setLabels",
        project=project,
        scope=scope,
        operation_type="setLabels",
        target=path,
        request_id=query.get("requestId"),
        duration=world.timings["disk_set_labels"],
        on_done=None,
    )
    disk["labels"], disk["labelFingerprint"] = labels, fingerprint(labels)
    return op


def set_snapshot_labels(
    world: World, project: str, name: str, body: Mapping[str, Any], query: Mapping[str, str]
) -> Operation:
    """snapshots.setLabels (https://cloud.google.com/compute/docs/reference/rest/v1/snapshots/setLabels):
    ``POST .../global/snapshots/{resource}/setLabels`` with a GlobalSetLabelsRequest ``{labels,
    labelFingerprint}``; a global operation. The reference: "labelFingerprint: The fingerprint of the
    previous set of labels for this resource, used to detect conflicts. The fingerprint is initially
    generated by Compute Engine and changes after every request to modify or update labels. You must
    always provide an up-to-date fingerprint hash when updating or changing labels, otherwise the request
    will fail with error 412 conditionNotMet." The method takes no ``requestId`` (the reference lists no
    query parameter): one is refused (400) rather than silently ignored. The labels replace the old ones at
    once (a new fingerprint)."""
    world.check_location(project, "global")
    if query.get("requestId"):
        raise strict("snapshots.setLabels takes no requestId")
    check_fields(body, frozenset({"labels", "labelFingerprint"}), "setLabels")
    path = f"projects/{project}/global/snapshots/{name}"
    snapshot = world.find(world.snapshots, path)
    if body.get("labelFingerprint") != snapshot.get("labelFingerprint"):
        raise PreconditionFailed(
            f"Labels fingerprint either invalid or resource labels have changed (resource '{path}')"
        )
    labels = check_labels(body.get("labels"), "labels")
    op, _ = world.start_operation(
        method="compute.snapshots.setLabels",
        project=project,
        scope="global",
        operation_type="setLabels",
        target=path,
        request_id=None,
        duration=world.timings["snapshot_set_labels"],
        on_done=None,
    )
    snapshot["labels"], snapshot["labelFingerprint"] = labels, fingerprint(labels)
    return op


def add_fingerprints(world: World) -> None:
    """Seeded disks and snapshots get the ``labelFingerprint`` every real one has (compute.py's seed
    predates it)."""
    for disk in world.disks.values():
        disk.setdefault("labelFingerprint", fingerprint(disk.get("labels") or {}))
    for snapshot in world.snapshots.values():
        snapshot.setdefault("labelFingerprint", fingerprint(snapshot.get("labels") or {}))
