"""Instant snapshots: ``instantSnapshots`` (zonal) and ``regionInstantSnapshots``, and the standard snapshot
made from one (``snapshots.insert`` with ``sourceInstantSnapshot``). Callers hold ``world.lock``.

References (Compute Engine v1):
- the InstantSnapshot resource (https://cloud.google.com/compute/docs/reference/rest/v1/instantSnapshots,
  the same text as ``compute_v1.InstantSnapshot``): ``name`` (RFC 1035, 1-63 chars), ``sourceDisk`` ("URL
  of the source disk used to create this instant snapshot. Note that the source disk must be in the same
  zone/region as the instant snapshot to be created", full or partial URL), ``sourceDiskId`` ("may be used
  to determine whether the InstantSnapshot was taken from the current or a previous instance of a given
  disk name"), ``diskSizeGb``, ``labels``, ``labelFingerprint``, ``zone`` / ``region``, ``selfLink``,
  ``selfLinkWithId``, ``creationTimestamp``, ``resourceStatus.storageSizeBytes`` and ``status``:
  CREATING ("creation is in progress"), READY ("created successfully"), FAILED ("creation failed"),
  DELETING ("currently being deleted"), UNAVAILABLE ("currently unavailable and cannot be used for Disk
  restoration"). Methods ``insert`` / ``get`` / ``list`` / ``delete`` on ``zones/Z/instantSnapshots`` and
  ``regions/R/instantSnapshots``; ``insert`` and ``delete`` take ``requestId`` and return a zone / region
  operation.
- the Snapshot resource (.../rest/v1/snapshots): ``sourceInstantSnapshot`` ("The source instant snapshot
  used to create this snapshot", full or partial URL) and ``sourceInstantSnapshotId`` ("The unique ID of
  the instant snapshot used to create this snapshot"). ``sourceDisk`` and ``sourceInstantSnapshot`` are
  two sources of one snapshot: the reference does not say what both at once do, so the emulator refuses
  it (400, strict where the docs are silent); ``sourceDisk`` of the result is the instant snapshot's disk.
- limits, from "Troubleshooting instant snapshots"
  (https://cloud.google.com/compute/docs/troubleshooting/troubleshooting-instant-snapshots): "A disk can't
  have more than 32 instant snapshots. To create an instant snapshot of the disk, delete one first." and
  "The previous instant snapshot is too recent. To create an instant snapshot, wait at least 30 seconds and
  try again." The page gives the messages, not where they show: like other quota and rate errors they end
  the insert operation DONE with that error here (codes ``INSTANT_SNAPSHOT_LIMIT`` and
  ``INSTANT_SNAPSHOT_TOO_RECENT`` are the emulator's own: no code is documented).
- "Instant snapshots of a disk are deleted when the disk is deleted and don't protect against zonal or
  regional failures" (https://cloud.google.com/compute/docs/disks/instant-snapshots): ``delete_disk``.

Modelled, not documented: the creation time (timing ``instant_snapshot_create``, 2 s, whatever the disk
size; Google gives no figure, third parties say "almost instant"), the deletion time, and the supported
disk types (``SUPPORTED_DISK_TYPES``; set ``world.instant_disk_types`` to change them): an insert on a disk
of another type is a 400 naming the type. A snapshot converted from an instant snapshot takes the standard
snapshot's timings and per-disk rate limit (the docs say nothing of either for this source, so strict).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gce_emulator import compute
from gce_emulator.model import ApiError, Operation, World, resource_path, validate_name

Json = dict[str, Any]
MAX_PER_DISK = 32  # documented (troubleshooting page)
# Persistent Disk and the Hyperdisk types the "About instant snapshots" page names; the stored copies of
# that page read here show only its opening, so this set is unconfirmed: configurable, and narrow rather
# than generous (Hyperdisk Throughput and ML are left out until a document says they are supported).
SUPPORTED_DISK_TYPES = frozenset(
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
STATUSES = ("CREATING", "READY", "FAILED", "DELETING", "UNAVAILABLE")


def _reference(project: str, ref: str, *, field: str) -> str:
    """A full or partial URL (``projects/P/zones/Z/...`` or ``zones/Z/...``) as a ``projects/...`` path."""
    if "projects/" in ref:
        return resource_path(ref)
    if ref.startswith(("zones/", "regions/")):
        return f"projects/{project}/{ref}"
    raise ApiError(400, "invalid", f"Invalid value for field 'resource.{field}': '{ref}'")


def supported(world: World, disk: Mapping[str, Any]) -> bool:
    kinds = SUPPORTED_DISK_TYPES if world.instant_disk_types is None else world.instant_disk_types
    return str(disk.get("type", "")).rsplit("/", 1)[-1] in kinds


def of_disk(world: World, disk_path: str) -> list[Json]:
    """Every instant snapshot of the disk (any status), in path order."""
    return [
        item
        for path, item in sorted(world.instant_snapshots.items())
        if resource_path(item["sourceDisk"]) == disk_path
    ]


def insert(
    world: World, project: str, scope: str, body: Mapping[str, Any], query: Mapping[str, str], *, method: str
) -> Operation:
    """instantSnapshots.insert / regionInstantSnapshots.insert (``scope`` ``zones/Z`` or ``regions/R``).

    400 for a bad name, a missing ``sourceDisk``, a disk in another zone or region, or a disk type without
    instant snapshots; 404 for an unknown disk; 409 for a name already used in that zone or region. A
    repeated ``requestId`` returns the first operation. The 32-per-disk and 30-seconds limits end the
    operation DONE with the documented message."""
    world.check_location(project, scope)
    name = body.get("name") or ""
    validate_name(name)
    source = body.get("sourceDisk")
    if not source:
        raise ApiError(400, "required", "Required field 'resource.sourceDisk' not specified")
    disk_path = _reference(project, str(source), field="sourceDisk")
    path = f"projects/{project}/{scope}/instantSnapshots/{name}"
    existing = world.request_ids.get((project, query.get("requestId") or ""))
    if existing is not None:
        return existing
    if "/".join(disk_path.split("/")[2:4]) != scope or disk_path.split("/")[1] != project:
        raise ApiError(
            400,
            "invalid",
            f"Invalid value for field 'resource.sourceDisk': '{source}'. The source disk must be in the same "
            f"zone/region as the instant snapshot ({scope})",
        )
    disk = world.find(world.disks, disk_path)
    if path in world.instant_snapshots:
        raise ApiError(409, "alreadyExists", f"The resource '{path}' already exists")
    if not supported(world, disk):
        kind = str(disk.get("type", "")).rsplit("/", 1)[-1]
        raise ApiError(
            400, "invalid", f"Instant snapshots are not supported for disk '{disk_path}' of type '{kind}'"
        )
    now = world.clock.now()
    refusal = _limit_error(world, disk_path, now)
    if refusal is not None:
        op, _ = world.start_operation(
            method=method,
            project=project,
            scope=scope,
            operation_type="insert",
            target=path,
            request_id=query.get("requestId"),
            duration=0,
            on_done=None,
        )
        world.finish(op, refusal)
        return op
    kind = scope.partition("/")[0]
    instant: Json = {
        "kind": "compute#instantSnapshot",
        "id": world.new_id(path),
        "name": name,
        "status": "CREATING",
        "sourceDisk": world.url(disk_path),
        "sourceDiskId": disk["id"],
        "diskSizeGb": disk["sizeGb"],
        "labels": dict(body.get("labels") or {}),
        "labelFingerprint": "42WmSpB8rSM=",
        "creationTimestamp": world.clock.timestamp(now),
        "selfLink": world.url(path),
        kind[:-1]: world.url(f"projects/{project}/{scope}"),
        "resourceStatus": {"storageSizeBytes": "0"},
    }
    instant["selfLinkWithId"] = world.url(f"projects/{project}/{scope}/instantSnapshots/{instant['id']}")
    if body.get("description") is not None:
        instant["description"] = body["description"]

    failing = world.take_fault(method, ("fail_snapshot",), project=project, name_prefix=name)

    def ready() -> dict[str, str] | None:
        if failing is not None:  # Faults.fail_instant_snapshot: FAILED ("creation failed"), kept
            instant["status"] = "FAILED"
            return {"code": "INSTANT_SNAPSHOT_FAILED", "message": f"Instant snapshot '{name}' failed"}
        if path in world.instant_snapshots and instant["status"] == "CREATING":
            instant["status"] = "READY"
        return None

    def unregister() -> None:
        world.instant_snapshots.pop(path, None)

    op, created = world.start_operation(
        method=method,
        project=project,
        scope=scope,
        operation_type="insert",
        target=path,
        request_id=query.get("requestId"),
        duration=world.timings["instant_snapshot_create"],
        on_done=ready,
        on_fail=unregister,
    )
    if created:
        world.instant_snapshots[path] = instant
        world.last_instant_of_disk[disk_path] = now
    return op


def _limit_error(world: World, disk_path: str, now: float) -> dict[str, str] | None:
    if len(of_disk(world, disk_path)) >= MAX_PER_DISK:
        return {
            "code": "INSTANT_SNAPSHOT_LIMIT",
            "message": f"A disk can't have more than {MAX_PER_DISK} instant snapshots. To create an instant "
            f"snapshot of the disk, delete one first. (disk '{disk_path}')",
        }
    interval = world.timings["instant_snapshot_min_interval"]
    last = world.last_instant_of_disk.get(disk_path)
    if interval and last is not None and now - last < interval:
        return {
            "code": "INSTANT_SNAPSHOT_TOO_RECENT",
            "message": "The previous instant snapshot is too recent. To create an instant snapshot, wait at "
            f"least {interval:.0f} seconds and try again. (disk '{disk_path}')",
        }
    return None


def delete(
    world: World, project: str, scope: str, name: str, query: Mapping[str, str], *, method: str
) -> Operation:
    """instantSnapshots.delete / regionInstantSnapshots.delete: DELETING, then gone. 404 if unknown."""
    world.check_location(project, scope)
    path = f"projects/{project}/{scope}/instantSnapshots/{name}"
    existing = world.request_ids.get((project, query.get("requestId") or ""))
    if existing is not None:
        return existing
    instant = world.find(world.instant_snapshots, path)

    def gone() -> dict[str, str] | None:
        world.instant_snapshots.pop(path, None)
        return None

    op, created = world.start_operation(
        method=method,
        project=project,
        scope=scope,
        operation_type="delete",
        target=path,
        request_id=query.get("requestId"),
        duration=world.timings["instant_snapshot_delete"],
        on_done=gone,
    )
    if created:
        instant["status"] = "DELETING"
    return op


def snapshot_source(world: World, project: str, body: Mapping[str, Any]) -> tuple[str, Json]:
    """For snapshots.insert with ``sourceInstantSnapshot``: the instant snapshot's disk path and the fields
    the new snapshot gets (``sourceInstantSnapshot`` as a URL, ``sourceInstantSnapshotId``, and the disk's
    id and size). 400 when ``sourceDisk`` is given too or the instant snapshot is not READY; 404 when it
    does not exist (deleted, or deleted with its disk)."""
    if body.get("sourceDisk"):
        raise ApiError(
            400,
            "invalid",
            "Invalid value for field 'resource': a snapshot has one source: set 'sourceDisk' or "
            "'sourceInstantSnapshot', not both",
        )
    path = _reference(project, str(body["sourceInstantSnapshot"]), field="sourceInstantSnapshot")
    if path.split("/")[4:5] != ["instantSnapshots"]:
        raise ApiError(400, "invalid", f"Invalid value for field 'resource.sourceInstantSnapshot': '{path}'")
    instant = world.find(world.instant_snapshots, path)
    if instant["status"] != "READY":
        raise ApiError(
            400, "resourceNotReady", f"The resource '{path}' is not ready (status {instant['status']})"
        )
    fields = {
        "sourceInstantSnapshot": world.url(path),
        "sourceInstantSnapshotId": instant["id"],
        "sourceDiskId": instant["sourceDiskId"],
        "diskSizeGb": instant["diskSizeGb"],
    }
    return resource_path(instant["sourceDisk"]), fields


def delete_disk(world: World, disk_path: str) -> list[str]:
    """Remove a disk (detached from its VMs first) and, as Compute Engine does, its instant snapshots.
    A test's stand-in for a disk deleted behind the backup's back; returns the instant snapshots deleted."""
    world.find(world.disks, disk_path)
    gone = [
        path
        for path, item in world.instant_snapshots.items()
        if resource_path(item["sourceDisk"]) == disk_path
    ]
    for path in gone:
        del world.instant_snapshots[path]
    for instance in world.instances.values():
        instance["disks"] = [
            d for d in instance["disks"] if not d.get("source") or resource_path(d["source"]) != disk_path
        ]
    del world.disks[disk_path]
    return gone


def register_routes(route: Callable[[str, str, str], Callable[[Any], Any]]) -> None:
    """Add the zonal and regional instant snapshot methods to the server's routes (``server._route``)."""
    for scope_re, key, api in (
        (r"zones/(?P<zone>[^/]+)", "zones", "instantSnapshots"),
        (r"regions/(?P<region>[^/]+)", "regions", "regionInstantSnapshots"),
    ):
        _scope_routes(route, scope_re, key, api)


