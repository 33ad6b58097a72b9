"""The run report: one structured summary per DAG run, built from what each VM's tasks left behind.

``build_run_report`` is the pure part (this module; ``report_format`` turns it into the task log's table);
reading the run's task states and XComs is ``report_task`` (the ``RunReportOperator``), the failure
notifiers are ``notify``. Task names are those of ``stages``.

Per VM, from the XCom return values of its task group (see docs/architecture.md for the contract):
- downtime: the downtime task (``stop_snapshot_start``, or ``stop_snapshot`` then ``start`` in the outer
  tiers of a tiered group) gives ``stop_requested_at`` and ``running_at``; the downtime is the span
  between the two, from the stop request to the VM seen RUNNING again. When ``ensure_running`` (the
  teardown) had to start the VM, the downtime lasts until its ``at``, and the row says so as a problem:
  the downtime task did not bring the VM back;
- snapshots: ``verify``'s or ``convert``'s records when those ran (standard snapshots), else the downtime
  task's own (instant snapshots in instant mode: never counted as READY backups);
- causes: each failed task's ``gce_vm_backup_error`` XCom (``_base.RecordsFailures``): the cause's first
  line; tasks that did not run because of it (upstream_failed) follow it, never as a cause.
A VM that was RUNNING before the backup and that no task saw RUNNING again is read once more by the
report task (``instances.get``): if it is not RUNNING, the report's first line, the row's first problem and
the failure notification say that it is down and give the command that starts it.

Run-wide: ``downtime`` has the peak number of VMs down at once, computed from the per-VM intervals
(a VM still down counts until the report), beside the group's ``max_concurrent_vms``, which bounds it,
and the slowest downtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gce_vm_backup.backup import stages
from gce_vm_backup.backup.plan import NO_VM_STATUS
from gce_vm_backup.compute.paths import VmRef

# Each VM's tasks in the order they run (a problem list follows it): the reported stages of stages.py.
VM_TASKS = stages.REPORTED
DOWNTIME_TASKS = stages.DOWNTIME_STAGES  # their return value: the VM's downtime
REPORT_XCOM_KEY = "run_report"
OK_STATES = frozenset({"success", "skipped"})
NOT_RUN = "upstream_failed"
GONE = "NOT_FOUND"  # the status the report gives a VM that no longer exists
STOPPING_STATES = frozenset({"PENDING_STOP", "STOPPING"})


@dataclass
class VmTaskResults:
    """What one mapped VM task group left behind: each task's final state, XCom value and error."""

    group: str
    map_index: int
    target: Mapping[str, Any] | None = None  # the resolve task's entry for this map index
    states: dict[str, str] = field(default_factory=dict)  # task name -> final state
    values: dict[str, Any] = field(default_factory=dict)  # task name -> XCom return value
    errors: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # task name -> failure XCom
    status_now: str | None = None  # read by the report when no task saw the VM back (GONE: deleted)
    status_error: str | None = None  # why status_now could not be read


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _records(value: Any) -> list[Mapping[str, Any]]:
    return [record for record in value if isinstance(record, Mapping)] if isinstance(value, list) else []


@dataclass
class Downtime:
    """When a VM was stopped and seen RUNNING again, and by which task."""

    stopped: bool | None = None
    stop_requested_at: str | None = None
    running_at: str | None = None
    back_by: str | None = None  # the task that saw it RUNNING again
    mode: str | None = None

    @property
    def seconds(self) -> int | None:
        if self.stopped is False:
            return 0
        start, end = _time(self.stop_requested_at), _time(self.running_at)
        return None if start is None or end is None else int((end - start).total_seconds())


def _downtime_task(vm: VmTaskResults) -> str | None:
    """The VM's downtime task that returned its record (None when it failed or did not run)."""
    return next((task for task in DOWNTIME_TASKS if isinstance(vm.values.get(task), Mapping)), None)


