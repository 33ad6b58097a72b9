"""The failure notifiers against real servers on loopback: the email goes through Airflow's SMTP provider to
an aiosmtpd server, the Slack message through the Slack provider to an HTTP server in the webhook's place."""

from __future__ import annotations

import json
import smtplib
import sys

import pytest

from gce_vm_backup.errors import BackupError, ConfigError
from gce_vm_backup.report.notify import notifiers_from_config

SUBJECT = "[gce-vm-backup] Backup run failed: gce_vm_backup__web (r1)"


class FakeDag:
    dag_id = "gce_vm_backup__web"


CONTEXT = {"dag": FakeDag(), "run_id": "r1", "reason": "task_failure"}


def test_the_failure_email_reaches_the_smtp_server_with_subject_and_body(smtp_server):
    (notifier,) = notifiers_from_config(
        {
            "email": {
                "to": ["ops@example.com", "oncall@example.com"],
                "from_email": "backup@example.com",
                "smtp_conn_id": "mail_loopback",
            }
        }
    )
    notifier.notify(CONTEXT)

    ((sender, recipients, message),) = smtp_server.received
    assert sender == "backup@example.com"
    assert sorted(recipients) == ["oncall@example.com", "ops@example.com"]
    assert message["Subject"] == SUBJECT
    assert message["From"] == "backup@example.com"
    body = "".join(
        part.get_payload(decode=True).decode()
        for part in message.walk()
        if part.get_content_type() == "text/html"
    )
    assert "The backup DAG gce_vm_backup__web, run r1, failed: task_failure." in body
    assert "XCom 'run_report' of the task 'run_report'" in body


def test_a_refused_recipient_fails_the_notification_loudly(smtp_server):
    smtp_server.refuse.add("ghost@example.com")
    (notifier,) = notifiers_from_config(
        {
            "email": {
                "to": ["ghost@example.com"],
                "from_email": "backup@example.com",
                "smtp_conn_id": "mail_loopback",
            }
        }
    )
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        notifier.notify(CONTEXT)
    assert smtp_server.received == []


def _slack_conn(monkeypatch, password: str) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SLACK_LOOPBACK", json.dumps({"conn_type": "slackwebhook", "password": password})
    )


def test_the_slack_message_is_posted_to_the_webhook_of_the_connection(monkeypatch, slack_webhook):
    _slack_conn(monkeypatch, f"{slack_webhook.url}/services/T0/B0/secret")
    (notifier,) = notifiers_from_config({"slack": {"webhook_conn_id": "slack_loopback"}})
    notifier.notify(CONTEXT)

    ((path, payload),) = slack_webhook.posts
    assert path == "/services/T0/B0/secret"
    assert payload["text"].startswith(f"*{SUBJECT}*\nThe backup DAG gce_vm_backup__web, run r1, failed")
    assert "channel" not in payload


def test_the_slack_channel_is_passed_on_to_a_legacy_webhook(monkeypatch, slack_webhook):
    _slack_conn(monkeypatch, f"{slack_webhook.url}/services/T0/B0/secret")
    (notifier,) = notifiers_from_config({"slack": {"webhook_conn_id": "slack_loopback", "channel": "#ops"}})
    with pytest.warns(UserWarning, match="cannot override the default channel"):
        notifier.notify(CONTEXT)
    ((_path, payload),) = slack_webhook.posts
    assert payload["channel"] == "#ops"


def test_a_webhook_that_refuses_the_post_fails_the_notification(monkeypatch, slack_webhook):
    from airflow.exceptions import AirflowException

    slack_webhook.status, slack_webhook.answer = 404, "no_service"
    _slack_conn(monkeypatch, f"{slack_webhook.url}/services/T0/B0/revoked")
    (notifier,) = notifiers_from_config({"slack": {"webhook_conn_id": "slack_loopback"}})
    with pytest.raises(AirflowException, match="no_service"):
        notifier.notify(CONTEXT)
    assert len(slack_webhook.posts) == 1


def test_a_slack_connection_without_a_webhook_says_so(monkeypatch):
    from airflow.exceptions import AirflowNotFoundException

    monkeypatch.setenv(
        "AIRFLOW_CONN_SLACK_LOOPBACK", json.dumps({"conn_type": "slackwebhook", "host": "example"})
    )
    (notifier,) = notifiers_from_config({"slack": {"webhook_conn_id": "slack_loopback"}})
    with pytest.raises(AirflowNotFoundException, match="'slack_loopback' does not contain password"):
        notifier.notify(CONTEXT)


def test_without_the_slack_provider_the_group_fails_to_build_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "airflow.providers.slack", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"notify\.slack: .*install gce-vm-backup\[slack\]"):
        notifiers_from_config({"slack": {"webhook_conn_id": "slack_loopback"}})


def test_a_provider_gone_by_notification_time_is_a_clear_error(monkeypatch):
    (notifier,) = notifiers_from_config({"slack": {"webhook_conn_id": "slack_loopback"}})
    monkeypatch.setitem(sys.modules, "airflow.providers.slack.hooks.slack_webhook", None)
    with pytest.raises(BackupError, match=r"install gce-vm-backup\[slack\]"):
        notifier.notify(CONTEXT)


def test_the_hand_written_webhook_post_is_gone():
    import gce_vm_backup.report.notify as notify

    assert not hasattr(notify.SlackFailureNotifier, "_post")
    assert "requests" not in notify.__dict__
