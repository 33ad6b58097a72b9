"""One backup DAG per schedule group of the config.

``build_dags`` only builds (pure, testable); ``register_dags`` loads, builds and puts the DAGs in the DAG
file's namespace. Nothing here imports a Google library or calls an API: the DAG processor runs it at
every parse.

Each DAG, per tier (task ids from stages.py): ``resolve_tier_N`` (run time: label selectors, the trigger
form's subset, the dry run) -> a mapped task group ``tier_N`` with one instance per VM: ``precheck``
(setup, records the prior state) -> ``stop_snapshot_start`` (the whole downtime in one task, at most
``max_concurrent_vms`` at once) -> ``verify`` (``convert`` in instant mode) -> ``retention`` (only with
a policy); ``ensure_running`` (teardown of the precheck) brings the VM back if it is still down,
whatever failed. In a tiered group the outer tiers run ``stop_snapshot`` and ``start`` instead: tier
N+1's VMs stop only after every VM of tier N is down and captured; tier N's VMs start again only after
every VM of tier N+1 is back (reverse order). ``run_report`` runs last, whatever happened, and fails
the run when any VM had a problem; the group's ``notify`` block becomes the DAG's
``on_failure_callback``.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param, TriggerRule, task_group

from gce_vm_backup.backup import stages
from gce_vm_backup.config.models import BackupConfig, Group, read_config
from gce_vm_backup.dags.map_index import vm_name_template
from gce_vm_backup.dags.restore import build_restore_dags
from gce_vm_backup.errors import ConfigError
from gce_vm_backup.operators import ResolveTargetsOperator, RunReportOperator, RunSignalsOperator
from gce_vm_backup.report.notify import VmDownNotice, notifiers_from_config
from gce_vm_backup.runtime.compat import allowed_run_types

log = logging.getLogger(__name__)
DAG_ID_PREFIX = "gce_vm_backup__"
STRICT_ENV = "GCE_VM_BACKUP_STRICT"
CONFIG_ENV = "GCE_VM_BACKUP_CONFIG"


VM_NAME_PATTERN = r"^([a-z]+-[a-z]+[0-9]+-[a-z]/)?[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"


def dag_id_for(group_id: str) -> str:
    return f"{DAG_ID_PREFIX}{group_id}"


# The JSON Schema dialect of the trigger form's params. Airflow checks a scheduled DAG's params against
# their schemas at every parse, and jsonschema first checks each schema against its dialect's meta-schema:
# draft-07's is about three times cheaper to check than the default (2020-12), and has every keyword the
# form uses (type, items, enum, minLength, pattern, uniqueItems, examples, title, description).
PARAM_DIALECT: dict[str, Any] = {"$schema": "http://json-schema.org/draft-07/schema#"}


# Airflow's trigger form marks a field required (and refuses to submit it empty) unless its schema's type
# is a list that includes "null" (FlexibleForm's isParamRequired, the same on Airflow 3.1.7 and 3.3): a
# default does not make a field optional. So every optional field admits null, and null means what an
# empty field says (the whole group; not a dry run).
OPTIONAL = "null"


def trigger_params(group: Group) -> dict[str, Param]:
    """The trigger form: the whole group (default), a chosen subset of VMs, or a dry run. Both fields are
    optional: an empty (null) ``vms`` is the whole group, a null ``dry_run`` a real backup."""
    names = group.explicit_vm_names()
    # "zone/instance" or "instance"; selectors' matches are checked against the targets at run time
    vm_items: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": VM_NAME_PATTERN}
    if names and not group.has_selectors():
        vm_items["enum"] = names  # the form rejects other names before a run is created
    described = ", ".join(names) if names else "VMs matched by the label selectors"
    vms_schema: dict[str, Any] = {
        "type": [OPTIONAL, "array"],  # the form sends null when the multi-select is cleared
        "items": vm_items,
        "uniqueItems": True,
        **PARAM_DIALECT,
    }
    if names:
        vms_schema["examples"] = names  # renders as a multi-select in the trigger form
    return {
        "vms": Param(
            [],
            title="VMs to back up",
            description=f"Leave empty to back up the whole group. Names: zone/instance ({described}).",
            **vms_schema,
        ),
        "dry_run": Param(
            False,
            type=[OPTIONAL, "boolean"],
            title="Dry run",
            **PARAM_DIALECT,
            description="Show what would be stopped, snapshotted and started; change nothing.",
        ),
    }


def _doc(group_id: str, group: Group, source: str, deployment: str) -> str:
    tiers = "\n".join(
        f"- tier {n}: "
        + ", ".join(
            getattr(t, "display_name", None) or f"labels {dict(getattr(t, 'labels', {}))} in {t.project}"
            for t in tier
        )
        for n, tier in enumerate(group.tier_list, start=1)
    )
    return (
        f"### Backup group `{group_id}`\n\n{group.description}\n\n"
        f"Generated from `{source}` by gce-vm-backup (deployment `{deployment}`).\n\n{tiers}\n\n"
        f"At most {group.max_concurrent_vms} VMs down at once; slot-free waits: `{group.wait_mode}`."
    )


def build_dag(group_id: str, group: Group, *, source: str, deployment: str) -> DAG:
    """The DAG of one group of the deployment ``deployment``. Raises nothing for a validated group."""
    cap = group.max_concurrent_vms
    common: dict[str, Any] = {"gcp_conn_id": group.gcp_conn_id}
    # The slot-free waits (verify, convert): the group's wait mode. They keep no VM down, so the cap does
    # not bound them (a capped convert or verify only queues behind the others and lengthens the run);
    # only in wait_mode "worker", where every wait holds a worker slot, do they stay within the cap.
    slot_free: dict[str, Any] = {
        **common,
        "wait_mode": group.wait_mode,
        "deferrable": group.wait_mode == "defer",  # the provider convention's flag, as the mode says
        "poke_interval": group.poke_interval,
        **({"max_active_tis_per_dagrun": cap} if group.wait_mode == "worker" else {}),
    }
    # BaseNotifier instances are the callbacks (called with the context); none without a notify block
    callbacks: list[Any] = list(notifiers_from_config(group.notify))
    with DAG(
        dag_id=dag_id_for(group_id),
        description=group.description or f"Back up the VMs of group {group_id}",
        schedule=group.schedule,
        start_date=group.start_date,
        catchup=False,
        max_active_runs=1,
        # Room for the downtime tries (twice the cap: those started ahead) and as many running verifies,
        # plus the other tasks (prechecks, ensure_running, retention); Airflow's default of 16 would bind
        # before a cap of 8 or more. Deferred and rescheduled waits hold no slot here (Airflow counts
        # queued and running).
        max_active_tasks=3 * cap + 16,
        render_template_as_native_obj=True,
        tags=["gce-vm-backup", *group.tags],
        doc_md=_doc(group_id, group, source, deployment),
        default_args={
            "owner": group.owner,
            "retries": group.retries,
            "retry_delay": group.retry_timedelta,
            # Later stages first: a VM's verify and retention, and a retry bringing a VM back, go before
            # another VM's downtime (Airflow's default, downstream, does the opposite).
            "weight_rule": "upstream",
        },
        on_failure_callback=callbacks or None,
        # No backfill: a run stops the VMs now, whatever date it is for (the first task refuses one too).
        **allowed_run_types("scheduled", "manual"),
    ) as dag:
        tiers = [[target.as_operator_target() for target in tier] for tier in group.tier_list]
        retention = group.retention.model_dump() if group.retention is not None else None
        previous: int | None = None
        for number in range(1, len(tiers) + 1):
            resolve = ResolveTargetsOperator(
                task_id=stages.resolve_task(number),
                tiers=tiers,
                tier=number,
                only="{{ params.vms }}",
                plan_only="{{ params.dry_run }}",
                retention=retention,
                conf="{{ dag_run.conf }}",
                deployment=deployment,
                group=group_id,
                # A tiered group keeps its whole stack down at once: more VMs than the cap is refused, by
                # tier 1 for the whole run and by each later tier for its VMs at its own run time (a
                # selector may match more then) with those the outer tiers keep down.
                max_concurrent_vms=cap if len(tiers) > 1 else None,
                chain=[stage.id for stage in _chain(group, innermost=number == len(tiers))],
                **common,
            )
            innermost = number == len(tiers)
            tier_group = _tier_group(
                number, innermost, group_id, group, common, slot_free, deployment, len(tiers)
            )
            tier_group.expand_kwargs(resolve.output)
            if previous is not None:
                # Tier order goes through plain (unmapped) barrier tasks: a tier that maps to no VM this
                # run is skipped, and must not hold the next tier back. A failed stop still does.
                stopped = EmptyOperator(
                    task_id=stages.tier_stopped_task(previous), trigger_rule=TriggerRule.NONE_FAILED
                )
                started = EmptyOperator(
                    task_id=stages.tier_started_task(number), trigger_rule=TriggerRule.ALL_DONE
                )
                # tier N is down and captured before tier N+1 stops
                dag.get_task(stages.tier_task(previous, stages.STOP_SNAPSHOT)) >> stopped >> resolve
                # tier N+1 is back (its ensure_running, whatever happened) before tier N starts
                ensure = dag.get_task(stages.tier_task(number, stages.ENSURE_RUNNING))
                ensure >> started >> dag.get_task(stages.tier_task(previous, stages.START))
            previous = number
        vm_groups = [stages.tier_group(number) for number in range(1, len(tiers) + 1)]
        # Each VM's log line, metrics and Asset event (docs/metrics.md): after every VM task, before the
        # report (which stays the only leaf, and sees it fail).
        signals = RunSignalsOperator(
            task_id=stages.SIGNALS, vm_groups=vm_groups, deployment=deployment, group=group_id, **common
        )
        [task for task in dag.tasks if task is not signals and not task.is_setup] >> signals
        report = RunReportOperator(
            task_id=stages.REPORT,
            vm_groups=vm_groups,
            max_concurrent_vms=group.max_concurrent_vms,
            **common,
        )
        # After every task, not only the leaves: a VM's ensure_running (a teardown) can still be bringing
        # it back after its retention went upstream_failed, and the report must see how that ended. Setup
        # tasks (precheck) are left out: Airflow allows only all_success after a setup, and they are
        # upstream of everything in their VM's group anyway.
        [task for task in dag.tasks if task is not report and not task.is_setup] >> report
    # The trigger form's params go on the DAG once its tasks exist. An operator built while its DAG has
    # params deep-copies them, once per class of its MRO (Airflow's _get_parent_defaults, run by
    # apply_defaults): about 40% of the parse of 1,000 VMs. The tasks still see them: a task's context
    # params are the DAG's, then its own, then the run's conf (airflow.sdk.definitions.param.
    # process_params), so "{{ params.vms }}" renders as before; the trigger form and the conf check at
    # trigger time read the DAG's params. Assigned as the DAG's public attribute: Airflow converts the
    # mapping to its ParamsDict (the type the attribute is declared with) and checks the defaults, as for
    # ``params=`` (tests/dags/test_parse_params.py).
    dag.params = trigger_params(group)  # type: ignore[assignment]
    return dag


def _capture_kwargs(group_id: str, group: Group, deployment: str) -> dict[str, Any]:
    """The downtime task's arguments from the group's config (the same for both kinds)."""
    timeouts = group.timeouts
    return {
        "deployment": deployment,
        "group": group_id,
        "labels": dict(group.snapshot.labels),
        "storage_locations": group.snapshot.storage_locations,
        "snapshot_type": group.snapshot.snapshot_type,
        "guest_flush": group.snapshot.guest_flush,
        "description": group.snapshot.description,
        "early_restart": group.early_restart,
        "snapshot_mode": snapshot_mode(group),
        "stop_timeout": timeouts.stop,
        "snapshot_timeout": timeouts.snapshot,
        "start_timeout": timeouts.start,
        # The cap (cap.py): each try claims room and counts the VMs down (killed or failed tries' too)
        # before it stops one. The scheduler runs up to twice the cap: the tries beyond it start ahead and
        # wait on their slots, so the next stop follows a VM's return within seconds, not a task's
        # start-up. A try waits for room at most the longest one try of another VM can keep it down
        # plus the retry delay of a killed one.
        "max_concurrent_vms": group.max_concurrent_vms,
        "max_active_tis_per_dagrun": 2 * group.max_concurrent_vms,
        "cap_wait": timeouts.stop + timeouts.snapshot + timeouts.start + group.retry_delay,
        "cap_poll": group.poke_interval,
    }


def downtime_tasks(tier_count: int) -> list[str]:
    """The downtime task of every tier of a run of ``tier_count`` tiers (outer tiers ``stop_snapshot``,
    the innermost ``stop_snapshot_start``): the tasks whose VMs the cap counts."""
    return [
        stages.tier_task(n, stage.id)
        for n in range(1, tier_count + 1)
        for stage in stages.vm_chain(innermost=n == tier_count)
        if stage.returns == "downtime"
    ]


def snapshot_mode(group: Group) -> str:
    """``standard`` or ``instant`` (config key ``snapshot_mode``)."""
    return group.snapshot_mode


def _options(group: Group) -> frozenset[str]:
    """The opt-in stages' group keys that this group turns on (``Stage.option``)."""
    return frozenset(
        stage.option for stage in stages.VM_STAGES if stage.option and getattr(group, stage.option, None)
    )


