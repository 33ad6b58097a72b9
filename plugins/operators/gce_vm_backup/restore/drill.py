"""The restore drill's tasks: plan (read-only setup) -> drill_vm (mapped, per VM) -> cleanup (teardown)
-> drill_report.

The drill works in its scratch project and zone only (``restore_drill.scratch_project`` /
``scratch_zone``, never a project of the group): ``plan`` names, before anything exists, every disk and VM
each VM's drill will make, from the run and a random nonce of this run (``gce-vm-backup-drill-nonce``),
so no one can know a name or the nonce before the run plans. Per VM, ``drill_vm`` records in its XCom
``drill_created`` every resource it is about to create (path and request id) BEFORE its insert, takes the
newest complete READY snapshot set, makes a disk from each snapshot (labelled with the run and the
nonce), optionally a VM with them (no external IP, no service account), waits until it is RUNNING and,
when configured, until the boot check passes. ``cleanup`` then deletes, whatever failed, a resource only
when all hold: it is in the scratch project and zone, its name is in this run's plan, it carries this
run's labels and nonce, and a try of ``drill_vm`` recorded it; anything else carrying the run's label is
left alone and reported, one line each. ``drill_report`` gives per VM the set, its age when the restore
began (RPO), the time to a RUNNING VM (RTO) and the result, and fails the run (so the group's notifiers
fire) when any VM's drill failed, or anything was left behind or left alone.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NoReturn

from gce_vm_backup.compute.paths import DiskRef, SnapshotRef, VmRef
from gce_vm_backup.compute.polling import poll_until
from gce_vm_backup.errors import BackupError
from gce_vm_backup.restore.base import RestoreTask, iso, now, seconds_between
from gce_vm_backup.restore.sets import attached_of, group_filter, newest_complete, snapshot_sets
from gce_vm_backup.restore.steps import (
    DRILL_KEY,
    boot_check_passed,
    build_instance,
    delete_labelled,
    ensure_disk,
    ensure_instance,
    resolve_vms,
    resource_name,
    split_vm,
    wait_for_status,
)
from gce_vm_backup.runtime.base import ERROR_XCOM_KEY, refuse_backfill

DRILL_REPORT_KEY = "drill_report"
PROGRESS_KEY = "drill_progress"
CREATED_KEY = "drill_created"  # drill_vm's record of what it is creating, pushed before each insert
NONCE_KEY = "gce-vm-backup-drill-nonce"  # a random nonce of the drill run, on everything it makes
PLAN_TASK_ID, VM_TASK_ID, CLEANUP_TASK_ID, REPORT_TASK_ID = "plan", "drill_vm", "cleanup", "drill_report"


def _boot_disk_of(instance: Any) -> str | None:
    for disk in getattr(instance, "disks", []) or []:
        if disk.boot and disk.source:
            return str(disk.source[disk.source.find("projects/") :])
    return None


class DrillPlanOperator(RestoreTask):
    """Read-only: every VM of the group and the snapshot set its drill takes.

    :param targets: the group's targets (every tier), in the operator form of ``ResolveTargetsOperator``.
    :param drill: ``RestoreDrill.model_dump()`` plus ``boot_check`` as ``boot_check_spec()``.
    Returns one ``{"plan": {...}}`` per VM (for ``expand_kwargs``); a VM without a complete READY set gets
    a plan with ``error`` set (its drill_vm fails with it). A group with no VM at all gets one such plan.
    """

    template_fields = ("targets",)

    def __init__(self, *, targets: list[dict[str, Any]], drill: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.targets, self.drill = targets, drill

    def execute(self, context: Any) -> list[dict[str, Any]]:
        refuse_backfill(context, why="a drill restores the newest snapshot sets now, whatever the run's date")
        run_hash = self.run_hash(context)
        nonce = secrets.token_hex(8)  # known to this run only: nothing can carry it before the plan
        scratch = self.drill.get("scratch_project")
        if not scratch or scratch in {t["project_id"] for t in self.targets}:
            raise BackupError(
                f"The drill's scratch project {scratch!r} is missing or is a target project of group "
                f"{self.group}: a drill creates and deletes only in a project of its own"
            )
        vms = resolve_vms(self.hook, self.targets)
        projects = sorted({split_vm(vm)[0] for vm in vms})
        snapshots = [
            snapshot
            for project in projects
            for snapshot in self.hook.list_snapshots(
                project_id=project, filter=group_filter(deployment=self.deployment, group=self.group)
            )
        ]
        attached = {}  # the live VMs' disks, for snapshots made before manifests (restore_sets)
        for vm in vms:
            project, zone, instance = split_vm(vm)
            try:
                attached[vm] = attached_of(
                    self.hook.get_instance(project_id=project, zone=zone, name=instance)
                )
            except BackupError:  # the VM is gone: only its sets with a manifest are drilled
                continue
        sets = snapshot_sets(
            snapshots, group=self.group, deployment=self.deployment, vms=vms, attached=attached
        )
        plans = [self._plan(vm, sets.get(vm, []), run_hash, nonce) for vm in vms]
        if not plans:
            plans = [{"vm": None, "error": f"group {self.group} has no VM to drill", "run_hash": run_hash}]
        for plan in plans:
            self.log.info(
                "Drill of %s: %s",
                plan["vm"],
                plan.get("error") or f"set {plan['set']['run']} ({len(plan['disks'])} disk(s))",
            )
        return [{"plan": plan} for plan in plans]

    def _plan(self, vm: str, sets: list[Any], run_hash: str, nonce: str) -> dict[str, Any]:
        project, zone, instance = split_vm(vm)
        chosen = newest_complete(sets)
        if chosen is None:
            return {"vm": vm, "run_hash": run_hash, "error": f"{vm} has no complete READY snapshot set"}
        try:
            boot = _boot_disk_of(self.hook.get_instance(project_id=project, zone=zone, name=instance))
        except BackupError:  # the VM is gone: a drill still proves its backup restores
            boot = None
        if boot is None or chosen.for_disk(boot) is None:
            # The disk named like the VM (how boot disks are usually named), else the only one.
            named = [d for d in chosen.disks if d.rsplit("/", 1)[-1] == instance]
            boot = named[0] if named else chosen.disks[0] if len(chosen.disks) == 1 else None
        chosen = chosen.with_boot_disk(boot)
        scratch_project, scratch_zone = self.drill["scratch_project"], self.drill["scratch_zone"]
        disks = []
        for snapshot in chosen.snapshots:
            key = f"{run_hash}|{nonce}|{vm}|{snapshot.disk_source}"
            disks.append(
                {
                    "name": resource_name("drill", snapshot.disk_name, key),
                    "source_snapshot": SnapshotRef(project, snapshot.name).path,
                    "disk_source": snapshot.disk_source,
                    "device_name": snapshot.disk_name,
                    "boot": bool(snapshot.boot),
                    "mode": "READ_WRITE",
                }
            )
        return {
            "vm": vm,
            "run_hash": run_hash,
            "nonce": nonce,
            "error": None if boot else f"{vm}: cannot tell which disk of set {chosen.run} boots",
            "set": chosen.as_dict(),
            "project": scratch_project,
            "zone": scratch_zone,
            "instance_name": resource_name("drill", instance, f"{run_hash}|{nonce}|{vm}"),
            "disks": disks,
        }


class DrillVmOperator(RestoreTask):
    """Restore one VM's set into the scratch zone and boot it (see the module docstring).

    Returns ``{"vm", "snapshot_set", "set_created_at", "restore_started_at", "running_at", "booted_at",
    "rpo_seconds", "rto_seconds", "disks", "instance"}``. Raises BackupError for a plan with an error, a
    name taken by someone else's resource, a boot check that never passed; OperationFailedError /
    OperationTimeoutError from a create or a wait.
    """

    template_fields = ("plan",)

    def __init__(self, *, plan: Any, drill: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan, self.drill = plan, drill

    def _restored_at(self, plan: Mapping[str, Any]) -> str | None:
        """When Compute Engine made the first restored disk, by its own clock: the set's creation time is
        by that clock too, so the RPO does not depend on the worker's clock."""
        first = self.hook.get_disk(
            project_id=plan["project"], zone=plan["zone"], name=plan["disks"][0]["name"]
        )
        return _iso_utc(getattr(first, "creation_timestamp", None)) if first is not None else None

    def execute(self, context: Any) -> dict[str, Any]:
        plan: Mapping[str, Any] = self.plan
        if plan.get("error"):
            self.failure_subject = f"drill of {plan.get('vm') or self.group}"
            raise BackupError(plan["error"])
        started = iso(now())
        run_key = self.run_key(context)
        project, zone = scratch_place(plan, self.drill)
        labels = drill_labels(self, plan["run_hash"], plan["nonce"])
        timeouts, poll = self.drill["timeouts"], float(self.drill.get("poll_interval", 10))
        name = plan["instance_name"]
        path = VmRef(project, zone, name).path
        # What this try may create, recorded before its first insert: the cleanup deletes only what a try
        # recorded (a retry's own record replaces the record of the try before, and names the same).
        records = [
            {"path": p, "request_id": run_key.request_id(p, "insert"), "state": "requested"}
            for p in planned_paths(plan, with_vm=bool(self.drill.get("create_vm", True)))
        ]
        ti = context["ti"]
        ti.xcom_push(key=CREATED_KEY, value=records)
        deadline = time.monotonic() + float(timeouts["create"])
        for disk, record in zip(plan["disks"], records, strict=False):
            self.failure_subject = f"create disk {disk['name']} from {disk['source_snapshot']}"
            record["state"] = ensure_disk(
                self.hook,
                project=project,
                zone=zone,
                name=disk["name"],
                source_snapshot=disk["source_snapshot"],
                labels=labels,
                request_id=record["request_id"],
                timeout=max(deadline - time.monotonic(), 1),
            )
            ti.xcom_push(key=CREATED_KEY, value=records)
        result: dict[str, Any] = {
            "vm": plan["vm"],
            "snapshot_set": plan["set"]["run"],
            "set_created_at": plan["set"]["created_at"],
            "restore_started_at": started,
            "rpo_seconds": seconds_between(plan["set"]["created_at"], self._restored_at(plan) or started),
            "disks": [DiskRef(project, zone, d["name"]).path for d in plan["disks"]],
            "instance": None,
            "running_at": None,
            "booted_at": None,
            "rto_seconds": None,
        }
        if not self.drill.get("create_vm", True):
            result["rto_seconds"] = seconds_between(started, iso(now()))  # disks READY: the restore's end
            return result
        check = self.drill.get("boot_check") or {"kind": "none"}
        instance = build_instance(
            project=project,
            zone=zone,
            name=name,
            machine_type=self.drill.get("machine_type") or "e2-small",
            disks=[{**d, "source": DiskRef(project, zone, d["name"]).path} for d in plan["disks"]],
            labels=labels,
            network=self.drill["network"],  # required: never a project's default network
            subnetwork=self.drill.get("subnetwork"),
            guest_attributes=check.get("kind") == "guest_attribute",
        )
        self.failure_subject = f"create VM {name}"
        records[-1]["state"] = ensure_instance(
            self.hook,
            project=project,
            zone=zone,
            instance=instance,
            request_id=records[-1]["request_id"],
            timeout=max(deadline - time.monotonic(), 1),
        )
        ti.xcom_push(key=CREATED_KEY, value=records)
        result["instance"] = path
        self.failure_subject = f"wait for VM {name} to be RUNNING"
        boot_deadline = time.monotonic() + float(timeouts["boot"])
        running = wait_for_status(
            self.hook,
            project=project,
            zone=zone,
            name=name,
            wanted={"RUNNING"},
            timeout=timeouts["boot"],
            poll=poll,
        )
        result["running_at"] = iso(now())
        result["rto_seconds"] = seconds_between(started, result["running_at"])
        if any(nic.access_configs for nic in running.network_interfaces):
            raise BackupError(f"VM {path} has an external IP; a drill VM never gets one")
        context["ti"].xcom_push(key=PROGRESS_KEY, value=result)  # the report's row if the boot check fails
        self.failure_subject = f"boot check of VM {name}"

        def not_booted(_: bool) -> NoReturn:
            raise BackupError(
                f"VM {path} is RUNNING but its boot check ({_describe(check)}) did not pass within "
                f"{timeouts['boot']} seconds"
            )

        poll_until(
            lambda: boot_check_passed(self.hook, project=project, zone=zone, name=name, check=check),
            bool,
            deadline=boot_deadline,
            pause=lambda remaining: min(poll, remaining),
            on_timeout=not_booted,
            clock=time.monotonic,
            sleep=time.sleep,
        )
        result["booted_at"] = iso(now())
        self.log.info(
            "Drill of %s: set %s restored as %s, RUNNING after %ss (RPO %ss)",
            plan["vm"],
            plan["set"]["run"],
            path,
            result["rto_seconds"],
            result["rpo_seconds"],
        )
        return result


