"""Find the VMs, record their state, stop them and start them again: idempotent, bounded, slot-free.

Every mutating operator converges its VM to a desired state: observe -> act with a deterministic request
id -> observe again. Re-sending the same request returns the original operation, so a reschedule, a
retry or a crashed worker continues where the last attempt left off; nothing lives in task memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.bases.sensor import BaseSensorOperator

from gce_vm_backup._base import (
    LOCAL_SSD_CHOICES,
    WAIT_MODES,
    DeferringWait,
    HookMixin,
    RunKey,
    as_bool,
    check_choice,
    sensor_mode,
)
from gce_vm_backup._compat import AirflowSensorTimeout
from gce_vm_backup.errors import ConfigError, OperationTimeoutError, VmStateError

RESTARTABLE = "RUNNING"
# States a backup may begin from. A VM in transition (STAGING, STOPPING, REPAIRING...) is refused:
# we could not tell afterwards which state to give back.
STARTING_STATES = frozenset({"RUNNING", "TERMINATED"})
SUSPENDED_STATES = frozenset({"SUSPENDED", "SUSPENDING"})
STOPPING_STATES = frozenset({"PENDING_STOP", "STOPPING"})
WORKER_LONG_POLL = 60.0
# What a tier maps over when it has no VM this run (or in a dry run): every task passes it through.
NO_VM: dict[str, Any] = {"project_id": "", "zone": "", "instance": "", "disks": None, "carried_by": {}}
NO_VM_STATUS = "NO_VM"
TRIGGER_CONF_KEYS = ("vms", "dry_run")  # the trigger form's fields (dag_factory.trigger_params)
DRY_RUN_PLAN_KEY = "dry_run_plan"  # the XCom key of the dry run's plan (read by the run report)
NO_VM_RECORD: dict[str, Any] = {**NO_VM, "prior_status": NO_VM_STATUS, "has_local_ssd": False, "disks": []}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _vm_path(record: dict[str, Any]) -> str:
    return f"projects/{record['project_id']}/zones/{record['zone']}/instances/{record['instance']}"


def _disk_path(attached: Any) -> str:
    return str(attached.source[attached.source.find("projects/") :])


def _persistent_disks(instance: Any) -> list[str]:
    """The paths of a VM's persistent disks (local SSDs left out)."""
    return [_disk_path(disk) for disk in instance.disks if disk.type_ != "SCRATCH"]


def disk_carriers(vms: list[dict[str, Any]], disks_of: dict[str, list[str] | None]) -> dict[str, str]:
    """Which VM's backup snapshots each disk attached to several VMs of the run: disk path -> VM path.

    ``vms`` in run order (tier, then path); ``disks_of`` maps a VM path to the disks its backup covers,
    or None when they could not be read (such a VM snapshots all its disks and carries none for others,
    so a disk is never left to nobody). The carrier is the first VM in run order that has the disk:
    deterministic, so every resolve task and every retry of one computes the same answer.
    """
    carriers: dict[str, str] = {}
    for vm in vms:
        for disk in disks_of.get(_vm_path(vm)) or []:
            carriers.setdefault(disk, _vm_path(vm))
    return carriers