def _chain(group: Group, *, innermost: bool) -> tuple[stages.Stage, ...]:
    """The stages each VM of an innermost or outer tier of the group runs."""
    return stages.vm_chain(innermost=innermost, mode=snapshot_mode(group), options=_options(group))


@functools.cache
def _operator_class(path: str) -> Any:
    """The class ``module:Class`` of a ``Stage.operator``, imported when a stage first uses it."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass
class _VmTasks:
    """What a stage's arguments are made of: the group, the tier, the VM's mapped arguments and the
    stages of its chain built so far."""

    group_id: str
    group: Group
    deployment: str
    number: int
    tier_count: int
    chain: tuple[stages.Stage, ...]
    vm: dict[str, Any]
    built: dict[str, Any] = field(default_factory=dict)

    def output(self, returns: str) -> Any:
        """The output of the VM's stage that returns ``returns`` (``downtime`` or ``snapshots``)."""
        return next(self.built[s.id] for s in self.chain if s.returns == returns).output

    @property
    def precheck(self) -> Any:
        return self.built[stages.PRECHECK].output

    @property
    def downtime_task(self) -> str:
        return stages.tier_task(self.number, next(s.id for s in self.chain if s.returns == "downtime"))


def _precheck_args(vm: _VmTasks) -> dict[str, Any]:
    group = vm.group
    return {
        **vm.vm,
        "local_ssd": group.local_ssd,
        "snapshot_mode": group.snapshot_mode,
        "instant_fallback": group.instant_fallback,
        "deployment": vm.deployment,
        "group": vm.group_id,
        "description": group.snapshot.description,  # the manifest's note
        "metadata_values": group.snapshot.keep_metadata_values,
    }


