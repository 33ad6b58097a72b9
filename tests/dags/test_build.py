"""The package's cheaper operator construction (_build.py) builds what Airflow's own path builds: the same
tasks, arguments, template fields, dependencies and recorded init arguments, for every kind of DAG."""

from __future__ import annotations

import sys
import weakref
from typing import Any

import pytest
from airflow.sdk import DAG, BaseOperator
from airflow.sdk.definitions._internal.abstractoperator import AbstractOperator
from airflow.sdk.definitions.xcom_arg import XComArg

from gce_vm_backup.config.models import BackupConfig, parse_config
from gce_vm_backup.dags.backup import build_all_dags
from gce_vm_backup.runtime import build as _build

from ..conftest import REPO

# Every operator class of the package: tiers (stop_snapshot/start), instant mode (convert), retention,
# the restore and drill DAGs, the freshness check.
CONFIG = """
version: 1
deployment: test
defaults:
  start_date: "2026-01-01T00:00:00+00:00"
  retention: {keep_last: 3}
groups:
  tiered:
    schedule: "0 3 * * *"
    tiers:
      - - {project: demo-project, zone: us-central1-a, instance: web-1}
        - {project: demo-project, zone: us-central1-a, instance: web-2}
      - - {project: demo-project, zone: us-central1-b, instance: db-1}
    restore_drill: {scratch_zone: us-central1-b, scratch_project: drill-scratch, network: drills}
  instant:
    schedule: "@daily"
    snapshot_mode: instant
    wait_mode: reschedule
    targets:
      - {project: demo-project, zone: us-central1-a, instance: app-1}
      - {project: demo-project, zones: all, labels: {backup: daily}}
"""


