"""Restore's instance methods: insert with existing disks, delete, attachDisk, detachDisk.

Reference: https://cloud.google.com/compute/docs/reference/rest/v1/instances (insert, delete, attachDisk,
detachDisk) and the Instance / AttachedDisk resources. Conventions as in restore.py (requestId first,
zone operations, faults by method id, strict 400 where the reference is silent). Callers hold
``world.lock`` and have called ``tick()``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gce_emulator import restore_guest
from gce_emulator.model import ApiError, Operation, World, resource_path, validate_name
from gce_emulator.restore import (
    ATTACHED_DISK_FIELDS,
    DEVICE_NAME_RE,
    INSTANCE_FIELDS,
    MACHINE_TYPE_RE,
    NIC_FIELDS,
    check_disk_usable_in_zone,
    check_fields,
    check_labels,
    check_not_in_use,
    find_disk,
    fingerprint,
    reference,
    region_of,
    repeat,
    strict,
)

Json = dict[str, Any]
BOOT_STATE_RULE = "To {verb} the boot disk, the instance must be in TERMINATED state."


def _attached(world: World, disk_path: str, disk: Json, spec: Mapping[str, Any], index: int) -> Json:
    """An AttachedDisk as the Instance resource shows it (``source`` a full URL, ``index`` in order)."""
    mode = spec.get("mode") or "READ_WRITE"
    device = spec.get("deviceName") or f"persistent-disk-{index}"
    if not DEVICE_NAME_RE.match(device):
        raise ApiError(400, "invalid", f"Invalid value for field 'deviceName': '{device}'")
    return {
        "kind": "compute#attachedDisk",
        "type": "PERSISTENT",
        "mode": mode,
        "source": world.url(disk_path),
        "deviceName": device,
        "index": index,
        "boot": bool(spec.get("boot", False)),
        "autoDelete": bool(spec.get("autoDelete", False)),
        "interface": spec.get("interface") or "SCSI",
        "diskSizeGb": disk["sizeGb"],
    }


def _check_attached_spec(spec: Any, field: str) -> None:
    """AttachedDisk fields: ``source`` ("a valid partial or full URL to an existing Persistent Disk
    resource"), ``mode`` READ_WRITE (default) or READ_ONLY, ``type`` PERSISTENT (SCRATCH local SSDs and
    ``initializeParams``, which creates a disk, are not modelled: 400), ``interface`` SCSI or NVME."""
    if not isinstance(spec, dict):
        raise ApiError(400, "invalid", f"Invalid value for field '{field}'")
    check_fields(spec, ATTACHED_DISK_FIELDS, field)
    if not spec.get("source"):
        raise ApiError(400, "required", f"Required field '{field}.source' not specified")
    if spec.get("mode", "READ_WRITE") not in ("READ_WRITE", "READ_ONLY"):
        raise ApiError(400, "invalid", f"Invalid value for field '{field}.mode': '{spec.get('mode')}'")
    if spec.get("type", "PERSISTENT") != "PERSISTENT":
        raise strict(f"{field}.type {spec.get('type')!r}: only PERSISTENT disks")
    if spec.get("interface", "SCSI") not in ("SCSI", "NVME"):
        raise ApiError(
            400, "invalid", f"Invalid value for field '{field}.interface': '{spec.get('interface')}'"
        )


def _network_interfaces(world: World, project: str, zone: str, specs: Any) -> list[Json]:
    """NetworkInterface: ``network`` (default ``global/networks/default``) and/or ``subnetwork``, optional
    ``networkIP``; ``accessConfigs`` ONE_TO_ONE_NAT give an external IP, none means "no external IP"
    (https://cloud.google.com/compute/docs/ip-addresses/reserve-static-internal-ip-address). At least one
    interface is required (strict). Networks themselves are not modelled: any well-formed one exists."""
    if not isinstance(specs, list) or not specs:
        raise ApiError(400, "required", "Required field 'resource.networkInterfaces' not specified")
    region = region_of(zone)
    out = []
    for number, spec in enumerate(specs):
        field = f"resource.networkInterfaces[{number}]"
        if not isinstance(spec, dict):
            raise ApiError(400, "invalid", f"Invalid value for field '{field}'")
        check_fields(spec, NIC_FIELDS, field)
        network = reference(project, spec.get("network") or "global/networks/default", f"{field}.network")
        if not re.fullmatch(r"projects/[^/]+/global/networks/[a-z]([-a-z0-9]*[a-z0-9])?", network):
            raise ApiError(
                400, "invalid", f"Invalid value for field '{field}.network': '{spec.get('network')}'"
            )
        subnetwork = reference(
            project,
            spec.get("subnetwork") or f"regions/{region}/subnetworks/{network.rsplit('/', 1)[-1]}",
            f"{field}.subnetwork",
        )
        if not re.fullmatch(
            rf"projects/[^/]+/regions/{re.escape(region)}/subnetworks/[a-z][-a-z0-9]*", subnetwork
        ):
            raise ApiError(400, "invalid", f"Invalid value for field '{field}.subnetwork': not in {region}")
        nic: Json = {
            "kind": "compute#networkInterface",
            "name": f"nic{number}",
            "network": world.url(network),
            "subnetwork": world.url(subnetwork),
            "networkIP": spec.get("networkIP") or f"10.128.{number}.{len(world.instances) % 250 + 2}",
            "fingerprint": fingerprint([network, subnetwork, number]),
        }
        configs = spec.get("accessConfigs") or []
        if not isinstance(configs, list) or len(configs) > 1:
            raise ApiError(400, "invalid", f"Invalid value for field '{field}.accessConfigs': at most one")
        for config in configs:
            if not isinstance(config, dict) or config.get("type", "ONE_TO_ONE_NAT") != "ONE_TO_ONE_NAT":
                raise strict(f"{field}.accessConfigs: only type ONE_TO_ONE_NAT")
            nic["accessConfigs"] = [
                {
                    "kind": "compute#accessConfig",
                    "type": "ONE_TO_ONE_NAT",
                    "name": config.get("name") or "External NAT",
                    "natIP": config.get("natIP") or f"203.0.113.{len(world.instances) % 250 + 2}",
                    "networkTier": config.get("networkTier") or "PREMIUM",
                }
            ]
        out.append(nic)
    return out


# Metadata (the Instance resource's ``metadata``, https://cloud.google.com/compute/docs/reference/rest/v1/
# instances#Metadata): items[].key "must conform to the following regexp: [a-zA-Z0-9-_]+, and be less than
# 128 bytes in length"; items[].value "must be less than or equal to 262144 bytes (256 KiB)"; "the total
# size of all keys and values must be less than 512 KiB". ``fingerprint`` is the server's on insert.
METADATA_KEY_RE = re.compile(r"^[a-zA-Z0-9_-]{1,127}$")
METADATA_VALUE_MAX = 262144
METADATA_TOTAL_MAX = 512 * 1024
# Scheduling (https://cloud.google.com/compute/docs/reference/rest/v1/instances#Scheduling), the fields
# modelled: automaticRestart (boolean), onHostMaintenance (MIGRATE | TERMINATE), preemptible (boolean),
# provisioningModel (STANDARD | SPOT). "For preemptible instances, the default and only possible behavior
# is TERMINATE" (onHostMaintenance), and preemptible instances cannot be restarted automatically.
SCHEDULING_ENUMS = {"onHostMaintenance": {"MIGRATE", "TERMINATE"}, "provisioningModel": {"STANDARD", "SPOT"}}
SCHEDULING_BOOLEANS = {"automaticRestart", "preemptible"}
# Tags (https://cloud.google.com/compute/docs/reference/rest/v1/instances#Tags): items[] "Each tag within
# the list must comply with RFC1035", 1-63 characters; the fingerprint is the server's on insert.
TAG_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def _metadata_items(metadata: Any) -> list[Json]:
    """``metadata.items[]`` as given, each ``{"key", "value"}`` checked (see METADATA_KEY_RE); anything
    else in ``metadata`` (but ``kind`` and ``fingerprint``) is not modelled: 400."""
    if metadata is None:
        return []
    if not isinstance(metadata, dict):
        raise ApiError(400, "invalid", "Invalid value for field 'resource.metadata'")
    check_fields(metadata, frozenset({"items", "fingerprint"}), "resource.metadata")
    items = metadata.get("items") or []
    if not isinstance(items, list):
        raise ApiError(400, "invalid", "Invalid value for field 'resource.metadata.items'")
    keys: set[str] = set()
    total = 0
    for number, item in enumerate(items):
        field = f"resource.metadata.items[{number}]"
        if not isinstance(item, dict):
            raise ApiError(400, "invalid", f"Invalid value for field '{field}'")
        check_fields(item, frozenset({"key", "value"}), field)
        key, value = item.get("key"), item.get("value", "")
        if not isinstance(key, str) or not METADATA_KEY_RE.match(key):
            raise ApiError(400, "invalid", f"Invalid value for field '{field}.key': {key!r}")
        if key in keys:
            raise ApiError(400, "invalid", f"Invalid value for field '{field}.key': duplicate key {key!r}")
        if not isinstance(value, str) or len(value.encode()) > METADATA_VALUE_MAX:
            raise ApiError(400, "invalid", f"Invalid value for field '{field}.value': at most 256 KiB")
        keys.add(key)
        total += len(key.encode()) + len(value.encode())
    if total >= METADATA_TOTAL_MAX:
        raise ApiError(
            400, "invalid", "Invalid value for field 'resource.metadata': less than 512 KiB in all"
        )
    return [{"key": item["key"], "value": item.get("value", "")} for item in items]


def _tags(tags: Any) -> Json | None:
    if tags is None:
        return None
    if not isinstance(tags, dict):
        raise ApiError(400, "invalid", "Invalid value for field 'resource.tags'")
    check_fields(tags, frozenset({"items"}), "resource.tags")
    items = tags.get("items") or []
    if not isinstance(items, list) or not all(isinstance(t, str) and TAG_RE.match(t) for t in items):
        raise ApiError(400, "invalid", f"Invalid value for field 'resource.tags.items': {items!r}")
    return {"items": list(items), "fingerprint": fingerprint(items)}


def _service_accounts(accounts: Any) -> list[Json] | None:
    """serviceAccounts[] (https://cloud.google.com/compute/docs/reference/rest/v1/instances, "A list of
    service accounts, with their specified scopes, authorized for this instance. Only one service account
    per VM instance is supported."): ``email`` and ``scopes[]`` (URLs)."""
    if accounts is None:
        return None
    if not isinstance(accounts, list) or len(accounts) > 1:
        raise ApiError(400, "invalid", "Invalid value for field 'resource.serviceAccounts': at most one")
    out = []
    for number, account in enumerate(accounts):
        field = f"resource.serviceAccounts[{number}]"
        if not isinstance(account, dict):
            raise ApiError(400, "invalid", f"Invalid value for field '{field}'")
        check_fields(account, frozenset({"email", "scopes"}), field)
        email, scopes = account.get("email"), account.get("scopes") or []
        if not isinstance(email, str) or not re.fullmatch(r"[^@\s/]+@[^@\s/]+|default", email):
            raise ApiError(400, "invalid", f"Invalid value for field '{field}.email': {email!r}")
        if not isinstance(scopes, list) or not all(
            isinstance(x, str) and x.startswith("https://") for x in scopes
        ):
            raise ApiError(400, "invalid", f"Invalid value for field '{field}.scopes': {scopes!r}")
        out.append({"email": email, "scopes": list(scopes)})
    return out


def _scheduling(scheduling: Any) -> Json | None:
    if scheduling is None:
        return None
    if not isinstance(scheduling, dict):
        raise ApiError(400, "invalid", "Invalid value for field 'resource.scheduling'")
    check_fields(scheduling, frozenset(SCHEDULING_ENUMS) | SCHEDULING_BOOLEANS, "resource.scheduling")
    for key, allowed in SCHEDULING_ENUMS.items():
        if key in scheduling and scheduling[key] not in allowed:
            raise ApiError(
                400, "invalid", f"Invalid value for field 'resource.scheduling.{key}': {scheduling[key]!r}"
            )
    for key in SCHEDULING_BOOLEANS:
        if key in scheduling and not isinstance(scheduling[key], bool):
            raise ApiError(
                400, "invalid", f"Invalid value for field 'resource.scheduling.{key}': {scheduling[key]!r}"
            )
    preemptible = scheduling.get("preemptible") or scheduling.get("provisioningModel") == "SPOT"
    if preemptible and (
        scheduling.get("automaticRestart") or scheduling.get("onHostMaintenance") == "MIGRATE"
    ):
        raise ApiError(
            400,
            "invalid",
            "Invalid value for field 'resource.scheduling': preemptible and Spot VMs take onHostMaintenance "
            "TERMINATE and no automatic restart",
        )
    return dict(scheduling)


def insert_instance(
    world: World, project: str, zone: str, body: Mapping[str, Any], query: Mapping[str, str]
) -> Operation:
    """instances.insert (.../v1/instances/insert) with existing disks.

    ``disks[]``: each an existing disk by ``source`` in the VM's zone (or a regional disk replicated to
    it), READY; exactly one ``boot`` disk, first in the list (strict: the reference's ``boot`` "Indicates
    that this is a boot disk"; the API refuses a VM without one). A disk another VM uses READ_WRITE, or
    that this request wants READ_WRITE while another VM has it, is 400 ``resourceInUseByAnotherResource``.
    ``deviceName`` defaults to ``persistent-disk-N`` ("If not specified, the server chooses a default
    device name to apply to this disk, in the form persistent-disk-x"); two disks of one VM cannot share
    one. ``autoDelete`` ("Specifies whether the disk will be auto-deleted when the instance is deleted")
    defaults to false. ``machineType`` is required, in the VM's zone. ``labels``, ``metadata``, ``tags``,
    ``serviceAccounts``, ``scheduling``, ``deletionProtection``, ``description`` are kept as given, each
    checked first (see ``_metadata_items``, ``_tags``, ``_service_accounts``, ``_scheduling``: a field of
    them the emulator does not model is 400).

    Status (the reference's values PROVISIONING, STAGING, RUNNING, ...): PROVISIONING, then STAGING when
    the operation is DONE (after ``instance_provision``), then RUNNING after the ``start`` timing. That
    the insert operation can be DONE before the VM is RUNNING is deliberate (the reference promises
    nothing more): read the VM's status. A name already used in the zone is 409.
    """
    world.check_location(project, f"zones/{zone}")
    existing = repeat(world, project, query)
    if existing is not None:
        return existing
    check_fields(body, INSTANCE_FIELDS, "instance")
    name = body.get("name") or ""
    validate_name(name)
    path = f"projects/{project}/zones/{zone}/instances/{name}"
    if path in world.instances:
        raise ApiError(409, "alreadyExists", f"The resource '{path}' already exists")
    machine = reference(project, body.get("machineType") or "", "resource.machineType")
    match = re.fullmatch(rf"projects/{re.escape(project)}/zones/{re.escape(zone)}/machineTypes/(.+)", machine)
    if not match or not MACHINE_TYPE_RE.match(match.group(1)):
        raise ApiError(
            400, "invalid", f"Invalid value for field 'resource.machineType': '{body.get('machineType')}'"
        )
    specs = body.get("disks")
    if not isinstance(specs, list) or not specs:
        raise ApiError(400, "required", "Required field 'resource.disks' not specified")
    attached: list[Json] = []
    paths: list[str] = []
    for index, spec in enumerate(specs):
        field = f"resource.disks[{index}]"
        _check_attached_spec(spec, field)
        disk_path, disk = find_disk(world, project, spec["source"], f"{field}.source")
        if disk_path in paths:
            raise ApiError(400, "invalid", f"Invalid value for field '{field}.source': attached twice")
        check_disk_usable_in_zone(world, disk_path, disk, zone, f"{field}.source")
        check_not_in_use(world, disk_path, disk, spec.get("mode") or "READ_WRITE")
        attached.append(_attached(world, disk_path, disk, spec, index))
        paths.append(disk_path)
    boots = [d["index"] for d in attached if d["boot"]]
    if boots != [0]:
        raise ApiError(
            400, "invalid", "Invalid value for field 'resource.disks': exactly one boot disk, the first"
        )
    devices = [d["deviceName"] for d in attached]
    if len(set(devices)) != len(devices):
        raise ApiError(
            400, "invalid", f"Invalid value for field 'resource.disks': duplicate deviceName in {devices}"
        )
    nics = _network_interfaces(world, project, zone, body.get("networkInterfaces"))
    labels = check_labels(body.get("labels"), "resource.labels")
    items = _metadata_items(body.get("metadata"))
    extra = {
        "tags": _tags(body.get("tags")),
        "serviceAccounts": _service_accounts(body.get("serviceAccounts")),
        "scheduling": _scheduling(body.get("scheduling")),
    }
    instance: Json = {
        "kind": "compute#instance",
        "id": world.new_id(path + str(world.clock.now())),
        "name": name,
        "zone": world.url(f"projects/{project}/zones/{zone}"),
        "machineType": world.url(machine),
        "status": "PROVISIONING",
        "labels": labels,
        "labelFingerprint": fingerprint(labels),
        "metadata": {
            "kind": "compute#metadata",
            "items": list(items or []),
            "fingerprint": fingerprint(items or []),
        },
        "disks": attached,
        "networkInterfaces": nics,
        "selfLink": world.url(path),
        "creationTimestamp": world.clock.timestamp(),
        "deletionProtection": bool(body.get("deletionProtection", False)),
    }
    if body.get("description") is not None:
        instance["description"] = body["description"]
    instance.update({key: value for key, value in extra.items() if value is not None})
    for disk_path in paths:
        world.disks[disk_path]["users"].append(world.url(path))

    def staging() -> dict[str, str] | None:
        if world.instances.get(path) is instance and instance["status"] == "PROVISIONING":
            instance["status"] = "STAGING"
        return None

    def running() -> None:
        if world.instances.get(path) is instance and instance["status"] == "STAGING":
            instance["status"] = "RUNNING"
            instance["lastStartTimestamp"] = world.clock.timestamp(running_at)
            restore_guest.booted(world, path, at=running_at)

    def failed() -> None:
        if world.instances.get(path) is instance:
            _release(world, path, instance, delete_auto=False)

    world.instances[path] = instance
    restore_guest.forget(world, path)
    op, _ = world.start_operation(
        method="compute.instances.insert",
        project=project,
        scope=f"zones/{zone}",
        operation_type="insert",
        target=path,
        request_id=query.get("requestId"),
        duration=world.timings["instance_provision"],
        on_done=staging,
        on_fail=failed,
    )
    # Scheduled from now, not from the STAGING event: events are applied lazily, late.
    running_at = world.schedule(world.timings["instance_provision"] + world.timings["start"], running)
    return op


def _release(world: World, path: str, instance: Json, *, delete_auto: bool) -> None:
    """Remove the VM: its disks lose it as a user; with ``delete_auto``, autoDelete disks go too."""
    del world.instances[path]
    restore_guest.forget(world, path)
    url = world.url(path)
    for attached in instance["disks"]:
        if attached.get("type") != "PERSISTENT":
            continue
        disk_path = resource_path(attached["source"])
        disk = world.disks.get(disk_path)
        if disk is None:
            continue
        disk["users"] = [user for user in disk["users"] if user != url]
        if delete_auto and attached.get("autoDelete") and not disk["users"]:
            del world.disks[disk_path]


def delete_instance(world: World, project: str, zone: str, name: str, query: Mapping[str, str]) -> Operation:
    """instances.delete (.../v1/instances/delete): "Deletes the specified Instance resource". Attached
    disks with ``autoDelete`` true are deleted with it, the others stay, detached. A VM with
    ``deletionProtection`` is refused (400; the reference: "Whether the resource should be protected
    against deletion"). The VM is STOPPING until the operation is DONE, then gone."""
    world.check_location(project, f"zones/{zone}")
    existing = repeat(world, project, query)
    if existing is not None:
        return existing
    path = f"projects/{project}/zones/{zone}/instances/{name}"
    instance = world.find(world.instances, path)
    if instance.get("deletionProtection"):
        raise ApiError(400, "resourceIsProtected", f"The resource '{path}' is protected against deletion")
    prior = instance["status"]

    def gone() -> dict[str, str] | None:
        if world.instances.get(path) is instance:
            _release(world, path, instance, delete_auto=True)
        return None

    def failed() -> None:
        if world.instances.get(path) is instance:
            instance["status"] = prior

    op, _ = world.start_operation(
        method="compute.instances.delete",
        project=project,
        scope=f"zones/{zone}",
        operation_type="delete",
        target=path,
        request_id=query.get("requestId"),
        duration=world.timings["instance_delete"],
        on_done=gone,
        on_fail=failed,
    )
    if instance["status"] != "TERMINATED":
        instance["status"] = "STOPPING"
    return op


def _reindex(instance: Json) -> None:
    """The boot disk first, then the others in attach order; ``index`` follows the order."""
    instance["disks"].sort(key=lambda d: (not d.get("boot"), d["index"]))
    for index, attached in enumerate(instance["disks"]):
        attached["index"] = index


def attach_disk(
    world: World, project: str, zone: str, name: str, body: Mapping[str, Any], query: Mapping[str, str]
) -> Operation:
    """instances.attachDisk (.../v1/instances/attachDisk): "Attaches an existing Disk resource to an
    instance". Body: an AttachedDisk (see insert_instance). Rules: the disk must be usable in the VM's
    zone and READY; in use READ_WRITE elsewhere (or by this VM) is 400 ``resourceInUseByAnotherResource``;
    a ``boot`` disk only on a TERMINATED VM that has no boot disk (https://cloud.google.com/compute/docs/
    disks/detach-reattach-boot-disk: stop the VM, detach its boot disk, attach the new one with --boot),
    else 400 ``invalidResourceUsage``; a non-boot disk on a RUNNING or TERMINATED VM (other states 400
    ``resourceNotReady``, strict). ``forceAttach`` is not modelled (400). The disk counts as used from
    the call; it shows in the VM's ``disks`` when the operation is DONE."""
    world.check_location(project, f"zones/{zone}")
    existing = repeat(world, project, query)
    if existing is not None:
        return existing
    if query.get("forceAttach", "false") != "false":
        raise strict("forceAttach")
    path = f"projects/{project}/zones/{zone}/instances/{name}"
    instance = world.find(world.instances, path)
    _check_attached_spec(body, "resource")
    disk_path, disk = find_disk(world, project, body["source"], "resource.source")
    check_disk_usable_in_zone(world, disk_path, disk, zone, "resource.source")
    mode = body.get("mode") or "READ_WRITE"
    if world.url(path) in disk.get("users", []):
        raise ApiError(
            400,
            "resourceInUseByAnotherResource",
            f"The disk resource '{disk_path}' is already being used by '{path}'",
        )
    check_not_in_use(world, disk_path, disk, mode)
    status = instance["status"]
    if body.get("boot"):
        if status != "TERMINATED":
            raise ApiError(
                400,
                "invalidResourceUsage",
                f"Invalid resource usage: '{BOOT_STATE_RULE.format(verb='attach')}'",
            )
        if any(d.get("boot") for d in instance["disks"]):
            raise ApiError(
                400, "invalidResourceUsage", f"Invalid resource usage: '{path}' already has a boot disk"
            )
    elif status not in ("RUNNING", "TERMINATED"):
        raise ApiError(400, "resourceNotReady", f"The resource '{path}' is not ready ({status})")
    used = {d["deviceName"] for d in instance["disks"]}
    index = len(instance["disks"])
    spec = dict(body)
    if not spec.get("deviceName"):
        spec["deviceName"] = next(
            f"persistent-disk-{n}" for n in range(index, index + 64) if f"persistent-disk-{n}" not in used
        )
    if spec["deviceName"] in used:
        raise ApiError(
            400, "invalid", f"Invalid value for field 'resource.deviceName': '{spec['deviceName']}' is in use"
        )
    entry = _attached(world, disk_path, disk, spec, index)
    url = world.url(path)

    def done() -> dict[str, str] | None:
        if world.instances.get(path) is instance:
            instance["disks"].append(entry)
            _reindex(instance)
        return None

    def failed() -> None:
        disk["users"] = [user for user in disk["users"] if user != url]

    disk["users"].append(url)
    op, _ = world.start_operation(
        method="compute.instances.attachDisk",
        project=project,
        scope=f"zones/{zone}",
        operation_type="attachDisk",
        target=path,
        request_id=query.get("requestId"),
        duration=world.timings["attach_disk"],
        on_done=done,
        on_fail=failed,
    )
    return op


def detach_disk(world: World, project: str, zone: str, name: str, query: Mapping[str, str]) -> Operation:
    """instances.detachDisk (.../v1/instances/detachDisk), by ``deviceName`` ("The device name of the disk
    to detach", required). The boot disk of a VM that is not TERMINATED is refused with 400
    ``invalidResourceUsage``, "Invalid resource usage: 'To detach the boot disk, the instance must be in
    TERMINATED state.'" (the API's own message); a non-boot disk detaches from a RUNNING or TERMINATED VM
    (other states 400 ``resourceNotReady``, strict). An unknown device name is 400. The disk leaves the VM
    (and the VM leaves the disk's ``users``) when the operation is DONE."""
    world.check_location(project, f"zones/{zone}")
    existing = repeat(world, project, query)
    if existing is not None:
        return existing
    path = f"projects/{project}/zones/{zone}/instances/{name}"
    instance = world.find(world.instances, path)
    device = query.get("deviceName") or ""
    if not device:
        raise ApiError(400, "required", "Required field 'deviceName' not specified")
    entry = next((d for d in instance["disks"] if d.get("deviceName") == device), None)
    if entry is None:
        raise ApiError(
            400, "invalid", f"Invalid value for field 'deviceName': '{device}'. No such disk on '{path}'"
        )
    if entry.get("type") != "PERSISTENT":
        raise strict(f"detaching local SSD {device!r}")
    status = instance["status"]
    if entry.get("boot") and status != "TERMINATED":
        raise ApiError(
            400, "invalidResourceUsage", f"Invalid resource usage: '{BOOT_STATE_RULE.format(verb='detach')}'"
        )
    if status not in ("RUNNING", "TERMINATED"):
        raise ApiError(400, "resourceNotReady", f"The resource '{path}' is not ready ({status})")
    url = world.url(path)

    def done() -> dict[str, str] | None:
        if world.instances.get(path) is instance and entry in instance["disks"]:
            instance["disks"].remove(entry)
            _reindex(instance)
            disk = world.disks.get(resource_path(entry["source"]))
            if disk is not None:
                disk["users"] = [user for user in disk["users"] if user != url]
        return None

    op, _ = world.start_operation(
        method="compute.instances.detachDisk",
        project=project,
        scope=f"zones/{zone}",
        operation_type="detachDisk",
        target=path,
        request_id=query.get("requestId"),
        duration=world.timings["detach_disk"],
        on_done=done,
    )
    return op
