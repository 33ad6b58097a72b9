"""The run report (one structured summary per DAG run) and the failure notifiers.

``RunReportOperator`` runs last (trigger rule all_done). It finds the per-VM results without being handed
them: the task-instance breadcrumbs of the run (``RuntimeTaskInstance.get_task_breadcrumbs``: task id,
map index and final state of every finished task; ``get_task_states`` on Airflow 3.1, see
``finished_tasks``) tell which VM task groups ran and how each task ended; each present task's XCom is then
pulled by task id and map index. So a failed or missing task leaves a hole in its VM's row, never a
misaligned row. ``build_run_report`` is the pure part.

Why a task failed comes from the XCom every operator of the package pushes before its exception
propagates (``_base.RecordsFailures``, key ``gce_vm_backup_error``): each problem is the cause's first line
(``snapshot of disk web-1-data failed: QUOTA_EXCEEDED: ...``); tasks that did not run because an earlier
one failed (upstream_failed) are listed after it, never as a cause.

A VM that was RUNNING before the backup and whose start did not succeed is read again (``instances.get``):
if it is not RUNNING now, the report's first line, the row's first problem and the failure notification
say that it is down and give the command that starts it.

Timings come from what the operators return: the stop's ``at`` is when the VM was seen TERMINATED, the
start's ``at`` when it was seen RUNNING again; ``downtime_seconds`` is the span between the two, so the
time the VM spent stopping is not in it.

Notifiers: ``notifiers_from_config(notify)`` turns a group's ``notify`` block into DAG-level
``on_failure_callback`` notifiers (email through Airflow's SMTP provider, Slack through the Slack provider's
incoming-webhook hook, the optional extra ``slack``). Provider modules are imported only when a notification
is sent; with no ``notify`` block the list is empty and no notification code runs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseOperator, TriggerRule
from airflow.sdk.bases.notifier import BaseNotifier
from pydantic import ValidationError

from gce_vm_backup._base import ERROR_XCOM_KEY, HookMixin
from gce_vm_backup._compat import AirflowFailException
from gce_vm_backup.config import EmailSettings, NotifySettings, SlackSettings
from gce_vm_backup.errors import BackupError, ConfigError
from gce_vm_backup.plan import NO_VM_STATUS
from gce_vm_backup.resolve_ops import DRY_RUN_PLAN_KEY

VM_TASKS = ("precheck", "stop", "snapshot", "start", "verify", "retention")
REPORT_XCOM_KEY = "run_report"
REPORT_TASK_ID = "run_report"
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
    status_now: str | None = None  # read by the report when the start did not succeed (GONE: deleted)
    status_error: str | None = None  # why status_now could not be read


def _seconds_between(start: str | None, end: str | None) -> int | None:
    if not start or not end:
        return None
    return int((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())


def needs_status_check(vm: VmTaskResults) -> bool:
    """A VM that was RUNNING before the backup and whose start did not succeed: is it running now?"""
    record = vm.values.get("precheck") or {}
    return record.get("prior_status") == "RUNNING" and vm.states.get("start") != "success"


def start_command(project: str, zone: str, instance: str, status: str | None) -> str:
    verb = "resume" if status in ("SUSPENDED", "SUSPENDING") else "start"
    return f"gcloud compute instances {verb} {instance} --project={project} --zone={zone}"


def _down(vm: VmTaskResults, target: Mapping[str, Any]) -> dict[str, Any] | None:
    """The VM-down entry of a row (None when the VM is RUNNING again or was not running before)."""
    if not needs_status_check(vm) or vm.status_now == "RUNNING":
        return None
    project, zone, instance = (str(target.get(key)) for key in ("project_id", "zone", "instance"))
    start = vm.states.get("start") or "did not run"
    status = vm.status_now
    if status == GONE:
        return {
            "status": GONE,
            "command": None,
            "line": f"VM {instance} was RUNNING before the backup and no longer exists (start {start})",
        }
    command = start_command(project, zone, instance, status)
    when = " once it is TERMINATED" if status in STOPPING_STATES else ""
    if status is None:
        reason = f"; its status could not be read: {vm.status_error}" if vm.status_error else ""
        line = (
            f"VM {instance} MAY BE DOWN: it was RUNNING before the backup and its start {start}{reason}. "
            f"Check it; to start it by hand: {command}"
        )
    else:
        line = (
            f"VM {instance} IS DOWN ({status}): it was RUNNING before the backup and its start {start}. "
            f"Start it by hand{when}: {command}"
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


def _vm_row(vm: VmTaskResults) -> dict[str, Any] | None:
    """One VM's line of the report, or None for a tier's no-VM placeholder."""
    record = vm.values.get("precheck") or {}
    if record.get("prior_status") == NO_VM_STATUS:
        return None
    target = vm.target or record
    path = (
        f"projects/{target.get('project_id')}/zones/{target.get('zone')}/instances/{target.get('instance')}"
        if target
        else None
    )
    stop, start = vm.values.get("stop") or {}, vm.values.get("start") or {}
    snapshots = vm.values.get("verify") or vm.values.get("snapshot") or []
    retention = vm.values.get("retention")
    down = _down(vm, target) if target else None
    problems = ([down["line"]] if down else []) + _causes(vm)
    prior = record.get("prior_status")
    carried = [
        {
            "disk": d.get("name"),
            "disk_source": d.get("source"),
            "snapshot": None,
            "status": None,
            "storage_bytes": 0,
            "carried_by": d["carried_by"],
        }
        for d in record.get("disks") or []
        if d.get("carried_by")
    ]
    return {
        "group": vm.group,
        "map_index": vm.map_index,
        "vm": path,
        "prior_status": prior,
        "status_after": vm.status_now,
        "down": None if down is None else {"status": down["status"], "command": down["command"]},
        "stopped": stop.get("stopped"),
        "stopped_at": stop.get("at"),
        "started": start.get("started"),
        "started_at": start.get("at"),
        "downtime_seconds": _seconds_between(stop.get("at"), start.get("at")) if stop.get("stopped") else 0,
        "tasks": dict(vm.states),
        "snapshots": [
            {
                "disk": s.get("disk"),
                "disk_source": s.get("disk_source"),
                "snapshot": s.get("snapshot"),
                "status": s.get("status"),
                "storage_bytes": int(s.get("storage_bytes") or 0),
            }
            for s in snapshots
        ]
        + carried,
        "retention": None
        if retention is None
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
            if entry["status"] != "READY":
                row["problems"].append(
                    f"disk {entry['disk']} is snapshotted by {carrier.rsplit('/', 1)[-1]}'s backup "
                    f"({carrier}), which has no READY snapshot of it in this run"
                )
                row["ok"] = False


def build_run_report(
    *,
    dag_id: str,
    run_id: str,
    vms: Iterable[VmTaskResults],
    other_tasks: Mapping[str, str] | None = None,
    other_errors: Mapping[str, str] | None = None,
    dry_run_plan: Sequence[Mapping[str, Any]] | None = None,
    generated_at: datetime | None = None,
) -> dict[str, Any]:
    """The run's summary as plain JSON-able data (see the module docstring). Raises nothing.

    ``other_tasks`` are the run's tasks outside the VM groups (resolve, barriers) with their states; the
    failed ones are listed, since a failed resolve means a whole tier was not backed up, with their causes
    from ``other_errors`` (task -> cause line). ``dry_run_plan`` is what the resolve tasks of a dry run
    planned (the report's ``dry_run`` is then true, ``vms`` empty). ``vms_down`` lists every VM that was
    RUNNING before the backup and is not now, with the command that starts it.
    """
    rows = [row for row in (_vm_row(vm) for vm in vms) if row is not None]
    _link_carried(rows)
    failed_other = sorted(task for task, state in (other_tasks or {}).items() if state not in OK_STATES)
    snapshots = [s for row in rows for s in row["snapshots"] if not s.get("carried_by")]
    summary = {
        "vms": len(rows),
        "vms_ok": sum(row["ok"] for row in rows),
        "vms_with_problems": sum(not row["ok"] for row in rows),
        "snapshots": len(snapshots),
        "snapshots_ready": sum(s["status"] == "READY" for s in snapshots),
        "storage_bytes": sum(s["storage_bytes"] for s in snapshots),
        "snapshots_deleted": sum(len((row["retention"] or {}).get("deleted", [])) for row in rows),
        "failed_tasks": failed_other,
    }
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "generated_at": (generated_at or datetime.now(UTC)).isoformat(timespec="seconds"),
        "status": "success" if summary["vms_with_problems"] == 0 and not failed_other else "failed",
        "dry_run": bool(dry_run_plan),
        "vms_down": [
            {"vm": row["vm"], "status": row["down"]["status"], "command": row["down"]["command"]}
            for row in rows
            if row["down"]
        ],
        "summary": summary,
        "task_errors": {
            task: (other_errors or {})[task] for task in failed_other if task in (other_errors or {})
        },
        "vms": rows,
        "dry_run_plan": list(dry_run_plan or []),
    }


def _size(storage_bytes: int) -> str:
    return f"{storage_bytes / (1 << 30):.1f} GiB"


def _vm_name(path: str | None) -> str:
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
        lines.append(f"VM DOWN: {down['vm']} {what} (it was RUNNING before the backup){fix}")
    return lines


def problem_lines(report: Mapping[str, Any]) -> list[str]:
    """Every problem as ``<VM>: <cause>``, and every failed task outside the VM groups with its cause."""
    lines = [
        f"{_vm_name(row['vm']) if row['vm'] else row['group']}: {problem}"
        for row in report.get("vms", [])
        for problem in row.get("problems", [])
    ]
    errors = report.get("task_errors", {})
    lines += [
        f"{task}: {errors.get(task) or 'failed (no error was recorded: see the task log)'}"
        for task in report["summary"].get("failed_tasks", [])
    ]
    return lines


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
    if summary["failed_tasks"]:
        errors = report.get("task_errors", {})
        lines.append("Failed tasks outside the VM groups:")
        lines += [f"    {task}: {errors.get(task) or 'failed'}" for task in summary["failed_tasks"]]
    for planned in report.get("dry_run_plan", []):
        vm = planned["vm"].split("/zones/")[-1]
        lines.append(f"DRY RUN {vm} ({planned['status']}): would {planned['action']}")
        lines += [f"    {s['disk_source']} -> {s['snapshot']}" for s in planned["snapshots"]]
        lines += [
            f"    {disk} -> snapshotted by {_vm_name(carrier)}'s backup"
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
            size = f"carried by {_vm_name(snap['carried_by'])}" if snap.get("carried_by") else None
            lines.append(
                f"{prefix}{snap.get('disk') or '-':<24} {snap.get('snapshot') or '-':<63} "
                f"{snap.get('status') or '-':<9} {size or _size(snap.get('storage_bytes') or 0)}"
            )
        retention = row["retention"]
        if retention and (retention["deleted"] or retention["would_delete"]):
            verb = "would delete" if retention["dry_run"] else "deleted"
            names = retention["would_delete"] if retention["dry_run"] else retention["deleted"]
            lines.append(f"    retention {verb}: {', '.join(names)}")
        for problem in row["problems"]:
            lines.append(f"    PROBLEM: {problem}")
    return "\n".join(lines)


def _pull_error(ti: Any, task_id: str, map_index: int) -> Mapping[str, Any] | None:
    error = ti.xcom_pull(task_ids=task_id, map_indexes=map_index, key=ERROR_XCOM_KEY, default=None)
    return error if isinstance(error, Mapping) else None


# The states get_task_breadcrumbs returns (the execution API's TerminalTIState).
FINISHED_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


def finished_tasks(
    ti: Any, *, dag_id: str, run_id: str, vm_groups: Sequence[str]
) -> Iterator[tuple[str, int, str]]:
    """(task id, map index, state) of every finished task of the run.

    ``RuntimeTaskInstance.get_task_breadcrumbs`` arrived with Airflow 3.2 (task SDK 1.2.0); on Airflow 3.1 the
    same comes from ``get_task_states``, which keys a mapped task instance ``<task id>_<map index>`` (only
    the VM tasks are mapped here) and also lists unfinished tasks, left out as the breadcrumbs leave them.
    """
    if hasattr(ti, "get_task_breadcrumbs"):
        for crumb in ti.get_task_breadcrumbs(dag_id=dag_id, run_id=run_id):
            yield (
                str(crumb["task_id"]),
                int(crumb["map_index"]),
                str(getattr(crumb["state"], "value", crumb["state"])),
            )
        return
    states = ti.get_task_states(dag_id=dag_id, run_ids=[run_id]).get(run_id) or {}
    for key, raw_state in sorted(states.items()):
        state = str(getattr(raw_state, "value", raw_state))
        if state not in FINISHED_STATES:
            continue
        group, _, rest = key.partition(".")
        task, _, index = rest.rpartition("_")
        if group in vm_groups and task in VM_TASKS and index.isdigit():
            yield f"{group}.{task}", int(index), state
        else:
            yield key, -1, state


def collect_vm_results(
    ti: Any, *, dag_id: str, run_id: str, vm_groups: Sequence[str]
) -> tuple[list[VmTaskResults], dict[str, str]]:
    """Every VM group's per-map-index task states, XComs and (for failed tasks) errors, and the states of
    the other tasks.

    ``vm_groups`` are the mapped task groups' ids (``tier_1``...); each group's resolve task is
    ``resolve_<group>``, whose list gives the VM of each map index.
    """
    vms: dict[tuple[str, int], VmTaskResults] = {}
    other: dict[str, str] = {}
    for task_id, map_index, state in finished_tasks(ti, dag_id=dag_id, run_id=run_id, vm_groups=vm_groups):
        group, _, task = task_id.partition(".")
        if group in vm_groups and task in VM_TASKS:
            vms.setdefault((group, map_index), VmTaskResults(group, map_index)).states[task] = state
        elif task_id != ti.task_id:
            other[task_id] = state
    targets = {
        group: ti.xcom_pull(task_ids=f"resolve_{group}", map_indexes=-1, default=None) or []
        for group in vm_groups
    }
    for (group, map_index), vm in sorted(vms.items()):
        if 0 <= map_index < len(targets[group]):
            vm.target = targets[group][map_index]
        for task, state in vm.states.items():
            vm.values[task] = ti.xcom_pull(task_ids=f"{group}.{task}", map_indexes=map_index, default=None)
            if state == "failed" and (error := _pull_error(ti, f"{group}.{task}", map_index)) is not None:
                vm.errors[task] = error
    return [vms[key] for key in sorted(vms)], other


class RunReportOperator(HookMixin, BaseOperator):
    """Build the run report, log it as a table and push it to XCom (key ``run_report``, and as the return
    value when the run had no problems).

    :param vm_groups: the ids of the mapped per-VM task groups (``["tier_1", "tier_2"]``).
    :param fail_on_problems: fail (without retry) when any VM or task had a problem, after pushing the
        report: the report runs last with trigger rule all_done, and as the DAG's only leaf its success
        would otherwise mark a failed run successful and silence the failure notification.
    Every VM that was RUNNING before the backup and whose start did not succeed is read (``instances.get``)
    to tell whether it is down. Raises AirflowFailException listing the problems, VMs that are down first.
    """

    records_failures = False

    def __init__(
        self,
        *,
        vm_groups: Sequence[str],
        fail_on_problems: bool = True,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        if not vm_groups:
            raise ConfigError("The parameter 'vm_groups' must name at least one per-VM task group")
        self.vm_groups, self.fail_on_problems = list(vm_groups), fail_on_problems
        self.gcp_conn_id, self.impersonation_chain = gcp_conn_id, impersonation_chain

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        vms, other = collect_vm_results(
            ti, dag_id=ti.dag_id, run_id=context["run_id"], vm_groups=self.vm_groups
        )
        for vm in vms:
            if needs_status_check(vm):
                self._read_status(vm)
        other_errors = {
            task: str(error.get("cause") or error.get("message"))
            for task, state in other.items()
            if state == "failed" and (error := _pull_error(ti, task, -1)) is not None
        }
        plan = [
            planned
            for group in self.vm_groups
            for planned in ti.xcom_pull(task_ids=f"resolve_{group}", key=DRY_RUN_PLAN_KEY, default=None) or []
        ]
        report = build_run_report(
            dag_id=ti.dag_id,
            run_id=context["run_id"],
            vms=vms,
            other_tasks=other,
            other_errors=other_errors,
            dry_run_plan=plan,
        )
        self.log.info("%s", format_report(report))
        ti.xcom_push(key=REPORT_XCOM_KEY, value=report)
        if self.fail_on_problems and report["status"] != "success":
            raise AirflowFailException(
                "The backup run had problems (full report in XCom 'run_report'): "
                + " | ".join([*down_lines(report), *problem_lines(report)])
            )
        return report

    def _read_status(self, vm: VmTaskResults) -> None:
        """Set the VM's status now (GONE when deleted), or why it could not be read."""
        from gce_vm_backup.errors import ResourceNotFoundError

        record = vm.values.get("precheck") or {}
        try:
            instance = self.hook.get_instance(
                project_id=record["project_id"], zone=record["zone"], name=record["instance"]
            )
            vm.status_now = str(instance.status)
        except ResourceNotFoundError:
            vm.status_now = GONE
        except Exception as exc:  # the report must still be written: the VM is then "may be down"
            vm.status_error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        self.log.info(
            "VM %s was RUNNING before the backup, its start %s: now %s",
            record.get("instance"),
            vm.states.get("start") or "did not run",
            vm.status_now or f"unknown ({vm.status_error})",
        )


# ---- failure notification ----------------------------------------------------------------------
def _report_from(context: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The run report, when the callback's context can reach it (the DAG processor gives a ``ti``)."""
    ti = context.get("ti")
    if ti is None:
        return None
    try:
        report = ti.xcom_pull(task_ids=REPORT_TASK_ID, key=REPORT_XCOM_KEY, default=None)
    except Exception:  # the notification must go out even when the report cannot be read
        return None
    return report if isinstance(report, Mapping) and "summary" in report else None


def failure_message(context: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, body) for a failed backup run, from a DAG failure callback's context.

    When the run report can be read, VMs that may be down lead the subject and the body (with the command
    that starts each), then the summary and every problem with its cause.
    """
    dag = context.get("dag")
    dag_id = getattr(dag, "dag_id", None) or "gce-vm-backup"
    run_id = context.get("run_id") or "?"
    report = _report_from(context)
    down = down_lines(report) if report is not None else []
    subject = f"[gce-vm-backup] Backup run failed: {dag_id} ({run_id})"
    if down:
        names = ", ".join(_vm_name(d["vm"]) for d in report["vms_down"])  # type: ignore[index]
        subject = f"[gce-vm-backup] VM(s) DOWN: {names} - backup run failed: {dag_id} ({run_id})"
    body = (
        f"The backup DAG {dag_id}, run {run_id}, failed: {context.get('reason') or 'see the task logs'}.\n"
        f"The run report (every VM, its snapshots and problems) is in the XCom '{REPORT_XCOM_KEY}' of the "
        f"task '{REPORT_TASK_ID}'. VMs that were RUNNING before the backup are restarted by their start task "
        "even when stop or snapshot failed; the report names any that is not running after the run."
    )
    if report is not None:
        summary = report["summary"]
        lines = [
            f"{summary['vms_ok']}/{summary['vms']} VM(s) ok, "
            f"{summary['snapshots_ready']}/{summary['snapshots']} snapshot(s) READY, "
            f"{summary['snapshots_deleted']} old snapshot(s) deleted."
        ]
        lines += [f"- {line}" for line in problem_lines(report)]
        body += "\n\n" + "\n".join(lines)
    if down:
        body = "\n".join(down) + "\n\n" + body
    return subject, body


class EmailFailureNotifier(BaseNotifier):
    """Emails the failure through Airflow's SMTP provider (imported only when sending)."""

    def __init__(self, settings: EmailSettings) -> None:
        super().__init__()
        self.settings = settings

    def notify(self, context: Any) -> None:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        subject, body = failure_message(context)
        SmtpNotifier(
            to=self.settings.to,
            from_email=self.settings.from_email,
            smtp_conn_id=self.settings.smtp_conn_id,
            subject=subject,
            html_content=f"<pre>{body}</pre>",
        ).notify(context)


SLACK_EXTRA_MISSING = (
    "Slack notifications need the Slack provider (apache-airflow-providers-slack): install "
    "gce-vm-backup[slack], or add apache-airflow-providers-slack to the environment's PyPI packages"
)


class SlackFailureNotifier(BaseNotifier):
    """Posts the failure through the Slack provider's incoming-webhook hook (the optional extra ``slack``).

    The connection ``webhook_conn_id`` is a Slack incoming-webhook connection: the webhook URL (or its
    token, with the base URL in the host) in the password. Raises ConfigError when the provider is not
    installed (at DAG build, so the group fails to load rather than its failures going unreported), and
    the provider's error when the connection has no webhook or Slack refuses the post.
    """

    def __init__(self, settings: SlackSettings) -> None:
        super().__init__()
        if importlib.util.find_spec("airflow.providers.slack") is None:
            raise ConfigError(f"notify.slack: {SLACK_EXTRA_MISSING}")
        self.settings = settings

    def notify(self, context: Any) -> None:
        try:
            from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook
        except ImportError as exc:
            raise BackupError(SLACK_EXTRA_MISSING) from exc

        subject, body = failure_message(context)
        message: dict[str, Any] = {"text": f"*{subject}*\n{body}"}
        if self.settings.channel:
            # A legacy-webhook field (apps' webhooks post to their own channel); the provider passes it on.
            message["channel"] = self.settings.channel
        SlackWebhookHook(slack_webhook_conn_id=self.settings.webhook_conn_id).send_dict(message)


def notifiers_from_config(notify: Mapping[str, Any] | NotifySettings | None) -> list[BaseNotifier]:
    """The DAG's ``on_failure_callback`` list for a group's ``notify`` block ([] when none is set).

    Raises ConfigError naming the key when the block is malformed.
    """
    if notify is None:
        return []
    try:
        settings = notify if isinstance(notify, NotifySettings) else NotifySettings.model_validate(notify)
    except ValidationError as exc:
        raise ConfigError(
            [f"notify.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()]
        ) from None
    notifiers: list[BaseNotifier] = []
    if settings.email is not None:
        notifiers.append(EmailFailureNotifier(settings.email))
    if settings.slack is not None:
        notifiers.append(SlackFailureNotifier(settings.slack))
    return notifiers
