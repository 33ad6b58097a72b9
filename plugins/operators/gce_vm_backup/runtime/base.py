"""What every operator of the package shares: the hook, the run's identity, the wait modes."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator

from gce_vm_backup.compute.naming import request_id
from gce_vm_backup.errors import ConfigError

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger

    from gce_vm_backup.compute.hook import ComputeBackupHook

WAIT_MODES = ("defer", "reschedule", "worker")
DEADLINE_XCOM_KEY = "gce_vm_backup_deadline"
ERROR_XCOM_KEY = "gce_vm_backup_error"  # why a task try failed (read by the run report)
ERROR_TEXT_LIMIT = 2000
# Control flow, not failures: a deferral, a reschedule, a skip.
_NOT_FAILURES = (
    "TaskDeferred",
    "AirflowRescheduleException",
    "AirflowSkipException",
    "DownstreamTasksSkipped",
)
_log = logging.getLogger(__name__)
LOCAL_SSD_CHOICES = ("refuse", "discard", "preserve")
GCP_CONN_ID = "google_cloud_default"
TRUE_STRINGS = frozenset({"true", "1", "yes", "on"})


@dataclass(frozen=True)
class RunKey:
    """Who is acting: feeds deterministic request ids and snapshot names."""

    dag_id: str
    run_id: str
    map_index: int
    try_number: int
    run_time: datetime
    # Two deployments (staging and prod) may have a group of the same name, so the same DAG id and run id:
    # with the deployment in them, their request ids differ and neither's stop is taken for a repeat.
    deployment: str = ""

    @classmethod
    def from_context(cls, context: Any, *, deployment: str | None = None) -> RunKey:
        ti = context["ti"]
        dag_run = context["dag_run"]
        run_time = context.get("logical_date") or dag_run.run_after
        return cls(
            ti.dag_id, context["run_id"], int(ti.map_index), int(ti.try_number), run_time, deployment or ""
        )

    def request_id(self, resource: str, action: str) -> str:
        return request_id(
            deployment=self.deployment,
            dag_id=self.dag_id,
            run_id=self.run_id,
            map_index=self.map_index,
            resource=resource,
            action=action,
            try_number=self.try_number,
        )


BACKUP_NOW = "a backup stops VMs now and names snapshots by the run's date"
BACKFILL_REFUSED = "backfill runs are refused: {why}; trigger the DAG instead"


def refuse_backfill(context: Any, *, why: str = BACKUP_NOW) -> None:
    """Raise AirflowFailException (one line, no retry) when the task's DAG run is a backfill run.

    The first task of a backup (and of a drill) calls it before any Compute Engine call: Airflow 3.2+ already
    refuses to create such runs (the DAG's ``allowed_run_types``, compat.allowed_run_types), Airflow 3.1
    does not, and a backfill would stop every VM once per past date. The rest of the run depends on the
    first task, so nothing else runs.
    """
    run_type = getattr(context["dag_run"], "run_type", None)
    if getattr(run_type, "value", run_type) == "backfill":
        from gce_vm_backup.runtime.compat import AirflowFailException

        raise AirflowFailException(BACKFILL_REFUSED.format(why=why))


def as_bool(value: Any, *, name: str) -> bool:
    """A rendered template may give 'True'/'False' strings; accept those and real booleans."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_STRINGS | {"false", "0", "no", "off", ""}:
        return value.strip().lower() in TRUE_STRINGS
    raise ConfigError(f"The parameter {name!r} must be true or false, not {value!r}")


def check_choice(value: str, choices: Sequence[str], *, name: str) -> str:
    if value not in choices:
        raise ConfigError(f"The parameter {name!r} must be one of {', '.join(choices)}, not {value!r}")
    return value


def failure_cause(subject: str, exc: BaseException) -> str:
    """One line for the run report: ``<subject> failed: <the cause>``.

    For a failed operation the cause is its error codes and messages (``QUOTA_EXCEEDED: Quota ...``) and the
    operation's name; otherwise the exception message's first line (type name when it has none).
    """
    text = str(exc).strip()
    marker = "finished with an error: "
    codes = getattr(exc, "codes", None)
    if codes and marker in text:
        detail = text.split(marker, 1)[1].splitlines()[0]
        operation = getattr(exc, "operation", "")
        detail = f"{detail} (operation {operation})" if operation else detail
    else:
        detail = text.splitlines()[0] if text else type(exc).__name__
        if not type(exc).__module__.startswith(("gce_vm_backup", "airflow")):  # a bug's KeyError, etc.
            detail = f"{type(exc).__name__}: {detail}"
    return f"{subject} failed: {detail}"[:ERROR_TEXT_LIMIT]


def _recording_failures(execute: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(execute)
    def wrapper(self: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return execute(self, context, *args, **kwargs)
        except BaseException as exc:
            self.record_failure(context, exc)
            raise

    wrapper._records_failures = True  # type: ignore[attr-defined]
    return wrapper


class RecordsFailures:
    """Every failed try of the task pushes why it failed to XCom (key ``gce_vm_backup_error``) before the
    exception propagates: ``{"task", "error", "message", "cause", "at"}``, where ``cause`` is the run
    report's line (``snapshot of disk web-1-data failed: QUOTA_EXCEEDED: ...``).

    Every path is covered: an error of the hook, an operation's error, our sensor timeouts (raised from
    ``execute`` or from ``resume_execution`` after a deferral), a trigger timeout, Airflow's own
    ``execution_timeout``. Airflow clears a task's XComs when a new try starts, so the XCom holds the last
    try's error. A subclass's ``execute`` is wrapped when the class is defined; the exception's own
    ``failure_subject`` attribute (set by the capture step per disk), else ``self.failure_subject`` (set
    while a step runs), names what failed, else the task's name.
    """

    failure_subject: str | None = None
    records_failures = True  # False for the run report: its failure is the summary, not a cause
    task_id: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        execute = cls.__dict__.get("execute")
        if execute is not None and not getattr(execute, "_records_failures", False):
            cls.execute = _recording_failures(execute)  # type: ignore[attr-defined]

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any) -> Any:
        try:
            return super().resume_execution(next_method, next_kwargs, context)  # type: ignore[misc]
        except BaseException as exc:
            self.record_failure(context, exc)
            raise

    def record_failure(self, context: Any, exc: BaseException) -> None:
        """Push the failure XCom (once per exception); never raises, so the real error is what propagates."""
        if (
            not self.records_failures
            or type(exc).__name__ in _NOT_FAILURES
            or getattr(exc, "_gce_vm_backup_recorded", False)
        ):
            return
        # The exception may name what failed (a capture step marks its per-disk errors), else the task.
        subject = (
            getattr(exc, "failure_subject", None) or self.failure_subject or self.task_id.rsplit(".", 1)[-1]
        )
        message = str(exc).strip()
        record = {
            "task": self.task_id,
            "error": type(exc).__name__,
            "message": message[:ERROR_TEXT_LIMIT],
            "cause": failure_cause(subject, exc),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with contextlib.suppress(AttributeError):  # an exception type that takes no attributes
            exc._gce_vm_backup_recorded = True  # type: ignore[attr-defined]
        try:
            context["ti"].xcom_push(key=ERROR_XCOM_KEY, value=record)
        except Exception as push_error:  # the task's own error must win over a failed push
            _log.warning("Could not record the failure of %s in XCom: %s", self.task_id, push_error)


class ComputeOperator(RecordsFailures, BaseOperator):
    """The base of every operator and sensor of the package that calls Compute Engine.

    :param gcp_conn_id: the Airflow connection (Google Cloud type) of the hook; none defined is fine (see
        ComputeBackupHook.get_connection).
    :param impersonation_chain: a service account to impersonate (or a chain of them), as the Google
        provider's operators take it.

    Both are keyword-only and, like any operator argument, filled from ``default_args`` and accepted by
    ``partial()``: this ``__init__`` is one Airflow wraps, as the Google provider's ComputeEngineBaseOperator
    is. A sensor puts BaseSensorOperator after it (``class Wait(ComputeOperator, BaseSensorOperator)``).

    The hook is built lazily, inside execute/poke: nothing Google is imported at DAG parse time. Every
    failed try records its cause (see RecordsFailures).
    """

    _hook: ComputeBackupHook | None = None

    def __init__(
        self,
        *,
        gcp_conn_id: str = GCP_CONN_ID,
        impersonation_chain: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain

    @property
    def hook(self) -> ComputeBackupHook:
        if self._hook is None:
            from gce_vm_backup.compute.hook import ComputeBackupHook

            self._hook = ComputeBackupHook(
                gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain
            )
        return self._hook


def wait_mode_of(*, deferrable: bool) -> str:
    """The wait mode of a ``deferrable`` flag without an explicit ``wait_mode``: defer, else reschedule
    (still slot-free, and needs no triggerer)."""
    return "defer" if deferrable else "reschedule"


def sensor_mode(wait_mode: str) -> str:
    """The BaseSensorOperator ``mode`` of a wait mode (``defer`` drives its own loop; see DeferringWait)."""
    return "reschedule" if wait_mode == "reschedule" else "poke"


class DeferringWait:
    """``wait_mode="defer"`` for a BaseSensorOperator: poke, then defer on the standard provider's
    TimeDeltaTrigger until the next poke.

    Slot-free like ``reschedule``, and unlike it, a waiting task counts against
    ``max_active_tis_per_dagrun`` (Airflow counts deferred task instances, not ones waiting to be
    rescheduled). The trigger is a built-in one, so it runs on Composer 3's triggerer, which does not get
    plugins/. Used through waits.SlotFreeWait.

    The overall deadline (now + ``timeout`` at the first poke) is kept in this task instance's XCom, which
    both a real resume and ``dag.test()`` keep (``dag.test`` drops ``defer`` kwargs). A retry starts a
    new deadline, as Airflow clears a task's XComs when a new try starts.
    """

    timeout: float
    poke_interval: float
    task_id: str

    if TYPE_CHECKING:  # provided by BaseSensorOperator / BaseOperator; declared only for the type checker

        def poke(self, context: Any) -> Any: ...

        def defer(
            self,
            *,
            trigger: BaseTrigger,
            method_name: str,
            kwargs: dict[str, Any] | None = None,
            timeout: timedelta | int | float | None = None,
        ) -> NoReturn: ...

    def wait_timed_out(self, context: Any) -> Exception:
        """The exception for a wait past its deadline (subclasses name the resource)."""
        from gce_vm_backup.runtime.compat import AirflowSensorTimeout

        return AirflowSensorTimeout(f"Sensor {self.task_id} did not finish within {self.timeout:.0f} seconds")

    def execute_deferring(self, context: Any) -> Any:
        deadline = time.time() + float(self.timeout)
        context["ti"].xcom_push(key=DEADLINE_XCOM_KEY, value=deadline)
        return self._poke_or_defer(context, deadline)

    def resume_after_wait(self, context: Any, event: Any = None) -> Any:
        ti = context["ti"]
        deadline = ti.xcom_pull(task_ids=ti.task_id, key=DEADLINE_XCOM_KEY, map_indexes=ti.map_index)
        if deadline is None:  # XComs gone (cleared by hand): start a fresh deadline rather than never end
            return self.execute_deferring(context)
        return self._poke_or_defer(context, float(deadline))

    def _poke_or_defer(self, context: Any, deadline: float) -> Any:
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
        from airflow.sdk.bases.sensor import PokeReturnValue

        result = self.poke(context)
        if isinstance(result, PokeReturnValue):
            if result.is_done:
                return result.xcom_value
        elif result:
            return None
        remaining = deadline - time.time()
        if remaining <= 0:
            raise self.wait_timed_out(context)
        delay = timedelta(seconds=min(float(self.poke_interval), remaining))
        # The defer timeout bounds the wait even where no triggerer runs: the scheduler fails the task.
        self.defer(
            trigger=TimeDeltaTrigger(delay),
            method_name="resume_after_wait",
            timeout=timedelta(seconds=remaining + float(self.poke_interval) + 60),
        )