def downtime_of(vm: VmTaskResults) -> Downtime:
    """The VM's downtime from its downtime task (and ``start``), or ensure_running's when that started it."""
    task = _downtime_task(vm)
    down = _dict(vm.values.get(task)) if task else {}
    # In the outer tiers of a tiered group the VM is started by its own task, after the inner tiers.
    back_task = stages.START if task == stages.STOP_SNAPSHOT else task
    back = _dict(vm.values.get(stages.START)) if task == stages.STOP_SNAPSHOT else down
    ensure = _dict(vm.values.get(stages.ENSURE_RUNNING))
    result = Downtime(stopped=down.get("stopped"), stop_requested_at=down.get("stop_requested_at"))
    result.mode = down.get("mode")
    if back.get("running_at"):
        result.running_at, result.back_by = back["running_at"], back_task
    elif ensure.get("started") and ensure.get("running_at"):
        # ensure_running returns {"vm", "status", "started", "running_at"} (precheck_ops)
        result.running_at, result.back_by = ensure["running_at"], stages.ENSURE_RUNNING
    if result.stopped is None and ensure.get("started"):
        result.stopped = True  # the downtime task failed after stopping it: ensure_running brought it back
    return result


def _restart_tasks(vm: VmTaskResults) -> list[str]:
    """How each task that could have brought the VM back ended (``stop_snapshot_start failed``)."""
    return [f"{task} {vm.states[task]}" for task in stages.BRINGS_BACK if task in vm.states]


def needs_status_check(vm: VmTaskResults) -> bool:
    """A VM that was RUNNING before the backup and that no task saw RUNNING again: is it running now?"""
    record = _dict(vm.values.get(stages.PRECHECK))
    if record.get("prior_status") != "RUNNING":
        return False
    ensure = _dict(vm.values.get(stages.ENSURE_RUNNING))
    seen_back = downtime_of(vm).running_at is not None or ensure.get("status") == "RUNNING"
    return not seen_back


def start_command(project: str, zone: str, instance: str, status: str | None) -> str:
    verb = "resume" if status in ("SUSPENDED", "SUSPENDING") else "start"
    return f"gcloud compute instances {verb} {instance} --project={project} --zone={zone}"


def _down(vm: VmTaskResults, target: Mapping[str, Any]) -> dict[str, Any] | None:
    """The VM-down entry of a row (None when the VM is RUNNING again or was not running before)."""
    if not needs_status_check(vm) or vm.status_now == "RUNNING":
        return None
    project, zone, instance = (str(target.get(key)) for key in ("project_id", "zone", "instance"))
    how = ", ".join(_restart_tasks(vm)) or "no task ran to start it"
    status = vm.status_now
    if status == GONE:
        line = f"VM {instance} was RUNNING before the backup and no longer exists ({how})"
        return {"status": GONE, "command": None, "line": line}
    command = start_command(project, zone, instance, status)
    if _dict(vm.values.get(stages.ENSURE_RUNNING)).get("not_stopped_by_run"):
        # Someone else stopped it after the precheck (an admin, another operation holding its lease):
        # starting it blindly could break what they are doing.
        line = (
            f"VM {instance} IS DOWN ({status}), but this run did not stop it: it was stopped after the "
            f"precheck saw it RUNNING, left as it is, and not backed up. Find out who stopped it before "
            f"you start it: {command}"
        )
        return {"status": status, "command": command, "line": line, "not_stopped_by_run": True}
    when = " once it is TERMINATED" if status in STOPPING_STATES else ""
    if status is None:
        reason = f"; its status could not be read: {vm.status_error}" if vm.status_error else ""
        line = (
            f"VM {instance} MAY BE DOWN: it was RUNNING before the backup and no task saw it RUNNING again "
            f"({how}){reason}. Check it; to start it by hand: {command}"
        )
    else:
        line = (
            f"VM {instance} IS DOWN ({status}): it was RUNNING before the backup and was not brought back "
            f"({how}). Start it by hand{when}: {command}"
        )
    return {"status": status, "command": command, "line": line}


def _causes(vm: VmTaskResults) -> list[str]:
    """Each failed task's cause, in task order, then the tasks that did not run because of them."""
    problems, not_run = [], []
    for task in (*VM_TASKS, *sorted(set(vm.states) - set(VM_TASKS))):
        state = vm.states.get(task)
        if state is None or state in OK_STATES:
            continue
        if state == NOT_RUN:
            not_run.append(task)
            continue
        error = vm.errors.get(task) or {}
        if state == "failed":
            problems.append(
                str(error.get("cause") or f"{task} failed (no error was recorded: see the task's log)")
            )
        else:
            problems.append(f"{task} {state}")
    if not_run:
        problems.append(f"not run because of the failure above: {', '.join(not_run)}")
    return problems