def _downtime_args(vm: _VmTasks) -> dict[str, Any]:
    return {
        "instance_record": vm.precheck,
        **_capture_kwargs(vm.group_id, vm.group, vm.deployment),
        # The cap counts the VMs down in every tier of the run (cap.py), not only this one's.
        "cap_tasks": downtime_tasks(vm.tier_count),
        # On-call hears at once when a try leaves (or may leave) its VM down, not at the run's end.
        "down_notice": VmDownNotice(vm.group.notify) if vm.group.notify is not None else None,
    }


def _bring_back_args(vm: _VmTasks) -> dict[str, Any]:
    group = vm.group
    return {
        "downtime_task": vm.downtime_task,
        "instance_record": vm.precheck,
        "timeout": group.timeouts.start,
        # A stop that timed out may still be shutting down: the start waits that out too, then starts.
        "stop_timeout": group.timeouts.stop,
        "retries": max(group.retries, 3),  # bringing a VM back is worth more tries than the rest
        "retry_delay": timedelta(seconds=min(group.retry_delay, 60)),
        "deployment": vm.deployment,  # the run's lease holder: given back once the VM is back
    }


def _verify_args(vm: _VmTasks) -> dict[str, Any]:
    # With the VM back (or on its way): this run's snapshots READY (with early restart the capture
    # stopped waiting at UPLOADING).
    return {"snapshot_records": vm.output("downtime"), "timeout": vm.group.timeouts.verify}


