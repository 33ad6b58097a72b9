"""The run report as text: the task log's table, the lines that lead it and the failure notification."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gce_vm_backup.report.model import GONE


def table_lines(
    columns: Sequence[tuple[str, str, int]], entries: Iterable[Sequence[str] | str], *, header: bool = True
) -> list[str]:
    """A plain-text table laid out by ``rich``: ``columns`` are (title, ``left`` or ``right``, least width),
    one space apart (a column titled "" of width 0 adds one more); each entry is a row (its cells) or a line
    of its own (a str) kept where it is among the rows. A row is one line, never wrapped or cut (a longer
    cell widens its column); no colour or style codes, no trailing spaces."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    entries = list(entries)
    table = Table(box=None, show_header=header, header_style=None, pad_edge=False, padding=(0, 1, 0, 0))
    for title, justify, width in columns:
        table.add_column(title, justify=justify, min_width=width, no_wrap=True)  # type: ignore[arg-type]
    rows = [entry for entry in entries if not isinstance(entry, str)]
    for row in rows:
        table.add_row(*(Text(" ".join(str(cell).splitlines())) for cell in row))
    if not rows and not header:
        return list(entries)  # type: ignore[arg-type]
    width = sum(max([len(t), w, *(len(str(r[i])) for r in rows)]) + 1 for i, (t, _, w) in enumerate(columns))
    console = Console(width=width + 16, color_system=None, highlight=False, markup=False, emoji=False)
    with console.capture() as capture:
        console.print(table)
    rendered = iter(line.rstrip() for line in capture.get().splitlines())
    lines = [next(rendered)] if header else []
    for entry in entries:
        lines.append(entry if isinstance(entry, str) else next(rendered))
    return lines


def _size(storage_bytes: int) -> str:
    return f"{storage_bytes / (1 << 30):.1f} GiB"


def vm_name(path: str | None) -> str:
    return (path or "?").rsplit("/", 1)[-1]


# The task log's table of VMs and snapshots (table_lines); the empty column: a wider gap after the downtime.
VM_COLUMNS = (
    ("VM", "left", 48),
    ("before", "left", 10),
    ("downtime", "right", 9),
    ("", "left", 0),
    ("disk", "left", 24),
    ("snapshot", "left", 63),
    ("status", "left", 9),
    ("size", "left", 0),
)


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
    entries: list[Sequence[str] | str] = []
    for row in report["vms"]:
        vm = (row["vm"] or f"{row['group']}[{row['map_index']}]").split("/zones/")[-1]
        downtime = "-" if row["downtime_seconds"] is None else f"{row['downtime_seconds']}s"
        first = [vm, row["prior_status"] or "?", downtime, ""]
        for index, snap in enumerate(row["snapshots"] or [{}]):
            size = f"carried by {vm_name(snap['carried_by'])}" if snap.get("carried_by") else None
            status = snap.get("status") or "-"
            if snap.get("kind") == "instant":
                size, status = size or "instant", f"{status}*"
            entries.append(
                [
                    *(first if index == 0 else ["", "", "", ""]),
                    snap.get("disk") or "-",
                    snap.get("snapshot") or "-",
                    status,
                    size or _size(snap.get("storage_bytes") or 0),
                ]
            )
        retention = row["retention"]
        if retention and (retention["deleted"] or retention["would_delete"]):
            verb = "would delete" if retention["dry_run"] else "deleted"
            names = retention["would_delete"] if retention["dry_run"] else retention["deleted"]
            entries.append(f"    retention {verb}: {', '.join(names)}")
        entries += [f"    PROBLEM: {problem}" for problem in row["problems"]]
    header, *table = table_lines(VM_COLUMNS, entries)
    lines += [header, "-" * len(header), *table]
    if any(s.get("kind") == "instant" for row in report["vms"] for s in row["snapshots"]):
        lines.append("* an instant snapshot (kept in the disk's zone or region, deleted with the disk)")
    return "\n".join(lines)
