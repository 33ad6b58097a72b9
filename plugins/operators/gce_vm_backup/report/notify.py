"""The notifiers: a group's ``notify`` block becomes DAG-level ``on_failure_callback`` notifiers, and the
downtime task's notice that a VM may be down.

``notifiers_from_config(notify)`` gives email through Airflow's SMTP provider and Slack through the Slack
provider's incoming-webhook hook (the optional extra ``slack``). Provider modules are imported only when a
notification is sent; with no ``notify`` block the list is empty and no notification code runs. The
run's failure message leads with the VMs the run report found down, then its summary and every problem.

``VmDownNotice`` tells on-call at once, through the same channels, that one VM may be down, without
waiting for the run to end (which, with every retry of the downtime task and of ``ensure_running``, can
take many times the stop timeout). The downtime task sends it itself when its stop step fails (the VM's
state is unknown, and bringing it back first waits the stop out), before it tries to start the VM again;
and it is the task's ``on_retry_callback`` and ``on_failure_callback``, which send it when a try ended
with its VM possibly down (its marker says down, or the VM is not RUNNING) and the try has not sent it.
When the try's own start then brings the VM back, an all-clear follows. One notice per try at most.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from airflow.sdk.bases.notifier import BaseNotifier
from pydantic import ValidationError

from gce_vm_backup.backup import stages
from gce_vm_backup.compute.paths import VmRef
from gce_vm_backup.config.models import EmailSettings, NotifySettings, SlackSettings
from gce_vm_backup.errors import BackupError, ConfigError
from gce_vm_backup.report.model import REPORT_XCOM_KEY, start_command
from gce_vm_backup.report.text import down_lines, downtime_line, problem_lines, vm_name


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
        self.send(*failure_message(context), context)

    def send(self, subject: str, body: str, context: Any) -> None:
        """Email ``subject`` and ``body`` (any message, not only the run's failure)."""
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

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
        self.send(*failure_message(context), context)

    def send(self, subject: str, body: str, context: Any) -> None:
        """Post ``subject`` and ``body`` (any message, not only the run's failure)."""
        try:
            from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook
        except ImportError as exc:
            raise BackupError(SLACK_EXTRA_MISSING) from exc

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


DOWN_NOTICE_XCOM_KEY = "gce_vm_backup_down_notice"  # pushed by a try that sent the VM-down notice


def vm_down_message(context: Mapping[str, Any], record: Mapping[str, Any], cause: str) -> tuple[str, str]:
    """(subject, body) of the notice that the VM of ``record`` (the precheck's InstanceRecord) may be down,
    sent by its downtime try (``context``) at once, before the run ends."""
    dag_id, run_id, ti = _where(context)
    vm = VmRef(record["project_id"], record["zone"], record["instance"]).path
    command = start_command(str(record["project_id"]), str(record["zone"]), str(record["instance"]), None)
    subject = f"[gce-vm-backup] VM MAY BE DOWN: {record['instance']} - backup {dag_id} ({run_id})"
    body = (
        f"VM MAY BE DOWN: {vm} was RUNNING before the backup, and the backup's task "
        f"{getattr(ti, 'task_id', '?')} (try {getattr(ti, 'try_number', '?')}) failed after it asked "
        f"Compute Engine to stop it: {cause}.\n"
        "The backup goes on trying to start it again (the task's own restart, its retries, then "
        f"'{stages.ENSURE_RUNNING}'); the run's failure notice or an all-clear follows. "
        f"To start it by hand: {command}"
    )
    return subject, body


def vm_back_message(context: Mapping[str, Any], record: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, body) of the all-clear after a VM-down notice: the try's own start brought the VM back."""
    dag_id, run_id, ti = _where(context)
    vm = VmRef(record["project_id"], record["zone"], record["instance"]).path
    subject = f"[gce-vm-backup] VM RUNNING again: {record['instance']} - backup {dag_id} ({run_id})"
    body = (
        f"VM {vm} is RUNNING again: the backup's task {getattr(ti, 'task_id', '?')} (try "
        f"{getattr(ti, 'try_number', '?')}) started it after the failure in the notice before. The "
        "backup of this VM failed in that try; its retry (or the run's failure notice) tells the rest."
    )
    return subject, body


def _where(context: Mapping[str, Any]) -> tuple[str, str, Any]:
    dag = context.get("dag")
    ti = context.get("ti")
    dag_id = getattr(dag, "dag_id", None) or getattr(ti, "dag_id", None) or "gce-vm-backup"
    return dag_id, str(context.get("run_id") or getattr(ti, "run_id", None) or "?"), ti


class VmDownNotice(BaseNotifier):
    """The notice that a VM may be down, through the group's notifiers (``notify`` block).

    As the downtime task's ``on_retry_callback`` / ``on_failure_callback``: sends the notice when the try
    ended with its VM possibly down (its ``stages.DOWN_XCOM_KEY`` marker says down, or a read finds the VM
    not RUNNING while it was RUNNING before the backup) unless the try sent it already
    (``DOWN_NOTICE_XCOM_KEY``). The task itself calls ``down`` (and ``back``) for the notice at once.
    ``down``, ``back`` and the callback never raise: a notice that cannot be sent is logged, and the
    task's own outcome stands.
    """

    def __init__(self, notify: Mapping[str, Any] | NotifySettings) -> None:
        super().__init__()
        self.channels = notifiers_from_config(notify)

    def down(self, context: Mapping[str, Any], record: Mapping[str, Any], cause: str) -> bool:
        """Send the VM-down notice now; returns whether every channel took it."""
        sent = self._send(context, *vm_down_message(context, record, cause))
        ti = context.get("ti")
        if ti is not None:
            try:
                ti.xcom_push(key=DOWN_NOTICE_XCOM_KEY, value={"sent": sent, "cause": cause})
            except Exception as exc:  # the flag only saves a second notice
                self.log.warning("Could not record the VM-down notice: %s", exc)
        return sent

    def back(self, context: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
        """Send the all-clear (after ``down`` in the same try)."""
        return self._send(context, *vm_back_message(context, record))

    def _send(self, context: Mapping[str, Any], subject: str, body: str) -> bool:
        sent = True
        for channel in self.channels:
            try:
                channel.send(subject, body, context)  # type: ignore[attr-defined]
            except Exception as exc:
                sent = False
                self.log.error(
                    "Could not send the notice %r through %s: %s", subject, type(channel).__name__, exc
                )
        return sent

    def notify(self, context: Any) -> None:
        try:
            self._notify_if_down(context)
        except Exception as exc:  # a callback must not hide the task's own error
            self.log.error("Could not decide or send the VM-down notice: %s", exc)

    def _notify_if_down(self, context: Any) -> None:
        ti, task = context.get("ti"), context.get("task")
        if ti is None or task is None:
            return
        if ti.xcom_pull(task_ids=ti.task_id, key=DOWN_NOTICE_XCOM_KEY, map_indexes=ti.map_index):
            return  # this try sent it already
        record = getattr(task, "instance_record", None)
        if not isinstance(record, Mapping) or record.get("prior_status") != "RUNNING":
            return  # a VM that was not RUNNING is never stopped (or no VM this run)
        marker = ti.xcom_pull(task_ids=ti.task_id, key=stages.DOWN_XCOM_KEY, map_indexes=ti.map_index)
        if isinstance(marker, Mapping) and marker.get("down") is True:
            cause = "its VM is still down (the try could not start it again)"
        else:
            status = _status(task, record)
            if status == "RUNNING":
                return
            cause = f"its VM is {status or 'in a state that could not be read'}"
        error = context.get("exception")
        self.down(context, record, f"{error}; {cause}" if error else cause)


def _status(task: Any, record: Mapping[str, Any]) -> str | None:
    """The VM's status now, read through the task's hook (None when it cannot be read)."""
    try:
        instance = task.hook.get_instance(
            project_id=record["project_id"], zone=record["zone"], name=record["instance"]
        )
        return str(instance.status)
    except Exception:
        return None
