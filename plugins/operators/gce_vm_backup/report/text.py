"""The run report as text: the task log's table, the lines that lead it and the failure notification."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gce_vm_backup.config.labels import run_label
from gce_vm_backup.report.model import GONE

SUMMARY_XCOM_KEY = "run_summary"  # the report task's short summary, in its XCom tab


# The widest line the run report writes to the task log. Airflow's log viewer does not wrap by default
# (a wider line runs off to the right, behind a horizontal scroll); 100 columns fit beside its
# timestamp and level in the task page of a 1400-pixel-wide browser window (docs/how-it-works.md).
LOG_WIDTH = 100
INDENT = "    "  # a continuation line of a wrapped line, and what belongs to the VM above


def wrap(line: str, width: int = LOG_WIDTH, *, indent: str = INDENT) -> list[str]:
    """``line`` in lines of at most ``width`` columns, broken at spaces (a word longer than a line, such as
    a long path, is cut); continuation lines carry the line's own indent plus ``indent``."""
    import textwrap

    own = line[: len(line) - len(line.lstrip(" "))]
    return textwrap.wrap(
        line,
        width=width,
        initial_indent="",
        subsequent_indent=own + indent,
        break_on_hyphens=False,
        drop_whitespace=True,
    ) or [""]


def _fitted(natural: list[int], least: list[int], width: int) -> list[int]:
    """Column widths within ``width`` (one space between columns): the widest shrinks first, none below
    its least width or 4."""
    widths = list(natural)
    while sum(widths) + len(widths) - 1 > width:
        widest = max(range(len(widths)), key=lambda i: (widths[i] > max(least[i], 4), widths[i]))
        if widths[widest] <= max(least[widest], 4):
            break  # cannot fit: the columns' least widths are wider than the line
        widths[widest] -= 1
    return widths


