"""What the failure notification says (from the run report), and which notifiers a notify block makes."""

from __future__ import annotations

from unittest.mock import create_autospec

import pytest
from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

from gce_vm_backup.backup import stages
from gce_vm_backup.errors import ConfigError
from gce_vm_backup.report.model import REPORT_XCOM_KEY, VmTaskResults, build_run_report
from gce_vm_backup.report.notify import (
    EmailFailureNotifier,
    SlackFailureNotifier,
    failure_message,
    notifiers_from_config,
)

PROJECT, ZONE = "demo-project", "us-central1-a"


class FakeDag:
    dag_id = "gce_vm_backup__web"


def vm(instance, map_index, *, back=True):
    """A VM backed up in one downtime task; ``back=False``: the downtime task and ensure_running failed."""
    path = f"projects/{PROJECT}/zones/{ZONE}/instances/{instance}"
    snapshot = {
        "vm": path,
        "disk": instance,
        "disk_source": f"projects/{PROJECT}/zones/{ZONE}/disks/{instance}",
        "snapshot": f"{instance}-snap",
        "status": "READY",
        "storage_bytes": 1 << 30,
    }
    downtime = {
        "vm": path,
        "prior_status": "RUNNING",
        "stopped": True,
        "stop_requested_at": "2026-11-24T03:00:00+00:00",
        "captured_at": "2026-11-24T03:00:20+00:00",
        "started": True,
        "running_at": "2026-11-24T03:00:45+00:00",
        "mode": "standard",
        "snapshots": [snapshot],
    }
    result = VmTaskResults(
        stages.tier_group(1),
        map_index,
        states={
            stages.PRECHECK: "success",
            stages.STOP_SNAPSHOT_START: "success",
            stages.ENSURE_RUNNING: "success",
        },
        values={
            stages.PRECHECK: {
                "project_id": PROJECT,
                "zone": ZONE,
                "instance": instance,
                "prior_status": "RUNNING",
            },
            stages.STOP_SNAPSHOT_START: downtime,
            stages.ENSURE_RUNNING: {"started": False, "running_at": None, "status": "RUNNING"},
            stages.VERIFY: [snapshot],
            stages.RETENTION: {"dry_run": False, "deleted": [{"snapshot": "old"}]},
        },
    )
    result.states.update({stages.VERIFY: "success", stages.RETENTION: "success"})
    if not back:
        result.states.update({stages.STOP_SNAPSHOT_START: "failed", stages.ENSURE_RUNNING: "failed"})
        result.values.update({stages.STOP_SNAPSHOT_START: None, stages.ENSURE_RUNNING: None})
    return result


def context_with(report):
    ti = create_autospec(RuntimeTaskInstance, instance=True)
    ti.xcom_pull.return_value = report
    return {"dag": FakeDag(), "run_id": "r1", "reason": "task_failure", "ti": ti}, ti


def test_no_notify_block_means_no_notifier():
    assert notifiers_from_config(None) == []
    assert notifiers_from_config({}) == []


def test_notify_block_gives_one_notifier_per_channel():
    notifiers = notifiers_from_config(
        {"email": {"to": "ops@example.com"}, "slack": {"webhook_conn_id": "slack"}}
    )
    assert [type(n) for n in notifiers] == [EmailFailureNotifier, SlackFailureNotifier]
    assert notifiers[0].settings.to == ["ops@example.com"]


def test_a_bad_notify_block_names_the_key():
    with pytest.raises(ConfigError, match=r"notify\.email\.to: List should have at least 1 item"):
        notifiers_from_config({"email": {"to": []}})
    with pytest.raises(ConfigError, match=r"notify\.pager: Extra inputs are not permitted"):
        notifiers_from_config({"pager": {}})


def test_the_failure_message_carries_the_reports_summary_downtime_and_problems():
    bad = vm("web-2", 1, back=False)
    report = build_run_report(
        dag_id="gce_vm_backup__web", run_id="r1", vms=[vm("web-1", 0), bad], max_concurrent_vms=4
    )
    context, ti = context_with(report)

    _subject, body = failure_message(context)

    ti.xcom_pull.assert_called_once_with(task_ids=stages.REPORT, key=REPORT_XCOM_KEY, default=None)
    assert "1/2 VM(s) ok, 2/2 snapshot(s) READY, 2 old snapshot(s) deleted." in body
    assert "VMs down at once: at most 1 (max_concurrent_vms 4); slowest downtime 45s (web-1)" in body
    assert (
        "- web-2: VM web-2 MAY BE DOWN: it was RUNNING before the backup and no task saw it RUNNING again "
        "(stop_snapshot_start failed, ensure_running failed)." in body
    )
    assert "- web-2: stop_snapshot_start failed (no error was recorded: see the task's log)" in body


def test_the_failure_message_leads_with_the_vms_that_are_down():
    down = vm("web-2", 1, back=False)
    down.status_now = "TERMINATED"
    down.errors[stages.STOP_SNAPSHOT_START] = {
        "cause": "snapshot of disk web-2 failed: QUOTA_EXCEEDED: Quota"
    }
    report = build_run_report(dag_id="gce_vm_backup__web", run_id="r1", vms=[vm("web-1", 0), down])

    subject, body = failure_message(context_with(report)[0])

    assert subject == "[gce-vm-backup] VM(s) DOWN: web-2 - backup run failed: gce_vm_backup__web (r1)"
    assert body.splitlines()[0] == (
        f"VM DOWN: projects/{PROJECT}/zones/{ZONE}/instances/web-2 is TERMINATED (it was RUNNING before the "
        f"backup); start it by hand: gcloud compute instances start web-2 --project={PROJECT} --zone={ZONE}"
    )
    assert "- web-2: snapshot of disk web-2 failed: QUOTA_EXCEEDED: Quota" in body


def test_the_failure_message_still_goes_out_when_the_report_cannot_be_read():
    context, ti = context_with(None)
    ti.xcom_pull.side_effect = RuntimeError("API server unreachable")

    subject, body = failure_message(context)

    assert subject == "[gce-vm-backup] Backup run failed: gce_vm_backup__web (r1)"
    assert "task_failure" in body
    assert "'ensure_running'" in body


def test_email_notifier_sends_through_the_smtp_provider(monkeypatch):
    from airflow.providers.smtp.notifications import smtp

    sent = []
    monkeypatch.setattr(smtp.SmtpNotifier, "notify", lambda self, context: sent.append(self))
    (notifier,) = notifiers_from_config({"email": {"to": ["ops@example.com"], "smtp_conn_id": "mail"}})
    notifier.notify({"dag": FakeDag(), "run_id": "r1", "reason": "task_failure"})
    (email,) = sent
    assert (email.to, email.smtp_conn_id) == (["ops@example.com"], "mail")
    assert email.subject == "[gce-vm-backup] Backup run failed: gce_vm_backup__web (r1)"
    assert "task_failure" in email.html_content
    assert "run_report" in email.html_content
