"""The run report task: reads what every task of the run left behind and builds the report from it.

``RunReportOperator`` runs last (trigger rule all_done). It finds the per-VM results without being handed
them: the task-instance breadcrumbs of the run (``RuntimeTaskInstance.get_task_breadcrumbs``: task id,
map index and final state of every finished task; ``get_task_states`` on Airflow 3.1, see
``finished_tasks``) tell which VM task groups ran and how each task ended; each present task's XCom is then
pulled by task id and map index. So a failed or missing task leaves a hole in its VM's row, never a
misaligned row. The report itself is ``report.build_run_report``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from airflow.sdk import TriggerRule

from gce_vm_backup.backup import stages
from gce_vm_backup.backup.resolve import DRY_RUN_PLAN_KEY
from gce_vm_backup.errors import ConfigError
from gce_vm_backup.report.model import (
    GONE,
    REPORT_XCOM_KEY,
    VM_TASKS,
    VmTaskResults,
    build_run_report,
    needs_status_check,
)
from gce_vm_backup.report.text import SUMMARY_XCOM_KEY, down_lines, format_report, problem_lines, run_summary
from gce_vm_backup.runtime.base import ERROR_XCOM_KEY, ComputeOperator
from gce_vm_backup.runtime.compat import AirflowFailException

MAX_TIERS = 100  # far above any config: the tier groups the report recognises
# The states get_task_breadcrumbs returns (the execution API's TerminalTIState).
FINISHED_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


def _pull_error(ti: Any, task_id: str, map_index: int) -> Mapping[str, Any] | None:
    error = ti.xcom_pull(task_ids=task_id, map_indexes=map_index, key=ERROR_XCOM_KEY, default=None)
    return error if isinstance(error, Mapping) else None


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


@functools.cache
def _tier_groups() -> dict[str, int]:
    """Each tier group's name and number (``tier_2`` -> 2): made once, not once per DAG."""
    return {stages.tier_group(n): n for n in range(1, MAX_TIERS + 1)}


def tier_numbers(vm_groups: Sequence[str]) -> dict[str, int]:
    """Each VM group's tier (``tier_2`` -> 2). Raises ConfigError for a group that is not a tier group of
    ``stages``, or none."""
    known = _tier_groups()
    if not vm_groups or any(group not in known for group in vm_groups):
        raise ConfigError(
            "The parameter 'vm_groups' must name at least one per-VM task group "
            f"({stages.tier_group(1)}, {stages.tier_group(2)}, ...); got {list(vm_groups)}"
        )
    return {group: known[group] for group in vm_groups}


def collect_vm_results(
    ti: Any, *, dag_id: str, run_id: str, vm_groups: Sequence[str]
) -> tuple[list[VmTaskResults], dict[str, str]]:
    """Every VM group's per-map-index task states, XComs and (for failed tasks) errors, and the states of
    the other tasks. The resolve task of each group gives the VM of each map index."""
    tiers = tier_numbers(vm_groups)
    vms: dict[tuple[str, int], VmTaskResults] = {}
    other: dict[str, str] = {}
    for task_id, map_index, state in finished_tasks(ti, dag_id=dag_id, run_id=run_id, vm_groups=vm_groups):
        group, _, task = task_id.partition(".")
        if group in vm_groups and task in VM_TASKS:
            vms.setdefault((group, map_index), VmTaskResults(group, map_index)).states[task] = state
        elif task_id != ti.task_id:
            other[task_id] = state
    targets = {
        group: ti.xcom_pull(task_ids=stages.resolve_task(tier), map_indexes=-1, default=None) or []
        for group, tier in tiers.items()
    }
    for (group, map_index), vm in sorted(vms.items()):
        if 0 <= map_index < len(targets[group]):
            vm.target = targets[group][map_index]
        for task, state in vm.states.items():
            task_id = stages.tier_task(tiers[group], task)
            vm.values[task] = ti.xcom_pull(task_ids=task_id, map_indexes=map_index, default=None)
            if state == "failed" and (error := _pull_error(ti, task_id, map_index)) is not None:
                vm.errors[task] = error
    return [vms[key] for key in sorted(vms)], other


class RunReportOperator(ComputeOperator):
    """Build the run report, log it as a table and push it to XCom (key ``run_report``, and as the return
    value when the run had no problems), and its summary (key ``run_summary``: ``text.run_summary``).

    :param vm_groups: the ids of the mapped per-VM task groups (``stages.tier_group(n)``: tier_1, ...).
    :param max_concurrent_vms: the group's cap on VMs down at once, shown beside the peak the report
        computes from the VMs' downtimes (None: the peak alone).
    :param fail_on_problems: fail (without retry) when any VM or task had a problem, after pushing the
        report: the report runs last with trigger rule all_done, and as the DAG's only leaf its success
        would otherwise mark a failed run successful and silence the failure notification.
    Every VM that was RUNNING before the backup and that no task saw RUNNING again is read
    (``instances.get``) to tell whether it is down. Raises ConfigError for bad ``vm_groups`` (at DAG
    build), AirflowFailException listing the problems, VMs that are down first.
    """

    records_failures = False

    def __init__(
        self,
        *,
        vm_groups: Sequence[str],
        max_concurrent_vms: int | None = None,
        fail_on_problems: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.tiers = tier_numbers(vm_groups)
        self.vm_groups, self.fail_on_problems = list(vm_groups), fail_on_problems
        self.max_concurrent_vms = max_concurrent_vms

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
            for tier in self.tiers.values()
            for planned in ti.xcom_pull(
                task_ids=stages.resolve_task(tier), key=DRY_RUN_PLAN_KEY, default=None
            )
            or []
        ]
        report = build_run_report(
            dag_id=ti.dag_id,
            run_id=context["run_id"],
            vms=vms,
            other_tasks=other,
            other_errors=other_errors,
            dry_run_plan=plan,
            max_concurrent_vms=self.max_concurrent_vms,
        )
        self.log.info("%s", format_report(report))
        ti.xcom_push(key=SUMMARY_XCOM_KEY, value=run_summary(report))  # shown in the task's XCom tab
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

        record = vm.values.get(stages.PRECHECK) or {}
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
            "VM %s was RUNNING before the backup and no task saw it RUNNING again: now %s",
            record.get("instance"),
            vm.status_now or f"unknown ({vm.status_error})",
        )