def _convert_args(vm: _VmTasks) -> dict[str, Any]:
    # Instant snapshots become standard ones with the VM running (imported only for such groups).
    group = vm.group
    return {
        "instance_record": vm.precheck,
        "instant_records": vm.output("downtime"),
        "labels": dict(group.snapshot.labels),
        "storage_locations": group.snapshot.storage_locations,
        "snapshot_type": group.snapshot.snapshot_type,
        "description": group.snapshot.description,
        "deployment": vm.deployment,
        "group": vm.group_id,
        "timeout": group.timeouts.verify,
    }


def _listed_args(vm: _VmTasks) -> dict[str, Any]:
    return {
        "instance_record": vm.precheck,
        "snapshot_records": vm.output("snapshots"),
        "deployment": vm.deployment,
        "group": vm.group_id,
    }


def _retention_args(vm: _VmTasks) -> dict[str, Any]:
    # The old snapshots the policy lets go. A failed capture or verify leaves retention upstream_failed:
    # nothing is deleted for a VM without a new READY snapshot.
    assert vm.group.retention is not None  # the stage's option
    return {
        "instance_record": vm.precheck,
        "snapshot_records": vm.output("snapshots"),
        "policy": vm.group.retention.model_dump(),
        "deployment": vm.deployment,
        "group": vm.group_id,
    }


