"""The map_index_template of the VM tasks: the VM's name, rendered as Airflow renders it (the DAG's own
template environment: native objects, StrictUndefined), and never a failure."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.sdk import DAG

from gce_vm_backup.config.models import BackupConfig, parse_config
from gce_vm_backup.dags.backup import build_dags
from gce_vm_backup.dags.map_index import vm_name_template
from gce_vm_backup.dags.restore import build_restore_dags

from ..conftest import TARGET, config, group

DRILL = "restore_drill: {scratch_zone: us-central1-b, scratch_project: drill-scratch, network: drills}"


def render(expression, **task):
    env = DAG("names", render_template_as_native_obj=True).get_template_env()
    context = {"task": SimpleNamespace(**task), "ti": SimpleNamespace(map_index=3)}
    return env.from_string(vm_name_template(expression)).render(context)


@pytest.mark.parametrize(
    ("expression", "task", "name"),
    [
        ("task.instance", {"instance": "web-1"}, "web-1"),
        ("task.instance_record.instance", {"instance_record": {"instance": "db-1", "zone": "z"}}, "db-1"),
        ("task.snapshot_records.vm", {"snapshot_records": {"vm": "projects/p/zones/z/instances/e1"}}, "e1"),
        # what must not fail a task that succeeded: nothing, None, an empty value, the wrong shape
        ("task.instance_record.instance", {"instance_record": None}, "vm 3"),
        ("task.instance_record.instance", {"instance_record": {}}, "vm 3"),
        ("task.snapshot_records.vm", {"snapshot_records": [{"vm": "x"}]}, "vm 3"),
        ("task.snapshot_records.vm", {"snapshot_records": {"vm": ""}}, "vm 3"),
        ("task.plan.vm", {"plan": {"vm": None, "error": "no set"}}, "vm 3"),
    ],
)
def test_each_vm_task_is_named_by_its_vm_and_the_fallback_is_text(expression, task, name):
    rendered = render(expression, **task)
    assert rendered == name
    assert isinstance(rendered, str)  # a native render must not turn it into a number


def test_every_mapped_task_of_the_backup_and_drill_dags_has_a_vm_name_template():
    groups, problems = parse_config(config(group(f"{TARGET}\n{DRILL}")), "backup.yaml")
    assert problems == []
    parsed = BackupConfig("backup.yaml", groups, "test")
    dags = build_dags(parsed) | build_restore_dags(parsed)
    mapped = [
        (dag_id, task.task_id, task.map_index_template)
        for dag_id, dag in dags.items()
        for task in dag.tasks
        if task.task_id.startswith("tier_") or task.task_id == "drill_vm"
    ]
    assert {task_id for _, task_id, _ in mapped} >= {"tier_1.precheck", "tier_1.verify", "drill_vm"}
    assert [m for m in mapped if not (m[2] or "").startswith("{{ ((task.")] == []
