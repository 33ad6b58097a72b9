"""One operation per VM at a time: a lease, written as a label of the VM with its ``labelFingerprint``.

A backup (its downtime task) or a replace-disks restore takes the VM's lease before it changes anything
and gives it back at its end. The lease is the label ``gce-vm-backup-lease`` =
``<kind>-<expiry>-<holder key>``: ``kind`` is ``backup`` or ``restore``, ``expiry`` the epoch second it
runs out, ``holder key`` 16 hex of sha256 over the deployment, DAG id and run id, so every try and every
task of one DAG run is the same holder. ``gce-vm-backup-lease-holder`` carries the DAG id (as a label
value) for messages.

``instances.setLabels`` replaces the VM's labels whole and takes the fingerprint read with them; Compute
Engine refuses a stale one (HTTP 412 conditionNotMet), so read, change, write is a compare-and-set: of two
writers that read the same fingerprint, one wins and the other reads again. Every other label is written
back exactly as read. Each write's zonal operation is waited for (bounded); DONE with an error is a failure.

A lease that runs out (a killed worker) may be taken over by anyone. An expired lease of this holder
still says that an earlier try of this run took it: a later try uses that to tell a VM it may have
stopped itself from one someone else stopped.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, cast

from gce_vm_backup.compute.paths import VmRef
from gce_vm_backup.compute.polling import poll_until
from gce_vm_backup.config.labels import label_value
from gce_vm_backup.errors import (
    ApiError,
    BackupError,
    LabelsChangedError,
    LeaseHeldError,
    OperationTimeoutError,
    ResourceNotFoundError,
)

LEASE_KEY = "gce-vm-backup-lease"
HOLDER_KEY = "gce-vm-backup-lease-holder"
KINDS = ("backup", "restore")
LEASE_MARGIN = 600.0  # seconds added to an operation's own bounds
WRITE_TIMEOUT = 120.0  # seconds a setLabels operation may take to be DONE
READ_POLL = 1.0  # seconds between two reads of the VM when the wait on a label write fails
POLL = 15.0  # seconds between two reads of a lease held by another (x 0.5-1.5)
MAX_CONFLICTS = 8  # stale-fingerprint refusals in one acquire or release (someone keeps writing labels)
VALUE_RE = re.compile(r"^(?P<kind>[a-z]+)-(?P<expires>[0-9]{1,12})-(?P<key>[0-9a-f]{16})$")
_NAMESPACE = uuid.UUID("0f6f1c9e-4b53-4f8e-9a63-2d9b8f7c51a4")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holder:
    """Who holds (or wants) a lease: one DAG run of one deployment."""

    kind: str
    key: str
    name: str

    @classmethod
    def of_run(cls, kind: str, *, deployment: str, dag_id: str, run_id: str) -> Holder:
        if kind not in KINDS:
            raise ValueError(f"lease kind must be one of {', '.join(KINDS)}, not {kind!r}")
        key = hashlib.sha256(f"{deployment}|{dag_id}|{run_id}".encode()).hexdigest()[:16]
        return cls(kind, key, label_value(dag_id))

    @classmethod
    def of_context(cls, kind: str, *, deployment: str, context: Any) -> Holder:
        return cls.of_run(kind, deployment=deployment, dag_id=context["ti"].dag_id, run_id=context["run_id"])

    def value(self, expires: int) -> str:
        return f"{self.kind}-{expires}-{self.key}"


@dataclass(frozen=True)
class Lease:
    """A lease as read from a VM's labels. ``kind``/``expires``/``key`` are None for a value this package
    did not write (it is taken for held: nobody can tell when it runs out)."""

    raw: str
    name: str
    kind: str | None
    expires: int | None
    key: str | None

    def held_by(self, holder: Holder) -> bool:
        return self.key == holder.key

    def expired(self, now: float) -> bool:
        return self.expires is not None and self.expires <= now

    def describe(self) -> str:
        if self.expires is None:
            return f"an unreadable lease label {LEASE_KEY}={self.raw!r} (remove it by hand if nothing runs)"
        until = datetime.fromtimestamp(self.expires, UTC).isoformat(timespec="seconds")
        return f"the {self.kind} {self.name or 'of an unnamed run'} (lease until {until})"


def lease_of(labels: Mapping[str, str] | None) -> Lease | None:
    """The lease in a VM's labels, or None when it has none."""
    labels = dict(labels or {})
    raw = labels.get(LEASE_KEY)
    if raw is None:
        return None
    name = labels.get(HOLDER_KEY, "")
    match = VALUE_RE.match(raw)
    if not match or match["kind"] not in KINDS:
        return Lease(raw, name, None, None, None)
    return Lease(raw, name, match["kind"], int(match["expires"]), match["key"])


@dataclass(frozen=True)
class Taken:
    """The lease this holder now has: the VM as read just before the write (its status), whether the
    label named this holder already (an earlier try or task of the same run took it), and its expiry."""

    instance: Any
    was_ours: bool
    expires: int


def vm_name(vm: Mapping[str, str]) -> str:
    return VmRef(vm["project_id"], vm["zone"], vm["name"]).path