# Each stage's arguments from the group (stages.VM_STAGES says which operator, where and after what).
STAGE_ARGUMENTS: dict[str, Callable[[_VmTasks], dict[str, Any]]] = {
    stages.PRECHECK: _precheck_args,
    stages.STOP_SNAPSHOT_START: _downtime_args,
    stages.STOP_SNAPSHOT: _downtime_args,
    stages.START: _bring_back_args,
    stages.ENSURE_RUNNING: _bring_back_args,
    stages.VERIFY: _verify_args,
    stages.CONVERT: _convert_args,
    stages.LISTED: _listed_args,
    stages.RETENTION: _retention_args,
}


def _vm_argument(arguments: dict[str, Any]) -> str:
    """Where a VM stage's rendered task finds its VM (map_index_template): the precheck has the mapped
    ``instance``; the later stages the precheck's record; verify the downtime's result (``vm``, a path)."""
    if "instance" in arguments:
        return "task.instance"
    if "instance_record" in arguments:
        return "task.instance_record.instance"
    return "task.snapshot_records.vm"


def _tier_group(
    number: int,
    innermost: bool,
    group_id: str,
    group: Group,
    common: dict[str, Any],
    slot_free: dict[str, Any],
    deployment: str,
    tier_count: int = 1,
) -> Any:
    """The tier's mapped task group: the VM's chain of stages.VM_STAGES, each built from the group by its
    STAGE_ARGUMENTS, after the stages it names; its teardowns are the teardowns of its setup."""
    chain = _chain(group, innermost=innermost)

    @task_group(group_id=stages.tier_group(number))
    def backup_vm(
        project_id: str, zone: str, instance: str, disks: list[str] | None, carried_by: dict[str, str]
    ) -> None:
        vm = _VmTasks(
            group_id,
            group,
            deployment,
            number,
            tier_count,
            chain,
            {
                "project_id": project_id,
                "zone": zone,
                "instance": instance,
                "disks": disks,
                "carried_by": carried_by,
            },
        )
        for stage in chain:
            arguments = STAGE_ARGUMENTS[stage.id](vm)
            task = _operator_class(stage.operator)(
                task_id=stage.id,
                **arguments,
                **(slot_free if stage.slot_free else common),
                map_index_template=vm_name_template(_vm_argument(arguments)),
            )
            for upstream in stage.after:
                if upstream in vm.built:
                    vm.built[upstream] >> task
            vm.built[stage.id] = task
        setups = [vm.built[stage.id] for stage in chain if stage.setup]
        for stage in chain:
            if stage.teardown:
                vm.built[stage.id].as_teardown(setups=setups)

    return backup_vm


