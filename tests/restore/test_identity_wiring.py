"""Which identity runs what: restore and drill tasks impersonate the configured accounts, backup tasks never."""

from __future__ import annotations

import pytest

from gce_vm_backup.config.models import BackupConfig, parse_config
from gce_vm_backup.dags.backup import build_all_dags

from ..conftest import TARGET, config, group

RESTORE_SA = "vm-backup-restore@ops-project.iam.gserviceaccount.com"
DRILL_SA = "vm-backup-drill@ops-project.iam.gserviceaccount.com"
DRILL = "restore_drill: {scratch_zone: us-central1-b, scratch_project: drill-scratch, network: drills}"


def all_dags(text):
    groups, problems = parse_config(text, "backup.yaml")
    assert problems == []
    return build_all_dags(BackupConfig("backup.yaml", groups, "test"))


def google_tasks(dag):
    """The tasks that call Compute Engine (they have a connection; choose and approve have none), each
    with the identity it impersonates (a mapped task's from its partial kwargs)."""
    found = []
    for task in dag.tasks:
        kwargs = getattr(task, "partial_kwargs", None)
        if kwargs is not None and "gcp_conn_id" in kwargs:
            found.append((task.task_id, kwargs.get("impersonation_chain")))
        elif kwargs is None and hasattr(task, "gcp_conn_id"):
            found.append((task.task_id, task.impersonation_chain))
    return found


def test_restore_and_drill_tasks_impersonate_the_restore_account_and_backup_tasks_do_not():
    dags = all_dags(
        config(
            group(f"schedule: '@daily'\n{TARGET}\n{DRILL}"),
            defaults=f'start_date: "2026-01-01T00:00:00+00:00"\n  restore_service_account: {RESTORE_SA}',
        )
    )

    restore, drill = dags["gce_vm_backup_restore__web"], dags["gce_vm_backup_drill__web"]
    backup = dags["gce_vm_backup__web"]
    assert {"plan", "create_disks", "stop", "swap_disks"} <= {t for t, _ in google_tasks(restore)}
    assert {"plan", "drill_vm", "cleanup"} <= {t for t, _ in google_tasks(drill)}
    for task_id, chain in [*google_tasks(restore), *google_tasks(drill)]:
        assert chain == RESTORE_SA, task_id
    assert len(google_tasks(backup)) >= 5
    for task_id, chain in google_tasks(backup):
        assert chain is None, task_id


def test_a_drill_account_of_its_own_runs_the_drill_and_only_the_drill():
    body = f"{TARGET}\n{DRILL}\nrestore_service_account: {RESTORE_SA}\ndrill_service_account: {DRILL_SA}"
    dags = all_dags(config(group(body)))

    for task_id, chain in google_tasks(dags["gce_vm_backup_drill__web"]):
        assert chain == DRILL_SA, task_id
    for task_id, chain in google_tasks(dags["gce_vm_backup_restore__web"]):
        assert chain == RESTORE_SA, task_id


def test_without_the_key_every_task_runs_as_the_connection():
    dags = all_dags(config(group(f"{TARGET}\n{DRILL}")))

    for dag in dags.values():
        for task_id, chain in google_tasks(dag):
            assert chain is None, (dag.dag_id, task_id)


@pytest.mark.parametrize(
    "value",
    ["restore@example.com", "not an email", "a@b.iam.gserviceaccount.com.evil.com", 42],
)
def test_a_restore_account_that_is_not_a_service_account_email_is_refused_naming_the_key(value):
    groups, problems = parse_config(config(group(f"{TARGET}\nrestore_service_account: {value}")), "b.yaml")

    assert groups == {}
    assert len(problems) == 1
    assert problems[0].key == "restore_service_account"
    assert str(problems[0]).startswith("b.yaml: group 'web': key 'restore_service_account': ")
