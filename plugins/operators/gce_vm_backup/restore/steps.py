"""The converging steps restores and drills are made of: observe, act with a request id, observe again.

Every step takes the restore hook (``restore_hook.RestoreHook``) and is safe to repeat: a disk or a VM is
looked up by its deterministic name first and adopted when it carries the labels this run gives it (a
resource of that name WITHOUT them is someone else's: BackupError, nothing touched); every wait has a
deadline. Deletion never goes by name alone: resources are listed with a label filter
(``labels.label_filter``) and each one's labels are checked again before its delete.

Google libraries are imported inside the functions (parse-time rule).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NoReturn

from gce_vm_backup.compute.paths import VmRef
from gce_vm_backup.compute.polling import poll_until
from gce_vm_backup.config.labels import label_filter
from gce_vm_backup.errors import BackupError, OperationTimeoutError, ResourceNotFoundError

log = logging.getLogger(__name__)
DRILL_KEY = "gce-vm-backup-drill"  # which drill run made a scratch disk or VM
RESTORE_KEY = "gce-vm-backup-restore"  # which restore run made a disk or VM
REPLACED_BY_KEY = "gce-vm-backup-replaced-by"  # on an old disk a replace-disks run detached
MAX_NAME = 63
# The Scheduling fields a rebuilt VM takes (the manifest's camelCase keys -> compute_v1.Scheduling's).
SCHEDULING_FIELDS = {
    "automaticRestart": "automatic_restart",
    "onHostMaintenance": "on_host_maintenance",
    "preemptible": "preemptible",
    "provisioningModel": "provisioning_model",
}
Sleep = Callable[[float], None]


def short_hash(text: str, length: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def resource_name(prefix: str, readable: str, key: str) -> str:
    """A valid Compute Engine name ``<prefix>-<readable, cut>-<hash10 of key>``: deterministic for a key
    (a run + VM + disk), so a retry finds what an earlier try made."""
    suffix = f"-{short_hash(key)}"
    body = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{readable}".lower())).strip("-")
    body = body[: MAX_NAME - len(suffix)].rstrip("-")
    if not body or not body[0].isalpha():
        body = f"r{body}"[: MAX_NAME - len(suffix)].rstrip("-")
    return f"{body}{suffix}"


def owns(resource_labels: Mapping[str, str] | None, wanted: Mapping[str, str]) -> bool:
    """True when the resource carries every one of ``wanted`` (the client-side check of a filter)."""
    labels = dict(resource_labels or {})
    return all(labels.get(key) == value for key, value in wanted.items())


def _location(zone: str | None, region: str | None) -> dict[str, str]:
    return {"region": region} if region else {"zone": zone or ""}


def ensure_disk(
    hook: Any,
    *,
    project: str,
    zone: str | None = None,
    region: str | None = None,
    name: str,
    source_snapshot: str,
    labels: Mapping[str, str],
    request_id: str,
    timeout: float,
    replica_zones: list[str] | None = None,
    disk_type: str | None = None,
) -> str:
    """Make disk ``name`` from ``source_snapshot`` (``projects/P/global/snapshots/S``), or adopt it.
    ``disk_type`` (a type name such as pd-ssd) is given to the insert when set; otherwise Compute Engine
    takes its default type.

    Returns "created" or "adopted". Raises BackupError when a disk of that name exists without
    ``labels``, or was made from another snapshot; OperationFailedError / OperationTimeoutError from
    the wait.
    """
    where = _location(zone, region)
    existing = hook.get_disk(project_id=project, name=name, **where)
    if existing is not None:
        if not owns(existing.labels, labels):
            raise BackupError(
                f"Disk {name} in {project}/{zone or region} exists and is not this run's "
                f"(labels {dict(existing.labels)}); it was left alone"
            )
        made_from = existing.source_snapshot or ""
        if made_from and not made_from.endswith(source_snapshot.rsplit("/", 1)[-1]):
            raise BackupError(f"Disk {name} exists but was made from {made_from}, not {source_snapshot}")
        if existing.status == "READY":
            log.info("Disk %s in %s already exists (this run's): adopted", name, zone or region)
            return "adopted"
    typed = {"disk_type": disk_type} if disk_type else {}
    operation = hook.insert_disk(
        project_id=project,
        name=name,
        source_snapshot=source_snapshot,
        labels=dict(labels),
        replica_zones=replica_zones,
        request_id=request_id,
        **where,
        **typed,
    )
    hook.wait_operation(operation, timeout=timeout)
    log.info("Disk %s in %s/%s made from %s", name, project, zone or region, source_snapshot)
    return "adopted" if existing is not None else "created"


def ensure_instance(
    hook: Any,
    *,
    project: str,
    zone: str,
    instance: Any,
    request_id: str,
    timeout: float,
    owner_labels: Mapping[str, str] | None = None,
) -> str:
    """Create ``instance`` (a compute_v1.Instance whose labels mark this run), or adopt it.

    ``owner_labels``: the labels that mark this run (default: all of the instance's labels).
    Returns "created" or "adopted". Raises BackupError when a VM of that name exists without those labels.
    """
    wanted = dict(instance.labels) if owner_labels is None else dict(owner_labels)
    try:
        existing = hook.get_instance(project_id=project, zone=zone, name=instance.name)
    except ResourceNotFoundError:
        existing = None
    if existing is not None:
        if not owns(existing.labels, wanted):
            raise BackupError(
                f"VM {instance.name} in {project}/{zone} exists and is not this run's "
                f"(labels {dict(existing.labels)}); it was left alone"
            )
        log.info("VM %s in %s already exists (this run's): adopted", instance.name, zone)
        return "adopted"
    operation = hook.insert_instance(project_id=project, zone=zone, instance=instance, request_id=request_id)
    hook.wait_operation(operation, timeout=timeout)
    return "created"


def wait_for_status(
    hook: Any,
    *,
    project: str,
    zone: str,
    name: str,
    wanted: frozenset[str] | set[str],
    timeout: float,
    poll: float,
    sleep: Sleep = time.sleep,
) -> Any:
    """Look at the VM until its status is one of ``wanted``; the instance then.

    Raises OperationTimeoutError naming the VM and its last status when ``timeout`` passes first.
    """
    deadline = time.monotonic() + timeout

    def timed_out(instance: Any) -> NoReturn:
        raise OperationTimeoutError(
            f"VM {VmRef(project, zone, name)} is {instance.status}, not "
            f"{' or '.join(sorted(wanted))}, after {timeout:.0f} seconds"
        )

    return poll_until(
        lambda: hook.get_instance(project_id=project, zone=zone, name=name),
        lambda instance: instance.status in wanted,
        deadline=deadline,
        pause=lambda remaining: min(poll, remaining),
        on_timeout=timed_out,
        clock=time.monotonic,
        sleep=sleep,
    )


def delete_labelled(
    hook: Any,
    *,
    project: str,
    zone: str,
    labels: Mapping[str, str],
    listed_by: Mapping[str, str],
    paths: Collection[str],
    request_id: Callable[[str, str], str],
    timeout: float,
) -> dict[str, list[str]]:
    """Delete the VMs, then the disks, of ``paths`` in ``project``/``zone`` that carry every one of
    ``labels``; leave everything else alone.

    Every VM and disk of ``project``/``zone`` carrying ``listed_by`` (labels that mark the run) is listed
    and checked one by one: deleted only when its path is one of ``paths`` and it carries all of
    ``labels``; any other is reported under "refused" as ``"<path>: left alone, <why>"`` and not touched.
    Nothing outside ``project``/``zone`` is ever looked at, whatever ``paths`` holds. Returns
    ``{"deleted": [...], "refused": [...], "failed": [...]}`` (paths; "failed" with the error). Raises
    nothing for one failed delete: the others still go, and the caller reports what is left.
    """
    result: dict[str, list[str]] = {"deleted": [], "refused": [], "failed": []}
    where = label_filter(listed_by)
    deadline = time.monotonic() + timeout
    wanted = set(paths)
    listed = [
        ("instances", instance, hook.delete_instance)
        for _, instance in list(hook.list_instances(project_id=project, zone=zone, filter=where))
    ] + [
        ("disks", disk, hook.delete_disk)
        for disk in list(hook.list_disks(project_id=project, zone=zone, filter=where))
    ]
    for kind, resource, delete in listed:
        path = f"projects/{project}/zones/{zone}/{kind}/{resource.name}"
        if not owns(resource.labels, labels):
            result["refused"].append(f"{path}: left alone, it does not carry this run's labels")
            continue
        if path not in wanted:
            result["refused"].append(f"{path}: left alone, this run did not plan and record it")
            continue
        try:
            operation = delete(
                project_id=project, zone=zone, name=resource.name, request_id=request_id(path, "delete")
            )
            hook.wait_operation(operation, timeout=max(deadline - time.monotonic(), 1))
            result["deleted"].append(path)
        except ResourceNotFoundError:
            result["deleted"].append(path)  # already gone: what the cleanup wants
        except BackupError as exc:
            result["failed"].append(f"{path}: {exc}")
    return result


def network_path(project: str, network: str) -> str:
    return network if network.startswith("projects/") else f"projects/{project}/global/networks/{network}"


def subnetwork_path(project: str, zone: str, subnetwork: str) -> str:
    if subnetwork.startswith("projects/"):
        return subnetwork
    region = zone.rsplit("-", 1)[0]
    return f"projects/{project}/regions/{region}/subnetworks/{subnetwork}"


def build_instance(
    *,
    project: str,
    zone: str,
    name: str,
    machine_type: str,
    disks: list[Mapping[str, Any]],
    labels: Mapping[str, str],
    network: str | None,
    subnetwork: str | None = None,
    guest_attributes: bool = False,
    network_interfaces: Sequence[Mapping[str, Any]] | None = None,
    service_accounts: Sequence[Mapping[str, Any]] | None = None,
    scheduling: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Any:
    """A compute_v1.Instance with existing ``disks`` (``{"source", "device_name", "boot", "mode"}``) and
    network interfaces WITHOUT accessConfigs: no external IP (instances.insert, networkInterfaces[]:
    "If you specify no accessConfigs, the instance will have no external internet access").

    One interface on ``network``/``subnetwork``, or ``network_interfaces`` (``[{"network",
    "subnetwork"}]``, a rebuilt VM's). A rebuilt VM also takes ``service_accounts`` (``[{"email",
    "scopes"}]``), ``scheduling`` (the Scheduling resource's camelCase keys ``automaticRestart``,
    ``onHostMaintenance``, ``preemptible``, ``provisioningModel``), network ``tags`` and ``metadata``
    (key: value)."""
    from google.cloud import compute_v1

    machine = machine_type if "/" in machine_type else f"zones/{zone}/machineTypes/{machine_type}"
    wanted = (
        network_interfaces
        if network_interfaces is not None
        else [{"network": network, "subnetwork": subnetwork}]
    )
    interfaces = []
    for spec in wanted:
        interface = compute_v1.NetworkInterface()
        if spec.get("network"):
            interface.network = network_path(project, str(spec["network"]))
        if spec.get("subnetwork"):
            interface.subnetwork = subnetwork_path(project, zone, str(spec["subnetwork"]))
        interfaces.append(interface)
    instance = compute_v1.Instance(
        name=name,
        machine_type=machine,
        labels=dict(labels),
        disks=[
            compute_v1.AttachedDisk(
                source=disk["source"],
                device_name=disk["device_name"],
                boot=bool(disk["boot"]),
                mode=disk.get("mode") or "READ_WRITE",
                auto_delete=False,  # the package deletes what it made, by label, itself
                type_="PERSISTENT",
            )
            for disk in sorted(disks, key=lambda d: (not d["boot"], d["device_name"]))
        ],
        network_interfaces=interfaces,
    )
    items = dict(metadata or {})
    if guest_attributes:
        items["enable-guest-attributes"] = "TRUE"
    if items:
        instance.metadata = compute_v1.Metadata(
            items=[compute_v1.Items(key=key, value=value) for key, value in sorted(items.items())]
        )
    if service_accounts:
        instance.service_accounts = [
            compute_v1.ServiceAccount(email=account["email"], scopes=list(account.get("scopes") or []))
            for account in service_accounts
        ]
    if scheduling:
        instance.scheduling = compute_v1.Scheduling(
            **{SCHEDULING_FIELDS[key]: value for key, value in scheduling.items()}
        )
    if tags:
        instance.tags = compute_v1.Tags(items=list(tags))
    return instance


def boot_check_passed(hook: Any, *, project: str, zone: str, name: str, check: Mapping[str, Any]) -> bool:
    """One look: has the OS said it came up (guest attribute holds the value / serial output holds the
    text)? ``{"kind": "none"}`` is always True."""
    kind = check.get("kind", "none")
    if kind == "none":
        return True
    if kind == "guest_attribute":
        attributes = hook.get_guest_attributes(
            project_id=project, zone=zone, instance=name, query_path=check["key"]
        )
        if attributes is None:
            return False
        namespace, _, key = check["key"].partition("/")
        value = getattr(attributes, "variable_value", "") or ""
        if value == check["value"]:
            return True
        items = getattr(getattr(attributes, "query_value", None), "items", None) or []
        return any(
            getattr(item, "namespace", namespace) == namespace
            and item.key == key
            and item.value == check["value"]
            for item in items
        )
    if kind == "serial_port":
        output = hook.get_serial_port_output(project_id=project, zone=zone, instance=name)
        return check["text"] in (getattr(output, "contents", "") or "")
    raise BackupError(f"Unknown boot check {kind!r}")


def resolve_vms(hook: Any, targets: Sequence[Mapping[str, Any]]) -> list[str]:
    """The VM paths of a group's targets (operator form): explicit VMs as they are, label selectors
    listed (``instances.list`` / ``aggregatedList`` with a label filter, checked client-side). Sorted."""
    paths: set[str] = set()
    for target in targets:
        project = target["project_id"]
        if "instance" in target:
            paths.add(VmRef(project, target["zone"], target["instance"]).path)
            continue
        wanted = dict(target["labels"])
        for zone in target.get("zones") or [None]:
            for found_zone, instance in hook.list_instances(
                project_id=project, zone=zone, filter=label_filter(wanted)
            ):
                if owns(instance.labels, wanted):
                    paths.add(VmRef(project, found_zone, instance.name).path)
    return sorted(paths)


def split_vm(path: str) -> tuple[str, str, str]:
    """'projects/P/zones/Z/instances/I' -> (P, Z, I)."""
    ref = VmRef.parse(path)
    return ref.project, ref.zone, ref.name
