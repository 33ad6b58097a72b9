"""The operators, in one import: ``from gce_vm_backup.operators import ...``.

Importing this module imports Airflow's SDK and nothing Google: the hook and the client library are
imported inside execute()/poke(), so DAG parsing stays fast and makes no API call.
"""

from gce_vm_backup.instance_ops import (
    ConvergeSensor,
    PrecheckInstanceOperator,
    ResolveTargetsOperator,
    StartInstanceOperator,
    StopInstanceOperator,
)
from gce_vm_backup.report import RunReportOperator
from gce_vm_backup.retention_ops import ApplyRetentionOperator, VerifySnapshotsOperator
from gce_vm_backup.snapshot_ops import SnapshotDisksOperator

__all__ = [
    "ApplyRetentionOperator",
    "ConvergeSensor",
    "PrecheckInstanceOperator",
    "ResolveTargetsOperator",
    "RunReportOperator",
    "SnapshotDisksOperator",
    "StartInstanceOperator",
    "StopInstanceOperator",
    "VerifySnapshotsOperator",
]