def _iso_utc(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).isoformat(timespec="seconds")
    except ValueError:
        return None


def _describe(check: Mapping[str, Any]) -> str:
    if check.get("kind") == "guest_attribute":
        return f"guest attribute {check['key']} = {check['value']!r}"
    if check.get("kind") == "serial_port":
        return f"serial port output holding {check['text']!r}"
    return "none"


def drill_labels(task: RestoreTask, run_hash: str, nonce: str) -> dict[str, str]:
    """The labels of everything a drill run makes: the run's scope labels and its plan's nonce."""
    return {**task.scope_labels(DRILL_KEY, run_hash), NONCE_KEY: nonce}


def scratch_place(plan: Mapping[str, Any], drill: Mapping[str, Any]) -> tuple[str, str]:
    """The scratch project and zone of the drill's config, after checking that ``plan`` names them and
    that the VM it drills is not in that project. Raises BackupError otherwise (nothing is touched)."""
    project, zone = drill.get("scratch_project"), drill.get("scratch_zone")
    vm_project = split_vm(plan["vm"])[0] if plan.get("vm") else None
    if not project or not zone or (plan.get("project"), plan.get("zone")) != (project, zone):
        raise BackupError(
            f"The drill plan of {plan.get('vm')} names {plan.get('project')}/{plan.get('zone')}, not the "
            f"scratch project and zone {project}/{zone}: nothing was created"
        )
    if project == vm_project:
        raise BackupError(f"The scratch project {project} holds {plan['vm']}: nothing was created")
    return project, zone