def _snapshots(vm: VmTaskResults, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The row's snapshots: those of the stage that returns them (verify or convert: standard), else the
    downtime task's, then shared disks."""
    made = next((made for task in stages.SNAPSHOT_STAGES if (made := _records(vm.values.get(task)))), [])
    if not made:
        down = next((_dict(vm.values.get(t)) for t in DOWNTIME_TASKS if vm.values.get(t)), {})
        made = _records(down.get("snapshots"))
    rows = [
        {
            "disk": s.get("disk"),
            "disk_source": s.get("disk_source"),
            "snapshot": s.get("snapshot") or s.get("instant_snapshot"),
            "kind": "instant" if s.get("instant_snapshot") and not s.get("snapshot") else "standard",
            "status": s.get("status"),
            "storage_bytes": int(s.get("storage_bytes") or 0),
        }
        for s in made
    ]
    rows += [
        {
            "disk": d.get("name"),
            "disk_source": d.get("source"),
            "snapshot": None,
            "kind": "standard",
            "status": None,
            "storage_bytes": 0,
            "carried_by": d["carried_by"],
        }
        for d in _records(record.get("disks"))
        if d.get("carried_by")
    ]
    return rows


def _vm_row(vm: VmTaskResults) -> dict[str, Any] | None:
    """One VM's line of the report, or None for a tier's no-VM placeholder."""
    record = _dict(vm.values.get(stages.PRECHECK))
    if record.get("prior_status") == NO_VM_STATUS:
        return None
    target = vm.target or record
    path = (
        VmRef(str(target.get("project_id")), str(target.get("zone")), str(target.get("instance"))).path
        if target
        else None
    )
    downtime = downtime_of(vm)
    ensure = _dict(vm.values.get(stages.ENSURE_RUNNING))
    retention = vm.values.get(stages.RETENTION)
    down = _down(vm, target) if target else None
    problems = ([down["line"]] if down else []) + _causes(vm)
    if ensure.get("started"):
        how_long = "" if downtime.seconds is None else f" after {downtime.seconds}s down"
        problems.append(
            f"VM {target.get('instance')} was started by {stages.ENSURE_RUNNING} at "
            f"{ensure.get('running_at')}{how_long}: the backup's own start did not bring it back"
        )
    snapshots = _snapshots(vm, record)
    instant_left = [s["snapshot"] for s in snapshots if s["kind"] == "instant"]
    if instant_left and stages.CONVERT in vm.states:
        problems.append(
            f"instant snapshot(s) not converted to standard snapshots in this run: {', '.join(instant_left)}"
        )
    return {
        "group": vm.group,
        "map_index": vm.map_index,
        "vm": path,
        "prior_status": record.get("prior_status"),
        "status_after": vm.status_now,
        "down": None
        if down is None
        else {key: down[key] for key in ("status", "command", "not_stopped_by_run") if key in down},
        "mode": downtime.mode,
        "stopped": downtime.stopped,
        "stop_requested_at": downtime.stop_requested_at,
        "running_at": downtime.running_at,
        "brought_back_by": downtime.back_by,
        "downtime_seconds": downtime.seconds,
        "ensure_running": dict(ensure) or None,
        "tasks": dict(vm.states),
        "snapshots": snapshots,
        "retention": None
        if not isinstance(retention, Mapping)
        else {
            "dry_run": bool(retention.get("dry_run")),
            "deleted": [d["snapshot"] for d in retention.get("deleted", [])],
            "would_delete": [d["snapshot"] for d in retention.get("would_delete", [])],
            "not_pruned": retention.get("not_pruned", []),
        },
        "problems": problems,
        "ok": not problems,
    }


def _link_carried(rows: list[dict[str, Any]]) -> None:
    """Fill each shared disk's entry from the carrier VM's snapshot; a problem when it has no READY one."""
    made = {
        (row["vm"], s["disk_source"]): s for row in rows for s in row["snapshots"] if not s.get("carried_by")
    }
    for row in rows:
        for entry in row["snapshots"]:
            carrier = entry.get("carried_by")
            if not carrier:
                continue
            snapshot = made.get((carrier, entry["disk_source"])) or {}
            entry["snapshot"], entry["status"] = snapshot.get("snapshot"), snapshot.get("status")
            entry["kind"] = snapshot.get("kind", "standard")
            if entry["status"] != "READY" or entry["kind"] != "standard":
                row["problems"].append(
                    f"disk {entry['disk']} is snapshotted by {carrier.rsplit('/', 1)[-1]}'s backup "
                    f"({carrier}), which has no READY snapshot of it in this run"
                )
                row["ok"] = False


def peak_down(rows: Sequence[Mapping[str, Any]], now: datetime) -> tuple[int, str | None]:
    """The most VMs down at the same moment, and the first moment it was reached.

    Each stopped VM is down from its stop request until seen RUNNING again (until ``now`` when it was not
    seen back); a VM back at the very moment another is stopped does not overlap it."""
    events: list[tuple[datetime, int]] = []
    for row in rows:
        start = _time(row.get("stop_requested_at"))
        if not row.get("stopped") or start is None:
            continue
        end = _time(row.get("running_at")) or now
        events += [(start, 1), (max(end, start), -1)]
    peak, current, when = 0, 0, None
    for moment, change in sorted(events):  # at one moment, -1 sorts before +1
        current += change
        if current > peak:
            peak, when = current, moment.isoformat(timespec="seconds")
    return peak, when


def _downtime_summary(
    rows: Sequence[Mapping[str, Any]], max_concurrent_vms: int | None, now: datetime
) -> dict[str, Any]:
    peak, peak_at = peak_down(rows, now)
    timed = [row for row in rows if row["stopped"] and row["downtime_seconds"] is not None]
    slowest = max(timed, key=lambda row: row["downtime_seconds"], default=None)
    return {
        "peak_vms_down": peak,
        "peak_at": peak_at,
        "max_concurrent_vms": max_concurrent_vms,
        "within_cap": None if max_concurrent_vms is None else peak <= max_concurrent_vms,
        "slowest": None if slowest is None else {"vm": slowest["vm"], "seconds": slowest["downtime_seconds"]},
        "vms_stopped": sum(bool(row["stopped"]) for row in rows),
    }


def build_run_report(
    *,
    dag_id: str,
    run_id: str,
    vms: Iterable[VmTaskResults],
    other_tasks: Mapping[str, str] | None = None,
    other_errors: Mapping[str, str] | None = None,
    dry_run_plan: Sequence[Mapping[str, Any]] | None = None,
    max_concurrent_vms: int | None = None,
    generated_at: datetime | None = None,
) -> dict[str, Any]:
    """The run's summary as plain JSON-able data (see the module docstring). Raises nothing.

    ``other_tasks`` are the run's tasks outside the VM groups (resolve, barriers) with their states; the
    failed ones are listed, since a failed resolve means a whole tier was not backed up, with their causes
    from ``other_errors`` (task -> cause line). ``dry_run_plan`` is what the resolve tasks of a dry run
    planned (the report's ``dry_run`` is then true, ``vms`` empty). ``vms_down`` lists every VM that was
    RUNNING before the backup and is not now, with the command that starts it. ``max_concurrent_vms`` is
    the group's cap on VMs down at once, shown beside the peak.
    """
    now = generated_at or datetime.now(UTC)
    rows = [row for row in (_vm_row(vm) for vm in vms) if row is not None]
    _link_carried(rows)
    failed_other = sorted(task for task, state in (other_tasks or {}).items() if state not in OK_STATES)
    snapshots = [s for row in rows for s in row["snapshots"] if not s.get("carried_by")]
    summary = {
        "vms": len(rows),
        "vms_ok": sum(row["ok"] for row in rows),
        "vms_with_problems": sum(not row["ok"] for row in rows),
        "snapshots": len(snapshots),
        "snapshots_ready": sum(s["status"] == "READY" and s["kind"] == "standard" for s in snapshots),
        "storage_bytes": sum(s["storage_bytes"] for s in snapshots),
        "snapshots_deleted": sum(len((row["retention"] or {}).get("deleted", [])) for row in rows),
        "failed_tasks": failed_other,
    }
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "generated_at": now.isoformat(timespec="seconds"),
        "status": "success" if summary["vms_with_problems"] == 0 and not failed_other else "failed",
        "dry_run": bool(dry_run_plan),
        "vms_down": [
            {
                "vm": row["vm"],
                "status": row["down"]["status"],
                "command": row["down"]["command"],
                **({"not_stopped_by_run": True} if row["down"].get("not_stopped_by_run") else {}),
            }
            for row in rows
            if row["down"]
        ],
        "summary": summary,
        "downtime": _downtime_summary(rows, max_concurrent_vms, now),
        "task_errors": {
            task: (other_errors or {})[task] for task in failed_other if task in (other_errors or {})
        },
        "vms": rows,
        "dry_run_plan": list(dry_run_plan or []),
    }


REPORT_TASK_ID = stages.REPORT
