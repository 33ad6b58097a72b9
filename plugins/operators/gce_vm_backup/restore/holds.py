"""The restore DAG's hold tasks: ``hold`` (after the plan) and ``release_hold`` (a teardown: it runs however
the restore ended). See holds.py for what a hold is and what retention does with it.

Both take the plan (the plan task's XCom ``return_value``) and act on the snapshots its disks are made
from (``disks[].source_snapshot``, ``projects/P/global/snapshots/S``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from gce_vm_backup.compute.holds import hold_key, hold_value, relabel
from gce_vm_backup.compute.paths import SnapshotRef
from gce_vm_backup.errors import BackupError
from gce_vm_backup.restore.base import RestoreTask, iso, now

LABEL_TIMEOUT = 120.0  # seconds for one setLabels operation


def planned_snapshots(plan: Any) -> list[tuple[str, str]]:
    """(project, name) of every snapshot the plan restores from, in order, once each."""
    if not isinstance(plan, Mapping):
        return []
    found: list[tuple[str, str]] = []
    for disk in plan.get("disks") or []:
        parts = str(disk.get("source_snapshot") or "").split("/")
        is_path = len(parts) == 5 and parts[0] == "projects" and parts[2:4] == ["global", "snapshots"]
        if is_path and (parts[1], parts[4]) not in found:
            found.append((parts[1], parts[4]))
    return found


class HoldSnapshotsOperator(RestoreTask):
    """Hold every snapshot of the chosen set from retention for ``hold_for`` (a label with its expiry).

    Returns ``{"key", "until", "snapshots": [paths]}`` (no snapshot in a dry run). Raises BackupError when
    a snapshot of the set is gone since the plan (nothing of the VM was changed yet), ApiError when a
    label write is refused.
    """

    template_fields = ("plan",)
    plan: Any
    hold_for: timedelta

    def __init__(self, *, plan: Any, hold_for: timedelta, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.hold_for = hold_for

    def execute(self, context: Any) -> dict[str, Any]:
        key = hold_key(self.run_hash(context))
        until = now() + self.hold_for
        result: dict[str, Any] = {"key": key, "until": iso(until), "snapshots": []}
        if not isinstance(self.plan, Mapping) or self.plan.get("dry_run"):
            self.log.info("Dry run: no snapshot is held")
            return result
        value = hold_value(until)
        for project, name in planned_snapshots(self.plan):
            path = SnapshotRef(project, name).path
            held = relabel(
                self.hook,
                project=project,
                name=name,
                change=lambda labels: {**labels, key: value},
                timeout=LABEL_TIMEOUT,
            )
            if held is None:
                raise BackupError(
                    f"Snapshot {path} of the chosen set is gone since the plan; nothing of the VM was "
                    "changed. Plan the restore again."
                )
            if held.status != "READY":
                raise BackupError(
                    f"Snapshot {path} of the chosen set is {held.status}, not READY; nothing of the VM was "
                    "changed"
                )
            self.log.info("Held %s from retention until %s (label %s)", path, iso(until), key)
            result["snapshots"].append(path)
        return result


class ReleaseHoldsOperator(RestoreTask):
    """Remove this run's hold from every snapshot of the plan (a snapshot gone already is fine).

    Returns the paths released. Raises ApiError when a label write is refused (the hold then lapses at
    its expiry).
    """

    template_fields = ("plan",)
    plan: Any

    def __init__(self, *, plan: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan

    def execute(self, context: Any) -> list[str]:
        key = hold_key(self.run_hash(context))
        released = []
        for project, name in planned_snapshots(self.plan):
            path = SnapshotRef(project, name).path
            snapshot = relabel(
                self.hook,
                project=project,
                name=name,
                change=lambda labels: {k: v for k, v in labels.items() if k != key},
                timeout=LABEL_TIMEOUT,
            )
            if snapshot is None:
                self.log.info("Snapshot %s is gone: nothing to release", path)
                continue
            self.log.info("Released the hold %s on %s", key, path)
            released.append(path)
        return released
