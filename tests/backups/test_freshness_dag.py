"""The freshness check DAG under dag.test against the emulator: a stale VM fails its group's task, and the
group's notifier (Slack, to a loopback webhook) names each stale VM and the age of its newest READY set."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gce_vm_backup.config.models import parse_config
from gce_vm_backup.report.freshness import (
    FRESHNESS_DAG_ID,
    StaleBackupNotifier,
    build_freshness_dag,
    failure_reason,
)

from .conftest import CONFIG, Run, dagbag_of

pytestmark = [pytest.mark.airflow, pytest.mark.emulator, pytest.mark.slow]

NOTIFY = "    notify: {slack: {webhook_conn_id: slack_loopback}}\n"
WITH_NOTIFY = CONFIG.replace('    schedule: "0 3 * * *"\n', '    schedule: "0 3 * * *"\n' + NOTIFY)


@pytest.fixture(scope="module")
def dagbag():
    return dagbag_of("freshness", WITH_NOTIFY)


def _states(run):
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_a_stale_vm_fails_its_groups_check_and_notifies_naming_it(dagbag, fleet, webhook):
    dag = dagbag.get_dag(FRESHNESS_DAG_ID)
    assert [task.task_id for task in dag.tasks] == ["check_web"]  # the manual group has no check

    run = dag.test()

    assert _states(run) == {"check_web": "failed"}
    (payload,) = webhook
    text = payload["text"]
    assert text.startswith("*[gce-vm-backup] Backup run failed: gce_vm_backup_freshness (")
    assert "2 VM(s) of group web have no fresh backup:" in text
    assert (
        "web-2 (projects/backup-project/zones/us-central1-a/instances/web-2): newest READY set 4d 23h old"
        in text
    )
    assert (
        "web-3 (projects/backup-project/zones/us-central1-a/instances/web-3): no complete READY snapshot set"
        in text
    )
    assert "web-1 (" not in text  # fresh: its newest READY set is a day old


def test_once_every_vm_has_a_fresh_set_the_check_succeeds_and_says_nothing(dagbag, fleet, webhook):
    for instance in ("web-2", "web-3"):
        Run(instance, timedelta(hours=2), {instance: ("READY", 1)}).seed(fleet)

    run = dagbag.get_dag(FRESHNESS_DAG_ID).test()

    assert _states(run) == {"check_web": "success"}
    assert webhook == []
    rows = _xcom(run, "check_web")
    assert {row["vm"].rsplit("/", 1)[-1]: row["stale"] for row in rows} == {
        "web-1": False,
        "web-2": False,
        "web-3": False,
    }


def _xcom(run, task_id):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=run.run_id, key="return_value", dag_ids=run.dag_id, task_ids=task_id)
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


def test_each_check_is_retried_once_and_notifies_through_its_groups_notifier():
    groups, problems = parse_config(WITH_NOTIFY, "c.yaml")
    assert problems == []
    from gce_vm_backup.config.models import BackupConfig

    dag = build_freshness_dag(BackupConfig("c.yaml", groups, "test"))
    assert dag is not None
    (task,) = dag.tasks
    assert task.retries == 1
    (callback,) = task.on_failure_callback
    assert isinstance(callback, StaleBackupNotifier)


def test_no_scheduled_group_means_no_freshness_dag():
    from gce_vm_backup.config.models import BackupConfig

    groups, _ = parse_config(CONFIG.replace('schedule: "0 3 * * *"', "schedule: null"), "c.yaml")
    assert build_freshness_dag(BackupConfig("c.yaml", groups, "test")) is None


def test_the_notifier_passes_the_checks_message_as_the_reason():
    seen = []

    class Inner:
        def notify(self, context):
            seen.append(context)

    StaleBackupNotifier(Inner()).notify({"run_id": "r", "exception": ValueError("2 VM(s) of group web ...")})
    assert seen == [{"run_id": "r", "exception": seen[0]["exception"], "reason": "2 VM(s) of group web ..."}]


def test_without_the_exception_in_the_context_the_reason_is_the_failure_xcom():
    """Airflow 3.1's dag.test leaves ``exception`` out of the callback context; the worker sets it."""

    class TI:
        task_id = "check_web"

        def xcom_pull(self, task_ids, key, default=None):
            assert (task_ids, key) == ("check_web", "gce_vm_backup_error")
            return {"message": "1 VM(s) of group web have no fresh backup: web-3 ..."}

    assert failure_reason({"ti": TI()}) == "1 VM(s) of group web have no fresh backup: web-3 ..."
    assert failure_reason({"ti": None}) == "stale backups (see the task log)"