def build_dags(config: BackupConfig) -> dict[str, DAG]:
    """Every group's backup DAG, keyed by DAG id."""
    return {
        dag_id_for(gid): build_dag(gid, group, source=config.source, deployment=config.deployment)
        for gid, group in config.groups.items()
    }


def build_all_dags(config: BackupConfig, *, only: str | None = None) -> dict[str, DAG]:
    """Every DAG of the config: the backup DAGs, each group's restore (and drill) DAGs, and the freshness
    check (when a group has a schedule).

    ``only``: a DAG id; when it is a backup DAG of the config, just that DAG is built (what a task's
    process needs: see register_dags). Any other id builds them all.
    """
    from gce_vm_backup.report.freshness import build_freshness_dag

    if only is not None and only.startswith(DAG_ID_PREFIX):
        group_id = only.removeprefix(DAG_ID_PREFIX)
        if group_id in config.groups:
            group = config.groups[group_id]
            return {only: build_dag(group_id, group, source=config.source, deployment=config.deployment)}
    dags = build_dags(config) | build_restore_dags(config)
    if (freshness := build_freshness_dag(config)) is not None:
        dags[freshness.dag_id] = freshness
    return dags


def default_config_path(dag_file: str | Path) -> Path:
    return Path(os.environ.get(CONFIG_ENV) or Path(dag_file).with_name("gce_vm_backup.yaml"))


def strict_mode() -> bool:
    return os.environ.get(STRICT_ENV, "").lower() in ("1", "true", "yes")


def register_dags(
    namespace: dict[str, Any], config_path: str | Path, *, strict: bool | None = None
) -> dict[str, DAG]:
    """Load the config, build one DAG per valid group and put them in ``namespace`` (the DAG file's globals).

    A broken group is logged with every problem and left out; the other groups still get their DAG.
    When no group is valid, or in strict mode (``GCE_VM_BACKUP_STRICT=1``, used by CI and `validate`)
    whenever anything is wrong, ConfigError is raised, so Airflow shows it as the DAG file's import error.
    """
    strict = strict_mode() if strict is None else strict
    # The config's compiled form, when `vm-backup validate` or `sync` made it from the file as it is now
    # (config/compiled.py): the same document as the YAML's, validated the same way, without libyaml.
    config, problems = read_config(config_path, compiled=True)
    if problems and (strict or not config.groups):
        raise ConfigError(problems)
    for problem in problems:
        log.error("gce-vm-backup config problem (group left out): %s", problem)
    dags = build_all_dags(config, only=_parsing_dag_id())
    namespace.update(dags)
    return dags


def _parsing_dag_id() -> str | None:
    """The DAG a task's process parses this file for (Airflow's documented dynamic-DAG optimization:
    the task runner sets the parsing context's ``dag_id`` before it parses the file; the DAG processor
    and ``dag.test`` leave it unset). Every task start then builds one backup DAG, not all of them: the
    worker's parse of a 50-group config shrinks to one group's."""
    from airflow.sdk import get_parsing_context

    return get_parsing_context().dag_id
