"""The operators, in one import: ``from gce_vm_backup.operators import ...``.

Importing this module imports Airflow's SDK and nothing Google: the hook and the client library are
imported inside execute()/poke(), so DAG parsing stays fast and makes no API call.
"""

from gce_vm_backup.backup.downtime import StopSnapshotOperator, StopSnapshotStartOperator
from gce_vm_backup.backup.precheck import EnsureRunningOperator, PrecheckInstanceOperator
from gce_vm_backup.backup.resolve import ResolveTargetsOperator
from gce_vm_backup.backup.retention import ApplyRetentionOperator, VerifySnapshotsOperator
from gce_vm_backup.report.signals import RunSignalsOperator
from gce_vm_backup.report.task import RunReportOperator
from gce_vm_backup.runtime.waits import SlotFreeWait

__all__ = [
    "ApplyRetentionOperator",
    "EnsureRunningOperator",
    "PrecheckInstanceOperator",
    "ResolveTargetsOperator",
    "RunReportOperator",
    "RunSignalsOperator",
    "SlotFreeWait",
    "StopSnapshotOperator",
    "StopSnapshotStartOperator",
    "VerifySnapshotsOperator",
]
