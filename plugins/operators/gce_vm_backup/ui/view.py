"""What the VM backups page shows: one group's VMs and runs, and the page around them (built by
``ui.app``, drawn by ``ui.page``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

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
