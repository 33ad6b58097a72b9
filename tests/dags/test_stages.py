"""The declaration of a VM's stages (stages.VM_STAGES) and its readers: every declared stage is built by
the factory where the declaration says, after what it says, and read by the report and the benchmarks."""

from __future__ import annotations

import ast
import importlib

import pytest
from airflow.sdk import BaseOperator

from gce_vm_backup.backup import stages
from gce_vm_backup.config.models import BackupConfig, parse_config
from gce_vm_backup.dags import backup as factory
from gce_vm_backup.report import model

from ..conftest import REPO

# Every kind of chain: one tier and tiered, standard and instant, with and without retention.
CONFIG = """
version: 1
deployment: test
defaults:
  start_date: "2026-01-01T00:00:00+00:00"
groups:
  tiered:
    retention: {keep_last: 3}
    tiers:
      - - {project: demo-project, zone: us-central1-a, instance: web-1}
      - - {project: demo-project, zone: us-central1-b, instance: db-1}
  instant:
    snapshot_mode: instant
    targets: [{project: demo-project, zone: us-central1-a, instance: app-1}]
"""


@pytest.fixture(scope="module")
def config():
    groups, problems = parse_config(CONFIG, "test.yaml")
    assert problems == []
    return BackupConfig("test.yaml", groups, "test")


def test_stage_ids_are_unique_and_each_operator_is_an_operator_class():
    assert len(stages.STAGES_BY_ID) == len(stages.VM_STAGES)
    for stage in stages.VM_STAGES:
        module, _, name = stage.operator.partition(":")
        assert issubclass(getattr(importlib.import_module(module), name), BaseOperator), stage.id
        assert stage.tiers in (stages.EVERY_TIER, stages.INNERMOST, stages.OUTER)
        assert set(stage.modes) <= set(stages.MODES)
        assert set(stage.after) <= set(stages.STAGES_BY_ID), stage.id


def test_every_stage_has_its_arguments_in_the_factory():
    assert set(factory.STAGE_ARGUMENTS) == set(stages.STAGES_BY_ID)


def test_an_option_is_a_group_key():
    from gce_vm_backup.config.models import Group

    assert {s.option for s in stages.VM_STAGES if s.option} <= set(Group.model_fields)


def test_stages_imports_nothing_of_the_package_airflow_or_google():
    tree = ast.parse((REPO / "plugins/operators/gce_vm_backup/backup/stages.py").read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "collections.abc", "dataclasses"}


def test_each_tier_group_is_its_chain_in_order_after_what_each_stage_names(config):
    dags = factory.build_dags(config)
    for group_id, group in config.groups.items():
        dag = dags[factory.dag_id_for(group_id)]
        tiers = len(group.tier_list)
        for number in range(1, tiers + 1):
            chain = stages.vm_chain(
                innermost=number == tiers,
                mode=group.snapshot_mode,
                options={"retention"} if group.retention else (),
            )
            prefix = stages.tier_task(number, "")
            built = [t.task_id.removeprefix(prefix) for t in dag.tasks if t.task_id.startswith(prefix)]
            assert built == [stage.id for stage in chain]
            for stage in chain:
                task = dag.get_task(stages.tier_task(number, stage.id))
                assert type(task).__name__ == stage.operator.rpartition(":")[2]
                after = {stages.tier_task(number, a) for a in stage.after if a in built}
                assert after <= task.upstream_task_ids, stage.id
                assert (task.is_setup, task.is_teardown) == (stage.setup, stage.teardown), stage.id
            # the dry run names the same chain
            assert dag.get_task(stages.resolve_task(number)).chain == [stage.id for stage in chain]


def test_the_report_reads_the_declaration():
    assert tuple(s.id for s in stages.VM_STAGES if s.reported) == model.VM_TASKS
    assert set(model.DOWNTIME_TASKS) == {stages.STOP_SNAPSHOT_START, stages.STOP_SNAPSHOT}
    assert set(stages.SNAPSHOT_STAGES) == {stages.VERIFY, stages.CONVERT}


def test_a_stage_the_declaration_turns_off_is_not_built(config):
    dag = factory.build_dags(config)["gce_vm_backup__instant"]
    assert stages.tier_task(1, stages.RETENTION) not in dag.task_dict  # no policy
    assert stages.tier_task(1, stages.VERIFY) not in dag.task_dict  # instant mode: convert instead
    assert stages.tier_task(1, stages.CONVERT) in dag.task_dict
