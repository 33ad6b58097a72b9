"""What every restore and drill task shares: the restore hook (built lazily), the run's identity and labels.

The hook is ``restore_hook.RestoreHook`` (imported inside execute: parse-time rule). Failures are recorded
for the reports like the backup tasks' (``_base.RecordsFailures``: XCom ``gce_vm_backup_error``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseOperator

from gce_vm_backup.config.labels import (
    DEPLOYMENT_KEY,
    GROUP_KEY,
    MANAGED_BY_KEY,
    MANAGED_BY_VALUE,
    check_deployment,
    check_group,
    label_value,
    run_label,
)
from gce_vm_backup.runtime.base import HookMixin, RunKey


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def seconds_between(start: str | None, end: str | None) -> int | None:
    if not start or not end:
        return None
    return max(int((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()), 0)


class RestoreTask(HookMixin, BaseOperator):
    """Base of the restore and drill operators: ``deployment`` and ``group`` scope every label."""

    deployment: str
    group: str

    def __init__(
        self,
        *,
        deployment: str,
        group: str,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deployment = check_deployment(deployment)
        self.group = check_group(group)
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain

    @property
    def hook(self) -> Any:  # a RestoreHook (the backup hook plus disks/instances create and delete)
        if self._hook is None:
            from gce_vm_backup.compute.restore_hook import RestoreHook

            self._hook = RestoreHook(
                gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain
            )
        return self._hook

    def scope_labels(self, run_key: str, run_hash: str) -> dict[str, str]:
        """The labels of everything this run makes: ours, this deployment's and group's, this run's."""
        return {
            MANAGED_BY_KEY: MANAGED_BY_VALUE,
            DEPLOYMENT_KEY: self.deployment,
            GROUP_KEY: label_value(self.group),
            run_key: run_hash,
        }

    @staticmethod
    def run_hash(context: Any) -> str:
        return run_label(context["ti"].dag_id, context["run_id"])

    def run_key(self, context: Any) -> RunKey:
        return RunKey.from_context(context, deployment=self.deployment)
