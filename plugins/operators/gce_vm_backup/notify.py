"""The failure notifiers: a group's ``notify`` block becomes DAG-level ``on_failure_callback`` notifiers.

``notifiers_from_config(notify)`` gives email through Airflow's SMTP provider and Slack through the Slack
provider's incoming-webhook hook (the optional extra ``slack``). Provider modules are imported only when a
notification is sent; with no ``notify`` block the list is empty and no notification code runs. The
message leads with the VMs the run report found down, then its summary and every problem.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from airflow.sdk.bases.notifier import BaseNotifier
from pydantic import ValidationError

from gce_vm_backup import stages
from gce_vm_backup.config import EmailSettings, NotifySettings, SlackSettings
from gce_vm_backup.errors import BackupError, ConfigError
from gce_vm_backup.report import REPORT_XCOM_KEY
from gce_vm_backup.report_format import down_lines, downtime_line, problem_lines, vm_name


def _report_from(context: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The run report, when the callback's context can reach it (the DAG processor gives a ``ti``)."""
    ti = context.get("ti")
    if ti is None:
        return None
    try:
        report = ti.xcom_pull(task_ids=stages.REPORT, key=REPORT_XCOM_KEY, default=None)
    except Exception:  # the notification must go out even when the report cannot be read
        return None
    return report if isinstance(report, Mapping) and "summary" in report else None


def failure_message(context: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, body) for a failed backup run, from a DAG failure callback's context.

    When the run report can be read, VMs that may be down lead the subject and the body (with the command
    that starts each), then the summary, the VMs down at once, and every problem with its cause.
    """
    dag = context.get("dag")
    dag_id = getattr(dag, "dag_id", None) or "gce-vm-backup"
    run_id = context.get("run_id") or "?"
    report = _report_from(context)
    down = down_lines(report) if report is not None else []
    subject = f"[gce-vm-backup] Backup run failed: {dag_id} ({run_id})"
    if down:
        names = ", ".join(vm_name(d["vm"]) for d in report["vms_down"])  # type: ignore[index]
        subject = f"[gce-vm-backup] VM(s) DOWN: {names} - backup run failed: {dag_id} ({run_id})"
    body = (
        f"The backup DAG {dag_id}, run {run_id}, failed: {context.get('reason') or 'see the task logs'}.\n"
        f"The run report (every VM, its snapshots and problems) is in the XCom '{REPORT_XCOM_KEY}' of the "
        f"task '{stages.REPORT}'. VMs that were RUNNING before the backup are started again by "
        f"'{stages.ENSURE_RUNNING}' even when the backup failed; the report names any that is not running "
        "after the run."
    )
    if report is not None:
        summary = report["summary"]
        lines = [
            f"{summary['vms_ok']}/{summary['vms']} VM(s) ok, "
            f"{summary['snapshots_ready']}/{summary['snapshots']} snapshot(s) READY, "
            f"{summary['snapshots_deleted']} old snapshot(s) deleted.",
            downtime_line(report),
        ]
        lines += [f"- {line}" for line in problem_lines(report)]
        body += "\n\n" + "\n".join(lines)
    if down:
        body = "\n".join(down) + "\n\n" + body
    return subject, body


class EmailFailureNotifier(BaseNotifier):
    """Emails the failure through Airflow's SMTP provider (imported only when sending)."""

    def __init__(self, settings: EmailSettings) -> None:
        super().__init__()
        self.settings = settings

    def notify(self, context: Any) -> None:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        subject, body = failure_message(context)
        SmtpNotifier(
            to=self.settings.to,
            from_email=self.settings.from_email,
            smtp_conn_id=self.settings.smtp_conn_id,
            subject=subject,
            html_content=f"<pre>{body}</pre>",
        ).notify(context)


SLACK_EXTRA_MISSING = (
    "Slack notifications need the Slack provider (apache-airflow-providers-slack): install "
    "gce-vm-backup[slack], or add apache-airflow-providers-slack to the environment's PyPI packages"
)


class SlackFailureNotifier(BaseNotifier):
    """Posts the failure through the Slack provider's incoming-webhook hook (the optional extra ``slack``).

    The connection ``webhook_conn_id`` is a Slack incoming-webhook connection: the webhook URL (or its
    token, with the base URL in the host) in the password. Raises ConfigError when the provider is not
    installed (at DAG build, so the group fails to load rather than its failures going unreported), and
    the provider's error when the connection has no webhook or Slack refuses the post.
    """

    def __init__(self, settings: SlackSettings) -> None:
        super().__init__()
        if importlib.util.find_spec("airflow.providers.slack") is None:
            raise ConfigError(f"notify.slack: {SLACK_EXTRA_MISSING}")
        self.settings = settings

    def notify(self, context: Any) -> None:
        try:
            from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook
        except ImportError as exc:
            raise BackupError(SLACK_EXTRA_MISSING) from exc

        subject, body = failure_message(context)
        message: dict[str, Any] = {"text": f"*{subject}*\n{body}"}
        if self.settings.channel:
            # A legacy-webhook field (apps' webhooks post to their own channel); the provider passes it on.
            message["channel"] = self.settings.channel
        SlackWebhookHook(slack_webhook_conn_id=self.settings.webhook_conn_id).send_dict(message)


def notifiers_from_config(notify: Mapping[str, Any] | NotifySettings | None) -> list[BaseNotifier]:
    """The DAG's ``on_failure_callback`` list for a group's ``notify`` block ([] when none is set).

    Raises ConfigError naming the key when the block is malformed.
    """
    if notify is None:
        return []
    try:
        settings = notify if isinstance(notify, NotifySettings) else NotifySettings.model_validate(notify)
    except ValidationError as exc:
        raise ConfigError(
            [f"notify.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()]
        ) from None
    notifiers: list[BaseNotifier] = []
    if settings.email is not None:
        notifiers.append(EmailFailureNotifier(settings.email))
    if settings.slack is not None:
        notifiers.append(SlackFailureNotifier(settings.slack))
    return notifiers
