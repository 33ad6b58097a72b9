"""The "VM backups" page as server-rendered HTML, with each VM's runs as an inline SVG chart (no script,
no build step), and the same view as JSON. Every value from the config, the API or a run report is
escaped (``html.escape``): a label, a VM name or a run id never becomes markup."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from gce_vm_backup.report.freshness import STALE_AFTER_PERIODS, format_age, set_status, set_time
from gce_vm_backup.restore.sets import READY, SnapshotSet
from gce_vm_backup.ui.view import FormField, GroupView, PageView, RestoreForm, RunPoint

SETS_SHOWN = 5
CHART_W, CHART_H = 560, 150
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 36, 36, 16, 32
BAR = 5  # px, each of a run's two bars
TIME_TICKS = 4
GIB = 1 << 30

STYLE = """
body{font-family:system-ui,sans-serif;margin:16px;color:#1a202c;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:20px 0 6px}
.muted{color:#718096;font-size:13px} table{border-collapse:collapse;width:100%;margin-top:6px}
td,th{border-bottom:1px solid #e2e8f0;padding:6px;text-align:left;vertical-align:top;font-size:13px}
th{background:#f7fafc} .stale{color:#c53030;font-weight:600} .ok{color:#2f855a;font-weight:600}
.error{color:#c53030} ul.sets{margin:0;padding-left:16px} svg.chart text{font-size:10px;fill:#4a5568}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
code.set-id{user-select:all;background:#edf2f7;padding:1px 4px;border-radius:3px;font-size:12px}
a.restore{margin-left:6px} svg.chart text.axis-title{font-size:10px;fill:#2d3748;font-weight:600}
"""


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _size(storage_bytes: int | None) -> str:
    return "-" if storage_bytes is None else f"{storage_bytes / GIB:.1f} GiB"


@dataclass(frozen=True)
class Scales:
    """What every chart of the page shares: one time axis (``start`` to ``end``) and one scale per
    measure (downtime in seconds, snapshot size in GiB), each given by its ticks (the last is its top)."""

    start: datetime
    end: datetime
    downtime_ticks: tuple[float, ...]
    size_ticks: tuple[float, ...]  # GiB

    @property
    def span_s(self) -> float:
        return (self.end - self.start).total_seconds()


def nice_ticks(top: float, most: int = 4) -> tuple[float, ...]:
    """0 and up to ``most`` evenly spaced round ticks (1, 2 or 5 times a power of ten) covering ``top``."""
    if not top > 0:
        return (0.0, 1.0)
    raw = top / most
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    count = math.ceil(top / step - 1e-9)
    return tuple(round(step * n, 10) for n in range(count + 1))


def page_scales(groups: list[GroupView]) -> Scales | None:
    """The scales of every chart on the page, from every point of every group; None without a point."""
    points = [p for group in groups for runs in group.runs.values() for p in runs]
    if not points:
        return None
    first, last = min(p.at for p in points), max(p.at for p in points)
    margin = max((last - first) * 0.04, timedelta(hours=1))  # a bar at either end stays inside
    downtime = max((p.downtime_s or 0 for p in points), default=0)
    size = max((p.storage_bytes or 0 for p in points), default=0) / GIB
    return Scales(first - margin, last + margin, nice_ticks(downtime), nice_ticks(size))


def time_ticks(scales: Scales, count: int = TIME_TICKS) -> list[tuple[datetime, str]]:
    """``count`` ticks across the time axis with their labels: dates (2026-12-07) over two days and more,
    else the date and time of the first and the time of the others (a day's ticks would share a date)."""
    step = (scales.end - scales.start) / (count - 1)
    moments = [(scales.start + step * n).astimezone(UTC) for n in range(count)]
    if scales.span_s >= 2 * 86400:
        return [(m, f"{m:%Y-%m-%d}") for m in moments]
    return [(m, f"{m:%Y-%m-%d %H:%M}" if n == 0 else f"{m:%H:%M}") for n, m in enumerate(moments)]


def _number(value: float) -> str:
    return f"{value:g}"


def chart_svg(vm: str, points: list[RunPoint], scales: Scales | None = None) -> str:
    """Per run, at its time on the page's shared time axis: a bar of the downtime (seconds, left scale)
    and a bar of the snapshot size (GiB, right scale). A run without a value has no bar; each bar's
    tooltip gives the run and its values. Every chart of a page has the same axes (``page_scales``)."""
    label = escape(vm, quote=True)
    if not points:
        return (
            f'<svg class="chart" data-vm="{label}" width="{CHART_W}" height="24">'
            '<text x="0" y="16">no runs yet</text></svg>'
        )
    scales = scales or page_scales([GroupView("", "", None, runs={vm: points})])
    assert scales is not None  # there are points
    left, right, top, bottom = PAD_LEFT, CHART_W - PAD_RIGHT, PAD_TOP, CHART_H - PAD_BOTTOM
    inner_w, inner_h = right - left, bottom - top
    down_top, size_top = scales.downtime_ticks[-1], scales.size_ticks[-1]

    def x_of(moment: datetime) -> float:
        return left + inner_w * (moment - scales.start).total_seconds() / (scales.span_s or 1)

    parts = [
        f'<svg class="chart" data-vm="{label}" role="img" aria-label="downtime and snapshot size per run of '
        f'{label}" width="{CHART_W}" height="{CHART_H}" viewBox="0 0 {CHART_W} {CHART_H}">',
        f'<text class="axis-title" x="{left}" y="10">downtime (s)</text>',
        f'<text class="axis-title" x="{right}" y="10" text-anchor="end">snapshot size (GiB)</text>',
    ]
    for tick in scales.downtime_ticks:
        y = bottom - inner_h * tick / down_top
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#edf2f7"/>'
            f'<text class="tick-downtime" x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">'
            f"{_number(tick)}</text>"
        )
    for tick in scales.size_ticks:
        y = bottom - inner_h * tick / size_top
        parts.append(f'<text class="tick-size" x="{right + 4}" y="{y + 3:.1f}">{_number(tick)}</text>')
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#a0aec0"/>')
    ticks = time_ticks(scales)
    for index, (moment, text) in enumerate(ticks):
        x = x_of(moment)
        anchor = "start" if index == 0 else ("end" if index == len(ticks) - 1 else "middle")
        parts.append(
            f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#a0aec0"/>'
            f'<text class="tick-time" x="{x:.1f}" y="{bottom + 15}" text-anchor="{anchor}">{text}</text>'
        )
    parts.append(
        f'<text class="axis-title" x="{left + inner_w / 2:.1f}" y="{CHART_H - 2}" text-anchor="middle">'
        "run time (UTC)</text>"
    )
    for point in points:
        x = x_of(point.at)
        downtime = "-" if point.downtime_s is None else f"{point.downtime_s:.0f} s"
        tip = escape(
            f"{_when(point.at)} run {point.run_id or point.run}: downtime {downtime}, "
            f"size {_size(point.storage_bytes)}"
        )
        if point.downtime_s is not None:
            height = inner_h * point.downtime_s / down_top
            parts.append(
                f'<rect class="downtime" x="{x - BAR:.1f}" y="{bottom - height:.1f}" '
                f'width="{BAR}" height="{height:.1f}" fill="#dd6b20"><title>{tip}</title></rect>'
            )
        if point.storage_bytes is not None:
            height = inner_h * point.storage_bytes / GIB / size_top
            parts.append(
                f'<rect class="size" x="{x:.1f}" y="{bottom - height:.1f}" width="{BAR}" '
                f'height="{height:.1f}" fill="#3182ce"><title>{tip}</title></rect>'
            )
    parts.append("</svg>")
    return "".join(parts)


def restore_href(group: str, vm: str, snapshot_set: str) -> str:
    """The restore form of ``vm``'s ``snapshot_set`` (relative to the page: the form is served beside it),
    every value URL-encoded; escape it (``html.escape``) to put it in an attribute."""
    return "restore?" + urlencode({"group": group, "vm": vm, "snapshot_set": snapshot_set}, quote_via=quote)


def _restore_link(group: str, vm: str, snapshot_set: str, text: str = "Restore...") -> str:
    href = escape(restore_href(group, vm, snapshot_set), quote=True)
    return f'<a class="restore" href="{href}">{escape(text)}</a>'


def _set_id(run: str) -> str:
    """A set's id as text a click selects whole (``user-select: all``), to copy into a form or a CLI."""
    return f'<code class="set-id" title="set id: click to select, then copy">{escape(run)}</code>'


def _set_html(group: str, vm: str, snapshot_set: SnapshotSet) -> str:
    """One set: its id, time, status, size and snapshots; a "Restore..." link when it is complete and
    READY (the restore refuses any other)."""
    status = set_status(snapshot_set)
    link = f" {_restore_link(group, vm, snapshot_set.run)}" if status == READY else ""
    return (
        f'<li data-run="{escape(snapshot_set.run, quote=True)}" class="set">{_set_id(snapshot_set.run)} '
        f"{_when(set_time(snapshot_set))} <b>{escape(status)}</b> {_size(snapshot_set.storage_bytes)}{link}"
        '<br><span class="muted">'
        + ", ".join(f"{escape(snap.disk_name)} {escape(snap.status)}" for snap in snapshot_set.snapshots)
        + "</span></li>"
    )


def _group_html(group: GroupView, scales: Scales | None = None) -> str:
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
            else f"{format_age(vm.age)} ({_when(set_time(vm.newest))})<br>"
            f"{_set_id(vm.newest.run)} "
            + _restore_link(group.group, vm.vm, vm.newest.run, "Restore newest...")
        )
        sets = "".join(_set_html(group.group, vm.vm, s) for s in vm.sets[:SETS_SHOWN])
        more = (
            f'<li class="muted">{len(vm.sets) - SETS_SHOWN} older</li>' if len(vm.sets) > SETS_SHOWN else ""
        )
        rows.append(
            f'<tr class="vm" data-vm="{escape(vm.vm, quote=True)}" data-stale="{str(vm.stale).lower()}">'
            f'<td><b>{escape(vm.name)}</b><br><span class="muted">{escape(vm.vm)}</span></td>'
            f"<td>{status}</td><td>{age}</td>"
            f'<td><ul class="sets">{sets or "<li class=muted>none</li>"}{more}</ul></td>'
            f"<td>{chart_svg(vm.vm, group.runs.get(vm.vm, []), scales)}</td></tr>"
        )
    table = (
        "<table><thead><tr><th>VM</th><th>backup</th><th>newest READY set</th>"
        "<th>snapshot sets (newest first)</th><th>downtime and size per run</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return head + (table if rows else '<p class="muted">No VM.</p>')


def render_page(view: PageView) -> str:
    scales = page_scales(view.groups)
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
        + "".join(_group_html(group, scales) for group in view.groups)
        + ("" if view.groups or hidden else '<p class="muted">No group.</p>')
        + "</body></html>"
    )


# The form's one script: the fields as the restore DAG's conf, POSTed to Airflow's REST API with the user's
# own session (Airflow authorizes the trigger and validates the params), then the new run in the UI.
TRIGGER_SCRIPT = """
function openInUi(url) {
  if (window.top === window) {
    window.location.href = url;
    return;
  }
  try {
    // Framed by the UI, in a sandbox that may not navigate it: its router shows the page instead.
    window.top.history.pushState(null, "", url);
    window.top.dispatchEvent(new PopStateEvent("popstate"));
  } catch (error) {
    window.location.href = url;  // a frame of another origin: the page in the frame
  }
}
for (const link of document.querySelectorAll("a.ui-link")) {
  link.addEventListener("click", (event) => {
    event.preventDefault();
    openInUi(link.href);
  });
}
document.getElementById("restore-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const result = document.getElementById("result");
  const conf = {};
  for (const input of form.querySelectorAll("[data-kind]")) {
    const kind = input.dataset.kind;
    if (kind === "boolean") conf[input.name] = input.checked;
    else if (input.value === "" && kind === "nullable") conf[input.name] = null;
    else if (kind === "number") conf[input.name] = Number(input.value);
    else conf[input.name] = input.value;
  }
  result.textContent = "Triggering...";
  const response = await fetch(new URL(form.dataset.api, document.baseURI), {
    method: "POST",
    credentials: "same-origin",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({logical_date: null, conf: conf}),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    result.className = "error";
    const detail = JSON.stringify(body.detail ?? body);
    result.textContent = "Not triggered (HTTP " + response.status + "): " + detail;
    return;
  }
  result.className = "ok";
  result.textContent = "Triggered run " + body.dag_run_id;
  openInUi(new URL(form.dataset.runs + encodeURIComponent(body.dag_run_id), document.baseURI).href);
});
"""


def _kind(schema: dict[str, Any]) -> str:
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    if "boolean" in types:
        return "boolean"
    if "integer" in types or "number" in types:
        return "number"
    return "nullable" if "null" in types else "string"


def _field_html(field: FormField) -> str:
    name = escape(field.name, quote=True)
    kind = _kind(field.schema)
    common = f'id="field-{name}" name="{name}" data-kind="{kind}"'
    if kind == "boolean":
        control = f'<input type="checkbox" {common}{" checked" if field.value else ""}>'
    elif isinstance(field.schema.get("enum"), list):
        choices = [str(c) for c in field.schema["enum"]]
        value = "" if field.value is None else str(field.value)
        if value and value not in choices:  # what the link asked, shown as is: the API will refuse it
            choices.append(value)
        empty = '<option value=""></option>' if kind == "nullable" or not value else ""
        control = (
            f"<select {common}>{empty}"
            + "".join(
                f'<option value="{escape(c, quote=True)}"{" selected" if c == value else ""}>'
                f"{escape(c)}</option>"
                for c in choices
            )
            + "</select>"
        )
    else:
        value = "" if field.value is None else str(field.value)
        required = " required" if kind == "string" else ""
        control = f'<input type="text" size="60" {common} value="{escape(value, quote=True)}"{required}>'
    description = f'<div class="muted">{escape(field.description)}</div>' if field.description else ""
    return (
        f'<div class="field" id="element_{name}"><label for="field-{name}">{escape(field.title)}</label>'
        f"{control}{description}</div>"
    )


def render_restore_form(form: RestoreForm) -> str:
    """The restore DAG's params as a form, the VM and the set filled in from the link."""
    dag = escape(form.dag_id, quote=True)
    dag_path = escape(quote(form.dag_id, safe=""), quote=True)
    head = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Restore</title>'
        f"<style>{STYLE}{FORM_STYLE}</style></head><body>"
        f'<p><a href="backups">&larr; VM backups</a></p><h1>Restore a VM of group {escape(form.group)}</h1>'
    )
    if form.problem:
        return head + f'<p class="error">{escape(form.problem)}</p></body></html>'
    return (
        head + f'<p class="muted">The trigger form of <a class="ui-link" href="../dags/{dag_path}">'
        f"{escape(form.dag_id)}"
        "</a>, with the VM and the set from the VM backups page; Airflow checks your permission to trigger "
        "it and the values, as its own form does.</p>"
        f'<form id="restore-form" data-dag-id="{dag}" data-api="../api/v2/dags/{dag_path}/dagRuns" '
        f'data-runs="../dags/{dag_path}/runs/">'
        + "".join(_field_html(field) for field in form.fields)
        + '<button type="submit">Trigger</button></form><p id="result" role="status"></p>'
        f"<script>{TRIGGER_SCRIPT}</script></body></html>"
    )


FORM_STYLE = """
form .field{margin:10px 0} form label{display:block;font-weight:600;font-size:14px;margin-bottom:2px}
form input[type=text],form select{font-size:14px;padding:4px} button{font-size:14px;padding:6px 16px}
"""


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
