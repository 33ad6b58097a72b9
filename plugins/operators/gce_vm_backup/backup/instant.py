"""``snapshot_mode: instant``: an instant snapshot of every disk while the VM is down, then, with the VM
running again, a standard (or archive) snapshot made from each, after which the instant snapshot goes.

- ``prepare_instant`` (before the stop request; ``capture_instant`` runs it too): deletes this scope's
  instant snapshots of each disk left by earlier runs, so they never pile up to the per-disk limit, and
  refuses before any downtime when the disk still holds too many.
- ``capture_instant`` (the downtime task's capture step in instant mode; the twin of
  ``capture_standard``): inserts and waits for one instant snapshot per disk.
- ``ConvertInstantSnapshotsOperator`` (task ``convert``): ``snapshots.insert`` with
  ``sourceInstantSnapshot``, named and labelled exactly as this run's standard snapshot of the disk, so
  retention treats it like any other; READY, then the instant snapshot is deleted. A failed conversion
  keeps the instant snapshot (the retry converts it; the next run cleans it up).
- ``precheck_instant``: the precheck's one call (the VM's mode, then ``prepare_instant``), over
  ``instant_capable`` / ``disk_types`` / ``choose_mode`` (instant_precheck.py): which disk types can have
  instant snapshots, and the ``instant_fallback`` rule.
Names and the ownership check live in instant_names.py, the operator in instant_convert.py; this module
is the public import of all of them.

Instant snapshots live in the disk's zone or region and die with the disk: until the standard snapshot is
READY the backup is no protection against the loss of that zone, region or disk. Nothing Google is
imported at module level.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn

from gce_vm_backup.backup.instant_convert import ConvertInstantSnapshotsOperator
from gce_vm_backup.backup.instant_names import (
    TARGET_LABEL,
    instant_name,
    instant_scope,
    location_kwargs,
    ownership_mismatch,
    standard_name,
)
from gce_vm_backup.backup.instant_precheck import INSTANT_DISK_TYPES, choose_mode, disk_types, instant_capable
from gce_vm_backup.compute.paths import VmRef
from gce_vm_backup.compute.polling import poll_until
from gce_vm_backup.errors import BackupError, OperationFailedError, OperationTimeoutError

if TYPE_CHECKING:
    from gce_vm_backup.backup.capture import CaptureSettings

_log = logging.getLogger(__name__)
# Documented: "A disk can't have more than 32 instant snapshots" (Troubleshooting instant snapshots).
MAX_INSTANT_PER_DISK = 32
POLL = 1.0  # seconds between reads of an adopted instant snapshot still CREATING


# ---- before the stop ---------------------------------------------------------------------------------
def prepare_instant(
    hook: Any, record: dict[str, Any], run: Any, *, deadline: float, deployment: str, group: str
) -> None:
    """Clean up and count, per disk, before any downtime: this scope's instant snapshots of the disk left by
    earlier runs (labels and sourceDisk checked) are deleted, except this run's own (a retry adopts it)
    and those still CREATING or DELETING, or whose standard snapshot is still being made from them; the
    deletions are waited for. Raises BackupError when the disk would still hold ``MAX_INSTANT_PER_DISK``
    instant snapshots or more (other owners' included), OperationFailedError / OperationTimeoutError from
    a deletion."""
    from gce_vm_backup.config.labels import managed_disk_filter

    for disk in record["disks"]:
        if disk.get("carried_by"):
            continue
        scope = instant_scope(disk["source"])
        own = instant_name(
            instance=record["instance"],
            disk=disk["name"],
            location=disk["location"],
            run=run,
            deployment=deployment,
            group=group,
        )
        ours = managed_disk_filter(disk["source"], deployment=deployment, group=group)
        deletions = []
        for item in hook.list_instant_snapshots(**location_kwargs(scope), filter=ours):
            if (
                item.name == own
                or ownership_mismatch(item, disk, deployment=deployment, group=group) is not None
            ):
                continue
            if item.status in ("CREATING", "DELETING") or _converting(hook, item, record["project_id"]):
                _log.info(
                    "Instant snapshot %s/%s of %s is in use (%s); kept",
                    scope,
                    item.name,
                    disk["source"],
                    item.status,
                )
                continue
            _log.info(
                "Deleting instant snapshot %s/instantSnapshots/%s left by an earlier run", scope, item.name
            )
            deletions.append(
                hook.delete_instant_snapshot(
                    **location_kwargs(scope),
                    name=item.name,
                    request_id=run.request_id(f"{scope}/{item.name}", "cleanup"),
                )
            )
        for operation in deletions:
            hook.wait_operation(operation, timeout=_remaining(deadline, f"clean-up of {disk['source']}"))
        _check_room(hook, disk, scope, own)  # after the clean-up: other owners' instant snapshots count too


def _converting(hook: Any, item: Any, project: str) -> bool:
    """True when the standard snapshot this instant snapshot is meant to become (made in the VM's
    ``project``, as every snapshot of the package) is being made right now."""
    target = dict(item.labels).get(TARGET_LABEL)
    snapshot = hook.get_snapshot(project_id=project, name=target) if target else None
    return snapshot is not None and snapshot.status in ("CREATING", "UPLOADING")


def _check_room(hook: Any, disk: dict[str, Any], scope: str, own: str) -> None:
    from gce_vm_backup.config.labels import disk_path

    path = disk_path(disk["source"])
    # Every instant snapshot of the zone or region is listed (the emulator filters on labels only, and the
    # reference documents no filter on sourceDisk): fine for the handful a disk may have.
    held = [
        item.name
        for item in hook.list_instant_snapshots(**location_kwargs(scope), filter="")
        if item.source_disk and disk_path(item.source_disk) == path
    ]
    if own in held or len(held) < MAX_INSTANT_PER_DISK:
        return
    raise BackupError(
        f"Disk {path} already has {len(held)} instant snapshots, and a disk can have at most "
        f"{MAX_INSTANT_PER_DISK}; this backup refuses before stopping the VM. Delete the ones no longer "
        f"needed (those of other tools or groups are not this backup's to delete): {', '.join(sorted(held))}"
    )


def _remaining(deadline: float, what: str) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise OperationTimeoutError(f"The capture's deadline passed during the {what}")
    return remaining


def precheck_instant(
    hook: Any,
    record: dict[str, Any],
    run: Any,
    *,
    snapshot_mode: str,
    instant_fallback: str,
    deployment: str,
    group: str,
    deadline: float,
) -> str:
    """The precheck's whole instant-mode step, before any downtime: the VM's snapshot mode
    (``choose_mode`` over ``disk_types``) and, when it is ``instant``, ``prepare_instant``. Returns
    "standard" or "instant"; raises what those raise (VmStateError for a refused disk type, BackupError
    for a disk without room). Makes no call in standard mode."""
    if snapshot_mode != "instant":
        return choose_mode({}, vm="", snapshot_mode=snapshot_mode, instant_fallback=instant_fallback)
    vm = VmRef(record["project_id"], record["zone"], record["instance"]).path
    mode = choose_mode(
        disk_types(hook, record), vm=vm, snapshot_mode=snapshot_mode, instant_fallback=instant_fallback
    )
    if mode == "instant":
        prepare_instant(hook, record, run, deadline=deadline, deployment=deployment, group=group)
    return mode


# ---- capture (the VM is down) -------------------------------------------------------------------------
def capture_instant(
    hook: Any, record: dict[str, Any], run: Any, *, deadline: float, settings: CaptureSettings
) -> list[dict[str, Any]]:
    """An instant snapshot of every disk of ``record`` this VM's backup carries (zonal disk: zonal; regional:
    regional), named by ``instant_name`` and labelled like this run's standard snapshot (plus the name of
    the standard snapshot it will become); one of that name is adopted only when it is this scope's of
    the disk. Every insert is sent first, then each is waited for (``deadline``: ``time.monotonic()``).

    The VM's mode is ``record["snapshot_mode"]`` when the precheck chose it (``precheck_instant``), else
    chosen here from the disk types and ``settings.instant_fallback`` (``refuse`` when absent): with
    ``standard`` this is ``snapshot_ops.capture_standard`` and returns SnapshotRecords.

    Returns ``{"vm", "disk", "disk_source", "instant_snapshot", "instant_scope", "status": "READY"}`` per
    disk. Raises BackupError for a name taken by something else or a disk without room (see
    ``prepare_instant``, run here first), OperationFailedError for an insert that ended with an error or an
    instant snapshot FAILED or UNAVAILABLE, VmStateError for a disk type without instant snapshots
    (``refuse``), OperationTimeoutError when the deadline passes first.
    """
    from gce_vm_backup.config.labels import managed_snapshot_labels, run_label

    deployment, group = settings.deployment, settings.group
    vm = VmRef(record["project_id"], record["zone"], record["instance"]).path
    mode = record.get("snapshot_mode")  # chosen by the precheck (precheck_instant), when it did
    if mode is None:  # not chosen yet: read the disk types now (one disks.get per disk, VM down)
        fallback = str(getattr(settings, "instant_fallback", "refuse"))
        mode = choose_mode(
            disk_types(hook, record), vm=vm, snapshot_mode="instant", instant_fallback=fallback
        )
    if mode == "standard":  # instant_fallback: standard for a disk type without instant snapshots
        from gce_vm_backup.backup import capture as snapshot_ops

        return list(snapshot_ops.capture_standard(hook, record, run, deadline=deadline, settings=settings))
    prepare_instant(hook, record, run, deadline=deadline, deployment=deployment, group=group)
    wanted, operations = [], {}
    for disk in record["disks"]:
        if disk.get("carried_by"):
            _log.info("Disk %s: captured by %s's backup in this run", disk["source"], disk["carried_by"])
            continue
        names = dict(instance=record["instance"], disk=disk["name"], location=disk["location"], run=run)
        name = instant_name(**names, deployment=deployment, group=group)
        scope = instant_scope(disk["source"])
        wanted.append((disk, name, scope))
        existing = hook.get_instant_snapshot(**location_kwargs(scope), name=name)
        if existing is not None:
            why = ownership_mismatch(existing, disk, deployment=deployment, group=group)
            if why is not None:
                raise BackupError(
                    f"Instant snapshot {scope}/instantSnapshots/{name} exists with this run's name but is "
                    f"not gce-vm-backup's (deployment {deployment}, group {group}) of disk "
                    f"{disk['source']}: {why}; refusing to adopt or replace it"
                )
            if existing.status in (
                "FAILED",
                "UNAVAILABLE",
            ):  # ours but unusable: gone, so the retry remakes it
                path = f"{scope}/instantSnapshots/{name}"
                operation = hook.delete_instant_snapshot(
                    **location_kwargs(scope), name=name, request_id=run.request_id(path, "delete-failed")
                )
                hook.wait_operation(operation, timeout=_remaining(deadline, f"deletion of {path}"))
                raise OperationFailedError(
                    f"Instant snapshot {path} of disk {disk['source']} was {existing.status}; it was deleted "
                    "so that the task's retry makes it again",
                    operation=operation.name,
                    resource=path,
                    codes=[f"INSTANT_SNAPSHOT_{existing.status}"],
                )
            _log.info(
                "Instant snapshot %s of %s exists (%s): adopting it", name, disk["source"], existing.status
            )
            continue
        labels = managed_snapshot_labels(
            deployment=deployment,
            group=group,
            instance=record["instance"],
            disk_source=disk["source"],
            extra=settings.labels,
            run=run_label(run.dag_id, run.run_id),
        )
        labels[TARGET_LABEL] = standard_name(**names, deployment=deployment, group=group)
        operations[name] = hook.insert_instant_snapshot(
            **location_kwargs(scope),
            name=name,
            source_disk=disk["source"],
            labels=labels,
            request_id=run.request_id(f"{scope}/{name}", "instant"),
            description=settings.description or f"gce-vm-backup instant snapshot of {disk['source']}",
        )
        _log.info(
            "Creating instant snapshot %s of %s (operation %s)", name, disk["source"], operations[name].name
        )
    results = []
    for disk, name, scope in wanted:
        if name in operations:
            hook.wait_operation(
                operations[name], timeout=_remaining(deadline, f"instant snapshot of {disk['source']}")
            )
        status = _await_ready(hook, scope, name, disk, deadline)
        results.append(
            {
                "vm": vm,
                "disk": disk["name"],
                "disk_source": disk["source"],
                "instant_snapshot": name,
                "instant_scope": scope,
                "status": status,
            }
        )
    return results


def settle_instant(
    hook: Any, record: dict[str, Any], run: Any, *, deadline: float, settings: CaptureSettings
) -> list[str]:
    """After a failed capture, before the VM starts again (the twin of ``settle_standard``): no instant
    snapshot of this run may still be in the making while its disk is written again, or a retry would
    adopt it. Waits (every POLL seconds, until ``deadline``) for each of this run's instant snapshots
    that exists to be READY; one still CREATING then, or FAILED or UNAVAILABLE, is deleted when it is
    this scope's (labels and ``sourceDisk``), so the retry makes it again. Never raises: returns the
    problems it could not resolve (the VM is started anyway)."""
    problems = []
    for disk in record["disks"]:
        if disk.get("carried_by"):
            continue
        names = dict(instance=record["instance"], disk=disk["name"], location=disk["location"], run=run)
        name = instant_name(**names, deployment=settings.deployment, group=settings.group)
        scope = instant_scope(disk["source"])
        try:
            item = poll_until(
                partial(hook.get_instant_snapshot, **location_kwargs(scope), name=name),
                lambda item: item is None or item.status != "CREATING",
                deadline=deadline,
                pause=lambda remaining: max(0.0, min(POLL, remaining)),
                on_timeout=lambda item: item,  # still CREATING: deleted below
                clock=time.monotonic,
                sleep=time.sleep,
            )
            if item is not None and item.status not in ("READY", "DELETING"):  # failed, or unsettled
                why = ownership_mismatch(item, disk, deployment=settings.deployment, group=settings.group)
                if why is not None:  # never delete a stranger's
                    raise BackupError(f"instant snapshot {scope}/{name} is not ours: {why}")
                _log.warning(
                    "Instant snapshot %s is %s: deleting it before the VM runs again", name, item.status
                )
                operation = hook.delete_instant_snapshot(
                    **location_kwargs(scope),
                    name=name,
                    request_id=run.request_id(f"{scope}/{name}", "unsettled"),
                )
                hook.wait_operation(operation, timeout=60)
        except BackupError as exc:
            problems.append(f"instant snapshot {name} of disk {disk['source']}: {exc}")
    return problems


def _await_ready(hook: Any, scope: str, name: str, disk: dict[str, Any], deadline: float) -> str:
    path = f"{scope}/instantSnapshots/{name}"

    def status_of() -> str:
        item = hook.get_instant_snapshot(**location_kwargs(scope), name=name)
        status = "GONE" if item is None else str(item.status)
        if status in ("FAILED", "UNAVAILABLE", "GONE", "DELETING"):
            raise OperationFailedError(
                f"Instant snapshot {path} of disk {disk['source']} is {status}: no backup of that disk this "
                "try (the task's retry makes a new one)",
                operation="",
                resource=path,
                codes=[f"INSTANT_SNAPSHOT_{status}"],
            )
        return status

    def still(status: str) -> NoReturn:
        raise OperationTimeoutError(f"Instant snapshot {path} of disk {disk['source']} is still {status}")

    return poll_until(
        status_of,
        lambda status: status == "READY",
        deadline=deadline,
        pause=lambda remaining: min(POLL, max(remaining, 0.01)),
        on_timeout=still,
        clock=time.monotonic,
        sleep=time.sleep,
    )


__all__: Sequence[str] = (
    "INSTANT_DISK_TYPES",
    "MAX_INSTANT_PER_DISK",
    "TARGET_LABEL",
    "ConvertInstantSnapshotsOperator",
    "capture_instant",
    "choose_mode",
    "disk_types",
    "instant_capable",
    "instant_name",
    "instant_scope",
    "precheck_instant",
    "prepare_instant",
    "settle_instant",
    "standard_name",
)
