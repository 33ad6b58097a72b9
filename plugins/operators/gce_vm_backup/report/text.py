"""The run report as text: the task log's table, the lines that lead it and the failure notification."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gce_vm_backup.report.model import GONE


def _size(storage_bytes: int) -> str:
    return f"{storage_bytes / (1 << 30):.1f} GiB"


def vm_name(path: str | None) -> str:
    return (path or "?").rsplit("/", 1)[-1]


def down_lines(report: Mapping[str, Any]) -> list[str]:
    """One line per VM that may be down, with the command that starts it (the report's first lines)."""
    lines = []
    for down in report.get("vms_down", []):
        fix = f"; start it by hand: {down['command']}" if down["command"] else ""
        if down["status"] is None:
            lines.append(
                f"VM MAY BE DOWN: {down['vm']}: its status could not be read (it was RUNNING before the "
                f"backup){fix}"
            )
            continue
        what = "no longer exists" if down["status"] == GONE else f"is {down['status']}"
        if down.get("not_stopped_by_run"):
            lines.append(
                f"VM DOWN: {down['vm']} {what}, stopped by someone else after the precheck (not by this "
                f"run; not backed up): find out who before you start it: {down['command']}"
            )
            continue
        lines.append(f"VM DOWN: {down['vm']} {what} (it was RUNNING before the backup){fix}")
    return lines


def problem_lines(report: Mapping[str, Any]) -> list[str]:
    """Every problem as ``<VM>: <cause>``, and every failed task outside the VM groups with its cause."""
    lines = [
        f"{vm_name(row['vm']) if row['vm'] else row['group']}: {problem}"
        for row in report.get("vms", [])
        for problem in row.get("problems", [])
    ]
    errors = report.get("task_errors", {})
    lines += [
        f"{task}: {errors.get(task) or 'failed (no error was recorded: see the task log)'}"
        for task in report["summary"].get("failed_tasks", [])
    ]
    return lines


def downtime_line(report: Mapping[str, Any]) -> str:
    """``VMs down at once: at most 4 (max_concurrent_vms 4); slowest downtime 42s (web-1)``."""
    downtime = report.get("downtime") or {}
    peak, cap = downtime.get("peak_vms_down", 0), downtime.get("max_concurrent_vms")
    beside = "" if cap is None else f" (max_concurrent_vms {cap})"
    if downtime.get("within_cap") is False:
        beside = f", ABOVE max_concurrent_vms {cap}"
    slowest = downtime.get("slowest")
    tail = f"; slowest downtime {slowest['seconds']}s ({vm_name(slowest['vm'])})" if slowest else ""
    return f"VMs down at once: at most {peak}{beside}{tail}"


def format_report(report: Mapping[str, Any]) -> str:
    """The report as a readable table for the task log; VMs that are down come first."""
    summary = report["summary"]
    lines = down_lines(report)
    lines.append(
        f"Backup run {report['run_id']} of {report['dag_id']}: {report['status'].upper()} - "
        f"{summary['vms_ok']}/{summary['vms']} VM(s) ok, {summary['snapshots_ready']}/{summary['snapshots']} "
        f"snapshot(s) READY ({_size(summary['storage_bytes'])}), {summary['snapshots_deleted']} old "
        "snapshot(s) deleted",
    )
    lines.append(downtime_line(report))
    if summary["failed_tasks"]:
        errors = report.get("task_errors", {})
        lines.append("Failed tasks outside the VM groups:")
        lines += [f"    {task}: {errors.get(task) or 'failed'}" for task in summary["failed_tasks"]]
    for planned in report.get("dry_run_plan", []):
        vm = planned["vm"].split("/zones/")[-1]
        lines.append(f"DRY RUN {vm} ({planned['status']}): would {planned['action']}")
        lines += [f"    {s['disk_source']} -> {s['snapshot']}" for s in planned["snapshots"]]
        lines += [
            f"    {disk} -> snapshotted by {vm_name(carrier)}'s backup"
            for disk, carrier in (planned.get("carried_by") or {}).items()
        ]
        if planned.get("would_delete"):
            lines.append(f"    retention would delete: {', '.join(planned['would_delete'])}")
    header = f"{'VM':<48} {'before':<10} {'downtime':>9}  {'disk':<24} {'snapshot':<63} {'status':<9} size"
    lines += [header, "-" * len(header)]
    for row in report["vms"]:
        vm = (row["vm"] or f"{row['group']}[{row['map_index']}]").split("/zones/")[-1]
        downtime = "-" if row["downtime_seconds"] is None else f"{row['downtime_seconds']}s"
        first = f"{vm:<48} {row['prior_status'] or '?':<10} {downtime:>9}  "
        for index, snap in enumerate(row["snapshots"] or [{}]):
            prefix = first if index == 0 else " " * len(first)
            size = f"carried by {vm_name(snap['carried_by'])}" if snap.get("carried_by") else None
            status = snap.get("status") or "-"
            if snap.get("kind") == "instant":
                size, status = size or "instant", f"{status}*"
            lines.append(
                f"{prefix}{snap.get('disk') or '-':<24} {snap.get('snapshot') or '-':<63} "
                f"{status:<9} {size or _size(snap.get('storage_bytes') or 0)}"
            )
        retention = row["retention"]
        if retention and (retention["deleted"] or retention["would_delete"]):
            verb = "would delete" if retention["dry_run"] else "deleted"
            names = retention["would_delete"] if retention["dry_run"] else retention["deleted"]
            lines.append(f"    retention {verb}: {', '.join(names)}")
        for problem in row["problems"]:
            lines.append(f"    PROBLEM: {problem}")
    if any(s.get("kind") == "instant" for row in report["vms"] for s in row["snapshots"]):
        lines.append("* an instant snapshot (kept in the disk's zone or region, deleted with the disk)")
    return "\n".join(lines)