class ResolveTargetsOperator(HookMixin, BaseOperator):
    """Turn a group's targets into the list of VMs to back up in this run (read-only).

    :param tiers: ordered tiers, each a list of targets (a group without tiers is one tier). Every tier
        is resolved (a VM belongs to the first tier that matches it; ``only`` is checked against them all)
        but only tier ``tier`` (1-based) is returned, so each tier's mapped task group has its own list.
    :param targets: the same as one tier. A target is an explicit VM
        ``{"project_id", "zone", "instance", "disks"}`` or a label selector
        ``{"project_id", "zones": [..] | None (= all zones), "labels": {..}}``.
    :param only: names chosen in the trigger form (``instance`` or ``zone/instance``); None = all.
    :param plan_only: the dry run: log what would be stopped, snapshotted, started and (with
        ``retention``) deleted, push that plan to XCom (key ``dry_run_plan``), and return the placeholder
        only, so nothing downstream acts.
    :param retention: the group's retention policy (a dict), for the dry run's preview of deletions.
    :param deployment: this deployment's id and ``group`` the group's: the preview lists only the
        snapshots they made, as retention does.
    :param conf: the run's conf (``{{ dag_run.conf }}``): a key other than the trigger form's fields is
        refused before anything happens, so a typo (``dry-run``) never turns a dry run into a real one, and
        so is a ``dry_run`` or ``vms`` that differs from the rendered ``plan_only`` / ``only`` (Airflow's
        ``core.dag_run_conf_overrides_params = False`` leaves params at their defaults whatever the conf).
    Returns a sorted, de-duplicated list of ``{"project_id", "zone", "instance", "disks", "carried_by"}``,
    where ``carried_by`` maps each disk of the VM that an earlier VM of the run (in tier, then path order)
    also has attached to that VM's path: its backup snapshots the disk, once per run. When the tier
    has no VM this run (and in a dry run) the list is ``[NO_VM]``, a placeholder for which the precheck
    returns ``NO_VM_RECORD`` and stop, snapshot and start do nothing.
    Raises ConfigError when ``only`` names a VM that is not among the targets, or ``conf`` has an
    unknown key or asks for something else than the run would do.
    """

    template_fields: Sequence[str] = ("tiers", "only", "plan_only", "conf")

    def __init__(
        self,
        *,
        deployment: str,
        group: str,
        tiers: list[list[dict[str, Any]]] | None = None,
        targets: list[dict[str, Any]] | None = None,
        only: list[str] | str | None = None,
        plan_only: bool | str = False,
        tier: int = 1,
        retention: dict[str, Any] | None = None,
        conf: Any = None,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        from gce_vm_backup.labels import check_deployment, check_group

        super().__init__(**kwargs)
        self.deployment, self.group = check_deployment(deployment), check_group(group)
        self.retention, self.conf = retention, conf
        if (tiers is None) == (targets is None):
            raise ConfigError("ResolveTargetsOperator takes exactly one of 'tiers' or 'targets'")
        self.tiers = tiers if tiers is not None else [targets or []]
        if not 1 <= tier <= len(self.tiers):
            raise ConfigError(f"The parameter 'tier' must be between 1 and {len(self.tiers)}, not {tier}")
        self.only, self.plan_only, self.tier = only, plan_only, tier
        self.gcp_conn_id, self.impersonation_chain = gcp_conn_id, impersonation_chain
        self._listed_disks: dict[str, list[str]] = {}
        self._disks_of: dict[str, list[str] | None] = {}

    def execute(self, context: Any) -> list[dict[str, Any]]:
        unknown = sorted(set(self.conf or {}) - set(TRIGGER_CONF_KEYS)) if isinstance(self.conf, dict) else []
        if unknown:
            raise ConfigError(
                f"The run's conf has unknown key(s) {', '.join(map(repr, unknown))}; the backup DAGs take "
                f"only {', '.join(TRIGGER_CONF_KEYS)}. Nothing was done."
            )
        dry_run = as_bool(self.plan_only, name="plan_only")
        self._check_against_conf(dry_run)
        seen: set[str] = set()
        tiers: list[list[dict[str, Any]]] = []
        self._listed_disks = {}  # VM path -> disks, from the selectors' listings
        for tier in self.tiers:
            resolved: dict[str, dict[str, Any]] = {}  # VM path -> target; a VM belongs to its first tier
            for target in tier:
                for vm in self._expand(target):
                    if _vm_path(vm) not in seen:
                        resolved.setdefault(_vm_path(vm), vm)
            seen.update(resolved)
            tiers.append([resolved[key] for key in sorted(resolved)])
        selected = self._select(tiers)
        carriers = self._carriers([vm for tier in selected for vm in tier])
        vms = [
            {
                **vm,
                "carried_by": {
                    disk: carrier
                    for disk, carrier in carriers.items()
                    if carrier != _vm_path(vm) and disk in (self._disks_of.get(_vm_path(vm)) or [])
                },
            }
            for vm in selected[self.tier - 1]
        ]
        for vm in vms:
            for disk, carrier in vm["carried_by"].items():
                self.log.info(
                    "Disk %s of %s is also attached to %s, whose backup snapshots it (once per run)",
                    disk,
                    _vm_path(vm),
                    carrier,
                )
        self.log.info(
            "Tier %d of %d: %d VM(s): %s",
            self.tier,
            len(tiers),
            len(vms),
            ", ".join(f"{v['zone']}/{v['instance']}" for v in vms),
        )
        if dry_run:
            plan = self._log_plan(vms, RunKey.from_context(context))
            context["ti"].xcom_push(key=DRY_RUN_PLAN_KEY, value=plan)
            self.log.info("Dry run: tier %d's plan is logged above; nothing will be changed", self.tier)
            return [NO_VM]
        if not vms:
            self.log.info("Tier %d: no VM to back up in this run", self.tier)
            # Never map over nothing: tasks mapped over an empty or skipped list never get a state,
            # and would hold the next tier back. One placeholder that every task passes through instead.
            return [NO_VM]
        return vms

    def _check_against_conf(self, dry_run: bool) -> None:
        """Refuse to act on anything other than what the run's conf asked for.

        With ``core.dag_run_conf_overrides_params = False`` (a legal setting) the params keep their
        defaults whatever the conf says: a dry run would become a real backup of the whole group. So the
        rendered ``plan_only`` and ``only`` are compared with the conf's ``dry_run`` and ``vms``, and any
        difference fails the run here, before any API call. Raises ConfigError.
        """
        conf = self.conf if isinstance(self.conf, dict) else {}
        problems = []
        if "dry_run" in conf:
            try:
                wanted = as_bool(conf["dry_run"], name="dry_run")
            except ConfigError:
                wanted = None
            if wanted != dry_run:
                problems.append(
                    f"the conf's dry_run is {conf['dry_run']!r} but the run would act as dry_run={dry_run}"
                )
        if "vms" in conf:
            asked = conf["vms"] if isinstance(conf["vms"], list) else [conf["vms"]]
            acting = self.only if isinstance(self.only, list) else [self.only] if self.only else []
            if sorted(map(str, asked or [])) != sorted(map(str, acting)):
                problems.append(
                    f"the conf's vms is {conf['vms']!r} but the run would back up "
                    f"{', '.join(map(str, acting)) if acting else 'the whole group'}"
                )
        if problems:
            raise ConfigError(
                "Refusing to run: what this run would act on differs from its conf ("
                + "; ".join(problems)
                + "). The DAG's params did not take the conf: is core.dag_run_conf_overrides_params False "
                "in this Airflow? Nothing was done."
            )

    def _carriers(self, vms: list[dict[str, Any]]) -> dict[str, str]:
        """disk_carriers over the run's VMs, reading the disks of VMs the selectors did not list."""
        from gce_vm_backup.errors import BackupError

        self._disks_of = {}
        if len(vms) < 2:  # one VM cannot share a disk with another of this run
            return {}
        for vm in vms:
            path = _vm_path(vm)
            disks = self._listed_disks.get(path)
            if disks is None:
                try:
                    instance = self.hook.get_instance(
                        project_id=vm["project_id"], zone=vm["zone"], name=vm["instance"]
                    )
                except BackupError as exc:  # its precheck will fail with the same error
                    self.log.warning(
                        "Could not read the disks of %s (it carries no shared disk): %s", path, exc
                    )
                    self._disks_of[path] = None
                    continue
                disks = _persistent_disks(instance)
            self._disks_of[path] = [
                d for d in disks if not vm.get("disks") or d.rsplit("/", 1)[-1] in vm["disks"]
            ]
        return disk_carriers(vms, self._disks_of)

    def _expand(self, target: dict[str, Any]) -> list[dict[str, Any]]:
        if "instance" in target:
            return [
                {
                    "project_id": target["project_id"],
                    "zone": target["zone"],
                    "instance": target["instance"],
                    "disks": target.get("disks"),
                }
            ]
        from gce_vm_backup.labels import label_filter

        labels = target.get("labels") or {}
        expression = label_filter(labels)  # documented form; refuses values that would rewrite it
        zones = target.get("zones") or [None]
        found = []
        for zone in zones:
            for vm_zone, instance in self.hook.list_instances(
                project_id=target["project_id"], zone=zone, filter=expression or None
            ):
                path = f"projects/{target['project_id']}/zones/{vm_zone}/instances/{instance.name}"
                self._listed_disks[path] = _persistent_disks(instance)
                found.append(
                    {
                        "project_id": target["project_id"],
                        "zone": vm_zone,
                        "instance": instance.name,
                        "disks": None,
                    }
                )
        self.log.info(
            "Selector %s in %s matched %d VM(s)",
            labels,
            zones if zones != [None] else "all zones",
            len(found),
        )
        return found

    def _select(self, tiers: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
        if not self.only:
            return tiers
        vms = [vm for tier in tiers for vm in tier]
        names: set[str] = {str(vm["instance"]) for vm in vms} | {
            f"{vm['zone']}/{vm['instance']}" for vm in vms
        }
        unknown = [name for name in self.only if name not in names]
        if unknown:
            raise ConfigError(
                "The trigger form's 'vms' (parameter 'only') names VM(s) that are not targets of this "
                f"group: {', '.join(unknown)}. Nothing was done. Known: {', '.join(sorted(names))}"
            )
        chosen = set(self.only)
        return [
            [vm for vm in tier if vm["instance"] in chosen or f"{vm['zone']}/{vm['instance']}" in chosen]
            for tier in tiers
        ]

    def _log_plan(self, vms: list[dict[str, Any]], run: RunKey) -> list[dict[str, Any]]:
        """Log the dry run's plan per VM and return it: ``[{"vm", "status", "action", "snapshots":
        [{"disk_source", "snapshot"}], "carried_by": {disk: VM}, "would_delete": [names] | None}]``; a disk
        another VM's backup snapshots (``carried_by``) is not planned again."""
        from gce_vm_backup.naming import snapshot_name
        from gce_vm_backup.retention_ops import load_policy, preview_retention

        policy = load_policy(self.retention)
        self.log.info("DRY RUN: nothing will be changed. Plan:")
        plan = []
        for vm in vms:
            instance = self.hook.get_instance(
                project_id=vm["project_id"], zone=vm["zone"], name=vm["instance"]
            )
            running = instance.status == RESTARTABLE
            action = "stop, snapshot, start again" if running else "snapshot, leave it as it is"
            self.log.info("  %s/%s is %s: would %s", vm["zone"], vm["instance"], instance.status, action)
            planned: dict[str, str] = {}
            for disk in instance.disks:
                if disk.type_ == "SCRATCH":
                    continue
                path = disk.source[disk.source.find("projects/") :]
                name = path.rsplit("/", 1)[-1]
                if vm.get("disks") and name not in vm["disks"]:
                    continue
                if path in (vm.get("carried_by") or {}):
                    self.log.info("    disk %s -> snapshotted by %s's backup", path, vm["carried_by"][path])
                    continue
                planned[path] = snapshot_name(
                    instance=vm["instance"],
                    disk=name,
                    zone_or_region=path.split("/")[3],
                    run_time=run.run_time,
                    run_id=run.run_id,
                    scope=f"{self.deployment}/{self.group}",
                )
                self.log.info("    disk %s -> snapshot %s", path, planned[path])
            would_delete = None
            if policy is not None and planned:
                preview = preview_retention(
                    self.hook,
                    project_id=vm["project_id"],
                    planned=planned,
                    policy=policy,
                    now=datetime.now(UTC),
                    deployment=self.deployment,
                    group=self.group,
                )
                would_delete = [snapshot.name for snapshot in preview.to_delete]
                self.log.info(
                    "    retention would then delete %d old snapshot(s)%s",
                    len(would_delete),
                    (": " + ", ".join(would_delete)) if would_delete else "",
                )
            plan.append(
                {
                    "vm": _vm_path(vm),
                    "status": instance.status,
                    "action": action,
                    "snapshots": [{"disk_source": k, "snapshot": v} for k, v in planned.items()],
                    "carried_by": dict(vm.get("carried_by") or {}),
                    "would_delete": would_delete,
                }
            )
        return plan


class PrecheckInstanceOperator(HookMixin, BaseOperator):
    """Read a VM and record what the backup needs (read-only). The setup of the per-VM chain.

    Returns the InstanceRecord: project_id, zone, instance, prior_status, has_local_ssd, local_ssd and
    every attached persistent disk (or the chosen subset) with source path, boot flag, size and
    location; a disk that another VM's backup of this run snapshots (``carried_by``, from the resolve
    task: disk path -> that VM's path) carries ``"carried_by": <VM path>``, and snapshot, verify and
    retention of this VM leave it out. Raises VmStateError for a SUSPENDED VM (resuming and stopping it
    would lose its memory state, so we refuse), a VM in transition, or local SSDs without an explicit
    choice; ConfigError for a disk subset naming a disk that is not attached.
    """

    template_fields: Sequence[str] = ("project_id", "zone", "instance", "disks", "local_ssd", "carried_by")

    def __init__(
        self,
        *,
        project_id: str,
        zone: str,
        instance: str,
        disks: list[str] | None = None,
        local_ssd: str = "refuse",
        carried_by: dict[str, str] | None = None,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.project_id, self.zone, self.instance = project_id, zone, instance
        self.disks, self.local_ssd, self.carried_by = disks, local_ssd, carried_by
        self.gcp_conn_id, self.impersonation_chain = gcp_conn_id, impersonation_chain

    def execute(self, context: Any) -> dict[str, Any]:
        if not (self.project_id or self.zone or self.instance):
            # Succeed rather than skip: Airflow skips everything in the scope of a skipped setup, which
            # would include the barrier that lets the next tier go.
            self.log.info("No VM in this tier for this run (a selector matched none, or a dry run)")
            return NO_VM_RECORD
        for name in ("project_id", "zone", "instance"):
            if not getattr(self, name):
                raise ConfigError(f"The required parameter {name!r} is missing")
        check_choice(self.local_ssd, LOCAL_SSD_CHOICES, name="local_ssd")
        vm = f"projects/{self.project_id}/zones/{self.zone}/instances/{self.instance}"
        instance = self.hook.get_instance(project_id=self.project_id, zone=self.zone, name=self.instance)
        status = instance.status
        if status in SUSPENDED_STATES:
            raise VmStateError(
                f"VM {vm} is {status}. Backups refuse suspended VMs: stopping one discards its memory state. "
                "Resume it, or exclude it from the group."
            )
        if status not in STARTING_STATES:
            raise VmStateError(
                f"VM {vm} is {status} (in transition); try again when it is RUNNING or TERMINATED"
            )
        has_local_ssd = any(disk.type_ == "SCRATCH" for disk in instance.disks)
        if has_local_ssd and self.local_ssd == "refuse":
            raise VmStateError(
                f"VM {vm} has local SSDs, whose data is lost on stop unless preserved. "
                "Set local_ssd to 'discard' or 'preserve' in the config to back it up."
            )
        attached: list[dict[str, Any]] = []
        for disk in instance.disks:
            if disk.type_ == "SCRATCH":
                continue
            path = disk.source[disk.source.find("projects/") :]
            parts = path.split("/")
            attached.append(
                {
                    "name": parts[5],
                    "source": path,
                    "boot": bool(disk.boot),
                    "size_gb": int(disk.disk_size_gb or 0),
                    "location": parts[3],
                    "regional": parts[2] == "regions",
                }
            )
        if self.disks:
            known = {str(disk["name"]) for disk in attached}
            missing = [name for name in self.disks if name not in known]
            if missing:
                raise ConfigError(
                    f"The parameter 'disks' of VM {vm} names disk(s) not attached to it: "
                    f"{', '.join(missing)}. Attached: {', '.join(sorted(known))}"
                )
            attached = [disk for disk in attached if disk["name"] in self.disks]
        for entry in attached:
            carrier = (self.carried_by or {}).get(str(entry["source"]))
            if carrier and carrier != vm:
                entry["carried_by"] = carrier
        record = {
            "project_id": self.project_id,
            "zone": self.zone,
            "instance": self.instance,
            "prior_status": status,
            "has_local_ssd": has_local_ssd,
            "local_ssd": self.local_ssd,
            "disks": attached,
            "checked_at": _now(),
        }
        self.log.info(
            "VM %s is %s; disks to snapshot: %s%s",
            vm,
            status,
            ", ".join(d["source"] for d in attached if "carried_by" not in d) or "none",
            "".join(
                f"; {d['source']} is snapshotted by {d['carried_by']}'s backup"
                for d in attached
                if "carried_by" in d
            ),
        )
        return record


class ConvergeSensor(HookMixin, DeferringWait, BaseSensorOperator):
    """A sensor whose poke drives a resource towards a desired state (see the module docstring).

    ``wait_mode="defer"`` frees the worker slot between pokes by deferring on the built-in TimeDeltaTrigger
    (counted against ``max_active_tis_per_dagrun``); ``"reschedule"`` frees it by rescheduling (not
    counted); ``"worker"`` keeps the slot and long-polls the operation. ``timeout`` bounds the whole wait
    in every mode.
    """

    template_fields: Sequence[str] = ("instance_record",)
    # A timeout that Airflow may retry (OperationTimeoutError) instead of AirflowSensorTimeout, which it never
    # retries: for a wait that must be survived (bringing a VM back).
    retry_on_timeout = False

    def __init__(
        self,
        *,
        instance_record: Any,
        wait_mode: str = "defer",
        timeout: float = 3600,
        poke_interval: float = 30,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        check_choice(wait_mode, WAIT_MODES, name="wait_mode")
        super().__init__(mode=sensor_mode(wait_mode), timeout=timeout, poke_interval=poke_interval, **kwargs)
        self.instance_record, self.wait_mode = instance_record, wait_mode
        self.gcp_conn_id, self.impersonation_chain = gcp_conn_id, impersonation_chain

    @property
    def record(self) -> dict[str, Any]:
        record = self.instance_record
        if not isinstance(record, dict) or "instance" not in record:
            raise ConfigError(
                f"The parameter 'instance_record' must be the precheck's result, got {record!r} "
                "(did the precheck task run?)"
            )
        return record

    def describe(self) -> str:
        return f"VM {_vm_path(self.record)}"

    def execute(self, context: Any) -> Any:
        if self.wait_mode == "defer":
            return self.execute_deferring(context)
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            raise self._timeout_error(f" ({exc})") from exc

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any) -> Any:
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except AirflowSensorTimeout as exc:  # the deferral's own timeout (no triggerer ran it in time)
            if not self.retry_on_timeout:
                raise
            error = self._timeout_error(f" (the deferral timed out: {exc})")
            self.record_failure(context, error)
            raise error from exc

    def wait_timed_out(self, context: Any) -> Exception:
        return self._timeout_error("")

    def _timeout_error(self, suffix: str) -> Exception:
        message = (
            f"{type(self).__name__} for {self.describe()} did not finish within {self.timeout:.0f} "
            f"seconds{suffix}"
        )
        if self.retry_on_timeout:
            return OperationTimeoutError(f"{message}; the task's retry waits again")
        return AirflowSensorTimeout(message)

    def _follow(self, operation: Any) -> None:
        """Check an operation we own: raise if it failed; in worker mode long-poll it first."""
        from gce_vm_backup.operations import is_done, raise_if_failed

        if not is_done(operation) and self.wait_mode == "worker":
            operation = self.hook.get_operation(operation, wait_seconds=WORKER_LONG_POLL)
        if is_done(operation):
            raise_if_failed(operation)


class StopInstanceOperator(ConvergeSensor):
    """Stop the VM if it was RUNNING before the backup; a VM that was not running is left alone.

    Returns ``{"stopped": bool, "at": iso time}``. Raises VmStateError if the VM got suspended,
    ResourceNotFoundError if it was deleted, OperationFailedError if the stop operation failed.
    """

    def poke(self, context: Any) -> Any:
        from airflow.sdk.bases.sensor import PokeReturnValue

        record = self.record
        vm = _vm_path(record)
        if record["prior_status"] == NO_VM_STATUS:
            return PokeReturnValue(True, {"stopped": False, "at": None})
        if record["prior_status"] != RESTARTABLE:
            self.log.info("VM %s was %s before the backup: not stopping it", vm, record["prior_status"])
            return PokeReturnValue(True, {"stopped": False, "at": None})
        hook = self.hook
        args = {"project_id": record["project_id"], "zone": record["zone"], "name": record["instance"]}
        status = hook.get_instance(**args).status
        if status == "TERMINATED":
            self.log.info("VM %s is TERMINATED", vm)
            return PokeReturnValue(True, {"stopped": True, "at": _now()})
        if status in SUSPENDED_STATES:
            raise VmStateError(f"VM {vm} became {status} during the backup; refusing to stop it")
        if status in STOPPING_STATES and self.wait_mode != "worker":
            # Already on its way down: look again later instead of re-sending the stop (a write call,
            # counted against the project's write quota). A stop that failed shows as RUNNING again,
            # and the re-sent request then returns the failed operation.
            self.log.info("VM %s is %s; waiting", vm, status)
            return False
        discard = None
        if record.get("has_local_ssd"):
            discard = record.get("local_ssd") == "discard"
        run = RunKey.from_context(context)
        operation = hook.stop_instance(
            **args, request_id=run.request_id(vm, "stop"), discard_local_ssd=discard
        )
        self.log.info("VM %s is %s; stop operation %s", vm, status, operation.name)
        self._follow(operation)
        if hook.get_instance(**args).status == "TERMINATED":
            return PokeReturnValue(True, {"stopped": True, "at": _now()})
        return False


class StartInstanceOperator(ConvergeSensor):
    """Bring the VM back to RUNNING if it was RUNNING before the backup (a teardown: runs even when
    stop or snapshot failed). A VM that was stopped before stays stopped.

    Starts a TERMINATED VM, resumes a SUSPENDED one, waits out STOPPING and STAGING. The wait is bounded
    by ``timeout`` plus ``stop_timeout``: when the stop task timed out, the VM may still be shutting down
    (a long graceful shutdown), and the start must wait that out before it can start it. Its timeout is
    an OperationTimeoutError, which Airflow retries (a sensor timeout it never retries), so the VM is
    not left stopped by a shutdown slower than the bounds. Returns ``{"started": bool, "at": iso time}``.
    Raises OperationFailedError if the start operation failed, OperationTimeoutError when the bound passes.
    """

    retry_on_timeout = True

    def __init__(self, *, timeout: float = 3600, stop_timeout: float = 0, **kwargs: Any) -> None:
        super().__init__(timeout=float(timeout) + float(stop_timeout), **kwargs)
        self.stop_timeout = float(stop_timeout)

    def poke(self, context: Any) -> Any:
        from airflow.sdk.bases.sensor import PokeReturnValue

        record = self.record
        vm = _vm_path(record)
        if record["prior_status"] == NO_VM_STATUS:
            return PokeReturnValue(True, {"started": False, "at": None})
        if record["prior_status"] != RESTARTABLE:
            self.log.info("VM %s was %s before the backup: leaving it stopped", vm, record["prior_status"])
            return PokeReturnValue(True, {"started": False, "at": None})
        hook = self.hook
        args = {"project_id": record["project_id"], "zone": record["zone"], "name": record["instance"]}
        status = hook.get_instance(**args).status
        if status == RESTARTABLE:
            self.log.info("VM %s is RUNNING", vm)
            return PokeReturnValue(True, {"started": True, "at": _now()})
        run = RunKey.from_context(context)
        if status == "TERMINATED":
            operation = hook.start_instance(**args, request_id=run.request_id(vm, "start"))
        elif status == "SUSPENDED":
            operation = hook.resume_instance(**args, request_id=run.request_id(vm, "resume"))
        else:
            self.log.info("VM %s is %s; waiting before starting it", vm, status)
            return False
        self.log.info("VM %s is %s; %s operation %s", vm, status, operation.operation_type, operation.name)
        self._follow(operation)
        if hook.get_instance(**args).status == RESTARTABLE:
            return PokeReturnValue(True, {"started": True, "at": _now()})
        return False
