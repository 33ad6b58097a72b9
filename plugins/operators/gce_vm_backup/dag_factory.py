"""One backup DAG per schedule group of the config.

``build_dags`` only builds (pure, testable); ``register_dags`` loads, builds and puts the DAGs in the DAG
file's namespace. Nothing here imports a Google library or calls an API: the DAG processor runs it at
every parse.

Each DAG, per tier: ``resolve_tier_N`` (run time: label selectors, the trigger form's subset, the dry
run) -> a mapped task group ``tier_N`` with one instance per VM: ``precheck`` (setup, records the prior
state) -> ``stop`` -> ``snapshot`` -> ``start`` (teardown of the precheck: it runs even when stop or
snapshot failed, and the run still ends failed) -> ``verify`` (this run's snapshots READY) ->
``retention`` (only when the group has a policy). Tier N+1's VMs stop only after every stop of tier N
finished; tier N's VMs start again only after every start of tier N+1 (reverse order). ``run_report``
runs last, whatever happened, and fails the run when any VM had a problem; the group's ``notify``
block becomes the DAG's ``on_failure_callback``.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param, TriggerRule, task_group

from gce_vm_backup.config import BackupConfig, Group, read_config
from gce_vm_backup.errors import ConfigError
from gce_vm_backup.operators import (
    ApplyRetentionOperator,
    PrecheckInstanceOperator,
    ResolveTargetsOperator,
    RunReportOperator,
    SnapshotDisksOperator,
    StartInstanceOperator,
    StopInstanceOperator,
    VerifySnapshotsOperator,
)
from gce_vm_backup.report import REPORT_TASK_ID, notifiers_from_config
from gce_vm_backup.restore_dags import build_restore_dags

log = logging.getLogger(__name__)
DAG_ID_PREFIX = "gce_vm_backup__"
STRICT_ENV = "GCE_VM_BACKUP_STRICT"
CONFIG_ENV = "GCE_VM_BACKUP_CONFIG"


VM_NAME_PATTERN = r"^([a-z]+-[a-z]+[0-9]+-[a-z]/)?[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"


def dag_id_for(group_id: str) -> str:
    return f"{DAG_ID_PREFIX}{group_id}"


def trigger_params(group: Group) -> dict[str, Param]:
    """The trigger form: the whole group (default), a chosen subset of VMs, or a dry run."""
    names = group.explicit_vm_names()
    # "zone/instance" or "instance"; selectors' matches are checked against the targets at run time
    vm_items: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": VM_NAME_PATTERN}
    if names and not group.has_selectors():
        vm_items["enum"] = names  # the form rejects other names before a run is created
    described = ", ".join(names) if names else "VMs matched by the label selectors"
    vms_schema: dict[str, Any] = {"type": "array", "items": vm_items, "uniqueItems": True}
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
            type="boolean",
            title="Dry run",
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
        f"Waiting: `{group.wait_mode}`; at most {group.max_concurrent_vms} VMs in each stage at once."
    )


def build_dag(group_id: str, group: Group, *, source: str, deployment: str) -> DAG:
    """The DAG of one group of the deployment ``deployment``. Raises nothing for a validated group."""
    common: dict[str, Any] = {"gcp_conn_id": group.gcp_conn_id}
    sensor: dict[str, Any] = {
        **common,
        "wait_mode": group.wait_mode,
        "poke_interval": group.poke_interval,
        "max_active_tis_per_dagrun": group.max_concurrent_vms,
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
        # Room for every capped stage (stop, snapshot, start, verify) at its cap, plus the uncapped tasks;
        # Airflow's default of 16 would bind before a cap of 4 or more (fleet benchmark).
        max_active_tasks=4 * group.max_concurrent_vms + 16,
        params=trigger_params(group),
        render_template_as_native_obj=True,
        tags=["gce-vm-backup", *group.tags],
        doc_md=_doc(group_id, group, source, deployment),
        default_args={
            "retries": group.retries,
            "retry_delay": group.retry_timedelta,
            # Later stages first: a VM that is already down is snapshotted and started before another VM
            # is stopped (Airflow's default, downstream, does the opposite and stretches downtime).
            "weight_rule": "upstream",
        },
        on_failure_callback=callbacks or None,
    ) as dag:
        tiers = [[target.as_operator_target() for target in tier] for tier in group.tier_list]
        retention = group.retention.model_dump() if group.retention is not None else None
        previous: dict[str, Any] | None = None
        for number in range(1, len(tiers) + 1):
            resolve = ResolveTargetsOperator(
                task_id=f"resolve_tier_{number}",
                tiers=tiers,
                tier=number,
                only="{{ params.vms }}",
                plan_only="{{ params.dry_run }}",
                retention=retention,
                conf="{{ dag_run.conf }}",
                deployment=deployment,
                group=group_id,
                **common,
            )
            _tier_group(number, group_id, group, common, sensor, deployment).expand_kwargs(resolve.output)
            tasks = {name: dag.get_task(f"tier_{number}.{name}") for name in ("stop", "start")}
            if previous is not None:
                # Tier order goes through plain (unmapped) barrier tasks: a tier that maps to no VM this
                # run is skipped, and must not hold the next tier back. A failed stop still does.
                stopped = EmptyOperator(
                    task_id=f"tier_{number - 1}_stopped", trigger_rule=TriggerRule.NONE_FAILED
                )
                started = EmptyOperator(task_id=f"tier_{number}_started", trigger_rule=TriggerRule.ALL_DONE)
                previous["stop"] >> stopped >> resolve  # tier N stops before tier N+1 stops
                tasks["start"] >> started >> previous["start"]  # tier N+1 starts before tier N starts
            previous = tasks
        vm_groups = [f"tier_{number}" for number in range(1, len(tiers) + 1)]
        report = RunReportOperator(task_id=REPORT_TASK_ID, vm_groups=vm_groups, **common)
        # After every task, not only the leaves: a VM's start (a teardown) can still be bringing it back
        # after its retention went upstream_failed, and the report must see how that ended. Setup tasks
        # (precheck) are left out: Airflow allows only all_success after a setup, and they are upstream
        # of everything in their VM's group anyway.
        [task for task in dag.tasks if task is not report and not task.is_setup] >> report
    return dag


def _tier_group(
    number: int,
    group_id: str,
    group: Group,
    common: dict[str, Any],
    sensor: dict[str, Any],
    deployment: str,
) -> Any:
    @task_group(group_id=f"tier_{number}")
    def backup_vm(
        project_id: str, zone: str, instance: str, disks: list[str] | None, carried_by: dict[str, str]
    ) -> None:
        precheck = PrecheckInstanceOperator(
            task_id="precheck",
            project_id=project_id,
            zone=zone,
            instance=instance,
            disks=disks,
            local_ssd=group.local_ssd,
            carried_by=carried_by,
            **common,
        )
        stop = StopInstanceOperator(
            task_id="stop", instance_record=precheck.output, timeout=group.timeouts.stop, **sensor
        )
        snapshot = SnapshotDisksOperator(
            task_id="snapshot",
            instance_record=precheck.output,
            deployment=deployment,
            group=group_id,
            labels=dict(group.snapshot.labels),
            storage_locations=group.snapshot.storage_locations,
            snapshot_type=group.snapshot.snapshot_type,
            guest_flush=group.snapshot.guest_flush,
            description=group.snapshot.description,
            ready_when="UPLOADING" if group.early_restart else "READY",
            timeout=group.timeouts.snapshot,
            **sensor,
        )
        start = StartInstanceOperator(
            task_id="start",
            instance_record=precheck.output,
            timeout=group.timeouts.start,
            # A stop that timed out may still be shutting down: the start waits that out too, then starts.
            stop_timeout=group.timeouts.stop,
            retries=max(group.retries, 3),  # bringing a VM back is worth more tries than the rest
            retry_delay=timedelta(seconds=min(group.retry_delay, 60)),
            **sensor,
        )
        precheck >> stop >> snapshot >> start
        start.as_teardown(setups=precheck)
        # After the VM is back: this run's snapshots READY (with early restart the snapshot task stopped
        # waiting at UPLOADING), then the old ones the policy lets go. A failed snapshot or verify leaves
        # retention upstream_failed: nothing is deleted for a VM without a new READY snapshot.
        verify = VerifySnapshotsOperator(
            task_id="verify",
            snapshot_records=snapshot.output,
            timeout=group.timeouts.verify,
            **sensor,
        )
        start >> verify
        if group.retention is not None:
            retention = ApplyRetentionOperator(
                task_id="retention",
                instance_record=precheck.output,
                snapshot_records=verify.output,
                policy=group.retention.model_dump(),
                deployment=deployment,
                group=group_id,
                plan_only="{{ params.dry_run }}",
                **common,
            )
            verify >> retention

    return backup_vm


def build_dags(config: BackupConfig) -> dict[str, DAG]:
    """Every group's DAG, keyed by DAG id."""
    from gce_vm_backup.freshness import build_freshness_dag

    dags = {
        dag_id_for(gid): build_dag(gid, group, source=config.source, deployment=config.deployment)
        for gid, group in config.groups.items()
    } | build_restore_dags(config)
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
    config, problems = read_config(config_path)
    if problems and (strict or not config.groups):
        raise ConfigError(problems)
    for problem in problems:
        log.error("gce-vm-backup config problem (group left out): %s", problem)
    dags = build_dags(config)
    namespace.update(dags)
    return dags
