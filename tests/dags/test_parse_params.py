"""The trigger form's params live on the DAG only (set once its tasks exist, for parse time), and mean
what they meant: the tasks render them, the trigger form and the conf check read them."""

from __future__ import annotations

import pytest
from airflow.sdk.definitions.param import ParamsDict, process_params

from gce_vm_backup.backup import stages
from gce_vm_backup.config.models import load_config
from gce_vm_backup.dags.backup import build_dags

from ..conftest import REPO

TRIGGER_KEYS = {"vms", "dry_run"}


@pytest.fixture(scope="module")
def dags():
    return build_dags(load_config(REPO / "dags" / "gce_vm_backup.yaml"))


def test_no_task_carries_a_copy_of_the_dags_params(dags):
    for dag in dags.values():
        assert set(dag.params) == TRIGGER_KEYS
        assert [task.task_id for task in dag.tasks if task.params] == []


def test_every_dags_param_defaults_pass_the_check_airflow_runs_for_a_scheduled_dag(dags):
    """What DAG._validate_params would have checked at parse time: the defaults are valid."""
    for dag in dags.values():
        assert ParamsDict(dag.params).validate() == {"vms": [], "dry_run": False}


def test_a_task_still_renders_the_params_from_the_dag_and_the_runs_conf(dags):
    dag = dags["gce_vm_backup__shop-nightly"]
    resolve = dag.get_task(stages.resolve_task(1))
    vm = dag.params.get_param("vms").schema["items"]["enum"][0]
    assert process_params(dag, resolve, None, suppress_exception=False) == {"vms": [], "dry_run": False}
    conf = {"vms": [vm], "dry_run": True}
    assert process_params(dag, resolve, conf, suppress_exception=False) == conf


def _check_conf(params, conf):
    """What the trigger path does with a run's conf: merge it into the DAG's params and validate."""
    if hasattr(params, "deep_merge"):
        return params.deep_merge(conf).validate()
    merged = params.__class__(dict(params.items()))  # Airflow 3.1: ParamsDict.update, then validate
    merged.update(conf)
    return merged.validate()


def test_the_serialized_dag_keeps_the_trigger_form_and_refuses_a_bad_conf(dags):
    from airflow.exceptions import ParamValidationError

    try:
        from airflow.serialization.serialized_objects import DagSerialization
    except ImportError:  # Airflow 3.1
        from airflow.serialization.serialized_objects import SerializedDAG as DagSerialization

    for dag in dags.values():
        serialized = DagSerialization.from_dict(DagSerialization.to_dict(dag))
        assert set(serialized.params) == TRIGGER_KEYS
        with pytest.raises(ParamValidationError):
            _check_conf(serialized.params, {"dry_run": "maybe"})


def test_no_field_of_the_backup_form_is_required_and_each_may_be_null(dags):
    """Airflow's form (FlexibleForm isParamRequired, 3.1.7 and 3.3) marks a field required, and will not
    submit it empty, unless its schema's type is a list including "null"; a cleared multi-select is sent as
    null."""
    for dag in dags.values():
        for name in TRIGGER_KEYS:
            kind = dag.params.get_param(name).schema["type"]
            assert isinstance(kind, list), (dag.dag_id, name)
            assert "null" in kind, (dag.dag_id, name)
        assert _check_conf(dag.params, {"vms": None, "dry_run": None}) == {"vms": None, "dry_run": None}
