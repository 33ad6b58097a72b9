"""The run report's view of a run on Airflow 3.1, whose task instances have no get_task_breadcrumbs: the
same (task id, map index, finished state) triples come from get_task_states (docs/deploy.md, "Supported
Airflow versions"). On 3.1 itself the DAG runs of tests/dags check it end to end (`make test-compat`)."""

from __future__ import annotations

from unittest.mock import create_autospec

from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

from gce_vm_backup.backup import stages
from gce_vm_backup.report.task import finished_tasks


def _airflow_3_1_ti(states: dict) -> RuntimeTaskInstance:
    ti = create_autospec(RuntimeTaskInstance, instance=True)
    del ti.get_task_breadcrumbs  # task SDK 1.1 (Airflow 3.1) has no such method
    ti.get_task_states.return_value = {"r1": states}
    return ti


def test_airflow_3_1_states_give_the_breadcrumbs_triples():
    ti = _airflow_3_1_ti(
        {
            stages.resolve_task(1): "success",  # unmapped, though its name ends in _<digit>
            f"{stages.tier_task(1, stages.STOP_SNAPSHOT_START)}_0": "success",
            f"{stages.tier_task(1, stages.STOP_SNAPSHOT_START)}_1": "failed",
            f"{stages.tier_task(1, stages.ENSURE_RUNNING)}_1": "upstream_failed",
            f"{stages.tier_task(1, stages.VERIFY)}_0": None,  # not finished: left out, as the breadcrumbs do
            f"{stages.tier_task(2, stages.STOP_SNAPSHOT)}_12": "success",  # two digits, an outer tier's task
            stages.tier_task(2, stages.CONVERT): "skipped",  # a mapped task that expanded to nothing
            stages.tier_stopped_task(1): "success",  # a barrier: unmapped, its name has no map index
            stages.REPORT: "running",
        }
    )
    crumbs = list(
        finished_tasks(ti, dag_id="d", run_id="r1", vm_groups=[stages.tier_group(1), stages.tier_group(2)])
    )
    ti.get_task_states.assert_called_once_with(dag_id="d", run_ids=["r1"])
    assert sorted(crumbs) == sorted(
        [
            (stages.resolve_task(1), -1, "success"),
            (stages.tier_task(1, stages.ENSURE_RUNNING), 1, "upstream_failed"),
            (stages.tier_task(1, stages.STOP_SNAPSHOT_START), 0, "success"),
            (stages.tier_task(1, stages.STOP_SNAPSHOT_START), 1, "failed"),
            (stages.tier_task(2, stages.CONVERT), -1, "skipped"),
            (stages.tier_task(2, stages.STOP_SNAPSHOT), 12, "success"),
            (stages.tier_stopped_task(1), -1, "success"),
        ]
    )


def test_breadcrumbs_are_used_when_the_task_sdk_has_them():
    ti = create_autospec(RuntimeTaskInstance, instance=True)
    downtime = stages.tier_task(1, stages.STOP_SNAPSHOT_START)
    ti.get_task_breadcrumbs.return_value = [{"task_id": downtime, "map_index": 2, "state": "success"}]
    assert list(finished_tasks(ti, dag_id="d", run_id="r1", vm_groups=[stages.tier_group(1)])) == [
        (downtime, 2, "success")
    ]
    ti.get_task_states.assert_not_called()
