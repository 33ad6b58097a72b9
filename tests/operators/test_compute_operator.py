"""ComputeOperator: the one place that takes the connection and the identity of every Compute Engine
operator and sensor; they stay ordinary operator arguments (default_args, partial)."""

from __future__ import annotations

import inspect
from datetime import datetime

import pytest
from airflow.sdk import DAG

from gce_vm_backup import operators
from gce_vm_backup.backup.instant_convert import ConvertInstantSnapshotsOperator
from gce_vm_backup.report.freshness import FreshnessCheckOperator
from gce_vm_backup.restore import drill, holds, ops, plan
from gce_vm_backup.runtime.base import ComputeOperator

RECORD = {"project_id": "p", "zone": "z", "instance": "vm"}
SHARED = ("gcp_conn_id", "impersonation_chain")
OPERATORS = {
    operators.StopSnapshotOperator: {"instance_record": RECORD, "deployment": "d", "group": "g"},
    operators.VerifySnapshotsOperator: {"snapshot_records": []},
    ConvertInstantSnapshotsOperator: {"instant_records": [], "deployment": "d", "group": "g"},
    ops.SwapDisksOperator: {"plan": {}, "deployment": "d", "group": "g"},
    drill.DrillVmOperator: {"plan": {}, "drill": {}, "deployment": "d", "group": "g"},
}


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


def test_every_compute_operator_takes_the_shared_arguments_from_the_base_only():
    subclasses = {c for c in _subclasses(ComputeOperator) if c.__module__.startswith("gce_vm_backup.")}
    assert {
        operators.ResolveTargetsOperator,
        operators.RunReportOperator,
        FreshnessCheckOperator,
    } <= subclasses
    assert {plan.RestorePlanOperator, holds.HoldSnapshotsOperator, operators.SlotFreeWait} <= subclasses
    for cls in subclasses:
        own = inspect.signature(cls.__dict__.get("__init__", lambda self: None)).parameters
        assert not set(SHARED) & set(own), cls.__name__
    base = inspect.signature(ComputeOperator.__init__).parameters
    assert all(base[name].kind is inspect.Parameter.KEYWORD_ONLY for name in SHARED)
    assert (base["gcp_conn_id"].default, base["impersonation_chain"].default) == (
        "google_cloud_default",
        None,
    )


@pytest.mark.parametrize("cls", list(OPERATORS), ids=lambda c: c.__name__)
def test_the_shared_arguments_come_from_the_task_then_default_args_then_the_default(cls):
    default_args = {"gcp_conn_id": "from-defaults", "impersonation_chain": "sa@p.iam.gserviceaccount.com"}
    with DAG("shared", schedule=None, start_date=datetime(2026, 1, 1), default_args=default_args):
        given = cls(task_id="given", gcp_conn_id="given", impersonation_chain=None, **OPERATORS[cls])
        defaulted = cls(task_id="defaulted", **OPERATORS[cls])
    with DAG("plain", schedule=None, start_date=datetime(2026, 1, 1)):
        plain = cls(task_id="plain", **OPERATORS[cls])

    assert (given.gcp_conn_id, given.impersonation_chain) == ("given", None)
    assert (defaulted.gcp_conn_id, defaulted.impersonation_chain) == tuple(default_args.values())
    assert (plain.gcp_conn_id, plain.impersonation_chain) == ("google_cloud_default", None)


@pytest.mark.parametrize("cls", list(OPERATORS), ids=lambda c: c.__name__)
def test_partial_accepts_the_shared_arguments(cls):
    with DAG("mapped", schedule=None, start_date=datetime(2026, 1, 1)):
        partial = cls.partial(task_id="mapped", gcp_conn_id="c", impersonation_chain="sa", **OPERATORS[cls])
        partial.expand_kwargs([{}])

    assert (partial.kwargs["gcp_conn_id"], partial.kwargs["impersonation_chain"]) == ("c", "sa")
