"""The restore DAG's read-only ends: ``plan`` (what the run will do, checked before anything changes) and
``restore_report`` (what state the VM is in afterwards, in its first line).

The plan (XCom ``return_value`` and ``restore_plan``; its text under ``restore_plan_text``, which the
approval shows) is ``{"mode", "dry_run", "vm", "project", "zone", "instance", "prior_status", "run_hash",
"set": SnapshotSet.as_dict(), "disks": [{"source_snapshot", "old_source", "new_name", "new_source",
"device_name", "boot", "mode", "disk_type", "regional", "location", "replica_zones"}], "new_vm": {"name",
"machine_type", "network", "subnetwork"} | None}``.

A VM that no longer exists (``prior_status`` ``NOT_FOUND``) is rebuilt as new-vm from the chosen set's
manifest (``SnapshotSet.manifest``, see vm_manifest.py), under its old name or the form's ``new_name``:
its ``new_vm`` adds ``"rebuilt": True``, ``network_interfaces``, ``service_accounts``, ``scheduling``,
``labels``, ``tags``, ``metadata`` (the keys the manifest has a value for), ``metadata_not_restored``,
``not_recorded`` (spec parts the manifest left out) and ``disks_not_restored``. A set without a manifest
cannot rebuild a VM; replace-disks needs the VM.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gce_vm_backup.compute.paths import DiskRef, SnapshotRef, VmRef
from gce_vm_backup.errors import BackupError, ConfigError, ResourceNotFoundError
from gce_vm_backup.restore.base import RestoreTask
from gce_vm_backup.restore.sets import NEWEST, attached_of, choose_set, group_filter, snapshot_sets
from gce_vm_backup.restore.steps import (
    REPLACED_BY_KEY,
    RESTORE_KEY,
    SCHEDULING_FIELDS,
    owns,
    resolve_vms,
    resource_name,
    split_vm,
)
from gce_vm_backup.runtime.base import ERROR_XCOM_KEY, as_bool

MODES = ("new-vm", "replace-disks")
FORM_KEYS = ("vm", "snapshot_set", "mode", "new_name", "machine_type", "network", "dry_run")
GCE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
MACHINE_TYPE = re.compile(r"^[a-z][-a-z0-9]{0,62}$")
NETWORK = re.compile(
    r"^([a-z][-a-z0-9]{0,61}[a-z0-9]|projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/global/networks/[a-z][-a-z0-9]{0,61}[a-z0-9])$"
)
SET_ID = re.compile(r"^[a-z0-9_-]{1,63}$")
# The form's VM: instance, zone/instance, or the VM's path (as `vm-backup backups` prints it).
_ZONE = r"[a-z]+-[a-z]+[0-9]+-[a-z]"
FORM_VM = re.compile(
    rf"^(projects/(?P<project>[a-z][-a-z0-9]{{4,28}}[a-z0-9])/zones/(?P<path_zone>{_ZONE})/instances/"
    rf"|(?P<zone>{_ZONE})/)?(?P<instance>[a-z]([-a-z0-9]{{0,61}}[a-z0-9])?)$"
)
NOT_FOUND = "NOT_FOUND"  # the plan's prior_status of a VM that no longer exists
# What a rebuilt VM takes from a manifest, checked before anything is made (a description is text that
# anyone allowed to write snapshots could have written).
NETWORK_PATH = re.compile(r"^projects/[^/]+/global/networks/[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
SUBNETWORK_PATH = re.compile(
    r"^projects/[^/]+/regions/[a-z]+-[a-z]+[0-9]+/subnetworks/[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
)
EMAIL = re.compile(r"^[^@\s/]+@[^@\s/]+$")
METADATA_KEY = re.compile(r"^[a-zA-Z0-9_-]{1,127}$")
# The Scheduling fields a rebuild takes (restore_steps.SCHEDULING_FIELDS) and the JSON type of each.
SCHEDULING: dict[str, type] = {
    key: bool if key in ("automaticRestart", "preemptible") else str for key in SCHEDULING_FIELDS
}
MAX_LABELS = 64
PLAN_KEY, PLAN_TEXT_KEY, REPORT_KEY = "restore_plan", "restore_plan_text", "restore_report"


def disk_location(disk_source: str) -> dict[str, str]:
    """``{"zone": Z}`` or ``{"region": R}`` of a ``projects/P/(zones|regions)/L/disks/D`` path."""
    return DiskRef.parse(disk_source).where


def _form_vm(wanted: str) -> tuple[str | None, str | None, str]:
    """(project or None, zone or None, instance) of the form's VM (already checked against FORM_VM)."""
    match = FORM_VM.match(wanted)
    if match is None:
        raise ConfigError(
            f"Restore form: vm: {wanted!r} is not zone/instance or a VM path. Nothing was done."
        )
    return match["project"], match["path_zone"] or match["zone"], match["instance"]


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
        super().__init__(**kwargs)
        self.targets = targets
        self.vm = vm
        self.snapshot_set = snapshot_set
        self.mode = mode
        self.new_name = new_name
        self.machine_type = machine_type
        self.network = network
        self.preview = dry_run  # not dry_run: a BaseOperator method
        self.conf = conf

    def _form(self) -> dict[str, Any]:
        form = {
            "vm": self.vm or None,
            "snapshot_set": self.snapshot_set or NEWEST,
            "mode": self.mode,
            "new_name": self.new_name or None,
            "machine_type": self.machine_type or None,
            "network": self.network or None,
            "dry_run": as_bool(False if self.preview is None else self.preview, name="dry_run"),
        }
        problems = []
        conf = self.conf if isinstance(self.conf, Mapping) else {}
        problems += [
            f"unknown conf key {key!r} (the form has {', '.join(FORM_KEYS)})"
            for key in sorted(set(conf) - set(FORM_KEYS))
        ]
        for key in set(conf) & set(FORM_KEYS):
            # an empty optional field: the newest set, not a dry run
            empty = not conf[key] if key == "snapshot_set" else key == "dry_run" and conf[key] is None
            empty = empty and form[key] == {"snapshot_set": NEWEST, "dry_run": False}.get(key)
            if conf[key] != form[key] and not empty:
                problems.append(f"{key}: the conf says {conf[key]!r} but the run would use {form[key]!r}")
        if not isinstance(form["vm"], str):
            problems.append("vm: choose the VM to restore (zone/instance)")
        elif not FORM_VM.match(form["vm"]):
            problems.append(
                f"vm: {form['vm']!r} is not instance, zone/instance or projects/P/zones/Z/instances/I"
            )
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
        self._snapshots_by_project: dict[str, list[Any]] = {}
        form = self._form()
        run_hash = self.run_hash(context)
        vm, sets = self._find_vm(form["vm"])
        project, zone, name = split_vm(vm)
        try:
            instance = self.hook.get_instance(project_id=project, zone=zone, name=name)
        except ResourceNotFoundError:
            instance = None
        if instance is not None:
            # the live VM's attached disks admit its snapshots made before manifests (restore_sets)
            sets = self._sets(project, [vm], attached={vm: attached_of(instance)}).get(vm, [])
        if instance is None and not sets:
            raise BackupError(
                f"Cannot rebuild {vm}: it does not exist any more, and no snapshot set of group {self.group} "
                "records it (snapshots made before sets carried the VM's manifest count only for a VM that "
                "still has their disks attached). Nothing was done."
            )
        if instance is None and form["mode"] == "replace-disks":
            raise BackupError(
                f"Cannot restore {vm} (replace-disks): the VM does not exist any more, so it has no disks "
                "to replace; restore it with mode new-vm (under its old name or a new one). Nothing was done."
            )
        chosen, why = choose_set(sets, form["snapshot_set"])
        if chosen is None:
            raise BackupError(f"Cannot restore {vm}: {why}. Nothing was done.")
        new_vm: dict[str, Any] | None
        if instance is None:
            chosen, disks, new_vm = self._rebuild(form, vm, chosen, run_hash)
        else:
            chosen, disks = self._restore_disks(form, vm, instance, chosen, run_hash)
            new_vm = (
                self._new_vm(form, instance, project, zone, run_hash) if form["mode"] == "new-vm" else None
            )
        plan = {
            "mode": form["mode"],
            "dry_run": form["dry_run"],
            "vm": vm,
            "project": project,
            "zone": zone,
            "instance": name,
            "prior_status": instance.status if instance is not None else NOT_FOUND,
            "run_hash": run_hash,
            "set": chosen.as_dict(),
            "disks": disks,
            "new_vm": new_vm,
        }
        text = plan_text(plan)
        self.log.info("Restore plan:\n%s", text)
        context["ti"].xcom_push(key=PLAN_KEY, value=plan)
        context["ti"].xcom_push(key=PLAN_TEXT_KEY, value=text)
        return plan

    def _restore_disks(
        self, form: Mapping[str, Any], vm: str, instance: Any, chosen: Any, run_hash: str
    ) -> tuple[Any, list[dict[str, Any]]]:
        """The set's disks for a VM that exists: device names, boot flag and mode from its attachments."""
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
        for snapshot in self._newest_per_disk(chosen):
            attached = attachments.get(snapshot.disk_source)
            disks.append(
                self._disk(
                    vm,
                    snapshot,
                    run_hash,
                    device_name=attached.device_name if attached else snapshot.disk_name,
                    mode=(attached.mode if attached else None) or "READ_WRITE",
                    disk_type=None,
                )
            )
        return chosen, disks

    def _rebuild(
        self, form: Mapping[str, Any], vm: str, chosen: Any, run_hash: str
    ) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
        """A VM that no longer exists, rebuilt from the set's manifest: its disks (device names, boot
        flag, mode and type as recorded) and a VM made from the manifest's spec. BackupError when the set
        has no (usable) manifest."""
        manifest = chosen.manifest
        if manifest is None:
            raise BackupError(
                f"Cannot rebuild {vm}: it does not exist any more and snapshot set {chosen.run} was made "
                "before manifests, so it does not record the VM's machine type, network and disk layout. "
                "Nothing was done."
            )
        problems = []
        if manifest.vm.path != vm:
            problems.append(f"the manifest of set {chosen.run} is of VM {manifest.vm.path}")
        boot = manifest.boot_disk
        if boot is None or chosen.for_disk(boot.source) is None:
            problems.append(
                f"set {chosen.run} has no snapshot of the VM's boot disk"
                + (f" {boot.source}" if boot is not None else " (the manifest names none)")
            )
        else:
            chosen = chosen.with_boot_disk(boot.source)
        new_vm, spec_problems = self._rebuilt_vm(form, vm, manifest, run_hash)
        problems += spec_problems
        if problems:
            raise BackupError(f"Cannot rebuild {vm}: {'; '.join(problems)}. Nothing was done.")
        disks = []
        for snapshot in self._newest_per_disk(chosen):
            entry = manifest.disk_entry(snapshot.disk_source)
            disks.append(
                self._disk(
                    vm,
                    snapshot,
                    run_hash,
                    device_name=(entry.device if entry and entry.device else snapshot.disk_name),
                    mode=entry.mode if entry else "READ_WRITE",
                    disk_type=entry.type if entry else None,
                )
            )
        new_vm["disks_not_restored"] = sorted(
            f"{d.device} ({d.source})" for d in manifest.disks if chosen.for_disk(d.source) is None
        )
        devices = [d["device_name"] for d in disks]
        if len(set(devices)) != len(devices) or not all(GCE_NAME.match(d) for d in devices):
            raise BackupError(
                f"Cannot rebuild {vm}: the device names of set {chosen.run} ({', '.join(devices)}) are not "
                "distinct valid names. Nothing was done."
            )
        ref = VmRef.parse(vm)
        self._check_name_free(ref.project, ref.zone, new_vm["name"], run_hash)
        return chosen, disks, new_vm

    def _rebuilt_vm(
        self, form: Mapping[str, Any], vm: str, manifest: Any, run_hash: str
    ) -> tuple[dict[str, Any], list[str]]:
        """The new VM of a rebuild and the problems of the manifest's spec (each naming its field)."""
        spec = manifest.spec if isinstance(manifest.spec, Mapping) else {}
        problems = []
        cut = set(manifest.cut)
        machine_type = form["machine_type"] or spec.get("machine_type")
        if not (isinstance(machine_type, str) and MACHINE_TYPE.match(machine_type)):
            problems.append(f"the manifest's machine type {machine_type!r} is not usable: give machine_type")
        region = VmRef.parse(vm).zone.rsplit("-", 1)[0]
        interfaces: list[dict[str, str | None]]
        if form["network"]:
            interfaces = [{"network": form["network"], "subnetwork": None}]
        elif "network_interfaces" in cut or not spec.get("network_interfaces"):
            interfaces = []
            problems.append(
                "the manifest records no network interface (left out: the description was too long): "
                "give network"
            )
        else:
            interfaces = []
            for number, nic in enumerate(spec.get("network_interfaces") or []):
                network = nic.get("network") if isinstance(nic, Mapping) else None
                subnetwork = nic.get("subnetwork") if isinstance(nic, Mapping) else None
                network_ok = isinstance(network, str) and bool(NETWORK_PATH.match(network))
                subnetwork_ok = subnetwork is None or (
                    isinstance(subnetwork, str)
                    and bool(SUBNETWORK_PATH.match(subnetwork))
                    and subnetwork.split("/")[3] == region
                )
                if not (network_ok and subnetwork_ok):
                    problems.append(f"network interface {number} of the manifest ({nic!r}) is not usable")
                    continue
                interfaces.append({"network": network, "subnetwork": subnetwork})
        accounts = spec.get("service_accounts") or []
        if not isinstance(accounts, list) or not all(
            isinstance(a, Mapping)
            and isinstance(a.get("email"), str)
            and EMAIL.match(a["email"])
            and isinstance(a.get("scopes") or [], list)
            and all(isinstance(x, str) and x.startswith("https://") for x in a.get("scopes") or [])
            for a in accounts
        ):
            problems.append(f"the manifest's service accounts {accounts!r} are not usable")
            accounts = []
        scheduling = spec.get("scheduling") or {}
        if not isinstance(scheduling, Mapping) or any(
            key not in SCHEDULING or not isinstance(value, SCHEDULING[key])
            for key, value in scheduling.items()
        ):
            problems.append(f"the manifest's scheduling {scheduling!r} is not usable")
            scheduling = {}
        own = self.scope_labels(RESTORE_KEY, run_hash)
        labels = spec.get("labels") or {}
        if (
            not isinstance(labels, Mapping)
            or len({**labels, **own}) > MAX_LABELS
            or not all(
                isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 63 and len(v) <= 63
                for k, v in labels.items()
            )
        ):
            problems.append(f"the manifest's labels {labels!r} are not usable")
            labels = {}
        tags = spec.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) and GCE_NAME.match(t) for t in tags):
            problems.append(f"the manifest's network tags {tags!r} are not usable")
            tags = []
        metadata = spec.get("metadata") or {}
        if not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and METADATA_KEY.match(k) and (v is None or isinstance(v, str))
            for k, v in metadata.items()
        ):
            problems.append("the manifest's metadata is not usable")
            metadata = {}
        name = form["new_name"] or vm.rsplit("/", 1)[-1]
        new_vm = {
            "name": name,
            "rebuilt": True,
            "machine_type": machine_type,
            "network": interfaces[0]["network"] if interfaces else None,
            "subnetwork": interfaces[0]["subnetwork"] if interfaces else None,
            "network_interfaces": interfaces,
            "service_accounts": [
                {"email": a["email"], "scopes": sorted(a.get("scopes") or [])} for a in accounts
            ],
            "scheduling": dict(scheduling),
            "labels": {str(k): str(v) for k, v in labels.items() if k not in own},
            "tags": sorted(tags),
            "metadata": {k: v for k, v in sorted(metadata.items()) if v is not None},
            "metadata_not_restored": sorted(k for k, v in metadata.items() if v is None),
            "not_recorded": sorted(cut),
        }
        return new_vm, problems

    @staticmethod
    def _newest_per_disk(chosen: Any) -> list[Any]:
        """The set's snapshots, the boot disk's first; of a disk with two READY ones, the newest only."""
        return [
            snapshot
            for snapshot in sorted(chosen.snapshots, key=lambda s: (not s.boot, s.disk_source))
            if chosen.for_disk(snapshot.disk_source) is snapshot
        ]

    def _disk(
        self,
        vm: str,
        snapshot: Any,
        run_hash: str,
        *,
        device_name: str,
        mode: str,
        disk_type: str | None,
    ) -> dict[str, Any]:
        ref = VmRef.parse(vm)
        project, zone = ref.project, ref.zone
        new_name = resource_name("restored", snapshot.disk_name, f"{run_hash}|{vm}|{snapshot.disk_source}")
        location = snapshot.disk_location if snapshot.regional else zone
        return {
            "source_snapshot": SnapshotRef(project, snapshot.name).path,
            "old_source": snapshot.disk_source,
            "new_name": new_name,
            "new_source": DiskRef(project, location, new_name, regional=snapshot.regional).path,
            "device_name": device_name,
            "boot": bool(snapshot.boot),
            "mode": mode or "READ_WRITE",
            "disk_type": disk_type,
            "regional": snapshot.regional,
            "location": location,
            "replica_zones": self._replica_zones(project, snapshot) if snapshot.regional else None,
        }

    def _sets(
        self, project: str, vms: list[str], *, attached: Mapping[str, list[str]] | None = None
    ) -> dict[str, list[Any]]:
        """This group's snapshot sets in ``project``, by VM path (VMs that no longer exist included);
        ``attached``: live VMs' attached disks, for snapshots made before manifests. The snapshots are
        listed once per project and run of the plan (``_find_vm`` may need them before the VM's own)."""
        cache = self._snapshots_by_project
        if project not in cache:
            cache[project] = list(
                self.hook.list_snapshots(
                    project_id=project, filter=group_filter(deployment=self.deployment, group=self.group)
                )
            )
        return snapshot_sets(
            cache[project], group=self.group, deployment=self.deployment, vms=vms, attached=attached
        )

    def _find_vm(self, wanted: str) -> tuple[str, list[Any]]:
        """The VM path the form names, and its snapshot sets. A VM of the group's targets first; else a
        VM (that no longer exists) with snapshot sets of this group in a target project. ConfigError when
        none or several match."""
        project, zone, instance = _form_vm(wanted)

        def matches(vm: str) -> bool:
            ref = VmRef.parse(vm)
            return (
                ref.name == instance
                and (not zone or ref.zone == zone)
                and (not project or ref.project == project)
            )

        targets = resolve_vms(self.hook, self.targets)
        candidates = [vm for vm in targets if matches(vm)]
        if not candidates:
            projects = sorted({str(t["project_id"]) for t in self.targets})
            candidates = sorted(
                vm
                for p in projects
                if not project or p == project
                for vm in self._sets(p, targets)
                if VmRef.parse(vm).zone != "-" and matches(vm)
            )
        if not candidates:
            raise ConfigError(
                f"Restore form: vm: {wanted!r} matches no VM of group {self.group}: none of its targets, "
                "and no snapshot set of the group is of that VM. Nothing was done."
            )
        if len(candidates) > 1:
            raise ConfigError(
                f"Restore form: vm: {wanted!r} matches {len(candidates)} VMs ({', '.join(candidates)}) of "
                f"group {self.group}: write zone/instance or the VM's path. Nothing was done."
            )
        vm = candidates[0]
        return vm, self._sets(VmRef.parse(vm).project, targets).get(vm, [])

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
        self._check_name_free(project, zone, name, run_hash)
        return new_vm

    def _check_name_free(self, project: str, zone: str, name: str, run_hash: str) -> None:
        """BackupError when a VM named ``name`` exists in the zone and is not this run's."""
        try:
            existing = self.hook.get_instance(project_id=project, zone=zone, name=name)
        except ResourceNotFoundError:
            existing = None
        if existing is not None and not owns(existing.labels, self.scope_labels(RESTORE_KEY, run_hash)):
            raise BackupError(
                f"Cannot restore as new VM {name}: a VM of that name exists in {zone}. Nothing was done."
            )


