"""The restore DAG's read-only ends: ``plan`` (what the run will do, checked before anything changes) and
``restore_report`` (what state the VM is in afterwards, in its first line).

The plan (XCom ``return_value`` and ``restore_plan``; its text under ``restore_plan_text``, which the
approval shows) is ``{"mode", "dry_run", "vm", "project", "zone", "instance", "prior_status", "run_hash",
"set": SnapshotSet.as_dict(), "disks": [{"source_snapshot", "old_source", "new_name", "new_source",
"device_name", "boot", "mode", "regional", "location", "replica_zones"}], "new_vm": {"name",
"machine_type", "network", "subnetwork"} | None}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gce_vm_backup._base import ERROR_XCOM_KEY, as_bool
from gce_vm_backup._build import init_super, set_fields
from gce_vm_backup.errors import BackupError, ConfigError, ResourceNotFoundError
from gce_vm_backup.restore_base import RestoreTask
from gce_vm_backup.restore_sets import NEWEST, attached_of, choose_set, group_filter, snapshot_sets
from gce_vm_backup.restore_steps import REPLACED_BY_KEY, RESTORE_KEY, owns, resolve_vms, resource_name

MODES = ("new-vm", "replace-disks")
FORM_KEYS = ("vm", "snapshot_set", "mode", "new_name", "machine_type", "network", "dry_run")
GCE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
MACHINE_TYPE = re.compile(r"^[a-z][-a-z0-9]{0,62}$")
NETWORK = re.compile(
    r"^([a-z][-a-z0-9]{0,61}[a-z0-9]|projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/global/networks/[a-z][-a-z0-9]{0,61}[a-z0-9])$"
)
SET_ID = re.compile(r"^[a-z0-9_-]{1,63}$")
PLAN_KEY, PLAN_TEXT_KEY, REPORT_KEY = "restore_plan", "restore_plan_text", "restore_report"


def disk_location(disk_source: str) -> dict[str, str]:
    """``{"zone": Z}`` or ``{"region": R}`` of a ``projects/P/(zones|regions)/L/disks/D`` path."""
    parts = disk_source.split("/")
    return {"region": parts[3]} if parts[2] == "regions" else {"zone": parts[3]}


def _tail(url: str | None) -> str:
    return (url or "").rsplit("/", 1)[-1]


def _path(url: str | None) -> str | None:
    return url[url.find("projects/") :] if url and "projects/" in url else None


class RestorePlanOperator(RestoreTask):
    """Setup of the restore run (read-only): check the form, find the VM and its snapshot set, plan.

    Raises ConfigError for a bad form value or conf key (naming the field), BackupError when the VM or
    the set cannot be restored as asked (why, in plain words). In a dry run the plan is all that happens.
    """

    template_fields = ("vm", "snapshot_set", "mode", "new_name", "machine_type", "network", "preview", "conf")
    targets: list[dict[str, Any]]
    vm: Any
    snapshot_set: Any
    mode: Any
    new_name: Any
    machine_type: Any
    network: Any
    preview: Any
    conf: Any

    def __init__(
        self,
        *,
        targets: list[dict[str, Any]],
        vm: Any,
        snapshot_set: Any = NEWEST,
        mode: Any = "new-vm",
        new_name: Any = None,
        machine_type: Any = None,
        network: Any = None,
        dry_run: Any = False,
        conf: Any = None,
        **kwargs: Any,
    ) -> None:
        init_super(RestorePlanOperator, self, kwargs)  # super().__init__: one apply_defaults
        set_fields(
            self,
            targets=targets,
            vm=vm,
            snapshot_set=snapshot_set,
            mode=mode,
            new_name=new_name,
            machine_type=machine_type,
            network=network,
            preview=dry_run,  # not dry_run: a BaseOperator method
            conf=conf,
        )

    def _form(self) -> dict[str, Any]:
        form = {
            "vm": self.vm or None,
            "snapshot_set": self.snapshot_set or NEWEST,
            "mode": self.mode,
            "new_name": self.new_name or None,
            "machine_type": self.machine_type or None,
            "network": self.network or None,
            "dry_run": as_bool(self.preview, name="dry_run"),
        }
        problems = []
        conf = self.conf if isinstance(self.conf, Mapping) else {}
        problems += [
            f"unknown conf key {key!r} (the form has {', '.join(FORM_KEYS)})"
            for key in sorted(set(conf) - set(FORM_KEYS))
        ]
        for key in set(conf) & set(FORM_KEYS):
            if conf[key] != form[key] and not (key == "snapshot_set" and not conf[key]):
                problems.append(f"{key}: the conf says {conf[key]!r} but the run would use {form[key]!r}")
        if not isinstance(form["vm"], str):
            problems.append("vm: choose the VM to restore (zone/instance)")
        if form["mode"] not in MODES:
            problems.append(f"mode: must be one of {', '.join(MODES)}, not {form['mode']!r}")
        if form["snapshot_set"] != NEWEST and not SET_ID.match(str(form["snapshot_set"])):
            problems.append(
                f"snapshot_set: {form['snapshot_set']!r} is not a set id (see `vm-backup backups`)"
            )
        for key, pattern in (("new_name", GCE_NAME), ("machine_type", MACHINE_TYPE), ("network", NETWORK)):
            if form[key] is not None and not (isinstance(form[key], str) and pattern.match(form[key])):
                problems.append(f"{key}: {form[key]!r} is not valid (it must match {pattern.pattern})")
        if form["mode"] == "replace-disks" and (form["new_name"] or form["machine_type"] or form["network"]):
            problems.append("new_name, machine_type and network are for mode new-vm only")
        if problems:
            raise ConfigError([f"Restore form: {p}. Nothing was done." for p in problems])
        return form

    def execute(self, context: Any) -> dict[str, Any]:
        form = self._form()
        run_hash = self.run_hash(context)
        vm = self._find_vm(form["vm"])
        project, zone, name = vm.split("/")[1], vm.split("/")[3], vm.split("/")[5]
        instance = self.hook.get_instance(project_id=project, zone=zone, name=name)
        snapshots = self.hook.list_snapshots(
            project_id=project, filter=group_filter(deployment=self.deployment, group=self.group)
        )
        sets = snapshot_sets(
            snapshots,
            group=self.group,
            deployment=self.deployment,
            vms=[vm],
            attached={vm: attached_of(instance)},  # for snapshots made before manifests (restore_sets)
        )
        chosen, why = choose_set(sets.get(vm, []), form["snapshot_set"])
        if chosen is None:
            raise BackupError(f"Cannot restore {vm}: {why}. Nothing was done.")
        attachments = {_path(d.source): d for d in instance.disks if d.type_ != "SCRATCH" and d.source}
        boot = next((p for p, d in attachments.items() if d.boot), None)
        chosen = chosen.with_boot_disk(boot if boot and chosen.for_disk(boot) else None)
        if not any(s.boot for s in chosen.snapshots) and len(chosen.disks) == 1:
            chosen = chosen.with_boot_disk(chosen.disks[0])
        problems = []
        if not any(s.boot for s in chosen.snapshots):
            problems.append(f"set {chosen.run} has no snapshot of the VM's boot disk {boot}")
        if form["mode"] == "replace-disks":
            problems += self._replace_problems(instance, attachments, chosen)
        if problems:
            raise BackupError(
                f"Cannot restore {vm} ({form['mode']}): {'; '.join(problems)}. Nothing was done."
            )
        disks = []
        for snapshot in sorted(chosen.snapshots, key=lambda s: (not s.boot, s.disk_source)):
            if chosen.for_disk(snapshot.disk_source) is not snapshot:
                continue  # a disk with two READY snapshots in one set: the newest one only
            attached = attachments.get(snapshot.disk_source)
            new_name = resource_name(
                "restored", snapshot.disk_name, f"{run_hash}|{vm}|{snapshot.disk_source}"
            )
            kind = "regions" if snapshot.regional else "zones"
            location = snapshot.disk_location if snapshot.regional else zone
            disks.append(
                {
                    "source_snapshot": f"projects/{project}/global/snapshots/{snapshot.name}",
                    "old_source": snapshot.disk_source,
                    "new_name": new_name,
                    "new_source": f"projects/{project}/{kind}/{location}/disks/{new_name}",
                    "device_name": attached.device_name if attached else snapshot.disk_name,
                    "boot": bool(snapshot.boot),
                    "mode": (attached.mode if attached else None) or "READ_WRITE",
                    "regional": snapshot.regional,
                    "location": location,
                    "replica_zones": self._replica_zones(project, snapshot) if snapshot.regional else None,
                }
            )
        plan = {
            "mode": form["mode"],
            "dry_run": form["dry_run"],
            "vm": vm,
            "project": project,
            "zone": zone,
            "instance": name,
            "prior_status": instance.status,
            "run_hash": run_hash,
            "set": chosen.as_dict(),
            "disks": disks,
            "new_vm": self._new_vm(form, instance, project, zone, run_hash)
            if form["mode"] == "new-vm"
            else None,
        }
        text = plan_text(plan)
        self.log.info("Restore plan:\n%s", text)
        context["ti"].xcom_push(key=PLAN_KEY, value=plan)
        context["ti"].xcom_push(key=PLAN_TEXT_KEY, value=text)
        return plan

    def _find_vm(self, wanted: str) -> str:
        zone, _, instance = wanted.rpartition("/")
        candidates = [
            vm
            for vm in resolve_vms(self.hook, self.targets)
            if vm.rsplit("/", 1)[-1] == instance and (not zone or vm.split("/")[3] == zone)
        ]
        if len(candidates) != 1:
            found = (
                "no VM"
                if not candidates
                else f"{len(candidates)} VMs ({', '.join(candidates)}): write zone/instance"
            )
            raise ConfigError(
                f"Restore form: vm: {wanted!r} matches {found} of group {self.group}. Nothing was done."
            )
        return candidates[0]

    @staticmethod
    def _replace_problems(instance: Any, attachments: Mapping[str | None, Any], chosen: Any) -> list[str]:
        problems = []
        if instance.status not in ("RUNNING", "TERMINATED"):
            problems.append(
                f"the VM is {instance.status}; replace-disks starts only from RUNNING or TERMINATED"
            )
        if any(d.type_ == "SCRATCH" for d in instance.disks):
            problems.append("the VM has local SSDs, whose data a stop would lose; use mode new-vm")
        missing = sorted(p for p in attachments if p is not None and p not in chosen.disks)
        if missing:
            problems.append(
                f"set {chosen.run} has no snapshot of attached disk(s) {', '.join(missing)}; use mode "
                "new-vm, or detach them first"
            )
        gone = sorted(d for d in chosen.disks if d not in attachments)
        if gone:
            problems.append(
                f"disk(s) {', '.join(gone)} of set {chosen.run} are no longer attached; use mode new-vm"
            )
        return problems

    def _replica_zones(self, project: str, snapshot: Any) -> list[str] | None:
        disk = self.hook.get_disk(project_id=project, region=snapshot.disk_location, name=snapshot.disk_name)
        if disk is None or not disk.replica_zones:
            raise BackupError(
                f"Cannot restore regional disk {snapshot.disk_source}: it is gone, so its replica zones are "
                "unknown. Nothing was done."
            )
        return [_path(z) or z for z in disk.replica_zones]

    def _new_vm(
        self, form: Mapping[str, Any], instance: Any, project: str, zone: str, run_hash: str
    ) -> dict[str, Any]:
        name = form["new_name"] or resource_name(instance.name, "restored", f"{run_hash}|{instance.name}")
        interface = instance.network_interfaces[0] if instance.network_interfaces else None
        new_vm = {
            "name": name,
            "machine_type": form["machine_type"] or _tail(instance.machine_type),
            "network": form["network"] or _path(interface.network if interface else None) or "default",
            "subnetwork": None if form["network"] else _path(interface.subnetwork if interface else None),
        }
        try:
            existing = self.hook.get_instance(project_id=project, zone=zone, name=name)
        except ResourceNotFoundError:
            existing = None
        if existing is not None and not owns(existing.labels, self.scope_labels(RESTORE_KEY, run_hash)):
            raise BackupError(
                f"Cannot restore as new VM {name}: a VM of that name exists in {zone}. Nothing was done."
            )
        return new_vm


def plan_text(plan: Mapping[str, Any]) -> str:
    """The plan in words (the log, the approval's body)."""
    lines = [
        f"{'DRY RUN - ' if plan['dry_run'] else ''}Restore {plan['vm']} ({plan['mode']}, "
        f"VM now {plan['prior_status']}) "
        f"from snapshot set {plan['set']['run']} of {plan['set']['created_at']}:"
    ]
    for disk in plan["disks"]:
        lines.append(
            f"- device {disk['device_name']}{' (boot)' if disk['boot'] else ''}: "
            f"new disk {disk['new_source']} "
            f"from {disk['source_snapshot']}"
            + (
                f", replacing {disk['old_source']} (kept, detached)"
                if plan["mode"] == "replace-disks"
                else ""
            )
        )
    if plan["new_vm"]:
        vm = plan["new_vm"]
        lines.append(
            f"- new VM {vm['name']} in {plan['zone']}: {vm['machine_type']}, network {vm['network']}"
            f"{', subnetwork ' + vm['subnetwork'] if vm['subnetwork'] else ''}, no external IP"
        )
    else:
        lines.append(
            "- the VM is stopped, its disks swapped (same device names, boot flag and mode), "
            + ("then started again" if plan["prior_status"] == "RUNNING" else "and left stopped, as it was")
            + "; "
            f"the old disks get the label {REPLACED_BY_KEY}={plan['run_hash']} and are never deleted"
        )
    return "\n".join(lines)


class RestoreReportOperator(RestoreTask):
    """All done: the restore report (XCom ``restore_report``: ``{"state", "lines", "status"}``), whose first
    line is the exact state of the VM now. Raises BackupError (the run fails, notifiers fire) when the
    restore did not end as planned."""

    records_failures = False

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        plan = ti.xcom_pull(task_ids="plan", key=PLAN_KEY)
        errors = {
            task: (ti.xcom_pull(task_ids=task, key=ERROR_XCOM_KEY) or {}).get("cause")
            for task in (
                "plan",
                "new_vm_disks",
                "create_vm",
                "create_disks",
                "stop",
                "swap_disks",
                "start",
                "ensure_vm",
            )
        }
        causes = [cause for cause in errors.values() if cause]
        report: dict[str, Any]
        if plan is None:
            report = {
                "state": f"Nothing was changed: {errors['plan'] or 'the plan did not run'}",
                "lines": [],
                "status": "failed",
            }
        elif plan["dry_run"]:
            report = {
                "state": f"Dry run: nothing was changed ({plan['vm']} is {plan['prior_status']})",
                "lines": plan_text(plan).splitlines(),
                "status": "success",
            }
        elif plan["mode"] == "new-vm":
            report = self._new_vm_report(plan, causes)
        else:
            approval = ti.xcom_pull(task_ids="approve") or {}
            report = self._replace_report(plan, causes, approval)
        report["lines"] = [*report["lines"], *(f"problem: {c}" for c in causes)]
        ti.xcom_push(key=REPORT_KEY, value=report)
        text = "\n".join([report["state"], *report["lines"]])
        self.log.info("Restore report:\n%s", text)
        if report["status"] != "success":
            raise BackupError(text)
        return report

    def _get(self, plan: Mapping[str, Any], name: str) -> Any:
        try:
            return self.hook.get_instance(project_id=plan["project"], zone=plan["zone"], name=name)
        except ResourceNotFoundError:
            return None

    def _new_vm_report(self, plan: Mapping[str, Any], causes: list[str]) -> dict[str, Any]:
        name = plan["new_vm"]["name"]
        path = f"projects/{plan['project']}/zones/{plan['zone']}/instances/{name}"
        vm = self._get(plan, name)
        if vm is None:
            return {
                "state": f"New VM {path} was not created; {plan['vm']} was not touched",
                "lines": [],
                "status": "failed",
            }
        ok = vm.status == "RUNNING" and not causes
        return {
            "state": f"New VM {path} is {vm.status} with the disks restored from set {plan['set']['run']}; "
            f"{plan['vm']} was not touched",
            "lines": [f"- {d.device_name}: {_path(d.source)}" for d in vm.disks],
            "status": "success" if ok else "failed",
        }

    def _replace_report(
        self, plan: Mapping[str, Any], causes: list[str], approval: Mapping[str, Any]
    ) -> dict[str, Any]:
        vm = self._get(plan, plan["instance"])
        if vm is None:
            return {"state": f"VM {plan['vm']} does not exist any more", "lines": [], "status": "failed"}
        by_device = {d.device_name: d for d in vm.disks}
        rows, kinds = [], set()
        for disk in plan["disks"]:
            attached = by_device.get(disk["device_name"])
            source = _path(attached.source) if attached else None
            kind = (
                "new"
                if source == disk["new_source"]
                else "old"
                if source == disk["old_source"]
                else "none"
                if source is None
                else "other"
            )
            kinds.add(kind)
            rows.append(
                f"- device {disk['device_name']}{' (boot)' if disk['boot'] else ''}: "
                f"{kind} ({source or 'nothing attached'})"
            )
        has_boot = any(d.boot for d in vm.disks)
        if "Approve" not in (approval.get("chosen_options") or []) and kinds == {"old"}:
            return {
                "state": f"Not approved: nothing was changed; {plan['vm']} is {vm.status} with its OLD disks",
                "lines": rows,
                "status": "success" if vm.status == plan["prior_status"] else "failed",
            }
        if not has_boot:
            boot = next(d for d in plan["disks"] if d["boot"])
            state = (
                f"VM {plan['vm']} is {vm.status} with NO boot disk attached: attach {boot['old_source']} "
                f"(gcloud compute instances attach-disk {plan['instance']} --zone {plan['zone']} --disk "
                f"{boot['old_source'].rsplit('/', 1)[-1]} --device-name {boot['device_name']} --boot), "
                "then start it"
            )
        elif kinds == {"new"}:
            state = (
                f"VM {plan['vm']} is {vm.status} with its NEW disks (restored from set {plan['set']['run']})"
            )
        elif kinds == {"old"}:
            state = f"VM {plan['vm']} is {vm.status} with its OLD disks (nothing was swapped)"
        else:
            state = f"VM {plan['vm']} is {vm.status} with a MIX of disks: " + "; ".join(r[2:] for r in rows)
        if vm.status != "RUNNING" and plan["prior_status"] == "RUNNING":
            state += (
                f"; it was RUNNING before: gcloud compute instances start {plan['instance']} "
                f"--zone {plan['zone']}"
            )
        lines = [
            *rows,
            f"- the old disks are kept (label {REPLACED_BY_KEY}={plan['run_hash']} on those detached); "
            "nothing was deleted",
        ]
        ok = kinds == {"new"} and has_boot and vm.status == plan["prior_status"] and not causes
        return {"state": state, "lines": lines, "status": "success" if ok else "failed"}
