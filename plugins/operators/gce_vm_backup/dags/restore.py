"""The restore DAGs of a config: per group a restore DAG (trigger form) and, with ``restore_drill:``, a
drill DAG. Pure building, like dag_factory: no API call, no Google import at parse time.

``gce_vm_backup_restore__<group>``: ``plan`` (setup, read-only) -> ``hold`` (the chosen set is held from
retention) -> ``choose`` (branch on the mode; a dry run stops here) -> new-vm: ``new_vm_disks`` ->
``create_vm``; replace-disks: ``approve`` (the standard provider's human-in-the-loop ApprovalOperator,
assigned to the group's approvers) -> ``check_approval`` (approvers and four eyes) -> ``create_disks`` ->
``stop`` -> ``swap_disks`` -> ``start``; ``ensure_vm`` (teardown of the plan: never a VM without a boot
disk, nor one left stopped by the run) -> ``release_hold`` (teardown: the hold goes, however the run
ended) -> ``restore_report`` (all done; its first line is the VM's state).

``gce_vm_backup_drill__<group>``: ``plan`` (setup) -> ``drill_vm`` (mapped per VM) -> ``cleanup``
(teardown: deletes, in the scratch project only, what this drill run planned and made) ->
``drill_report`` (all done; RPO/RTO per VM).
Both use the group's ``notify`` block as their failure callback.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.python import BranchPythonOperator
from airflow.sdk import DAG, Param, TriggerRule

from gce_vm_backup.config.models import BackupConfig, Group
from gce_vm_backup.dags.map_index import vm_name_template
from gce_vm_backup.report.notify import notifiers_from_config
from gce_vm_backup.restore.approval import CheckApprovalOperator
from gce_vm_backup.restore.drill import (
    DrillCleanupOperator,
    DrillPlanOperator,
    DrillReportOperator,
    DrillVmOperator,
)
from gce_vm_backup.restore.holds import HoldSnapshotsOperator, ReleaseHoldsOperator
from gce_vm_backup.restore.ops import (
    CreateRestoreDisksOperator,
    CreateRestoredVmOperator,
    EnsureVmOperator,
    StartAfterRestoreOperator,
    StopForRestoreOperator,
    SwapDisksOperator,
)
from gce_vm_backup.restore.plan import MODES, RestorePlanOperator, RestoreReportOperator
from gce_vm_backup.restore.sets import NEWEST
from gce_vm_backup.runtime.compat import allowed_run_types

RESTORE_PREFIX = "gce_vm_backup_restore__"
DRILL_PREFIX = "gce_vm_backup_drill__"
VM_NAME_PATTERN = (
    r"^([a-z]+-[a-z]+[0-9]+-[a-z]/)?[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
    # or the VM's path, as `vm-backup backups` lists it (also a VM that no longer exists)
    r"|^projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/zones/[a-z]+-[a-z]+[0-9]+-[a-z]/instances/"
    r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
)
APPROVAL_TIMEOUT = timedelta(hours=12)  # an unanswered approval ends the run; the VM was not touched
STEP_TIMEOUT = 1800  # seconds per restore step (disks from snapshots of large disks take a while)
# How long the chosen set is held from retention at most: the approval's wait and every step's bound, with
# room; the release (a teardown) removes the hold earlier, when the run ends.
HOLD_FOR = APPROVAL_TIMEOUT + timedelta(hours=12)


# Airflow's trigger form marks a field required unless its schema's type is a list that includes "null"
# (FlexibleForm's isParamRequired, Airflow 3.1.7 and 3.3): the optional fields admit null, which means
# what their empty field says (the newest set, the original's name, machine type and network; no dry run).
OPTIONAL = "null"


def restore_params(group_id: str, group: Group) -> dict[str, Param]:
    """The restore form. Names are a contract (the browser test, RESTORE_FORM.md): keep them stable.

    The VM is required and has no default: nobody restores the group's first VM by leaving the form as it
    opened. Airflow refuses a run without it (the form keeps Trigger disabled; the REST API and the CLI
    answer that the param has no value), and the plan task refuses an empty one before any API call.
    """
    names = group.explicit_vm_names()
    if names and not group.has_selectors():
        vm = Param(type="string", enum=names, title="VM to restore", description="zone/instance")
    else:
        vm = Param(
            type="string",
            pattern=VM_NAME_PATTERN,
            title="VM to restore",
            description="zone/instance (or instance) of a VM of the group, label selectors included, or "
            "projects/P/zones/Z/instances/I; a VM that no longer exists is restored (new-vm) from its sets",
        )
    return {
        "vm": vm,
        "snapshot_set": Param(
            NEWEST,
            type=[OPTIONAL, "string"],
            minLength=1,
            maxLength=63,
            title="Snapshot set",
            description="newest (the newest complete READY set; also when empty) or a set's id; list them "
            f"with `vm-backup backups --group {group_id}`",
        ),
        "mode": Param(
            "new-vm",
            type="string",
            enum=list(MODES),
            title="Mode",
            description="new-vm: a new VM beside the original; replace-disks: swap the VM's disks "
            "(after an approval; the old disks are kept, detached)",
        ),
        "new_name": Param(
            None,
            type=["null", "string"],
            pattern=r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$",
            title="New VM name",
            description="new-vm only; empty: <instance>-restored-<hash>",
        ),
        "machine_type": Param(
            None,
            type=["null", "string"],
            title="Machine type",
            description="new-vm only; empty: the original's",
        ),
        "network": Param(
            None,
            type=["null", "string"],
            title="Network",
            description="new-vm only: a network name or projects/P/global/networks/N; empty: the original's",
        ),
        "dry_run": Param(
            False, type=[OPTIONAL, "boolean"], title="Dry run", description="Show the plan; change nothing."
        ),
    }


def _choose(plan: dict[str, Any]) -> list[str]:
    if plan.get("dry_run"):
        return []
    return ["new_vm_disks"] if plan["mode"] == "new-vm" else ["approve"]


def _common(group_id: str, group: Group, deployment: str, *, identity: str | None) -> dict[str, Any]:
    """The arguments of every restore or drill task: scope, connection, and the identity it impersonates
    (``restore_service_account`` / ``drill_service_account``; the backup DAGs never get one)."""
    return {
        "deployment": deployment,
        "group": group_id,
        "gcp_conn_id": group.gcp_conn_id,
        "impersonation_chain": identity,
    }


def _default_args(group: Group) -> dict[str, Any]:
    return {
        "owner": group.owner,
        "retries": group.retries,
        "retry_delay": timedelta(seconds=min(group.retry_delay, 60)),
    }


def _targets(group: Group) -> list[dict[str, Any]]:
    return [target.as_operator_target() for target in group.all_targets()]


def build_restore_dag(group_id: str, group: Group, *, deployment: str) -> DAG:
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    common = _common(group_id, group, deployment, identity=group.restore_service_account)
    with DAG(
        dag_id=f"{RESTORE_PREFIX}{group_id}",
        description=f"Restore a VM of group {group_id} from one of its snapshot sets",
        schedule=None,  # so Airflow refuses a backfill of it on every version
        **allowed_run_types("manual"),
        start_date=group.start_date,
        catchup=False,
        max_active_runs=1,
        render_template_as_native_obj=True,
        tags=["gce-vm-backup", "restore", *group.tags],
        doc_md=__doc__.split("\n\n")[1] if __doc__ else None,
        default_args=_default_args(group),
        on_failure_callback=list(notifiers_from_config(group.notify)) or None,
    ) as dag:
        plan = RestorePlanOperator(
            task_id="plan",
            targets=_targets(group),
            vm="{{ params.vm }}",
            snapshot_set="{{ params.snapshot_set }}",
            mode="{{ params.mode }}",
            new_name="{{ params.new_name }}",
            machine_type="{{ params.machine_type }}",
            network="{{ params.network }}",
            dry_run="{{ params.dry_run }}",
            conf="{{ dag_run.conf }}",
            retries=0,  # read-only and deterministic: a retry would say the same
            **common,
        )
        step: dict[str, Any] = {"plan": plan.output, "poll_interval": group.poke_interval, **common}
        hold = HoldSnapshotsOperator(
            task_id="hold", plan=plan.output, hold_for=HOLD_FOR, retries=max(group.retries, 2), **common
        )
        choose = BranchPythonOperator(
            task_id="choose", python_callable=_choose, op_kwargs={"plan": plan.output}
        )
        new_vm_disks = CreateRestoreDisksOperator(task_id="new_vm_disks", timeout=STEP_TIMEOUT, **step)
        create_vm = CreateRestoredVmOperator(task_id="create_vm", timeout=STEP_TIMEOUT, **step)
        approval = group.restore_approval
        approve = ApprovalOperator(
            task_id="approve",
            subject="Restore: replace the disks of {{ params.vm }} (group " + group_id + ")?",
            body="{{ ti.xcom_pull(task_ids='plan', key='restore_plan_text') }}",
            assigned_users=[a.as_hitl_user() for a in approval.approvers] or None,
            retries=0,
            **_approval_timeout(ApprovalOperator, APPROVAL_TIMEOUT),
        )
        check_approval = CheckApprovalOperator(
            task_id="check_approval",
            group=group_id,
            approvers=[a.id for a in approval.approvers],
            four_eyes=approval.four_eyes,
            retries=0,  # a refusal is final: a retry would read the same approval
        )
        create_disks = CreateRestoreDisksOperator(task_id="create_disks", timeout=STEP_TIMEOUT, **step)
        stop = StopForRestoreOperator(task_id="stop", timeout=group.timeouts.stop, **step)
        swap = SwapDisksOperator(task_id="swap_disks", timeout=STEP_TIMEOUT, **step)
        start = StartAfterRestoreOperator(
            task_id="start", timeout=group.timeouts.start, retries=max(group.retries, 3), **step
        )
        ensure = EnsureVmOperator(
            task_id="ensure_vm",
            timeout=group.timeouts.start + group.timeouts.stop,
            retries=max(group.retries, 3),
            **step,
        )
        release = ReleaseHoldsOperator(
            task_id="release_hold", plan=plan.output, retries=max(group.retries, 2), **common
        )
        plan >> hold >> choose >> new_vm_disks >> create_vm
        choose >> approve >> check_approval >> create_disks >> stop >> swap >> start
        [create_vm, start] >> ensure
        ensure.as_teardown(setups=plan)
        [ensure, hold] >> release
        release.as_teardown(setups=plan)
        report = RestoreReportOperator(task_id="restore_report", trigger_rule=TriggerRule.ALL_DONE, **common)
        # Not straight after choose or approve: a branch, and a rejection, skip their direct downstream
        # tasks; the report must run whatever happened (every path reaches it anyway).
        [t for t in dag.tasks if t not in (report, choose, approve) and not t.is_setup] >> report
    # The form's params go on the DAG once its tasks exist, as in the backup DAGs (dag_factory.build_dag:
    # an operator built while its DAG has params deep-copies them).
    dag.params = restore_params(group_id, group)  # type: ignore[assignment]  # converted to a ParamsDict
    return dag


def drill_spec(group: Group) -> dict[str, Any]:
    drill = group.restore_drill
    assert drill is not None  # only groups with a drill get here
    return {**drill.model_dump(exclude={"boot_check"}), "boot_check": drill.boot_check_spec()}


def build_drill_dag(group_id: str, group: Group, *, deployment: str) -> DAG:
    drill = group.restore_drill
    assert drill is not None  # only groups with a drill get here
    spec = drill_spec(group)
    common = _common(group_id, group, deployment, identity=group.drill_identity)
    with DAG(
        dag_id=f"{DRILL_PREFIX}{group_id}",
        description=f"Restore drill of group {group_id}: every VM's newest backup restored, booted, deleted",
        schedule=drill.schedule,
        # No backfill: a drill restores the newest sets now (its plan task refuses one too).
        **allowed_run_types("scheduled", "manual"),
        start_date=group.start_date,
        catchup=False,
        max_active_runs=1,
        render_template_as_native_obj=True,
        tags=["gce-vm-backup", "restore-drill", *group.tags],
        doc_md=__doc__.split("\n\n")[2] if __doc__ else None,
        default_args=_default_args(group),
        on_failure_callback=list(notifiers_from_config(group.notify)) or None,
    ) as dag:
        plan = DrillPlanOperator(task_id="plan", targets=_targets(group), drill=spec, retries=0, **common)
        drill_vm = DrillVmOperator.partial(
            task_id="drill_vm",
            drill=spec,
            max_active_tis_per_dagrun=group.max_concurrent_vms,
            map_index_template=vm_name_template("task.plan.vm"),  # the grid names each drill by its VM
            **common,
        ).expand_kwargs(plan.output)
        cleanup = DrillCleanupOperator(
            task_id="cleanup", plans=plan.output, drill=spec, retries=max(group.retries, 2), **common
        )
        drill_vm >> cleanup
        cleanup.as_teardown(setups=plan)
        report = DrillReportOperator(task_id="drill_report", trigger_rule=TriggerRule.ALL_DONE, **common)
        [drill_vm, cleanup] >> report
    return dag


def build_restore_dags(config: BackupConfig) -> dict[str, DAG]:
    """Every group's restore DAG, and the drill DAG of each group with ``restore_drill``, by DAG id."""
    dags: dict[str, DAG] = {}
    for group_id, group in config.groups.items():
        dags[f"{RESTORE_PREFIX}{group_id}"] = build_restore_dag(group_id, group, deployment=config.deployment)
        if getattr(group, "restore_drill", None) is not None:
            dags[f"{DRILL_PREFIX}{group_id}"] = build_drill_dag(group_id, group, deployment=config.deployment)
    return dags


def _approval_timeout(operator: type, timeout: timedelta) -> dict[str, Any]:
    """How long the approval waits for a person: ``response_timeout`` where the standard provider has it
    (the Airflow 3.3 line, where ``execution_timeout`` is deprecated for it); the Airflow 3.1 line's
    provider bounds the wait with ``execution_timeout``."""
    return {_approval_timeout_argument(operator): timeout}


@functools.cache
def _approval_timeout_argument(operator: type) -> str:
    # once per parse, not once per group: inspect.signature of the MRO's __init__s is not free
    import inspect

    for cls in operator.__mro__:
        init = cls.__dict__.get("__init__")
        if init is not None and "response_timeout" in inspect.signature(init).parameters:
            return "response_timeout"
    return "execution_timeout"
