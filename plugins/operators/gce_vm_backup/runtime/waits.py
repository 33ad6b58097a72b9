"""The one base of every slot-free wait of the package (verify; convert in instant mode).

A wait observes something it does not hold down: a snapshot uploading to READY, an instant snapshot
being converted. None of them keeps a VM down, so they never hold a worker slot between looks unless the
group asks for it (``wait_mode="worker"``). The downtime itself (stop, capture, start) does not wait
here: it long-polls on the worker (downtime_ops.py), because every second there is a second of downtime.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.bases.sensor import BaseSensorOperator

from gce_vm_backup.errors import OperationTimeoutError
from gce_vm_backup.runtime.base import (
    WAIT_MODES,
    ComputeOperator,
    DeferringWait,
    check_choice,
    sensor_mode,
    wait_mode_of,
)
from gce_vm_backup.runtime.compat import AirflowSensorTimeout, conf


class SlotFreeWait(ComputeOperator, DeferringWait, BaseSensorOperator):
    """A bounded wait that looks (``poke``), then frees its worker slot until the next look.

    ``deferrable`` (default: Airflow's ``[operators] default_deferrable``, false unless set, as the
    provider operators take it): true defers between pokes, false reschedules. ``wait_mode``, when given,
    decides instead (the config's key; ``deferrable`` is then true for ``"defer"`` only):
    ``"defer"`` defers on the standard provider's TimeDeltaTrigger between pokes (a built-in
    trigger, so it runs on Composer 3's triggerer; counted against ``max_active_tis_per_dagrun``);
    ``"reschedule"`` reschedules (not counted); ``"worker"`` pokes on the worker (holds the slot).
    ``timeout`` (seconds) bounds the whole wait in every mode, across deferrals and reschedules; a retry
    starts a new bound.

    Subclasses implement ``poke(context)``: look (and act idempotently if needed); return
    ``PokeReturnValue(True, xcom_value)`` when done, ``False`` to look again after ``poke_interval``; raise
    a BackupError subclass for a failure. They may override ``describe()`` (what is waited on, for the
    timeout message) and ``pending()`` (what is still not there, appended to the timeout message), or
    ``timeout_message()`` (the whole message but Airflow's suffix), and
    set ``retry_on_timeout = True`` for a bound that Airflow must retry (an OperationTimeoutError instead
    of AirflowSensorTimeout, which Airflow never retries).
    Raises AirflowSensorTimeout (or OperationTimeoutError) when ``timeout`` passes first; ConfigError for
    a bad ``wait_mode``.
    """

    retry_on_timeout = False

    def __init__(
        self,
        *,
        wait_mode: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        timeout: float = 3600,
        poke_interval: float = 30,
        **kwargs: Any,
    ) -> None:
        if wait_mode is None:
            wait_mode = wait_mode_of(deferrable=deferrable)
        check_choice(wait_mode, WAIT_MODES, name="wait_mode")
        super().__init__(mode=sensor_mode(wait_mode), timeout=timeout, poke_interval=poke_interval, **kwargs)
        self.wait_mode = wait_mode
        self.deferrable = wait_mode == "defer"

    def describe(self) -> str:
        """What is waited on ("the snapshots of VM ..."), for the timeout message."""
        return self.task_id

    def pending(self) -> str:
        """What is still not there at the last look ("" when unknown)."""
        return ""

    def execute(self, context: Any) -> Any:
        if self.wait_mode == "defer":
            return self.execute_deferring(context)
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            raise self._timeout_error(f" ({exc})") from exc

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any) -> Any:
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except AirflowSensorTimeout as exc:  # the deferral's own timeout (no triggerer ran it in time)
            if not self.retry_on_timeout:
                raise
            error = self._timeout_error(f" (the deferral timed out: {exc})")
            self.record_failure(context, error)
            raise error from exc

    def wait_timed_out(self, context: Any) -> Exception:
        return self._timeout_error("")

    def timeout_message(self) -> str:
        """The first part of the timeout's message (override to name the resource in your words)."""
        pending = self.pending()
        return (
            f"{type(self).__name__} for {self.describe()} did not finish within {self.timeout:.0f} seconds"
            f"{': still waiting for ' + pending if pending else ''}"
        )

    def _timeout_error(self, suffix: str) -> Exception:
        message = f"{self.timeout_message()}{suffix}"
        if self.retry_on_timeout:
            return OperationTimeoutError(f"{message}; the task's retry waits again")
        return AirflowSensorTimeout(message)
