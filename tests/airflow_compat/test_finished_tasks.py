"""The run report's view of a run on Airflow 3.1, whose task instances have no get_task_breadcrumbs: the
same (task id, map index, finished state) triples come from get_task_states (README "Supported Airflow
versions"). On 3.1 itself the DAG runs of tests/dags check it end to end (`make test-compat`)."""

from __future__ import annotations

from unittest.mock import create_autospec

from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

from gce_vm_backup.report import finished_tasks


def _airflow_3_1_ti(states: dict) -> RuntimeTaskInstance:
    ti = create_autospec(RuntimeTaskInstance, instance=True)
    del ti.get_task_breadcrumbs  # task SDK 1.1 (Airflow 3.1) has no such method
    ti.get_task_states.return_value = {"r1": states}
    return ti


def test_airflow_3_1_states_give_the_breadcrumbs_triples():
    ti = _airflow_3_1_ti(
        {
            "resolve_tier_1": "success",  # unmapped, though its name ends in _<digit>
            "tier_1.stop_0": "success",
            "tier_1.stop_1": "failed",
            "tier_1.start_1": "upstream_failed",
            "tier_1.verify_0": None,  # not finished: left out, as the breadcrumbs leave it out
            "tier_2.snapshot": "skipped",  # a mapped task that expanded to nothing
            "run_report": "running",
        }
    )
    crumbs = list(finished_tasks(ti, dag_id="d", run_id="r1", vm_groups=["tier_1", "tier_2"]))
    ti.get_task_states.assert_called_once_with(dag_id="d", run_ids=["r1"])
    assert crumbs == [
        ("resolve_tier_1", -1, "success"),
        ("tier_1.start", 1, "upstream_failed"),
        ("tier_1.stop", 0, "success"),
        ("tier_1.stop", 1, "failed"),
        ("tier_2.snapshot", -1, "skipped"),
    ]


def test_breadcrumbs_are_used_when_the_task_sdk_has_them():
    ti = create_autospec(RuntimeTaskInstance, instance=True)
    ti.get_task_breadcrumbs.return_value = [{"task_id": "tier_1.stop", "map_index": 2, "state": "success"}]
    assert list(finished_tasks(ti, dag_id="d", run_id="r1", vm_groups=["tier_1"])) == [
        ("tier_1.stop", 2, "success")
    ]
    ti.get_task_states.assert_not_called()