def _airflows_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's own: every __init__ through its apply_defaults wrapper, every attribute through
    BaseOperator.__setattr__, one set_upstream per XComArg."""
    for module in [m for name, m in sys.modules.items() if name.startswith("gce_vm_backup")]:
        if getattr(module, "init_super", None) is _build.init_super:
            monkeypatch.setattr(
                module, "init_super", lambda cls, op, kwargs: super(cls, op).__init__(**kwargs)
            )
        if getattr(module, "set_fields", None) is _build.set_fields:
            monkeypatch.setattr(module, "set_fields", _setattr_each)
    monkeypatch.setattr(
        _build.FastBuild, "_set_xcomargs_dependencies", BaseOperator._set_xcomargs_dependencies
    )
    monkeypatch.delattr(_build.FastBuild, "__setattr__")  # BaseOperator.__setattr__, the next in the MRO


def _setattr_each(operator: Any, /, **values: Any) -> None:
    for name, value in values.items():
        setattr(operator, name, value)  # BaseOperator.__setattr__


def _plain(value: Any, depth: int = 0) -> Any:
    """Comparable across two builds: tasks, DAGs and XComArgs by what they refer to, other objects without
    an equality of their own (a notifier) by their attributes."""
    if isinstance(value, XComArg):
        return ("xcom", [(op.task_id, key) for op, key in value.iter_references()])
    if isinstance(value, DAG):
        return ("dag", value.dag_id)
    if isinstance(value, AbstractOperator):  # a task, mapped or not
        return ("task", value.task_id)
    if type(value) in weakref.ProxyTypes:  # an unmapped task's task group
        return ("proxy", getattr(value, "group_id", None))
    if isinstance(value, dict):
        return {k: _plain(v, depth) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth) for v in value]
    if type(value).__module__.startswith(("airflow.sdk.definitions.taskgroup", "airflow.sdk.bases")):
        return ("object", type(value).__name__, getattr(value, "group_id", None))
    if type(value).__eq__ is object.__eq__ and hasattr(value, "__dict__") and depth < 3:
        return ("object", type(value).__name__, _plain(vars(value), depth + 1))
    return value


def _task(task: Any) -> dict[str, Any]:
    attributes = {
        k: v for k, v in vars(task).items() if k not in ("_dag", "task_group", "_BaseOperator__init_kwargs")
    }
    return {
        "class": type(task).__name__,
        "attributes": _plain(attributes),
        "init_kwargs": _plain(getattr(task, "_BaseOperator__init_kwargs", {})),
        "upstream": sorted(task.upstream_task_ids),
        "downstream": sorted(task.downstream_task_ids),
        "template_fields": list(task.template_fields),
    }


def _build_all() -> dict[str, dict[str, Any]]:
    groups, problems = parse_config(CONFIG, "test.yaml")
    assert problems == []
    dags = build_all_dags(BackupConfig("test.yaml", groups, "test"))
    return {dag_id: {t.task_id: _task(t) for t in dag.tasks} for dag_id, dag in dags.items()}


def test_every_task_is_built_as_airflows_own_path_builds_it(monkeypatch):
    ours = _build_all()
    with monkeypatch.context() as patch:
        _airflows_path(patch)
        reference = _build_all()
    kinds = {type_name for dag in ours.values() for type_name in (t["class"] for t in dag.values())}
    assert {
        "ConvertInstantSnapshotsOperator",
        "VerifySnapshotsOperator",
        "CreateRestoreDisksOperator",
        "DrillPlanOperator",
        "FreshnessCheckOperator",
        "StopSnapshotOperator",
    } <= kinds
    assert ours.keys() == reference.keys()
    for dag_id, tasks in ours.items():
        assert tasks.keys() == reference[dag_id].keys(), dag_id
        for task_id, task in tasks.items():
            assert task == reference[dag_id][task_id], f"{dag_id}.{task_id}"


def test_default_args_still_reach_a_skipped_layers_parameters():
    """A DAG's default_args fill the parameters of every class of the MRO, the skipped wrappers' too."""
    from gce_vm_backup.operators import VerifySnapshotsOperator
    from gce_vm_backup.restore.ops import CreateRestoreDisksOperator

    with DAG("defaults", schedule=None, default_args={"gcp_conn_id": "theirs", "exponential_backoff": True}):
        verify = VerifySnapshotsOperator(task_id="verify", snapshot_records=[])
        step = CreateRestoreDisksOperator(task_id="step", plan={}, deployment="test", group="g")
    assert (verify.gcp_conn_id, verify.exponential_backoff, step.gcp_conn_id) == ("theirs", True, "theirs")
    assert verify._BaseOperator__init_kwargs["gcp_conn_id"] == "theirs"


def test_an_xcomarg_in_a_template_field_is_still_an_upstream(monkeypatch):
    from gce_vm_backup.operators import EnsureRunningOperator, PrecheckInstanceOperator

    with DAG("deps", schedule=None):
        precheck = PrecheckInstanceOperator(task_id="precheck", project_id="p", zone="z", instance="i")
        ensure = EnsureRunningOperator(
            task_id="ensure",
            instance_record={"nested": [precheck.output, precheck.output["x"]]},
            downtime_task="t",
        )
    assert ensure.upstream_task_ids == {"precheck"}
    assert precheck.downstream_task_ids == {"ensure"}


def test_the_shipped_config_builds_alike_too(monkeypatch):
    from gce_vm_backup.config.models import load_config

    def build() -> dict[str, Any]:
        dags = build_all_dags(load_config(REPO / "dags" / "gce_vm_backup.yaml"))
        return {dag_id: {t.task_id: _task(t) for t in dag.tasks} for dag_id, dag in dags.items()}

    ours = build()
    with monkeypatch.context() as patch:
        _airflows_path(patch)
        assert build() == ours


def _pair() -> tuple[Any, Any]:
    from gce_vm_backup.operators import EnsureRunningOperator, PrecheckInstanceOperator

    with DAG("setattr", schedule=None, default_args={"retries": 1}):
        precheck = PrecheckInstanceOperator(task_id="precheck", project_id="p", zone="z", instance="i")
        ensure = EnsureRunningOperator(task_id="ensure", instance_record={}, downtime_task="t")
    return precheck, ensure


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("retries", "3"),  # converted (_convert_retries)
        ("retry_delay", 45),  # converted to a timedelta
        ("owner", "sre"),  # a plain BaseOperator field, recorded in the init arguments
        ("downtime_task", "other"),  # the operator's own argument
        ("instance_record", "precheck output"),  # a template field: an XComArg set now adds its upstream
    ],
)
def test_an_attribute_set_after_the_build_does_what_base_operators_setattr_does(key, value):
    results = []
    for assign in (setattr, BaseOperator.__setattr__):
        precheck, ensure = _pair()
        assign(ensure, key, precheck.output if value == "precheck output" else value)
        results.append((_task(ensure), sorted(precheck.downstream_task_ids)))
    assert results[0] == results[1]
    if key == "instance_record":
        assert results[0][0]["upstream"] == ["precheck"]
    if key in ("retries", "retry_delay"):
        assert results[0][0]["attributes"][key] != value  # converted, as Airflow converts it


def test_an_operator_unmapped_from_a_mapped_one_sets_its_attributes_as_airflow_does(monkeypatch):
    """The drill's mapped task, unmapped as a worker does (``_airflow_from_mapped``): same either way."""

    def unmapped() -> dict[str, Any]:
        dags = build_all_dags(BackupConfig("test.yaml", parse_config(CONFIG, "test.yaml")[0], "test"))
        operator = dags["gce_vm_backup_drill__tiered"].get_task("drill_vm").unmap({"plan": {"vm": "web-1"}})
        assert operator._BaseOperator__from_mapped
        return _task(operator)

    ours = unmapped()
    with monkeypatch.context() as patch:
        _airflows_path(patch)
        assert unmapped() == ours


def test_the_fast_setattr_is_used_only_where_airflows_is_the_one_it_copies():
    assert _build.is_the_copied_setattr(BaseOperator.__setattr__)  # every supported Airflow
    assert "__setattr__" in vars(_build.FastBuild)

    def changed_upstream(self, key, value):  # what a later Airflow might do: one more step
        self._record_setattr(key)
        return BaseOperator.__setattr__(self, key, value)

    assert not _build.is_the_copied_setattr(changed_upstream)