def planned_paths(plan: Mapping[str, Any], *, with_vm: bool = True) -> list[str]:
    """The paths of what a plan's drill makes: its disks (in plan order), then its VM."""
    if not plan.get("project") or not plan.get("zone"):
        return []
    paths = [DiskRef(plan["project"], plan["zone"], disk["name"]).path for disk in plan.get("disks") or []]
    if with_vm and plan.get("instance_name"):
        paths.append(VmRef(plan["project"], plan["zone"], plan["instance_name"]).path)
    return paths


class DrillCleanupOperator(RestoreTask):
    """Teardown: delete what this drill run made, and only that (see the module docstring), then list
    again.

    Looks only in the config's scratch project and zone. Returns ``{"deleted", "refused", "failed",
    "left"}``: "refused" holds one ``"<path>: left alone, <why>"`` per resource carrying the run's label
    that it did not delete. Raises BackupError when the scratch project holds a VM of the plan (nothing is
    deleted), or when anything this run made is left (after the deletes of everything else)."""

    template_fields = ("plans",)

    def __init__(self, *, plans: Any, drill: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plans, self.drill = plans, drill

    def execute(self, context: Any) -> dict[str, Any]:
        run_hash = self.run_hash(context)
        project, zone = self.drill.get("scratch_project"), self.drill.get("scratch_zone")
        plans = [entry["plan"] for entry in self.plans or []]
        vm_projects = {split_vm(plan["vm"])[0] for plan in plans if plan.get("vm")}
        if not project or not zone or project in vm_projects:
            raise BackupError(
                f"Drill cleanup refused: the scratch project {project!r} is missing or holds a VM of "
                f"group {self.group}; nothing was deleted"
            )
        total: dict[str, list[str]] = {"deleted": [], "refused": [], "failed": [], "left": []}
        for plan in plans:
            if plan.get("project") and (plan["project"], plan["zone"]) != (project, zone):
                total["refused"] += [
                    f"{path}: left alone, not in the scratch project and zone {project}/{zone}"
                    for path in planned_paths(plan)
                ]
        planned = {path for plan in plans for path in planned_paths(plan)}
        recorded = self._recorded(context["ti"], len(plans))
        nonces = {plan["nonce"] for plan in plans if plan.get("nonce")}
        listed_by = self.scope_labels(DRILL_KEY, run_hash)
        mine = planned & recorded if len(nonces) == 1 else set()
        labels = drill_labels(self, run_hash, next(iter(nonces))) if len(nonces) == 1 else listed_by
        done = delete_labelled(
            self.hook,
            project=project,
            zone=zone,
            labels=labels,
            listed_by=listed_by,
            paths=mine,
            request_id=self.run_key(context).request_id,
            timeout=float(self.drill["timeouts"]["cleanup"]),
        )
        for key, items in done.items():
            total[key] += items
        still = [
            VmRef(project, zone, i.name).path
            for _, i in self.hook.list_instances(project_id=project, zone=zone, filter=_filter(labels))
        ] + [
            DiskRef(project, zone, d.name).path
            for d in self.hook.list_disks(project_id=project, zone=zone, filter=_filter(labels))
        ]
        total["left"] = [path for path in still if path in mine]  # this run's, and still there
        self.log.info("Drill cleanup: deleted %s", ", ".join(total["deleted"]) or "nothing")
        for line in total["refused"]:
            self.log.warning("Drill cleanup: %s", line)
        if total["left"]:
            context["ti"].xcom_push(key="cleanup", value=total)
            raise BackupError(
                f"Drill cleanup left {len(total['left'])} resource(s) made by this run: "
                f"{', '.join(total['left'])}; failures: {'; '.join(total['failed']) or 'none'}"
            )
        return total

    def _recorded(self, ti: Any, count: int) -> set[str]:
        """Every path a try of drill_vm recorded before creating it (XCom ``drill_created``)."""
        paths: set[str] = set()
        for index in range(count):
            records: Iterable[Mapping[str, Any]] = (
                ti.xcom_pull(task_ids=VM_TASK_ID, map_indexes=index, key=CREATED_KEY) or []
            )
            paths.update(record["path"] for record in records)
        return paths


def _filter(labels: Mapping[str, str]) -> str:
    from gce_vm_backup.config.labels import label_filter

    return label_filter(labels)


class DrillReportOperator(RestoreTask):
    """All done: the drill report per VM (XCom ``drill_report``), and the run's verdict.

    Raises BackupError (the run fails, the group's notifiers fire) when a VM's drill failed or the
    cleanup failed or left something behind."""

    records_failures = False

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        plans = ti.xcom_pull(task_ids=PLAN_TASK_ID) or []
        rows = []
        for index, entry in enumerate(plans):
            plan = entry["plan"]
            result = ti.xcom_pull(task_ids=VM_TASK_ID, map_indexes=index)
            progress = result or ti.xcom_pull(task_ids=VM_TASK_ID, map_indexes=index, key=PROGRESS_KEY)
            error = ti.xcom_pull(task_ids=VM_TASK_ID, map_indexes=index, key=ERROR_XCOM_KEY)
            row = {
                "vm": plan.get("vm"),
                "snapshot_set": (plan.get("set") or {}).get("run"),
                "set_created_at": (plan.get("set") or {}).get("created_at"),
                "rpo_seconds": None,
                "rto_seconds": None,
                "result": "ok" if result and not error else "failed",
                "cause": (error or {}).get("cause") or plan.get("error"),
            }
            if progress:
                row.update(
                    {k: progress.get(k) for k in ("rpo_seconds", "rto_seconds", "running_at", "booted_at")}
                )
            if row["result"] == "failed" and not row["cause"]:
                row["cause"] = "drill_vm did not run"
            rows.append(row)
        cleanup = ti.xcom_pull(task_ids=CLEANUP_TASK_ID) or ti.xcom_pull(
            task_ids=CLEANUP_TASK_ID, key="cleanup"
        )
        cleanup_error = ti.xcom_pull(task_ids=CLEANUP_TASK_ID, key=ERROR_XCOM_KEY)
        failed = [r for r in rows if r["result"] != "ok"]
        left_alone = (cleanup or {}).get("refused") or []
        report = {
            "status": "failed" if failed or cleanup_error or cleanup is None or left_alone else "success",
            "vms": rows,
            "cleanup": cleanup,
            "cleanup_error": (cleanup_error or {}).get("cause"),
        }
        ti.xcom_push(key=DRILL_REPORT_KEY, value=report)
        lines = [format_row(r) for r in rows]
        deleted = len((cleanup or {}).get("deleted", []))
        lines.append(
            f"cleanup: {report['cleanup_error'] or f'ok, deleted {deleted}'}"
            if cleanup is not None or cleanup_error
            else "cleanup: did not run"
        )
        lines += [f"cleanup: {line}" for line in left_alone]
        self.log.info("Drill report:\n%s", "\n".join(lines))
        if report["status"] != "success":
            raise BackupError("Restore drill failed:\n" + "\n".join(lines))
        return report


def format_row(row: Mapping[str, Any]) -> str:
    """``<vm>: ok|failed, set <run> (RPO <s>s, RTO <s>s)[: cause]``."""
    name = (row.get("vm") or "?").rsplit("/", 1)[-1]
    text = (
        f"{name}: {row['result']}, set {row.get('snapshot_set') or '-'} "
        f"(RPO {_seconds(row.get('rpo_seconds'))}, RTO {_seconds(row.get('rto_seconds'))})"
    )
    return f"{text}: {row['cause']}" if row.get("cause") else text


def _seconds(value: int | None) -> str:
    return "-" if value is None else f"{value}s"
