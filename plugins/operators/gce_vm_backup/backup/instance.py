"""Stop and start one VM from the worker, seeing each operation's end within seconds.

These run while a VM is down (inside the downtime task and the teardown that brings a VM back), so they
never wait for a poke: they long-poll ``zoneOperations.wait`` (which returns as soon as the operation is
DONE, or after its hold, about 2 minutes: GCE_FACTS "Operations"), then read the VM. Every request has a
deterministic request id (re-sending it returns the original operation) and every wait is bounded by a
deadline (``time.monotonic()``). An operation DONE with an error raises; a wait call that fails (HTTP
errors past the hook's retries) falls back to reading the VM, because the state of the VM, not the
operation, is what the backup needs.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NoReturn

from gce_vm_backup.backup.plan import RESTARTABLE, STOPPING_STATES, SUSPENDED_STATES, vm_path
from gce_vm_backup.compute.polling import poll_until
from gce_vm_backup.errors import ApiError, OperationTimeoutError, ResourceNotFoundError, VmStateError

LONG_POLL = 30.0  # seconds of one operations.wait call (the server may return earlier, never later)
POLL = 1.0  # seconds between two reads of a VM when there is no operation to long-poll
TERMINATED = "TERMINATED"
_log = logging.getLogger(__name__)


def instance_args(record: dict[str, Any]) -> dict[str, str]:
    return {"project_id": record["project_id"], "zone": record["zone"], "name": record["instance"]}


def _sleep(deadline: float) -> None:
    time.sleep(max(0.0, min(POLL, deadline - time.monotonic())))


def await_status(
    hook: Any,
    record: dict[str, Any],
    *,
    operation: Any,
    want: str,
    deadline: float,
    what: str,
    timeout: float,
    refuse: frozenset[str] = frozenset(),
) -> None:
    """Wait until the VM is ``want``, long-polling ``operation`` (None: only read the VM) until ``deadline``.

    Raises OperationFailedError / RateLimitedError when the operation is DONE with an error,
    VmStateError when the VM turns to a state of ``refuse``, ResourceNotFoundError when the VM is gone,
    and OperationTimeoutError (``what`` and ``timeout`` name it) when the deadline passes first.
    """
    from gce_vm_backup.compute.operations import is_done, raise_if_failed

    vm = vm_path(record)

    def look() -> str:
        """Long-poll the operation while it runs (then check it), and read the VM's status."""
        nonlocal operation
        if operation is not None and not is_done(operation) and deadline > time.monotonic():
            try:
                wait = min(deadline - time.monotonic(), LONG_POLL)
                operation = hook.get_operation(operation, wait_seconds=max(wait, 0.1))
            except ResourceNotFoundError:
                raise
            except ApiError as exc:  # the wait failed, not the operation: read the VM instead
                _log.warning(
                    "Waiting on operation %s of %s failed (%s); reading the VM", operation.name, vm, exc
                )
                _sleep(deadline)
        if operation is not None and is_done(operation):
            raise_if_failed(operation)
        status = hook.get_instance(**instance_args(record)).status
        if status != want and status in refuse:
            raise VmStateError(f"VM {vm} became {status} during the backup; refusing to {what} it")
        return status

    def timed_out(status: str) -> NoReturn:
        raise OperationTimeoutError(
            f"The {what} of VM {vm} did not finish within {timeout:.0f} seconds (the VM is {status})"
        )

    poll_until(
        look,
        lambda status: status == want,
        deadline=deadline,
        # no sleep while an operation runs: the next look long-polls it
        pause=lambda remaining: (
            max(0.0, min(POLL, remaining)) if operation is None or is_done(operation) else None
        ),
        on_timeout=timed_out,
        clock=time.monotonic,
        sleep=time.sleep,
    )


def stop_vm(hook: Any, record: dict[str, Any], run: Any, *, deadline: float, timeout: float) -> None:
    """Bring a VM to TERMINATED: send the stop (request id of ``run``) unless it is already on its way down.

    ``discardLocalSsd`` follows the record's ``local_ssd`` choice for a VM with local SSDs. Raises
    VmStateError when the VM is (or becomes) SUSPENDED or SUSPENDING: stopping it would lose its memory
    state; otherwise as await_status.
    """
    vm = vm_path(record)
    status = hook.get_instance(**instance_args(record)).status
    if status == TERMINATED:
        _log.info("VM %s is TERMINATED", vm)
        return
    if status in SUSPENDED_STATES:
        raise VmStateError(f"VM {vm} became {status} during the backup; refusing to stop it")
    operation = None
    if status not in STOPPING_STATES:  # a VM already going down needs no second stop (a write call)
        discard = (record.get("local_ssd") == "discard") if record.get("has_local_ssd") else None
        operation = hook.stop_instance(
            **instance_args(record), request_id=run.request_id(vm, "stop"), discard_local_ssd=discard
        )
        _log.info("VM %s is %s; stop operation %s", vm, status, operation.name)
    await_status(
        hook,
        record,
        operation=operation,
        want=TERMINATED,
        deadline=deadline,
        what="stop",
        timeout=timeout,
        refuse=SUSPENDED_STATES,
    )


def start_vm(
    hook: Any, record: dict[str, Any], run: Any, *, deadline: float, timeout: float, caller: str = ""
) -> None:
    """Bring a VM to RUNNING: start a TERMINATED one, resume a SUSPENDED one, wait out STOPPING and
    STAGING first (a stop still shutting down must finish before the VM can start). ``caller`` goes into
    the request ids, so a start by another step of the same try (the downtime task's own start, its
    restart after a failure, ensure_running) is a new request, not the replay of an earlier one.

    Raises OperationFailedError when the start or resume operation failed, ResourceNotFoundError when
    the VM is gone, OperationTimeoutError when ``deadline`` passes first.
    """
    vm = vm_path(record)

    def timed_out(status: str) -> NoReturn:
        raise OperationTimeoutError(
            f"The start of VM {vm} did not finish within {timeout:.0f} seconds (the VM is {status})"
        )

    # STOPPING, STAGING and the like: wait them out, then start or resume.
    status = poll_until(
        lambda: hook.get_instance(**instance_args(record)).status,
        lambda status: status in (RESTARTABLE, TERMINATED, "SUSPENDED"),
        deadline=deadline,
        pause=lambda remaining: max(0.0, min(POLL, remaining)),
        on_timeout=timed_out,
        clock=time.monotonic,
        sleep=time.sleep,
        before_pause=lambda status: _log.info("VM %s is %s; waiting before starting it", vm, status),
    )
    if status == RESTARTABLE:
        _log.info("VM %s is RUNNING", vm)
        return
    if status == TERMINATED:
        operation = hook.start_instance(
            **instance_args(record), request_id=run.request_id(vm, f"{caller}start")
        )
    else:  # SUSPENDED
        operation = hook.resume_instance(
            **instance_args(record), request_id=run.request_id(vm, f"{caller}resume")
        )
    _log.info("VM %s is %s; %s operation %s", vm, status, operation.operation_type, operation.name)
    await_status(
        hook,
        record,
        operation=operation,
        want=RESTARTABLE,
        deadline=deadline,
        what="start",
        timeout=timeout,
    )
