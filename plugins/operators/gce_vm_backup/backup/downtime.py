"""The downtime of one VM in one task: stop, capture every disk, start, on the worker, no poke between.

Every second between the stop request and RUNNING again is downtime, so this task holds its worker
slot on purpose and waits with ``operations.wait`` long-polls (instance_ops.py, snapshot_ops.py), each
step bounded by the group's timeout for it. Whatever fails after the stop request, the VM is started
again before the task fails (``StopSnapshotStartOperator``). Outer tiers of a tiered group use
``StopSnapshotOperator`` (no start: their VMs stay down until every inner tier is back) and
``EnsureRunningOperator`` as ``start``.

``max_concurrent_vms`` (cap.py): the scheduler runs up to twice the cap of these tries; before its stop
request a try claims room under the cap and counts, and while there is none it waits on its slot,
started ahead, for another VM of the tier to come back (it looks every ``ROOM_POLL`` seconds), so the
next stop follows within seconds. It gives the slot back (reschedules) when a VM is left down by a try
that is not running (that try's retry needs a slot), and after ``PRESTART_WAIT`` seconds of waiting.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from gce_vm_backup.backup.capture import CaptureSettings, capture_standard, settle_standard
from gce_vm_backup.backup.instance import instance_args, start_vm, stop_vm
from gce_vm_backup.backup.plan import NO_VM_STATUS, RESTARTABLE, SUSPENDED_STATES, now_iso, vm_path
from gce_vm_backup.backup.stages import DOWN_XCOM_KEY
from gce_vm_backup.compute.polling import poll_until
from gce_vm_backup.errors import BackupError, ConfigError, OperationTimeoutError, VmStateError
from gce_vm_backup.runtime.base import ComputeOperator, RunKey, check_choice
from gce_vm_backup.runtime.links import ConsoleLinks

SNAPSHOT_MODES = ("standard", "instant")
ROOM_POLL = 2.0  # seconds between two looks of a try waiting for room under the cap (x 0.5-1.5)
RECOUNT_EVERY = 10  # looks: a look reads the tries' states only, a full count follows when they changed
PRESTART_WAIT = 900.0  # seconds a try waits for room on its slot before it gives the slot back


def checked_record(record: Any) -> dict[str, Any]:
    """The precheck's InstanceRecord, checked. Raises ConfigError when it is not one."""
    if not isinstance(record, dict) or "instance" not in record:
        raise ConfigError(
            f"The parameter 'instance_record' must be the precheck's result, got {record!r} "
            "(did the precheck task run?)"
        )
    return record


def capture_function(snapshot_mode: str) -> Any:
    """The capture step of ``snapshot_mode``: ``capture(hook, record, run, *, deadline, settings)``."""
    if snapshot_mode == "instant":
        from gce_vm_backup.backup.instant import capture_instant

        return capture_instant
    return capture_standard


def settle_function(snapshot_mode: str) -> Any:
    """The settle step (after a failed capture, before the VM runs again) of ``snapshot_mode``."""
    if snapshot_mode == "instant":
        from gce_vm_backup.backup.instant import settle_instant

        return settle_instant
    return settle_standard


def vm_snapshot_mode(record: dict[str, Any], group_mode: str) -> str:
    """The VM's own mode: the precheck's choice (``instant_fallback: standard`` can turn an instant group's
    VM to standard), else the group's."""
    return str(record.get("snapshot_mode") or group_mode)


