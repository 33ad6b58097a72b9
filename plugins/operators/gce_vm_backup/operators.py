"""The operators, in one import: ``from gce_vm_backup.operators import ...``.

Importing this module imports Airflow's SDK and nothing Google: the hook and the client library are
imported inside execute()/poke(), so DAG parsing stays fast and makes no API call.
"""

from gce_vm_backup.downtime_ops import StopSnapshotOperator, StopSnapshotStartOperator
from gce_vm_backup.precheck_ops import EnsureRunningOperator, PrecheckInstanceOperator
from gce_vm_backup.report import RunReportOperator
from gce_vm_backup.resolve_ops import ResolveTargetsOperator
from gce_vm_backup.retention_ops import ApplyRetentionOperator, VerifySnapshotsOperator
from gce_vm_backup.waits import SlotFreeWait

__all__ = [
    "ApplyRetentionOperator",
    "EnsureRunningOperator",
    "PrecheckInstanceOperator",
    "ResolveTargetsOperator",
    "RunReportOperator",
    "SlotFreeWait",
    "StopSnapshotOperator",
    "StopSnapshotStartOperator",
    "VerifySnapshotsOperator",
]