def _scope_routes(route: Callable[..., Any], scope_re: str, key: str, api: str) -> None:
    def scope(p: Mapping[str, str]) -> str:
        return f"{key}/{p[key[:-1]]}"

    item = f"{scope_re}/instantSnapshots/(?P<instant>[^/]+)"

    @route("POST", f"{scope_re}/instantSnapshots", f"compute.{api}.insert")
    def _insert(emu: Any, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
        return insert(emu.world, p["project"], scope(p), body, q, method=f"compute.{api}.insert")

    @route("GET", item, f"compute.{api}.get")
    def _get(emu: Any, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
        emu.world.check_location(p["project"], scope(p))
        path = f"projects/{p['project']}/{scope(p)}/instantSnapshots/{p['instant']}"
        return emu.world.find(emu.world.instant_snapshots, path)

    @route("GET", f"{scope_re}/instantSnapshots", f"compute.{api}.list")
    def _list(emu: Any, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
        emu.world.check_location(p["project"], scope(p))
        prefix = f"projects/{p['project']}/{scope(p)}/instantSnapshots/"
        items = [v for path, v in sorted(emu.world.instant_snapshots.items()) if path.startswith(prefix)]
        return compute.list_response(
            "compute#instantSnapshotList", items, q, emu.world.url(prefix.rstrip("/"))
        )

    @route("DELETE", item, f"compute.{api}.delete")
    def _delete(emu: Any, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
        return delete(emu.world, p["project"], scope(p), p["instant"], q, method=f"compute.{api}.delete")
