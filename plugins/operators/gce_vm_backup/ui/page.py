"""The "VM backups" page as server-rendered HTML, with each VM's runs as an inline SVG chart (no script,
no build step), and the same view as JSON. Every value from the config, the API or a run report is
escaped (``html.escape``): a label, a VM name or a run id never becomes markup."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from gce_vm_backup.report.freshness import STALE_AFTER_PERIODS, format_age, set_status, set_time
from gce_vm_backup.ui.view import GroupView, PageView, RunPoint

SETS_SHOWN = 5
CHART_W, CHART_H, PAD = 520, 120, 28
GIB = 1 << 30

STYLE = """
body{font-family:system-ui,sans-serif;margin:16px;color:#1a202c;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:20px 0 6px}
.muted{color:#718096;font-size:13px} table{border-collapse:collapse;width:100%;margin-top:6px}
td,th{border-bottom:1px solid #e2e8f0;padding:6px;text-align:left;vertical-align:top;font-size:13px}
th{background:#f7fafc} .stale{color:#c53030;font-weight:600} .ok{color:#2f855a;font-weight:600}
.error{color:#c53030} ul.sets{margin:0;padding-left:16px} svg.chart text{font-size:10px;fill:#4a5568}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
"""


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _size(storage_bytes: int | None) -> str:
    return "-" if storage_bytes is None else f"{storage_bytes / GIB:.1f} GiB"


def chart_svg(vm: str, points: list[RunPoint]) -> str:
    """Per run (oldest left): a bar of the downtime (seconds, left scale) and a bar of the snapshot size
    (GiB, right scale). A run without a value has no bar; each bar's tooltip gives the run and values."""
    label = escape(vm, quote=True)
    if not points:
        return (
            f'<svg class="chart" data-vm="{label}" width="{CHART_W}" height="24">'
            '<text x="0" y="16">no runs yet</text></svg>'
        )
    max_down = max((p.downtime_s or 0 for p in points), default=0) or 1
    max_size = max((p.storage_bytes or 0 for p in points), default=0) or 1
    inner_w, inner_h = CHART_W - 2 * PAD, CHART_H - 2 * PAD + 10
    slot = inner_w / len(points)
    bar = max(min(slot / 2 - 2, 18), 2)
    parts = [
        f'<svg class="chart" data-vm="{label}" role="img" aria-label="downtime and snapshot size per run of '
        f'{label}" width="{CHART_W}" height="{CHART_H}" viewBox="0 0 {CHART_W} {CHART_H}">',
        f'<line x1="{PAD}" y1="{PAD + inner_h}" x2="{PAD + inner_w}" y2="{PAD + inner_h}" stroke="#a0aec0"/>',
        f'<text x="0" y="12">{max_down:.0f} s</text>',
        f'<text x="{CHART_W - PAD - 30}" y="12">{max_size / GIB:.1f} GiB</text>',
    ]
    for index, point in enumerate(points):
        x = PAD + index * slot + slot / 2
        downtime = "-" if point.downtime_s is None else f"{point.downtime_s:.0f} s"
        tip = escape(
            f"{_when(point.at)} run {point.run_id or point.run}: downtime {downtime}, "
            f"size {_size(point.storage_bytes)}"
        )
        if point.downtime_s is not None:
            height = inner_h * point.downtime_s / max_down
            parts.append(
                f'<rect class="downtime" x="{x - bar:.1f}" y="{PAD + inner_h - height:.1f}" '
                f'width="{bar:.1f}" height="{height:.1f}" fill="#dd6b20"><title>{tip}</title></rect>'
            )
        if point.storage_bytes is not None:
            height = inner_h * point.storage_bytes / max_size
            parts.append(
                f'<rect class="size" x="{x:.1f}" y="{PAD + inner_h - height:.1f}" width="{bar:.1f}" '
                f'height="{height:.1f}" fill="#3182ce"><title>{tip}</title></rect>'
            )
    first, last = (f"{p.at.astimezone(UTC):%m-%d}" for p in (points[0], points[-1]))
    parts.append(f'<text x="{PAD}" y="{CHART_H - 4}">{first}</text>')
    parts.append(f'<text x="{PAD + inner_w - 30}" y="{CHART_H - 4}">{last}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _group_html(group: GroupView) -> str:
    schedule = escape(group.schedule or "manual only")
    head = (
        f'<h2 id="group-{escape(group.group, quote=True)}">Group {escape(group.group)} '
        f'<span class="muted">schedule {schedule}'
    )
    head += (
        f", stale when the last {STALE_AFTER_PERIODS} runs made no READY set</span></h2>"
        if group.schedule
        else "</span></h2>"
    )
    if group.error:
        return head + f'<p class="error">Could not list this group\'s backups: {escape(group.error)}</p>'
    rows = []
    for vm in group.vms:
        status = (
            '<span class="stale">STALE</span>'
            if vm.stale
            else ('<span class="ok">ok</span>' if vm.period else '<span class="muted">manual</span>')
        )
        if not vm.in_config:
            status += ' <span class="muted">(no longer a target)</span>'
        if not vm.exists:
            status += ' <span class="stale">GONE</span> <span class="muted">(no VM at this path now)</span>'
        age = (
            "no complete READY set"
            if vm.newest is None
            else f"{format_age(vm.age)} ({_when(set_time(vm.newest))})"
        )
        sets = "".join(
            f'<li data-run="{escape(s.run, quote=True)}">{_when(set_time(s))} <b>{escape(set_status(s))}</b> '
            f"{_size(s.storage_bytes)} - "
            + ", ".join(f"{escape(snap.disk_name)} {escape(snap.status)}" for snap in s.snapshots)
            + "</li>"
            for s in vm.sets[:SETS_SHOWN]
        )
        more = (
            f'<li class="muted">{len(vm.sets) - SETS_SHOWN} older</li>' if len(vm.sets) > SETS_SHOWN else ""
        )
        rows.append(
            f'<tr class="vm" data-vm="{escape(vm.vm, quote=True)}" data-stale="{str(vm.stale).lower()}">'
            f'<td><b>{escape(vm.name)}</b><br><span class="muted">{escape(vm.vm)}</span></td>'
            f"<td>{status}</td><td>{age}</td>"
            f'<td><ul class="sets">{sets or "<li class=muted>none</li>"}{more}</ul></td>'
            f"<td>{chart_svg(vm.vm, group.runs.get(vm.vm, []))}</td></tr>"
        )
    table = (
        "<table><thead><tr><th>VM</th><th>backup</th><th>newest READY set</th>"
        "<th>snapshot sets (newest first)</th><th>downtime and size per run</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return head + (table if rows else '<p class="muted">No VM.</p>')


def render_page(view: PageView) -> str:
    stale = sum(vm.stale for group in view.groups for vm in group.vms)
    problems = "".join(f'<li class="error">{escape(p)}</li>' for p in view.problems)
    hidden = (
        f'<p class="muted">{view.hidden_groups} group(s) hidden: you may not read their backup DAG.</p>'
        if view.hidden_groups
        else ""
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>VM backups</title>'
        f"<style>{STYLE}</style></head><body>"
        f'<h1>VM backups <span class="muted">deployment {escape(view.deployment or "?")}</span></h1>'
        f'<p class="muted">Checked {_when(view.checked_at)}: {stale} stale VM(s). '
        '<span class="legend"><span style="background:#dd6b20"></span>downtime (s)'
        '<span style="background:#3182ce"></span>snapshot size (GiB)</span></p>'
        + (f"<ul>{problems}</ul>" if problems else "")
        + hidden
        + "".join(_group_html(group) for group in view.groups)
        + ("" if view.groups or hidden else '<p class="muted">No group.</p>')
        + "</body></html>"
    )


def view_json(view: PageView) -> dict[str, Any]:
    return {
        "deployment": view.deployment,
        "checked_at": view.checked_at.isoformat(timespec="seconds"),
        "problems": view.problems,
        "hidden_groups": view.hidden_groups,
        "groups": {
            group.group: {
                "dag_id": group.dag_id,
                "schedule": group.schedule,
                "error": group.error,
                "vms": [
                    {
                        **vm.as_json(),
                        "runs": [
                            {
                                "run": p.run,
                                "run_id": p.run_id,
                                "at": p.at.isoformat(),
                                "downtime_s": p.downtime_s,
                                "storage_bytes": p.storage_bytes,
                                "ok": p.ok,
                            }
                            for p in group.runs.get(vm.vm, [])
                        ],
                    }
                    for vm in group.vms
                ],
            }
            for group in view.groups
        },
    }
