"""Capture every disk of a stopped VM as standard snapshots: one deterministic name per disk and DAG
run, adopted on retry, all inserted at once, their ends seen within seconds.

``capture_standard`` is the capture step of the downtime task (downtime_ops.py) in ``snapshot_mode:
standard``; ``instant_ops.capture_instant`` has the same signature for ``snapshot_mode: instant``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NoReturn

from gce_vm_backup.backup.plan import planned_snapshot_name, snapshot_description, snapshot_record, vm_path
from gce_vm_backup.compute.paths import SnapshotRef
from gce_vm_backup.compute.polling import poll_until
from gce_vm_backup.errors import (
    BackupError,
    OperationFailedError,
    OperationTimeoutError,
    ResourceNotFoundError,
)
from gce_vm_backup.runtime.base import as_bool, check_choice

SNAPSHOT_TYPES = ("STANDARD", "ARCHIVE")
PAST_CREATING = frozenset({"UPLOADING", "READY"})
LONG_POLL = 30.0  # seconds of one globalOperations.wait call
POLL = 1.0  # seconds between reads of a snapshot when waiting for UPLOADING (no operation marks it)...
# ...growing by POLL_GROWTH a read up to MAX_POLL: a long CREATING phase costs a few reads a minute per disk,
# not one a second (the project's read quota is shared by every VM down at once), for at most MAX_POLL of
# extra downtime.
POLL_GROWTH = 1.25
MAX_POLL = 5.0
DELETE_FAILED_TIMEOUT = 300.0
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptureSettings:
    """What the group's config says about its snapshots (the same for every VM of the group).

    ``early_restart``: the capture is done when every snapshot has left CREATING (UPLOADING: the disk may
    be written again, the snapshot is not yet usable, so verify still waits for READY); otherwise READY.
    ``subject`` is set by the capture while it works on a disk, so the run report names the disk.
    """

    deployment: str
    group: str
    labels: dict[str, str] = field(default_factory=dict)
    storage_locations: list[str] | None = None
    snapshot_type: str | None = None
    guest_flush: bool | str = False
    description: str | None = None
    early_restart: bool = False

    def __post_init__(self) -> None:
        from gce_vm_backup.config.labels import check_deployment, check_group

        check_deployment(self.deployment)
        check_group(self.group)
        if self.snapshot_type is not None:
            check_choice(self.snapshot_type, SNAPSHOT_TYPES, name="snapshot_type")


def capture_standard(
    hook: Any, record: dict[str, Any], run: Any, *, deadline: float, settings: CaptureSettings
) -> list[dict[str, Any]]:
    """Snapshot every disk of ``record`` (the precheck's InstanceRecord) that this VM's backup carries.

    Each snapshot's name comes from the DAG run (plan.planned_snapshot_name), so a retried or crashed try
    finds its own snapshot and adopts it instead of making a second one. A snapshot of that name is
    adopted only when it carries this deployment's, group's and disk's labels AND its ``sourceDisk`` is
    the disk being backed up (and its ``sourceDiskId`` the entry's ``id``, when the record has one).
    Every missing snapshot is inserted first (``snapshots.insert``, request id of ``run``), then the
    capture waits (long-polling each insert operation, or reading the snapshots every POLL seconds for
    early restart) until ``deadline`` (``time.monotonic()``).

    Returns SnapshotRecords in disk order. Raises OperationFailedError if an insert ended with an error
    (RateLimitedError for the per-disk rate limit) or a snapshot turned FAILED (a FAILED snapshot of ours
    is deleted first, so the retry makes a fresh one); BackupError naming both disks if a snapshot of
    that name exists but is not this deployment's and group's snapshot of this disk;
    ResourceNotFoundError if a snapshot vanished; OperationTimeoutError when the deadline passes first.
    """
    bound = deadline - time.monotonic()  # the step's timeout, for the message
    disks = [disk for disk in record["disks"] if not disk.get("carried_by")]
    for disk in record["disks"]:
        if disk.get("carried_by"):
            _log.info("Disk %s: snapshotted by %s's backup in this run", disk["source"], disk["carried_by"])
    names = {
        disk["source"]: planned_snapshot_name(
            instance=record["instance"],
            disk=disk,
            run=run,
            deployment=settings.deployment,
            group=settings.group,
        )
        for disk in disks
    }
    operations: dict[str, Any] = {}
    for disk in disks:  # every insert first: the snapshots are taken in parallel
        name = names[disk["source"]]
        with for_disk(disk):
            operation = _insert_or_adopt(hook, record, disk, name, run, settings)
        if operation is not None:
            operations[name] = operation
    wanted = PAST_CREATING if as_bool(settings.early_restart, name="early_restart") else frozenset({"READY"})
    return _await_snapshots(
        hook, record, disks, names, operations, run, wanted=wanted, deadline=deadline, bound=bound
    )


@contextmanager
def for_disk(disk: dict[str, Any]) -> Iterator[None]:
    """Mark an error raised inside as the failure of this disk's snapshot (the run report's cause line
    reads ``snapshot of disk <name> failed: ...``; see _base.RecordsFailures)."""
    try:
        yield
    except BackupError as exc:
        if not getattr(exc, "failure_subject", None):
            exc.failure_subject = f"snapshot of disk {disk['name']}"  # type: ignore[attr-defined]
        raise


def settle_standard(
    hook: Any, record: dict[str, Any], run: Any, *, deadline: float, settings: CaptureSettings
) -> list[str]:
    """After a failed capture, before the VM starts again: no snapshot of this run may go on being made
    while its disk is written again, or a retry would adopt it (the name is the same for every try).

    Waits (reading every POLL seconds, until ``deadline``) for each of this run's snapshots that exists to
    reach what the capture waits for (READY, or UPLOADING with early restart); one that does not in time,
    or turned FAILED, is deleted when it is ours (labels and ``sourceDisk``), so the retry makes it again.
    Never raises: returns the problems it could not resolve (the caller logs them; the VM is started
    anyway, since keeping it down for a snapshot is worse).
    """
    wanted = PAST_CREATING if as_bool(settings.early_restart, name="early_restart") else frozenset({"READY"})
    problems: list[str] = []
    for disk in record["disks"]:
        if disk.get("carried_by"):
            continue
        name = planned_snapshot_name(
            instance=record["instance"],
            disk=disk,
            run=run,
            deployment=settings.deployment,
            group=settings.group,
        )
        try:
            snapshot = poll_until(
                partial(hook.get_snapshot, project_id=record["project_id"], name=name),
                lambda snapshot: snapshot is None or snapshot.status in wanted or snapshot.status == "FAILED",
                deadline=deadline,
                pause=lambda remaining: max(0.0, min(POLL, remaining)),
                on_timeout=lambda snapshot: snapshot,  # still in the making: deleted below
                clock=time.monotonic,
                sleep=time.sleep,
            )
            if snapshot is not None and snapshot.status not in wanted:  # FAILED, or unsettled at the deadline
                _check_adoptable(snapshot, record, disk, name, settings)  # never delete a stranger's
                _log.warning("Snapshot %s is %s: deleting it before the VM runs again", name, snapshot.status)
                operation = hook.delete_snapshot(
                    project_id=record["project_id"],
                    name=name,
                    request_id=run.request_id(name, "unsettled"),
                )
                hook.wait_operation(operation, timeout=DELETE_FAILED_TIMEOUT)
        except BackupError as exc:
            problems.append(f"snapshot {name} of disk {disk['source']}: {exc}")
    return problems


def _insert_or_adopt(
    hook: Any, record: dict[str, Any], disk: dict[str, Any], name: str, run: Any, settings: CaptureSettings
) -> Any:
    """Insert this run's snapshot of ``disk``, or check and adopt the one that exists; the insert operation
    (None when adopted)."""
    from gce_vm_backup.compute.operations import is_done, raise_if_failed

    snapshot = hook.get_snapshot(project_id=record["project_id"], name=name)
    if snapshot is not None:
        _check_adoptable(snapshot, record, disk, name, settings)
        if snapshot.status == "FAILED":
            _delete_failed(hook, record["project_id"], name, disk, run)
        _log.info("Snapshot %s of %s exists (%s): adopting it", name, disk["source"], snapshot.status)
        return None
    from google.cloud import compute_v1

    from gce_vm_backup.config.labels import managed_snapshot_labels, run_label

    labels = managed_snapshot_labels(
        deployment=settings.deployment,
        group=settings.group,
        instance=record["instance"],
        disk_source=disk["source"],
        extra=settings.labels,
        run=run_label(run.dag_id, run.run_id),  # the VM's snapshot set of this run (restore_sets)
    )
    body = compute_v1.Snapshot(
        name=name,
        source_disk=disk["source"],
        labels=labels,
        description=snapshot_description(  # the VM's manifest (restore_sets groups by it)
            record,
            disk,
            fallback=settings.description or f"gce-vm-backup of {disk['source']} (VM {record['instance']})",
        ),
        guest_flush=as_bool(settings.guest_flush, name="guest_flush"),
    )
    if settings.storage_locations:
        body.storage_locations = list(settings.storage_locations)
    if settings.snapshot_type:
        body.snapshot_type = settings.snapshot_type
    operation = hook.insert_snapshot(
        project_id=record["project_id"], snapshot=body, request_id=run.request_id(name, "snapshot")
    )
    _log.info("Creating snapshot %s of %s (operation %s)", name, disk["source"], operation.name)
    if is_done(operation):  # rate limits and quota errors arrive inside the operation
        raise_if_failed(operation)
    return operation


def _check_adoptable(
    snapshot: Any, record: dict[str, Any], disk: dict[str, Any], name: str, settings: CaptureSettings
) -> None:
    """Raise BackupError unless ``snapshot`` is this deployment's and group's snapshot of ``disk``."""
    from gce_vm_backup.config.labels import disk_path, scope_mismatch

    project = record["project_id"]
    mismatch = scope_mismatch(
        dict(snapshot.labels),
        snapshot.source_disk,
        disk["source"],
        deployment=settings.deployment,
        group=settings.group,
    )
    if mismatch is None and disk.get("id") and str(snapshot.source_disk_id) != str(disk["id"]):
        mismatch = (
            f"it was made from disk id {snapshot.source_disk_id or '(none)'}, not from id {disk['id']} "
            "(a disk of the same name, deleted and made again)"
        )
    if mismatch is None:
        return
    made_from = disk_path(snapshot.source_disk) if "projects/" in snapshot.source_disk else "(none)"
    if "made from disk" not in mismatch:
        mismatch += f"; it was made from disk {made_from}"
    raise BackupError(
        f"Snapshot {SnapshotRef(project, name)} exists with this run's name but is not "
        f"gce-vm-backup's snapshot (deployment {settings.deployment}, group {settings.group}) of disk "
        f"{disk_path(disk['source'])}: {mismatch}; refusing to adopt or replace it"
    )


def _await_snapshots(
    hook: Any,
    record: dict[str, Any],
    disks: list[dict[str, Any]],
    names: dict[str, str],
    operations: dict[str, Any],
    run: Any,
    *,
    wanted: frozenset[str],
    deadline: float,
    bound: float,
) -> list[dict[str, Any]]:
    from gce_vm_backup.compute.operations import is_done, raise_if_failed

    project = record["project_id"]
    poll = POLL
    pending: list[tuple[str, dict[str, Any], str]] = []

    def read() -> list[dict[str, Any]]:
        """The snapshots' records; ``pending`` the ones not ``wanted`` yet."""
        results = []
        pending.clear()
        for disk in disks:
            name = names[disk["source"]]
            with for_disk(disk):
                snapshot = hook.get_snapshot(project_id=project, name=name)
                if snapshot is None:
                    _raise_if_insert_failed(hook, operations.get(name), deadline)
                    raise ResourceNotFoundError(
                        f"Snapshot {SnapshotRef(project, name)} of disk {disk['source']} "
                        "disappeared while it was being created"
                    )
                if snapshot.status == "FAILED":
                    _delete_failed(hook, project, name, disk, run)
                if operations.get(name) is not None and is_done(operations[name]):
                    raise_if_failed(operations[name])  # DONE with an error, the snapshot not FAILED (yet)
            results.append(
                snapshot_record(record, disk, name, snapshot.status, int(snapshot.storage_bytes or 0))
            )
            if snapshot.status not in wanted:
                pending.append((name, disk, snapshot.status))
        return results

    def timed_out(_: list[dict[str, Any]]) -> NoReturn:
        raise OperationTimeoutError(
            f"Snapshot(s) of VM {vm_path(record)} not {' or '.join(sorted(wanted, reverse=True))} "
            f"within {max(bound, 0):.0f} seconds: "
            + "; ".join(f"{name} of disk {disk['source']} ({status})" for name, disk, status in pending)
        )

    def pause(remaining: float) -> float | None:
        """Long-poll the first pending snapshot's insert (None: no sleep after it), or sleep a while."""
        nonlocal poll
        name = pending[0][0]
        operation = operations.get(name)
        if "READY" in wanted and len(wanted) == 1 and operation is not None and not is_done(operation):
            # The insert operation is DONE when its snapshot is READY: long-poll it.
            try:
                wait = max(min(deadline - time.monotonic(), LONG_POLL), 0.1)
                operations[name] = operation = hook.get_operation(operation, wait_seconds=wait)
            except ResourceNotFoundError:
                raise
            except BackupError as exc:  # the wait failed, not the snapshot: read the snapshots again
                _log.warning("Waiting on operation %s failed (%s); reading the snapshot", operation.name, exc)
                return max(0.0, min(POLL, deadline - time.monotonic()))
            # DONE (READY, or an error): the next read of the snapshots says which, and acts on it
            return None
        seconds = max(0.0, min(poll, deadline - time.monotonic()))
        poll = min(poll * POLL_GROWTH, MAX_POLL)
        return seconds

    return poll_until(
        read,
        lambda results: not pending,
        deadline=deadline,
        pause=pause,
        on_timeout=timed_out,
        clock=time.monotonic,
        sleep=time.sleep,
    )


def _raise_if_insert_failed(hook: Any, operation: Any, deadline: float) -> None:
    """A snapshot whose insert failed is removed: the operation says why (quota, rate limit...)."""
    from gce_vm_backup.compute.operations import is_done, raise_if_failed

    if operation is None:
        return
    if not is_done(operation):
        operation = hook.get_operation(
            operation, wait_seconds=max(min(deadline - time.monotonic(), LONG_POLL), 0.1)
        )
    if is_done(operation):
        raise_if_failed(operation)


def _delete_failed(hook: Any, project: str, name: str, disk: dict[str, Any], run: Any) -> None:
    operation = hook.delete_snapshot(
        project_id=project, name=name, request_id=run.request_id(name, "delete-failed")
    )
    hook.wait_operation(operation, timeout=DELETE_FAILED_TIMEOUT)
    raise OperationFailedError(
        f"Snapshot {name} of disk {disk['source']} FAILED; it was deleted so that the task's retry can "
        "create it again",
        operation=operation.name,
        resource=SnapshotRef(project, name).path,
        codes=["SNAPSHOT_FAILED"],
    )
