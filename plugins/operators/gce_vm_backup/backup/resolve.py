"""Turn a group's targets into this run's VMs (read-only), and the dry run's plan.

The resolve task of each tier expands label selectors, applies the trigger form's subset, decides which
VM's backup snapshots a disk shared by several VMs of the run, and refuses a conf that differs from what
the run would do. In a dry run it logs and pushes the plan (``plan.py`` computes the disks and the snapshot
names, as the precheck and the capture do) and returns the placeholder, so nothing downstream acts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gce_vm_backup.backup.plan import (
    NO_VM,
    RESTARTABLE,
    backed_up_disks,
    persistent_disks,
    planned_snapshot_name,
    vm_path,
)
from gce_vm_backup.compute.paths import VmRef
from gce_vm_backup.errors import ConfigError
from gce_vm_backup.runtime.base import ComputeOperator, RunKey, as_bool, refuse_backfill

TRIGGER_CONF_KEYS = ("vms", "dry_run")  # the trigger form's fields (dag_factory.trigger_params)
DRY_RUN_PLAN_KEY = "dry_run_plan"  # the XCom key of the dry run's plan (read by the run report)


def disk_carriers(vms: list[dict[str, Any]], disks_of: dict[str, list[str] | None]) -> dict[str, str]:
    """Which VM's backup snapshots each disk attached to several VMs of the run: disk path -> VM path.

    ``vms`` in run order (tier, then path); ``disks_of`` maps a VM path to the disks its backup covers,
    or None when they could not be read (such a VM snapshots all its disks and carries none for others,
    so a disk is never left to nobody). The carrier is the first VM in run order that has the disk:
    deterministic, so every resolve task and every retry of one computes the same answer.
    """
    carriers: dict[str, str] = {}
    for vm in vms:
        for disk in disks_of.get(vm_path(vm)) or []:
            carriers.setdefault(disk, vm_path(vm))
    return carriers


def _unset_is_false(value: Any) -> Any:
    """The form's optional ``dry_run`` left null (empty) is not a dry run."""
    return False if value is None else value