def _write(hook: Any, vm: Mapping[str, str], instance: Any, labels: dict[str, str], timeout: float) -> None:
    """setLabels with the fingerprint read with ``instance``; waits for its operation (when the wait call
    itself fails, reads the VM until its labels are the ones written). Raises LabelsChangedError (stale
    fingerprint), ApiError, OperationFailedError, OperationTimeoutError."""
    fingerprint = instance.label_fingerprint
    body = "|".join(f"{k}={v}" for k, v in sorted(labels.items()))
    # The same write (same fingerprint, same labels) has the same id: a retried call is not a second write.
    request_id = str(uuid.uuid5(_NAMESPACE, f"{vm_name(vm)}|{fingerprint}|{body}"))
    operation = hook.set_instance_labels(
        **vm, labels=labels, label_fingerprint=fingerprint, request_id=request_id
    )
    try:
        hook.wait_operation(operation, timeout=timeout)
    except ResourceNotFoundError:
        raise
    except ApiError as exc:
        # The wait failed (HTTP errors past the hook's retries), not necessarily the write: the VM's
        # labels say whether it landed, as a VM's status says whether a stop did (instance_ops).
        _log.warning("VM %s: waiting on the label write failed (%s); reading the VM", vm_name(vm), exc)
        deadline, cause = time.monotonic() + timeout, exc

        def unseen(_: Any) -> NoReturn:
            raise OperationTimeoutError(
                f"The label write on VM {vm_name(vm)} was not seen within {timeout:.0f} seconds"
            ) from cause

        poll_until(
            lambda: dict(hook.get_instance(**vm).labels or {}),
            lambda read: read == labels,
            deadline=deadline,
            pause=lambda remaining: READ_POLL,
            on_timeout=unseen,
            clock=time.monotonic,
            sleep=time.sleep,
        )


def acquire(
    hook: Any,
    vm: Mapping[str, str],
    holder: Holder,
    *,
    duration: float,
    wait: float,
    poll: float = POLL,
    write_timeout: float = WRITE_TIMEOUT,
    clock: Callable[[], float] = time.time,
) -> Taken:
    """Take (or extend) ``holder``'s lease on the VM ``vm`` (``project_id``, ``zone``, ``name``) for
    ``duration`` seconds from now. A VM without a lease, with an expired one or with this holder's is
    written at once; a lease of another holder is read again every ``poll`` seconds (x 0.5-1.5) for up to
    ``wait`` seconds. Raises LeaseHeldError naming the holder and its expiry when it is still held then,
    BackupError after MAX_CONFLICTS stale-fingerprint refusals, ResourceNotFoundError when the
    VM is gone, OperationFailedError / OperationTimeoutError for the write's operation."""
    where = vm_name(vm)
    give_up, conflicts = time.monotonic() + wait, 0

    def attempt() -> Taken | Lease:
        """Taken, or the other holder's lease that stands in the way (read again after a refused write)."""
        nonlocal conflicts
        while True:
            instance = hook.get_instance(**vm)
            labels = dict(instance.labels or {})
            current = lease_of(labels)
            now = clock()
            if not (current is None or current.held_by(holder) or current.expired(now)):
                return current
            expires = int(now + duration) + 1
            labels.update({LEASE_KEY: holder.value(expires), HOLDER_KEY: holder.name})
            try:
                _write(hook, vm, instance, labels, write_timeout)
            except LabelsChangedError:
                conflicts += 1
                if conflicts >= MAX_CONFLICTS:
                    raise BackupError(
                        f"Could not take the lease on VM {where}: its labels changed {conflicts} times "
                        "between a read and a write"
                    ) from None
                _log.info("VM %s: its labels changed since they were read; reading them again", where)
                continue
            if current is not None and not current.held_by(holder):
                _log.warning("VM %s: took over %s, which has run out", where, current.describe())
            _log.info("VM %s: lease taken by %s until %s", where, holder.name, expires)
            return Taken(instance, current is not None and current.held_by(holder), expires)

    def held(current: Any) -> NoReturn:
        raise LeaseHeldError(
            f"VM {where} is held by {current.describe()}; this {holder.kind} waited {wait:.0f} s "
            "and changed nothing"
        )

    taken = poll_until(
        attempt,
        lambda result: isinstance(result, Taken),
        deadline=give_up,
        pause=lambda left: min(left, poll * (0.5 + random.random())),
        on_timeout=held,
        clock=time.monotonic,
        sleep=time.sleep,
        before_pause=lambda current: _log.info(
            "VM %s is held by %s; waiting for it", where, current.describe()
        ),
    )
    return cast(Taken, taken)


def release(
    hook: Any,
    vm: Mapping[str, str],
    holder: Holder,
    *,
    instance: Any = None,
    write_timeout: float = WRITE_TIMEOUT,
) -> bool:
    """Remove ``holder``'s lease from the VM, keeping every other label; ``instance`` is a fresh read to
    start from (else the VM is read). Does nothing when the lease is not this holder's (another holder
    took over an expired one, or it was released already). Returns whether a lease was removed. Raises
    as acquire's write, and BackupError after MAX_CONFLICTS stale-fingerprint refusals."""
    for _ in range(MAX_CONFLICTS):
        instance = instance if instance is not None else hook.get_instance(**vm)
        labels = dict(instance.labels or {})
        current = lease_of(labels)
        if current is None or not current.held_by(holder):
            return False
        labels.pop(LEASE_KEY, None)
        labels.pop(HOLDER_KEY, None)
        try:
            _write(hook, vm, instance, labels, write_timeout)
        except LabelsChangedError:
            instance = None
            continue
        _log.info("VM %s: lease of %s given back", vm_name(vm), holder.name)
        return True
    raise BackupError(f"Could not give back the lease on VM {vm_name(vm)}: its labels kept changing")


def release_quietly(hook: Any, vm: Mapping[str, str], holder: Holder, *, instance: Any = None) -> bool:
    """release(), logging instead of raising: a lease that could not be given back runs out by itself, and
    must not turn a finished operation into a failed one."""
    try:
        return release(hook, vm, holder, instance=instance)
    except Exception as exc:
        _log.error("VM %s: could not give back the lease (it runs out by itself): %s", vm_name(vm), exc)
        return False