def table_lines(
    columns: Sequence[tuple[str, str, int]],
    entries: Iterable[Sequence[str] | str],
    *,
    header: bool = True,
    width: int | None = None,
) -> list[str]:
    """A plain-text table laid out by ``rich``: ``columns`` are (title, ``left`` or ``right``, least width),
    one space apart (a column titled "" of width 0 adds one more); each entry is a row (its cells) or a line
    of its own (a str) kept where it is among the rows. No colour or style codes, no trailing spaces.

    ``width`` None: a row is one line, never wrapped or cut (a longer cell widens its column), for a
    terminal. ``width`` set: no line is wider; the widest columns narrow and their cells fold onto more
    lines, and a line of its own wraps (``wrap``), for the task log's viewer."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    entries = list(entries)
    rows = [entry for entry in entries if not isinstance(entry, str)]
    if not rows and not header:
        return [part for entry in entries for part in _lines(entry, width)]  # type: ignore[arg-type]
    natural = [max([len(t), w, *(len(_cell(r[i])) for r in rows)]) for i, (t, _, w) in enumerate(columns)]
    fitted = natural if width is None else _fitted(natural, [w for _, _, w in columns], width)

    def render(chunk: list[Sequence[str]], with_header: bool) -> list[str]:
        table = Table(
            box=None, show_header=with_header, header_style=None, pad_edge=False, padding=(0, 1, 0, 0)
        )
        for (title, justify, _), size in zip(columns, fitted, strict=True):
            table.add_column(
                title,
                justify=justify,  # type: ignore[arg-type]
                width=size,
                no_wrap=width is None,
                overflow="fold",
            )
        for row in chunk:
            table.add_row(*(Text(_cell(cell)) for cell in row))
        console = Console(
            width=sum(fitted) + len(fitted) + 16,
            color_system=None,
            highlight=False,
            markup=False,
            emoji=False,
        )
        with console.capture() as capture:
            console.print(table)
        return [line.rstrip() for line in capture.get().splitlines()]

    if width is None:  # one line per row: the rendered rows are interleaved with the lines of their own
        rendered = iter(render(rows, header))
        lines = [next(rendered)] if header else []
        for entry in entries:
            lines.append(entry if isinstance(entry, str) else next(rendered))
        return lines
    lines = render([], True)[:1] if header else []
    chunk: list[Sequence[str]] = []  # the rows since the last line of its own, rendered together
    for entry in entries:
        if isinstance(entry, str):
            lines += render(chunk, False) if chunk else []
            chunk = []
            lines += _lines(entry, width)
        else:
            chunk.append(entry)
    return lines + (render(chunk, False) if chunk else [])


def _cell(value: object) -> str:
    return " ".join(str(value).splitlines())


def _lines(line: str, width: int | None) -> list[str]:
    return [line] if width is None else wrap(line, width)


def _size(storage_bytes: int) -> str:
    return f"{storage_bytes / (1 << 30):.1f} GiB"


def vm_name(path: str | None) -> str:
    return (path or "?").rsplit("/", 1)[-1]


# The task log's table of snapshots (table_lines, at most LOG_WIDTH wide): each VM is a line of its own
# (its name, its state before the run, its downtime) with its snapshots as rows under it, indented.
SNAPSHOT_COLUMNS = (
    ("", "left", len(INDENT) - 1),
    ("disk", "left", 0),
    ("snapshot", "left", 0),
    ("status", "left", 0),
    ("size", "right", 0),
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
    """The report as the task log shows it, no line wider than LOG_WIDTH (longer lines wrap, their
    continuation indented): VMs that are down first, the run's totals, then each VM and its snapshots."""
    summary = report["summary"]
    lines = down_lines(report)
    lines.append(f"Backup run {report['run_id']} of {report['dag_id']}: {report['status'].upper()}")
    lines.append(
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
        downtime = "no downtime" if row["downtime_seconds"] is None else f"down {row['downtime_seconds']}s"
        entries.append(f"{vm}: {row['prior_status'] or '?'} before the run, {downtime}")
        for snap in row["snapshots"] or [{}]:
            size = f"carried by {vm_name(snap['carried_by'])}" if snap.get("carried_by") else None
            status = snap.get("status") or "-"
            if snap.get("kind") == "instant":
                size, status = size or "instant", f"{status}*"
            entries.append(
                [
                    "",
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
            entries.append(f"{INDENT}retention {verb}: {', '.join(names)}")
        entries += [f"{INDENT}PROBLEM: {problem}" for problem in row["problems"]]
    if entries:
        header, *table = table_lines(SNAPSHOT_COLUMNS, entries, width=LOG_WIDTH)
        lines += ["VM: state before the run, downtime", header, "-" * len(header), *table]
    if any(s.get("kind") == "instant" for row in report["vms"] for s in row["snapshots"]):
        lines.append("* an instant snapshot (kept in the disk's zone or region, deleted with the disk)")
    return "\n".join(part for line in lines for part in wrap(line))


def run_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The run in a few numbers, for the report task's XCom tab (key ``run_summary``): VMs ok, failed
    (any problem) and skipped (nothing done for them: every task skipped, or a dry run's plan), the
    downtime of all VMs added up, and the id of the snapshot sets the run made (the restore form's
    ``snapshot_set``; None when it made no snapshot). ``text`` says it in one line."""
    rows = report.get("vms", [])
    idle = sum(
        bool(row["ok"] and row.get("tasks") and set(row["tasks"].values()) == {"skipped"}) for row in rows
    )
    ok, failed = sum(bool(row["ok"]) for row in rows) - idle, sum(not row["ok"] for row in rows)
    skipped = idle + len(report.get("dry_run_plan", []))
    downtime = sum(row["downtime_seconds"] or 0 for row in rows)
    made = any(s.get("snapshot") and not s.get("carried_by") for row in rows for s in row["snapshots"])
    set_id = run_label(report["dag_id"], report["run_id"]) if made else None
    text = (
        f"{report['status'].upper()}{' (dry run)' if report.get('dry_run') else ''}: {ok} VM(s) ok, "
        f"{failed} failed, {skipped} skipped; downtime {downtime}s in all; "
        + (f"snapshot set {set_id}" if set_id else "no snapshot set")
    )
    return {
        "status": report["status"],
        "dry_run": bool(report.get("dry_run")),
        "vms_ok": ok,
        "vms_failed": failed,
        "vms_skipped": skipped,
        "downtime_seconds": downtime,
        "set_id": set_id,
        "text": text,
    }
