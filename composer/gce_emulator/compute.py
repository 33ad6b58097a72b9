"""What each emulated API method does to the world. Callers hold ``world.lock`` and call ``tick()``."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from gce_emulator.filters import FilterError, compile_filter
from gce_emulator.model import ApiError, Operation, World, resource_path, validate_name

Json = dict[str, Any]


# ---- seeding -------------------------------------------------------------------------------------
def load_seed(world: World, seed: Mapping[str, Any]) -> None:
    """Fill the world from a seed mapping (see the package docstring for the format)."""
    for project, spec in (seed.get("projects") or {}).items():
        world.projects.add(project)
        world.zones.setdefault(project, set())
        world.regions.setdefault(project, set())
        for region, region_spec in (spec.get("regions") or {}).items():
            world.regions[project].add(region)
            for disk in (region_spec or {}).get("disks") or []:
                path = f"projects/{project}/regions/{region}/disks/{disk['name']}"
                world.disks[path] = _disk_json(world, path, disk, region=region)
        for zone, zone_spec in (spec.get("zones") or {}).items():
            world.zones[project].add(zone)
            for instance in (zone_spec or {}).get("instances") or []:
                _seed_instance(world, project, zone, instance)
            for disk in (zone_spec or {}).get("disks") or []:
                path = f"projects/{project}/zones/{zone}/disks/{disk['name']}"
                world.disks[path] = _disk_json(world, path, disk, zone=zone)
        for snapshot in spec.get("snapshots") or []:
            seed_snapshot(world, project, snapshot)


def _disk_json(world: World, path: str, spec: Mapping[str, Any], *, zone: str = "", region: str = "") -> Json:
    project = path.split("/")[1]
    disk: Json = {
        "kind": "compute#disk",
        "id": world.new_id(path),
        "name": spec["name"],
        "sizeGb": str(spec.get("size_gb", 10)),
        "type": world.url(
            f"projects/{project}/{'zones/' + zone if zone else 'regions/' + region}/diskTypes/"
            f"{spec.get('type', 'pd-balanced')}"
        ),
        "status": "READY",
        "selfLink": world.url(path),
        "labels": dict(spec.get("labels") or {}),
        "users": [],
    }
    if zone:
        disk["zone"] = world.url(f"projects/{project}/zones/{zone}")
    else:
        disk["region"] = world.url(f"projects/{project}/regions/{region}")
        disk["replicaZones"] = [
            world.url(f"projects/{project}/zones/{z}") for z in spec.get("replica_zones", [])
        ]
    return disk


def _seed_instance(world: World, project: str, zone: str, spec: Mapping[str, Any]) -> None:
    path = f"projects/{project}/zones/{zone}/instances/{spec['name']}"
    attached: list[Json] = []
    for index, disk_spec in enumerate(spec.get("disks") or [{"name": spec["name"], "boot": True}]):
        if "region_disk" in disk_spec:
            region, _, name = disk_spec["region_disk"].partition("/")
            disk_path = f"projects/{project}/regions/{region}/disks/{name}"
        else:
            disk_path = f"projects/{project}/zones/{zone}/disks/{disk_spec['name']}"
            world.disks.setdefault(disk_path, _disk_json(world, disk_path, disk_spec, zone=zone))
        disk = world.find(world.disks, disk_path)
        disk["users"].append(world.url(path))
        attached.append(
            {
                "kind": "compute#attachedDisk",
                "type": "PERSISTENT",
                "mode": "READ_WRITE",
                "source": world.url(disk_path),
                "deviceName": disk["name"],
                "index": index,
                "boot": bool(disk_spec.get("boot", index == 0)),
                "autoDelete": False,
                "interface": "SCSI",
                "diskSizeGb": disk["sizeGb"],
            }
        )
    for number in range(int(spec.get("local_ssds", 0))):
        attached.append(
            {
                "kind": "compute#attachedDisk",
                "type": "SCRATCH",
                "mode": "READ_WRITE",
                "deviceName": f"local-ssd-{number}",
                "index": len(attached),
                "boot": False,
                "interface": "NVME",
                "diskSizeGb": "375",
            }
        )
    world.instances[path] = {
        "kind": "compute#instance",
        "id": world.new_id(path),
        "name": spec["name"],
        "zone": world.url(f"projects/{project}/zones/{zone}"),
        "machineType": world.url(
            f"projects/{project}/zones/{zone}/machineTypes/{spec.get('machine_type', 'e2-small')}"
        ),
        "status": spec.get("status", "RUNNING"),
        "labels": dict(spec.get("labels") or {}),
        "disks": attached,
        "selfLink": world.url(path),
        "creationTimestamp": world.clock.timestamp(0),
    }
    if spec.get("metadata"):
        # Instance.metadata.items[]: {key, value} (https://cloud.google.com/compute/docs/reference/rest/v1/instances)
        world.instances[path]["metadata"] = {
            "kind": "compute#metadata",
            "fingerprint": "42WmSpB8rSM=",
            "items": [{"key": str(k), "value": str(v)} for k, v in dict(spec["metadata"]).items()],
        }


def seed_snapshot(world: World, project: str, spec: Mapping[str, Any]) -> Json:
    """Add a snapshot as it would exist already (status READY unless given).

    With ``sourceDisk``, the snapshot has ``sourceDisk`` (a full URL, as the API returns it) and
    ``sourceDiskId`` (the id of that disk when the world has it, or the spec's ``sourceDiskId``: a
    snapshot of a disk since deleted), as in the Snapshot resource (see ``insert_snapshot``). A
    ``description`` is kept as given: the Snapshot resource's ``description`` is "an optional description
    of this resource. Provide this property when you create the resource"
    (https://cloud.google.com/compute/docs/reference/rest/v1/snapshots), and snapshots.get returns it.
    """
    path = f"projects/{project}/global/snapshots/{spec['name']}"
    snapshot: Json = {
        "kind": "compute#snapshot",
        "id": world.new_id(path),
        "name": spec["name"],
        "status": spec.get("status", "READY"),
        "labels": dict(spec.get("labels") or {}),
        "labelFingerprint": "42WmSpB8rSM=",  # as insert_snapshot's: every snapshot has one
        "creationTimestamp": spec.get("creationTimestamp", world.clock.timestamp()),
        "storageBytes": str(spec.get("storageBytes", 1 << 30)),
        "diskSizeGb": str(spec.get("diskSizeGb", 10)),
        "selfLink": world.url(path),
    }
    if spec.get("description") is not None:
        snapshot["description"] = str(spec["description"])
    if spec.get("sourceDisk"):
        disk_path = resource_path(spec["sourceDisk"])
        snapshot["sourceDisk"] = world.url(disk_path)
        disk_id = spec.get("sourceDiskId") or (world.disks.get(disk_path) or {}).get("id")
        if disk_id:
            snapshot["sourceDiskId"] = str(disk_id)
    world.snapshots[path] = snapshot
    return snapshot


# ---- listing -------------------------------------------------------------------------------------
def paginate(items: list[Json], query: Mapping[str, str]) -> tuple[list[Json], str | None]:
    try:
        predicate = compile_filter(query.get("filter"))
        size = int(query.get("maxResults") or 500)
        start = int(base64.urlsafe_b64decode(query["pageToken"]).decode()) if query.get("pageToken") else 0
    except FilterError as exc:
        raise ApiError(400, "invalid", str(exc)) from exc
    except ValueError as exc:
        raise ApiError(400, "invalid", "Invalid value for field 'pageToken' or 'maxResults'") from exc
    matched = [item for item in items if predicate(item)]
    page = matched[start : start + size]
    more = start + size < len(matched)
    token = base64.urlsafe_b64encode(str(start + size).encode()).decode() if more else None
    return page, token


def list_response(kind: str, items: list[Json], query: Mapping[str, str], self_link: str) -> Json:
    page, token = paginate(items, query)
    body: Json = {"kind": kind, "id": self_link, "items": page, "selfLink": self_link}
    if token:
        body["nextPageToken"] = token
    return body


def aggregated_instances(world: World, project: str, query: Mapping[str, str]) -> Json:
    world.check_location(project, "global")
    ordered = sorted(
        (path, item) for path, item in world.instances.items() if path.startswith(f"projects/{project}/")
    )
    page, token = paginate([item for _, item in ordered], query)
    grouped: dict[str, Json] = {f"zones/{zone}": {"instances": []} for zone in sorted(world.zones[project])}
    for item in page:
        grouped[f"zones/{item['zone'].rsplit('/', 1)[-1]}"]["instances"].append(item)
    for scope, entry in grouped.items():
        if not entry["instances"]:
            grouped[scope] = {"warning": {"code": "NO_RESULTS_ON_PAGE", "message": "There are no results."}}
    body: Json = {
        "kind": "compute#instanceAggregatedList",
        "items": grouped,
        "selfLink": world.url(f"projects/{project}/aggregated/instances"),
    }
    if token:
        body["nextPageToken"] = token
    return body


# ---- instances -----------------------------------------------------------------------------------
def stop_instance(world: World, path: str, query: Mapping[str, str]) -> Operation:
    instance = world.find(world.instances, path)
    project, zone = path.split("/")[1], path.split("/")[3]
    has_local_ssd = any(d.get("type") == "SCRATCH" for d in instance["disks"])
    if has_local_ssd and "discardLocalSsd" not in query:
        raise ApiError(
            400, "invalid", f"VM {instance['name']} has local SSDs: discardLocalSsd must be set to stop it"
        )
    status = instance["status"]
    duration = 0.0 if status == "TERMINATED" else world.timings["stop"]

    def begin() -> None:
        if instance["status"] in ("RUNNING", "SUSPENDED", "STAGING", "PROVISIONING"):
            instance["status"] = "STOPPING"

    def done() -> dict[str, str] | None:
        instance["status"] = "TERMINATED"
        return None

    def fail() -> None:
        if instance["status"] == "STOPPING":
            instance["status"] = "RUNNING"

    op, created = world.start_operation(
        method="compute.instances.stop",
        project=project,
        scope=f"zones/{zone}",
        operation_type="stop",
        target=path,
        request_id=query.get("requestId"),
        duration=duration,
        on_done=done,
        on_fail=fail,
    )
    if created and duration:
        begin()
    return op


def start_instance(world: World, path: str, query: Mapping[str, str], *, resume: bool = False) -> Operation:
    instance = world.find(world.instances, path)
    project, zone = path.split("/")[1], path.split("/")[3]
    status = instance["status"]
    method = "compute.instances.resume" if resume else "compute.instances.start"
    existing = world.request_ids.get((project, query.get("requestId") or ""))
    if existing is None:
        if resume and status != "SUSPENDED":
            raise ApiError(
                400,
                "resourceNotReady",
                f"VM {instance['name']} is {status}, only a SUSPENDED VM can be resumed",
            )
        if not resume and status == "SUSPENDED":
            raise ApiError(
                400, "resourceNotReady", f"VM {instance['name']} is SUSPENDED: use resume, not start"
            )
        if not resume and status in ("STOPPING", "PENDING_STOP", "SUSPENDING"):
            raise ApiError(400, "resourceNotReady", f"The resource '{path}' is not ready ({status})")
        if not any(d.get("boot") for d in instance["disks"]):  # restore detached it (restore_vm.py)
            raise ApiError(
                400, "invalidResourceUsage", f"The instance '{path}' has no boot disk to start from"
            )
    duration = 0.0 if status == "RUNNING" else world.timings["resume" if resume else "start"]

    def done() -> dict[str, str] | None:
        instance["status"] = "RUNNING"
        return None

    def fail() -> None:
        if instance["status"] == "STAGING":
            instance["status"] = "SUSPENDED" if resume else "TERMINATED"

    op, created = world.start_operation(
        method=method,
        project=project,
        scope=f"zones/{zone}",
        operation_type="resume" if resume else "start",
        target=path,
        request_id=query.get("requestId"),
        duration=duration,
        on_done=done,
        on_fail=fail,
    )
    if created and duration:
        instance["status"] = "STAGING"
    return op


# ---- snapshots -----------------------------------------------------------------------------------
def insert_snapshot(
    world: World, project: str, body: Mapping[str, Any], query: Mapping[str, str], *, method: str, scope: str
) -> Operation:
    """snapshots.insert (scope "global") and disks/regionDisks.createSnapshot (scope zone/region).

    The snapshot gets the output fields of the v1 Snapshot resource
    (https://cloud.google.com/compute/docs/reference/rest/v1/snapshots): ``sourceDisk``, "the source disk
    used to create this snapshot", as a full URL whatever form the request used, and ``sourceDiskId``,
    "[Output Only] The ID value of the disk used to create this snapshot. This value may be used to
    determine whether the snapshot was taken from the current or a previous instance of a given disk
    name." Labels are the request's.
    """
    world.check_location(project, "global")
    name = body.get("name") or ""
    validate_name(name)
    from_instant: Json = {}
    if body.get("sourceInstantSnapshot"):  # a conversion: see gce_emulator.instant.snapshot_source
        from gce_emulator.instant import snapshot_source

        repeated = world.request_ids.get((project, query.get("requestId") or ""))
        if repeated is not None:  # the instant snapshot may be gone since (deleted once converted)
            return repeated
        disk_path, from_instant = snapshot_source(world, project, body)
    elif body.get("sourceDisk"):
        disk_path = resource_path(body["sourceDisk"])
    else:
        raise ApiError(400, "required", "Required field 'resource.sourceDisk' not specified")
    path = f"projects/{project}/global/snapshots/{name}"
    existing_op = world.request_ids.get((project, query.get("requestId") or ""))
    if existing_op is not None:
        return existing_op
    disk = world.find(world.disks, disk_path)
    if path in world.snapshots:
        raise ApiError(409, "alreadyExists", f"The resource '{path}' already exists")
    now = world.clock.now()
    limit = world.timings["snapshot_rate_limit"]
    last = world.last_snapshot_of_disk.get(disk_path)
    if limit and last is not None and now - last < limit:
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
        world.finish(
            op,
            {
                "code": "RATE_LIMIT_EXCEEDED",
                "message": f"Operation rate exceeded for resource '{disk_path}'. Too frequent operations.",
            },
        )
        return op
    fail_fault = world.take_fault(
        "compute.snapshots.insert", ("fail_snapshot",), project=project, name_prefix=name
    )
    size_gb = int(disk["sizeGb"])
    creating = world.timings["snapshot_creating"]
    uploading = world.timings["snapshot_uploading"] + world.timings["snapshot_uploading_per_gb"] * size_gb
    snapshot: Json = {
        "kind": "compute#snapshot",
        "id": world.new_id(path),
        "name": name,
        "status": "CREATING",
        "sourceDisk": world.url(disk_path),
        "sourceDiskId": disk["id"],
        "diskSizeGb": disk["sizeGb"],
        "storageBytes": "0",
        "labels": dict(body.get("labels") or {}),
        "labelFingerprint": "42WmSpB8rSM=",
        "creationTimestamp": world.clock.timestamp(now),
        "selfLink": world.url(path),
        "snapshotType": body.get("snapshotType") or "STANDARD",
        "storageLocations": list(body.get("storageLocations") or ["us"]),
    }
    for key in ("description", "guestFlush", "chainName"):
        if body.get(key) is not None:
            snapshot[key] = body[key]
    snapshot.update(from_instant)

    def register() -> None:
        world.snapshots[path] = snapshot
        world.last_snapshot_of_disk[disk_path] = now

    def unregister() -> None:
        world.snapshots.pop(path, None)
        world.last_snapshot_of_disk.pop(disk_path, None)

    def to_uploading() -> None:
        if fail_fault is not None:
            snapshot["status"] = "FAILED"
        elif snapshot["status"] == "CREATING":
            snapshot["status"] = "UPLOADING"

    def to_ready() -> dict[str, str] | None:
        if snapshot["status"] == "FAILED":
            return {"code": "SNAPSHOT_FAILED", "message": f"Snapshot '{name}' failed"}
        snapshot["status"] = "READY"
        snapshot["storageBytes"] = str(size_gb * (1 << 30) // 3)
        return None

    op, created = world.start_operation(
        method=method,
        project=project,
        scope=scope,
        operation_type="insert" if scope == "global" else "createSnapshot",
        target=path,
        request_id=query.get("requestId"),
        duration=creating + uploading,
        on_done=to_ready,
        on_fail=unregister,
    )
    if created:
        register()
        world.schedule(creating, to_uploading)
    return op


def delete_snapshot(world: World, project: str, name: str, query: Mapping[str, str]) -> Operation:
    path = f"projects/{project}/global/snapshots/{name}"
    existing_op = world.request_ids.get((project, query.get("requestId") or ""))
    if existing_op is not None:
        return existing_op
    snapshot = world.find(world.snapshots, path)

    def done() -> dict[str, str] | None:
        world.snapshots.pop(path, None)
        return None

    op, created = world.start_operation(
        method="compute.snapshots.delete",
        project=project,
        scope="global",
        operation_type="delete",
        target=path,
        request_id=query.get("requestId"),
        duration=world.timings["snapshot_delete"],
        on_done=done,
    )
    if created:
        snapshot["status"] = "DELETING"
    return op
