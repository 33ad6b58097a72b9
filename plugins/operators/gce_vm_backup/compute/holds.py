"""Holds: a restore keeps the snapshot set it restores from away from retention, from its plan to its end.

A hold is one label on each snapshot of the chosen set: key ``gce-vm-backup-hold-<run hash>`` (one key per
restore run, so two restores holding one snapshot never release each other's hold), value the UTC time it
expires, ``YYYYMMDDtHHMMSSz`` (a valid label value). The restore DAG writes it right after the plan
(``hold_ops.HoldSnapshotsOperator``) and removes it in a teardown that runs however the restore ended
(``hold_ops.ReleaseHoldsOperator``); the expiry bounds what a run that never reaches its teardown holds.

Retention (``retention.plan_deletions``, and ``ApplyRetentionOperator`` again right before each delete)
never deletes a snapshot with an unexpired hold. A hold only ever prevents a delete: whoever may label a
snapshot can forge one, which costs storage, never data. A hold whose value is not a time counts as
unexpired (retention names it in its reasons).

Labels are written with the snapshot's ``labelFingerprint`` (``relabel``): Compute Engine refuses a stale
one (HTTP 412), and the snapshot is then read again and the change applied to its labels as they are now.

No Airflow and no Google import at module level: retention (and so the config) imports this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from gce_vm_backup.compute.paths import SnapshotRef
from gce_vm_backup.errors import BackupError, LabelsChangedError, ResourceNotFoundError

log = logging.getLogger(__name__)

HOLD_PREFIX = "gce-vm-backup-hold-"
EXPIRY_FORMAT = "%Y%m%dt%H%M%Sz"
MAX_WRITES = 5  # label writes per snapshot before a stream of stale fingerprints is an error


def hold_key(run_hash: str) -> str:
    """The hold label key of one restore run (``run_hash``: 16 hex, labels.run_label)."""
    return f"{HOLD_PREFIX}{run_hash}"


def hold_value(until: datetime) -> str:
    """``until`` (timezone-aware) as a label value: ``20261208t031500z``."""
    if until.tzinfo is None:
        raise ValueError("a hold's expiry must be timezone-aware")
    return until.astimezone(UTC).strftime(EXPIRY_FORMAT)


def hold_expiry(value: str) -> datetime | None:
    """The expiry a hold value names, or None when it names none."""
    try:
        return datetime.strptime(value, EXPIRY_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def hold_reason(labels: Mapping[str, str] | None, now: datetime) -> str | None:
    """Why a snapshot with ``labels`` is held at ``now`` (every unexpired hold, in words), or None."""
    reasons = []
    for key, value in sorted((labels or {}).items()):
        if not key.startswith(HOLD_PREFIX):
            continue
        until = hold_expiry(value)
        run = key.removeprefix(HOLD_PREFIX)
        if until is None:
            reasons.append(f"held by restore run {run} (expiry {value!r} is not a time: kept)")
        elif until > now:
            reasons.append(f"held by restore run {run} until {until.isoformat()}")
    return "; ".join(reasons) or None


def relabel(
    hook: Any,
    *,
    project: str,
    name: str,
    change: Callable[[dict[str, str]], dict[str, str]],
    timeout: float,
    max_writes: int = MAX_WRITES,
) -> Any | None:
    """Give snapshot ``name`` the labels ``change`` makes of its current ones, with its labelFingerprint.

    A stale fingerprint (HTTP 412: the labels changed since the read) is read again and ``change`` applied
    to the labels as they are then, at most ``max_writes`` writes. Returns the snapshot as last read, its
    labels already as ``change`` wants them; None when the snapshot does not exist. Raises BackupError
    when the labels kept changing, ApiError for another refusal, OperationFailedError /
    OperationTimeoutError from the wait (bounded by ``timeout`` per write).
    """
    path = SnapshotRef(project, name).path
    for _ in range(max_writes):
        snapshot = hook.get_snapshot(project_id=project, name=name)
        if snapshot is None:
            return None
        labels = dict(snapshot.labels)
        wanted = change(dict(labels))
        if wanted == labels:
            return snapshot
        try:
            operation = hook.set_snapshot_labels(
                project_id=project, name=name, labels=wanted, label_fingerprint=snapshot.label_fingerprint
            )
        except ResourceNotFoundError:
            return None
        except LabelsChangedError:
            log.info("Labels of %s changed since they were read: reading them again", path)
            continue
        hook.wait_operation(operation, timeout=timeout)
    snapshot = hook.get_snapshot(project_id=project, name=name)
    if snapshot is None:
        return None
    if change(dict(snapshot.labels)) == dict(snapshot.labels):
        return snapshot
    raise BackupError(
        f"Could not change the labels of snapshot {path}: they changed under each of {max_writes} writes"
    )