class ResolveTargetsOperator(ComputeOperator):
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
    :param chain: the stages each VM of the tier runs (``stages.vm_chain``'s ids, from the DAG factory),
        named in the dry run's plan.
    :param max_concurrent_vms: set on every tier of a tiered group, whose VMs are all down at once (outer
        tiers stay down until the inner ones are back). Tier 1 refuses a run with more VMs than this
        before anything is stopped. A later tier counts again at its own run time, since its selectors
        may match more VMs than at tier 1's check: its VMs, with those the outer tiers' resolve tasks
        returned (kept down until this tier is back), more than this are refused before any VM of the
        tier is stopped.
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
    Raises ConfigError when ``only`` names a VM that is not among the targets, ``conf`` has an
    unknown key or asks for something else than the run would do, or a tiered group's run (or this tier
    with the VMs the outer tiers keep down) has more VMs than ``max_concurrent_vms``.
    """

    template_fields: Sequence[str] = ("tiers", "only", "plan_only", "conf")
    deployment: str
    group: str
    retention: dict[str, Any] | None
    conf: Any
    max_concurrent_vms: int | None
    tiers: list[list[dict[str, Any]]]
    only: list[str] | str | None
    plan_only: bool | str
    tier: int
    chain: list[str]
    _listed_disks: dict[str, list[str]]
    _disks_of: dict[str, list[str] | None]

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
        max_concurrent_vms: int | None = None,
        chain: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        from gce_vm_backup.config.labels import check_deployment, check_group

        super().__init__(**kwargs)
        deployment, group = check_deployment(deployment), check_group(group)
        if (tiers is None) == (targets is None):
            raise ConfigError("ResolveTargetsOperator takes exactly one of 'tiers' or 'targets'")
        tiers = tiers if tiers is not None else [targets or []]
        if not 1 <= tier <= len(tiers):
            raise ConfigError(f"The parameter 'tier' must be between 1 and {len(tiers)}, not {tier}")
        self.deployment = deployment
        self.group = group
        self.retention = retention
        self.conf = conf
        self.max_concurrent_vms = max_concurrent_vms
        self.tiers = tiers
        self.only = only
        self.plan_only = plan_only
        self.tier = tier
        self.chain = list(chain)
        self._listed_disks = {}
        self._disks_of = {}

    def execute(self, context: Any) -> list[dict[str, Any]]:
        refuse_backfill(context)  # before anything else: every tier's VMs come from here
        unknown = sorted(set(self.conf or {}) - set(TRIGGER_CONF_KEYS)) if isinstance(self.conf, dict) else []
        if unknown:
            raise ConfigError(
                f"The run's conf has unknown key(s) {', '.join(map(repr, unknown))}; the backup DAGs take "
                f"only {', '.join(TRIGGER_CONF_KEYS)}. Nothing was done."
            )
        dry_run = as_bool(_unset_is_false(self.plan_only), name="plan_only")
        self._check_against_conf(dry_run)
        seen: set[str] = set()
        tiers: list[list[dict[str, Any]]] = []
        self._listed_disks = {}  # VM path -> disks, from the selectors' listings
        for tier in self.tiers:
            resolved: dict[str, dict[str, Any]] = {}  # VM path -> target; a VM belongs to its first tier
            for target in tier:
                for vm in self._expand(target):
                    if vm_path(vm) not in seen:
                        resolved.setdefault(vm_path(vm), vm)
            seen.update(resolved)
            tiers.append([resolved[key] for key in sorted(resolved)])
        selected = self._select(tiers)
        total = sum(len(tier) for tier in selected)
        if self.max_concurrent_vms is not None and self.tier == 1 and total > self.max_concurrent_vms:
            raise ConfigError(
                f"Group {self.group}: this run has {total} VMs in {len(selected)} tiers, more than its "
                f"max_concurrent_vms of {self.max_concurrent_vms}. A tiered group keeps every tier down "
                "until the inner tiers are back, so all its VMs are down at once: raise max_concurrent_vms "
                "to at least the number of VMs, or back up fewer VMs per run. Nothing was stopped."
            )
        if self.max_concurrent_vms is not None and self.tier > 1:
            self._check_kept_down(context, selected)
        carriers = self._carriers([vm for tier in selected for vm in tier])
        vms = [
            {
                **vm,
                "carried_by": {
                    disk: carrier
                    for disk, carrier in carriers.items()
                    if carrier != vm_path(vm) and disk in (self._disks_of.get(vm_path(vm)) or [])
                },
            }
            for vm in selected[self.tier - 1]
        ]
        for vm in vms:
            for disk, carrier in vm["carried_by"].items():
                self.log.info(
                    "Disk %s of %s is also attached to %s, whose backup snapshots it (once per run)",
                    disk,
                    vm_path(vm),
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

    def _check_kept_down(self, context: Any, selected: list[list[dict[str, Any]]]) -> None:
        """Refuse this tier when its VMs and those the outer tiers keep down exceed the cap.

        The outer tiers' VMs are what their resolve tasks returned (their tasks stopped those and keep them
        down until this tier is back); a result that cannot be read counts as the tier resolves now. A VM
        in both is counted once. Raises ConfigError naming the group, the tier, the counts and the cap.
        """
        from gce_vm_backup.backup.stages import resolve_task

        ti = context["ti"]
        kept: set[str] = set()
        for number in range(1, self.tier):
            returned = ti.xcom_pull(task_ids=resolve_task(number))
            vms = returned if isinstance(returned, list) and returned else selected[number - 1]
            kept.update(vm_path(vm) for vm in vms if isinstance(vm, dict) and vm.get("instance"))
        mine = {vm_path(vm) for vm in selected[self.tier - 1]}
        total = len(kept | mine)
        if self.max_concurrent_vms is not None and total > self.max_concurrent_vms:
            outer = "tier 1" if self.tier == 2 else f"tiers 1-{self.tier - 1}"
            raise ConfigError(
                f"Group {self.group}: tier {self.tier} has {len(mine)} VM(s) this run and {outer} keep "
                f"{len(kept)} VM(s) down until it is back: {total} VMs down at once, more than its "
                f"max_concurrent_vms of {self.max_concurrent_vms} (a label selector matches more VMs now "
                f"than at tier 1's check). Nothing of tier {self.tier} was stopped; the outer tiers' VMs "
                "are started again by their start tasks. Raise max_concurrent_vms, or back up fewer VMs "
                "per run."
            )

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
                wanted = as_bool(_unset_is_false(conf["dry_run"]), name="dry_run")
            except ConfigError:
                wanted = None
            if wanted != dry_run:
                problems.append(
                    f"the conf's dry_run is {conf['dry_run']!r} but the run would act as dry_run={dry_run}"
                )
        if "vms" in conf:
            # null: the form's cleared multi-select, the whole group as an empty list is
            asked = (
                conf["vms"] if isinstance(conf["vms"], list) else [] if conf["vms"] is None else [conf["vms"]]
            )
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
            path = vm_path(vm)
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
                disks = persistent_disks(instance)
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
        from gce_vm_backup.config.labels import label_filter

        labels = target.get("labels") or {}
        expression = label_filter(labels)  # documented form; refuses values that would rewrite it
        zones = target.get("zones") or [None]
        found = []
        for zone in zones:
            for vm_zone, instance in self.hook.list_instances(
                project_id=target["project_id"], zone=zone, filter=expression or None
            ):
                path = VmRef(target["project_id"], vm_zone, instance.name).path
                self._listed_disks[path] = persistent_disks(instance)
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
        from gce_vm_backup.backup.retention import load_policy, preview_retention

        policy = load_policy(self.retention)
        self.log.info("DRY RUN: nothing will be changed. Plan:")
        if self.chain:
            self.log.info("  each VM of tier %d would run: %s", self.tier, " -> ".join(self.chain))
        plan = []
        for vm in vms:
            instance = self.hook.get_instance(
                project_id=vm["project_id"], zone=vm["zone"], name=vm["instance"]
            )
            running = instance.status == RESTARTABLE
            action = "stop, snapshot, start again" if running else "snapshot, leave it as it is"
            try:
                disks = backed_up_disks(
                    instance, vm=vm_path(vm), wanted=vm.get("disks"), carried_by=vm.get("carried_by")
                )
            except ConfigError as exc:  # the real run's precheck of this VM would refuse it the same way
                action, disks = f"refuse it: {exc}", []
            self.log.info("  %s/%s is %s: would %s", vm["zone"], vm["instance"], instance.status, action)
            planned: dict[str, str] = {}
            for disk in disks:
                if disk.get("carried_by"):
                    self.log.info(
                        "    disk %s -> snapshotted by %s's backup", disk["source"], disk["carried_by"]
                    )
                    continue
                planned[disk["source"]] = planned_snapshot_name(
                    instance=vm["instance"], disk=disk, run=run, deployment=self.deployment, group=self.group
                )
                self.log.info("    disk %s -> snapshot %s", disk["source"], planned[disk["source"]])
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
                    "vm": vm_path(vm),
                    "status": instance.status,
                    "action": action,
                    "snapshots": [{"disk_source": k, "snapshot": v} for k, v in planned.items()],
                    "carried_by": dict(vm.get("carried_by") or {}),
                    "would_delete": would_delete,
                }
            )
        return plan