def plan_text(plan: Mapping[str, Any]) -> str:
    """The plan in words (the log, the approval's body)."""
    gone = plan["prior_status"] == NOT_FOUND
    lines = [
        f"{'DRY RUN - ' if plan['dry_run'] else ''}{'Rebuild' if gone else 'Restore'} {plan['vm']} "
        f"({plan['mode']}, {'the VM does not exist any more' if gone else 'VM now ' + plan['prior_status']}) "
        f"from snapshot set {plan['set']['run']} of {plan['set']['created_at']}:"
    ]
    for disk in plan["disks"]:
        lines.append(
            f"- device {disk['device_name']}{' (boot)' if disk['boot'] else ''}"
            f"{', ' + disk['mode'] if disk['mode'] != 'READ_WRITE' else ''}: "
            f"new {disk['disk_type'] + ' ' if disk.get('disk_type') else ''}disk {disk['new_source']} "
            f"from {disk['source_snapshot']}"
            + (
                f", replacing {disk['old_source']} (kept, detached)"
                if plan["mode"] == "replace-disks"
                else ""
            )
        )
    if plan["new_vm"] and plan["new_vm"].get("rebuilt"):
        lines += _rebuilt_lines(plan)
    elif plan["new_vm"]:
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


def _rebuilt_lines(plan: Mapping[str, Any]) -> list[str]:
    vm = plan["new_vm"]
    nics = "; ".join(
        f"network {n['network']}" + (f", subnetwork {n['subnetwork']}" if n["subnetwork"] else "")
        for n in vm["network_interfaces"]
    )
    lines = [
        f"- VM {vm['name']} in {plan['zone']}: {vm['machine_type']}, {nics}, no external IP",
        "- service account: "
        + (", ".join(f"{a['email']} ({len(a['scopes'])} scopes)" for a in vm["service_accounts"]) or "none"),
        "- scheduling: "
        + (", ".join(f"{k}={v}" for k, v in sorted(vm["scheduling"].items())) or "the defaults"),
        "- labels: " + (", ".join(f"{k}={v}" for k, v in sorted(vm["labels"].items())) or "none"),
        "- network tags: " + (", ".join(vm["tags"]) or "none"),
        "- metadata keys restored: " + (", ".join(vm["metadata"]) or "none"),
    ]
    if vm["metadata_not_restored"]:
        lines.append(
            "- metadata keys not restored (no value in the manifest): "
            + ", ".join(vm["metadata_not_restored"])
        )
    if vm["not_recorded"]:
        lines.append(
            "- not recorded in the manifest (its description was too long), so not restored: "
            + ", ".join(vm["not_recorded"])
        )
    if vm.get("disks_not_restored"):
        lines.append(
            "- disks attached at backup time but not in this set: " + ", ".join(vm["disks_not_restored"])
        )
    lines.append(
        "- not rebuilt: external and static IPs, disk auto-delete (off on every restored disk), GPUs, local "
        "SSDs, reservations and other settings the manifest does not record"
    )
    return lines


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
            now = "does not exist" if plan["prior_status"] == NOT_FOUND else f"is {plan['prior_status']}"
            report = {
                "state": f"Dry run: nothing was changed ({plan['vm']} {now})",
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
        path = VmRef(plan["project"], plan["zone"], name).path
        vm = self._get(plan, name)
        rebuilt = bool(plan["new_vm"].get("rebuilt"))
        if vm is None:
            return {
                "state": f"New VM {path} was not created; "
                + (f"{plan['vm']} does not exist" if rebuilt else f"{plan['vm']} was not touched"),
                "lines": [f"- disk {d['new_source']} (made by this run if it exists)" for d in plan["disks"]]
                if rebuilt
                else [],
                "status": "failed",
            }
        ok = vm.status == "RUNNING" and not causes
        if rebuilt:
            state = (
                f"VM {path} (it did not exist) is {vm.status}, rebuilt from set {plan['set']['run']}"
                if path == plan["vm"]
                else f"New VM {path} is {vm.status}, rebuilt from set {plan['set']['run']} of {plan['vm']}, "
                "which does not exist"
            )
            lines = [f"- {d.device_name}: {_path(d.source)}" for d in vm.disks]
            if plan["new_vm"]["metadata_not_restored"]:
                lines.append(
                    "- metadata keys not restored (no value in the manifest): "
                    + ", ".join(plan["new_vm"]["metadata_not_restored"])
                )
            return {"state": state, "lines": lines, "status": "success" if ok else "failed"}
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