class StopSnapshotOperator(ConsoleLinks, ComputeOperator):
    """Stop the VM (if it was RUNNING before the backup) and capture every disk; leave it stopped.

    A VM that was not RUNNING is captured and left as it was. Before its stop request a try pushes the
    XCom marker ``stages.DOWN_XCOM_KEY`` = ``{"vm", "map_index", "down": true, "at"}``. With
    ``max_concurrent_vms`` set, a try about to stop a VM that is not already down (from an earlier try)
    first claims room under the cap and counts the VMs of the run down at once (cap.py: the downtime
    tasks ``cap_tasks`` of every tier, default this task alone); over the cap it
    withdraws (``{"down": false, "waiting": true}``) and waits on its slot for a VM to come back, or gives
    the slot back (reschedules every ``cap_poll`` seconds) when a VM is left down by a try that is not
    running, or after ``PRESTART_WAIT`` seconds; ``cap_wait`` seconds in all bound the wait.

    Returns ``{"vm", "prior_status", "stopped", "stop_requested_at", "captured_at", "mode", "snapshots"}``
    (SnapshotRecords, or instant records in ``snapshot_mode="instant"``). Raises VmStateError if the VM
    became SUSPENDED, ResourceNotFoundError if it was deleted, OperationFailedError if an operation
    failed, OperationTimeoutError when a step (or the wait for room under the cap) outlasts its bound,
    ConfigError for bad arguments.
    """

    template_fields: Sequence[str] = ("instance_record", "labels", "description")
    deployment: str
    group: str
    snapshot_mode: str
    instance_record: Any
    labels: dict[str, str]
    description: str | None
    storage_locations: list[str] | None
    snapshot_type: str | None
    guest_flush: bool | str
    early_restart: bool
    stop_timeout: float
    snapshot_timeout: float
    start_timeout: float
    max_concurrent_vms: int | None
    cap_tasks: list[str] | None
    cap_wait: float
    cap_poll: float
    lease_wait: float | None
    lease_poll: float
    down_notice: Any
    restart = False
    _capture_deadline = 0.0

    def __init__(
        self,
        *,
        instance_record: Any,
        deployment: str,
        group: str,
        labels: dict[str, str] | None = None,
        storage_locations: list[str] | None = None,
        snapshot_type: str | None = None,
        guest_flush: bool | str = False,
        description: str | None = None,
        early_restart: bool = False,
        snapshot_mode: str = "standard",
        stop_timeout: float = 600,
        snapshot_timeout: float = 3600,
        start_timeout: float = 600,
        max_concurrent_vms: int | None = None,
        cap_tasks: Sequence[str] | None = None,
        cap_wait: float | None = None,
        cap_poll: float = 30,
        lease_wait: float | None = None,
        lease_poll: float = 15,
        down_notice: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from gce_vm_backup.config.labels import check_deployment, check_group

        self.deployment = check_deployment(deployment)
        self.group = check_group(group)
        self.snapshot_mode = check_choice(snapshot_mode, SNAPSHOT_MODES, name="snapshot_mode")
        CaptureSettings(deployment, group, snapshot_type=snapshot_type)  # checks them at parse time
        bounds = float(stop_timeout), float(snapshot_timeout), float(start_timeout)
        self.instance_record = instance_record
        self.labels = labels or {}
        self.description = description
        self.storage_locations = storage_locations
        self.snapshot_type = snapshot_type
        self.guest_flush = guest_flush
        self.early_restart = early_restart
        self.stop_timeout = bounds[0]
        self.snapshot_timeout = bounds[1]
        self.start_timeout = bounds[2]
        self.max_concurrent_vms = max_concurrent_vms
        self.cap_tasks = list(cap_tasks) if cap_tasks else None
        # Default wait budget: one full downtime of another VM (its bounds), twice over.
        self.cap_wait = float(cap_wait) if cap_wait is not None else 2 * sum(bounds)
        self.cap_poll = float(cap_poll)
        self.lease_wait = float(lease_wait) if lease_wait is not None else None
        self.lease_poll = float(lease_poll)
        self.down_notice = down_notice
        if down_notice is not None:  # notify.VmDownNotice: also when a try ends with its VM maybe down
            for name in ("on_retry_callback", "on_failure_callback"):
                found = getattr(self, name, None)
                callbacks = list(found) if isinstance(found, list | tuple) else [found] if found else []
                setattr(self, name, [*callbacks, down_notice])

    def settings(self) -> CaptureSettings:
        return CaptureSettings(
            deployment=self.deployment,
            group=self.group,
            labels=dict(self.labels or {}),
            storage_locations=self.storage_locations,
            snapshot_type=self.snapshot_type,
            guest_flush=self.guest_flush,
            description=self.description,
            early_restart=self.early_restart,
        )

    def execute(self, context: Any) -> dict[str, Any]:
        record = checked_record(self.instance_record)
        result: dict[str, Any] = {
            "vm": vm_path(record) if record.get("instance") else "",
            "prior_status": record.get("prior_status"),
            "stopped": False,
            "stop_requested_at": None,
            "captured_at": None,
            "mode": vm_snapshot_mode(record, self.snapshot_mode),
            "snapshots": [],
        }
        if self.restart:
            result.update(started=False, running_at=None)
        if record["prior_status"] == NO_VM_STATUS:
            return result
        from gce_vm_backup.runtime.lease import release_quietly

        run = RunKey.from_context(context, deployment=self.deployment)
        ti = context["ti"]
        if self.max_concurrent_vms and (run.try_number == 1 or record["prior_status"] != RESTARTABLE):
            # Not down because of this task instance: its first try has stopped nothing yet (a killed or
            # failed try is followed by a try numbered 2 or more), and a VM that was not RUNNING is never
            # stopped. Said at once, so the others' counts do not take this try, started ahead, for a VM
            # down (cap.py).
            self._mark(ti, result["vm"], down=False, waiting=record["prior_status"] == RESTARTABLE)
        vm, holder = instance_args(record), self._holder(context)
        taken = self._take_lease(vm, holder)  # before anything changes; may wait for another holder
        if record["prior_status"] != RESTARTABLE:
            self.log.info(
                "VM %s was %s before the backup: capturing it, not stopping it",
                result["vm"],
                record["prior_status"],
            )
            try:
                result["snapshots"] = self._capture(record, run)
            finally:
                release_quietly(self.hook, vm, holder)
            result["captured_at"] = now_iso()
            return result
        status = taken.instance.status
        try:
            if status in SUSPENDED_STATES:  # someone suspended it: not ours to stop, nor to resume later
                raise VmStateError(
                    f"VM {result['vm']} became {status} during the backup; refusing to stop it"
                )
            if status == RESTARTABLE:
                self._wait_for_room(context)  # may give the slot back (reschedule) before anything is stopped
            elif run.try_number > 1 and taken.was_ours:
                # Down from an earlier try of this run (a killed worker, a start that failed): that try took
                # the lease before its stop, and nobody has taken it since. Go on.
                self.log.info(
                    "VM %s is %s already (an earlier try stopped it): going on", result["vm"], status
                )
            else:
                self._mark(ti, result["vm"], down=False)
                self.failure_subject = "backup"
                raise VmStateError(self._stopped_by_someone_else(result["vm"], status, record, run))
        except BaseException:
            release_quietly(self.hook, vm, holder)
            raise
        self._mark(ti, result["vm"], down=True)
        result["stop_requested_at"] = now_iso()
        try:
            self.failure_subject = "stop"
            stop_vm(
                self.hook,
                record,
                run,
                deadline=time.monotonic() + self.stop_timeout,
                timeout=self.stop_timeout,
            )
            result["stopped"] = True
            self.failure_subject = None
            result["snapshots"] = self._capture(record, run)
            result["captured_at"] = now_iso()
            if self.restart:
                self.failure_subject = "start"
                self._start(record, run, self.start_timeout)
                result.update(started=True, running_at=now_iso())
                self._mark(ti, result["vm"], down=False)
                self.failure_subject = None
        except BaseException as exc:
            noticed = self._notice_at_once(context, record, exc)
            if not self.restart:  # the outer tiers' VM stays down, leased, until their `start` task
                raise
            back = bool(result.get("started")) or self._bring_back_after(exc, record, run, ti)
            if back:  # RUNNING again: the lease goes back; otherwise it stays for ensure_running
                release_quietly(self.hook, vm, holder)
                if noticed and not result.get("started"):
                    self.down_notice.back(context, record)
            if result.get("started") or not (back and result["captured_at"] and isinstance(exc, BackupError)):
                raise
            # Only the start step failed (a lost response, a failed start operation) and the VM is RUNNING
            # now: the downtime is done. Failing would make the retry stop the VM a second time.
            self.log.warning("VM %s: the start failed (%s) but the VM is RUNNING again", result["vm"], exc)
            result.update(started=True, running_at=now_iso())
            self.failure_subject = None
            return result
        if self.restart:  # after running_at: the lease write is no part of the measured downtime
            release_quietly(self.hook, vm, holder)
        self.log.info(
            "VM %s: stop requested %s, captured %s%s",
            result["vm"],
            result["stop_requested_at"],
            result["captured_at"],
            f", RUNNING {result['running_at']}" if self.restart else " (left stopped)",
        )
        return result

    def _holder(self, context: Any) -> Any:
        from gce_vm_backup.runtime.lease import Holder

        return Holder.of_context("backup", deployment=self.deployment, context=context)

    def lease_seconds(self) -> float:
        """How long the lease lasts: the wait for room under the cap, then one whole downtime, plus a
        margin. A killed worker's lease runs out after that."""
        from gce_vm_backup.runtime.lease import LEASE_MARGIN

        room = self.cap_wait if self.max_concurrent_vms else 0.0
        return room + self.stop_timeout + self.snapshot_timeout + self.start_timeout + LEASE_MARGIN

    def _take_lease(self, vm: dict[str, str], holder: Any) -> Any:
        """The VM's lease for this run (lease.acquire): before the stop request, so outside the measured
        downtime. Raises LeaseHeldError naming the holder after ``lease_wait`` seconds; nothing changed."""
        from gce_vm_backup.runtime.lease import acquire

        self.failure_subject = "lease"
        # Default wait: one full downtime of another operation on the VM.
        wait = self.stop_timeout + self.snapshot_timeout + self.start_timeout
        taken = acquire(
            self.hook,
            vm,
            holder,
            duration=self.lease_seconds(),
            wait=self.lease_wait if self.lease_wait is not None else wait,
            poll=self.lease_poll,
        )
        self.failure_subject = None
        return taken

    @staticmethod
    def _stopped_by_someone_else(vm: str, status: str, record: dict[str, Any], run: RunKey) -> str:
        """Why a VM that is not RUNNING, although the precheck saw it RUNNING, is left as it is."""
        why = (
            "this is the run's first try"
            if run.try_number == 1
            else "no earlier try of this run took its lease, which comes before any stop"
        )
        return (
            f"VM {vm} is {status}, but the precheck saw it RUNNING at {record.get('checked_at')}, and this "
            f"run did not stop it ({why}): someone else did. It is left {status}: neither stopped, "
            "snapshotted nor started, so it was NOT backed up by this run. A retry backs it up once it is "
            "RUNNING again."
        )

    def _capture(self, record: dict[str, Any], run: RunKey) -> list[dict[str, Any]]:
        self.failure_subject = "snapshot"
        capture = capture_function(vm_snapshot_mode(record, self.snapshot_mode))
        self._capture_deadline = time.monotonic() + self.snapshot_timeout
        records = capture(self.hook, record, run, deadline=self._capture_deadline, settings=self.settings())
        self.failure_subject = None
        self.console_snapshots = list(records)  # the task's "Snapshots" link (links.py)
        return self.console_snapshots

    def _start(self, record: dict[str, Any], run: RunKey, timeout: float, caller: str = "") -> None:
        start_vm(self.hook, record, run, deadline=time.monotonic() + timeout, timeout=timeout, caller=caller)

    def _bring_back_after(self, exc: BaseException, record: dict[str, Any], run: RunKey, ti: Any) -> bool:
        """Start the VM after a failure past the stop request (bounded by the stop and start timeouts: a
        stop still shutting down is waited out). A failed capture is settled first (settle_standard or
        settle_instant: no snapshot of this run goes on being made while the disks are written again).
        Never raises: the original error is what the task fails with; a VM this could not bring back
        keeps its ``down`` marker, and its retry or ensure_running brings it back. Returns whether the VM
        is RUNNING."""
        vm = vm_path(record)
        self.log.error("VM %s: %s; starting it again before failing", vm, exc)
        if self.failure_subject == "snapshot":
            settle = settle_function(vm_snapshot_mode(record, self.snapshot_mode))
            problems = settle(
                self.hook, record, run, deadline=self._capture_deadline, settings=self.settings()
            )
            for problem in problems:
                self.log.error("VM %s: could not settle %s", vm, problem)
        try:
            self._start(record, run, self.stop_timeout + self.start_timeout, caller="restart-")
            self._mark(ti, vm, down=False)
            self.log.info("VM %s is RUNNING again", vm)
            return True
        except BaseException as start_error:  # the task's own error must win
            self.log.error("VM %s could not be started again (ensure_running will try): %s", vm, start_error)
            return False

    def _notice_at_once(self, context: Any, record: dict[str, Any], exc: BaseException) -> bool:
        """Tell on-call now that the VM may be down when the stop step failed and this try will start the
        VM again: that start first waits the stop out (up to ``stop_timeout`` + ``start_timeout``), and
        the task's failure callback would come only after it. Returns whether the notice went out (an
        all-clear follows when the start brings the VM back). Never raises."""
        if self.down_notice is None or not self.restart or self.failure_subject != "stop":
            return False
        try:
            return bool(self.down_notice.down(context, record, f"the stop did not complete: {exc}"))
        except Exception as notice_error:
            self.log.error("Could not send the VM-down notice: %s", notice_error)
            return False

    @staticmethod
    def _mark(ti: Any, vm: str, *, down: bool, waiting: bool = False) -> None:
        """Push this try's ``DOWN_XCOM_KEY`` marker (cap.py says what each value means)."""
        value: dict[str, Any] = {"vm": vm, "map_index": ti.map_index, "down": down, "at": now_iso()}
        if waiting:
            value["waiting"] = True
        ti.xcom_push(key=DOWN_XCOM_KEY, value=value)

    def _wait_for_room(self, context: Any) -> None:
        """Return once this try has claimed room under ``max_concurrent_vms`` (its marker then says down:
        the caller stops the VM next). While there is none, wait on the slot, looking every ``ROOM_POLL``
        seconds (x 0.5-1.5: one read of the tries' states, and a full count when they changed or at every
        ``RECOUNT_EVERY``-th look); give the slot back (AirflowRescheduleException) when a VM is
        left down by a try that is not running (its retry needs a slot; seen in two counts in a row,
        so that a read racing a try's end is not taken for one) or after ``PRESTART_WAIT``
        seconds. Raises OperationTimeoutError once ``cap_wait`` seconds have passed since this try's
        first wait (retried); a count that fails is retried the same way, never taken as room."""
        if not self.max_concurrent_vms:
            return
        from airflow.exceptions import AirflowRescheduleException

        from gce_vm_backup.backup.cap import count_down, run_states

        cap, ti, vm = int(self.max_concurrent_vms), context["ti"], vm_path(self.instance_record)
        tasks = list(dict.fromkeys([self.task_id, *(self.cap_tasks or [])]))
        slots = sorted(run_states(ti, tasks))
        indexes = [index for task, index in slots if task == self.task_id]
        others = {task: [index for name, index in slots if name == task] for task in tasks[1:]}
        if len(slots) <= cap:  # no more downtime tries in the whole run (every tier) than the cap
            self.log.info("Room to stop %s: %d VM(s) in the run's tiers so far, cap %d", vm, len(slots), cap)
            return
        first = ti.get_first_reschedule_date(context) if hasattr(ti, "get_first_reschedule_date") else None
        waited_before = (datetime.now(UTC) - first).total_seconds() if first else 0.0
        started, looks, seen, waited = time.monotonic(), 0, None, 0.0
        detail, left_down, suspects = "not counted yet", set[tuple[str, int]](), set[tuple[str, int]]()

        def look() -> bool:
            """Whether this try claimed room; how long it had waited, taken before the look, is the
            wait's clock."""
            nonlocal looks, seen, waited, detail, left_down, suspects
            waited = waited_before + time.monotonic() - started
            try:
                # A look reads the tries' states only. A VM back is followed within a second by its try's
                # end, so the full count (three reads) waits for a change in them, or for every tenth look
                # (an ensure_running bringing a VM back changes no state of this task).
                states = run_states(ti, tasks) if looks % RECOUNT_EVERY and not suspects else None
                if states is None or states != seen:
                    seen = states if states is not None else seen
                    found = count_down(ti, task_id=self.task_id, indexes=indexes, others=others)
                    if found.total <= cap:  # room, it seems: claim it, then count again (cap.py)
                        self._mark(ti, vm, down=True)
                        found = count_down(ti, task_id=self.task_id, indexes=indexes, others=others)
                        if found.total <= cap:
                            self.log.info("Room to stop %s: %s, cap %d", vm, found.detail, cap)
                            return True
                        self._mark(ti, vm, down=False, waiting=True)  # another try claimed it: withdraw
                    # A VM left down by a try that is not running, seen in two counts in a row: one
                    # count alone may have read a try's marker just before its VM came back and its
                    # try ended (or a claim just before it was withdrawn), a real one lasts.
                    detail, left_down = f"{found.detail}, cap {cap}", suspects & set(found.left_down)
                    suspects = set(found.left_down)
                    self.log.info("No room to stop %s yet (%s)", vm, detail)
            except BackupError:
                raise
            except Exception as exc:  # the Airflow API failed: no room is assumed, and the wait goes on
                self._mark(ti, vm, down=False, waiting=True)
                detail, left_down, seen = f"could not count the VMs down at once: {exc}", set(), None
            looks += 1
            return False

        def no_room(_: bool) -> NoReturn:
            raise OperationTimeoutError(
                f"VM {vm} waited {waited:.0f} seconds for room under max_concurrent_vms={cap} "
                f"({detail}); the task's retry waits again"
            )

        def pause(remaining: float) -> float:
            if left_down or time.monotonic() - started >= PRESTART_WAIT:
                delay = self.cap_poll * (1 + random.random())  # jitter: waiting tries must not wake together
                self.log.info("No room to stop %s (%s): giving the slot back for %.0f s", vm, detail, delay)
                raise AirflowRescheduleException(reschedule_date=datetime.now(UTC) + timedelta(seconds=delay))
            return ROOM_POLL * (0.5 + random.random())

        poll_until(
            look,
            bool,
            deadline=float(self.cap_wait),
            pause=pause,
            on_timeout=no_room,
            clock=lambda: waited,  # the time waited when the last look began
            sleep=time.sleep,
        )


class StopSnapshotStartOperator(StopSnapshotOperator):
    """The whole downtime of one VM: stop, capture every disk, start (resume a SUSPENDED one), RUNNING.

    As StopSnapshotOperator, then the start; whatever fails after the stop request, the VM is started
    again (bounded) before the error propagates, and the marker says ``{"down": false}`` once it is
    RUNNING. When only the start step failed and that restart brings the VM back, the task succeeds (its
    retry would stop the VM again for nothing). Returns StopSnapshotOperator's dict plus ``"started"``
    and ``"running_at"``.
    """

    restart = True
