"""What the VM backups page shows: one group's VMs and runs, and the page around them (built by
``ui.app``, drawn by ``ui.page``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gce_vm_backup.report.freshness import VmBackups


@dataclass(frozen=True)
class RunPoint:
    """One backup run of one VM, as the chart draws it."""

    run: str  # the run label
    at: datetime
    run_id: str | None = None
    downtime_s: float | None = None
    storage_bytes: int | None = None
    ok: bool | None = None


@dataclass
class GroupView:
    group: str
    dag_id: str
    schedule: str | None
    vms: list[VmBackups] = field(default_factory=list)
    runs: dict[str, list[RunPoint]] = field(default_factory=dict)  # VM path -> points, oldest first
    error: str | None = None


@dataclass
class PageView:
    deployment: str
    checked_at: datetime
    groups: list[GroupView]
    problems: list[str] = field(default_factory=list)
    hidden_groups: int = 0  # groups the user may not read


@dataclass(frozen=True)
class FormField:
    """One field of the restore form: a param of the restore DAG, its JSON schema and its value."""

    name: str
    schema: dict[str, Any]
    value: Any
    description: str | None = None

    @property
    def title(self) -> str:
        return str(self.schema.get("title") or self.name)


@dataclass
class RestoreForm:
    """The restore DAG's trigger form for one VM and one of its sets, as the page's links open it."""

    group: str
    dag_id: str  # the group's restore DAG
    vm: str  # projects/P/zones/Z/instances/I, from the link
    snapshot_set: str
    fields: list[FormField] = field(default_factory=list)
    problem: str | None = (
        None  # why the form cannot be shown (an unknown group, a group the user may not see)
    )
