"""build_dag hands the config's deployment and the group id to every task that labels or lists snapshots."""

from __future__ import annotations

from gce_vm_backup.backup.stages import RETENTION, STOP_SNAPSHOT, STOP_SNAPSHOT_START, resolve_task, tier_task
from gce_vm_backup.config.models import DEPLOYMENT_ENV, load_config
from gce_vm_backup.dags.backup import build_dags

from ..conftest import REPO


def test_snapshot_retention_and_resolve_get_the_deployment_and_the_group(monkeypatch):
    monkeypatch.setenv(DEPLOYMENT_ENV, "staging")
    dags = build_dags(load_config(REPO / "dags" / "gce_vm_backup.yaml"))
    dag = dags["gce_vm_backup__shop-nightly"]
    for task_id in (
        resolve_task(1),
        tier_task(1, STOP_SNAPSHOT),
        tier_task(2, STOP_SNAPSHOT_START),
        tier_task(1, RETENTION),
    ):
        task = dag.get_task(task_id)
        assert (task.deployment, task.group) == ("staging", "shop-nightly"), task_id
