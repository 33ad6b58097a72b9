"""What every operator of the package shares: the hook, the run's identity, the wait modes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gce_vm_backup.errors import ConfigError
from gce_vm_backup.naming import request_id

if TYPE_CHECKING:
    from gce_vm_backup.hook import ComputeBackupHook

WAIT_MODES = ("reschedule", "worker")
LOCAL_SSD_CHOICES = ("refuse", "discard", "preserve")
TRUE_STRINGS = frozenset({"true", "1", "yes", "on"})


@dataclass(frozen=True)
class RunKey:
    """Who is acting: feeds deterministic request ids and snapshot names."""

    dag_id: str
    run_id: str
    map_index: int
    try_number: int
    run_time: datetime

    @classmethod
    def from_context(cls, context: Any) -> RunKey:
        ti = context["ti"]
        dag_run = context["dag_run"]
        run_time = context.get("logical_date") or dag_run.run_after
        return cls(ti.dag_id, context["run_id"], int(ti.map_index), int(ti.try_number), run_time)

    def request_id(self, resource: str, action: str) -> str:
        return request_id(
            dag_id=self.dag_id,
            run_id=self.run_id,
            map_index=self.map_index,
            resource=resource,
            action=action,
            try_number=self.try_number,
        )


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


class HookMixin:
    """Builds the hook lazily, inside execute/poke: nothing Google is imported at DAG parse time."""

    gcp_conn_id: str
    impersonation_chain: str | Sequence[str] | None
    _hook: ComputeBackupHook | None = None

    @property
    def hook(self) -> ComputeBackupHook:
        if self._hook is None:
            from gce_vm_backup.hook import ComputeBackupHook

            self._hook = ComputeBackupHook(
                gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain
            )
        return self._hook
