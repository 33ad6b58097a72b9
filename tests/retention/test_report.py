"""The run report (pure builder, XCom collection, operator) and the failure notifiers."""

from __future__ import annotations

import json
from unittest.mock import create_autospec

import pytest
from airflow.sdk import TriggerRule
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

from gce_vm_backup.errors import ConfigError
from gce_vm_backup.report import (
    REPORT_XCOM_KEY,
    EmailFailureNotifier,
    RunReportOperator,
    SlackFailureNotifier,
    VmTaskResults,
    build_run_report,
    collect_vm_results,
    format_report,
    notifiers_from_config,
)

from .conftest import PROJECT, ZONE

OK = {task: "success" for task in ("precheck", "stop", "snapshot", "start", "retention")}


def precheck(instance, prior="RUNNING"):
    return {"project_id": PROJECT, "zone": ZONE, "instance": instance, "prior_status": prior, "disks": []}


def snap(instance, status="READY", size=3 << 30):
    return {
        "vm": f"projects/{PROJECT}/zones/{ZONE}/instances/{instance}",
        "disk": instance,
        "disk_source": f"projects/{PROJECT}/zones/{ZONE}/disks/{instance}",
        "snapshot": f"{instance}-snap",
        "status": status,
        "storage_bytes": size,
    }


def good_vm(instance="web-1", map_index=0):
    return VmTaskResults(
        "tier_1",
        map_index,
        states=dict(OK),
        values={
            "precheck": precheck(instance),
            "stop": {"stopped": True, "at": "2026-11-24T03:01:00+00:00"},
            "snapshot": [snap(instance)],
            "start": {"started": True, "at": "2026-11-24T03:04:30+00:00"},
            "retention": {"dry_run": False, "deleted": [{"snapshot": "old-1"}], "not_pruned": []},
        },
    )


def test_report_has_prior_state_downtime_snapshots_sizes_and_deletions_per_vm():
    report = build_run_report(dag_id="d", run_id="r", vms=[good_vm()])
    (row,) = report["vms"]
    assert row["vm"] == f"projects/{PROJECT}/zones/{ZONE}/instances/web-1"
    assert (row["prior_status"], row["downtime_seconds"], row["ok"]) == ("RUNNING", 210, True)
    assert row["snapshots"] == [
        {
            "disk": "web-1",
            "disk_source": f"projects/{PROJECT}/zones/{ZONE}/disks/web-1",
            "snapshot": "web-1-snap",
            "status": "READY",
            "storage_bytes": 3 << 30,
        }
    ]
    assert row["retention"]["deleted"] == ["old-1"]
    assert report["status"] == "success"
    assert report["summary"] | {"failed_tasks": None} == {
        "vms": 1,
        "vms_ok": 1,
        "vms_with_problems": 0,
        "snapshots": 1,
        "snapshots_ready": 1,
        "storage_bytes": 3 << 30,
        "snapshots_deleted": 1,
        "failed_tasks": None,
    }
    json.dumps(report)  # machine-readable: plain JSON


def test_a_running_vm_whose_start_failed_is_the_first_problem_named():
    vm = good_vm()
    vm.states["start"] = "failed"
    vm.values["start"] = None
    row = build_run_report(dag_id="d", run_id="r", vms=[vm])["vms"][0]
    assert row["problems"][0] == "VM was RUNNING before the backup and may not be now: start failed"
    assert row["downtime_seconds"] is None


def test_a_vm_that_was_stopped_before_has_no_downtime_and_no_restart_problem():
    vm = good_vm()
    vm.values.update(
        precheck=precheck("batch-1", "TERMINATED"),
        stop={"stopped": False, "at": None},
        start={"started": False, "at": None},
    )
    row = build_run_report(dag_id="d", run_id="r", vms=[vm])["vms"][0]
    assert (row["downtime_seconds"], row["problems"]) == (0, [])


def test_the_verified_status_replaces_the_snapshot_tasks_and_no_vm_placeholders_are_left_out():
    uploading = good_vm()
    uploading.values["snapshot"] = [snap("web-1", status="UPLOADING", size=0)]
    uploading.values["verify"] = [snap("web-1", status="READY", size=5)]
    placeholder = VmTaskResults(
        "tier_2", 0, states={"precheck": "success"}, values={"precheck": precheck("", "NO_VM")}
    )
    report = build_run_report(dag_id="d", run_id="r", vms=[uploading, placeholder])
    assert [row["snapshots"][0]["status"] for row in report["vms"]] == ["READY"]
    assert report["summary"]["storage_bytes"] == 5


def test_a_failed_resolve_fails_the_report_even_with_no_vm():
    report = build_run_report(dag_id="d", run_id="r", vms=[], other_tasks={"resolve_tier_1": "failed"})
    assert report["status"] == "failed"
    assert report["summary"]["failed_tasks"] == ["resolve_tier_1"]


def test_the_table_names_each_vm_snapshot_and_problem():
    vm = good_vm()
    vm.states["snapshot"] = "failed"
    text = format_report(build_run_report(dag_id="d", run_id="r", vms=[vm]))
    assert "FAILED - 0/1 VM(s) ok" in text
    assert "us-central1-a/instances/web-1" in text
    assert "web-1-snap" in text
    assert "3.0 GiB" in text
    assert "retention deleted: old-1" in text
    assert "PROBLEM: snapshot failed" in text


@pytest.fixture
def ti():
    ti = create_autospec(RuntimeTaskInstance, instance=True)
    ti.dag_id, ti.task_id = "gce_vm_backup__web", "run_report"
    crumbs = [
        {"task_id": "resolve_tier_1", "map_index": -1, "state": "success"},
        {"task_id": "tier_1.precheck", "map_index": 0, "state": "success"},
        {"task_id": "tier_1.precheck", "map_index": 1, "state": "failed"},
        {"task_id": "tier_1.stop", "map_index": 0, "state": "success"},
        {"task_id": "tier_1.start", "map_index": 0, "state": "success"},
        {"task_id": "tier_1.start", "map_index": 1, "state": "upstream_failed"},
        {"task_id": "run_report", "map_index": -1, "state": "running"},
    ]
    ti.get_task_breadcrumbs.return_value = crumbs
    xcoms = {
        ("resolve_tier_1", -1): [
            {"project_id": PROJECT, "zone": ZONE, "instance": i} for i in ("web-1", "web-2")
        ],
        ("tier_1.precheck", 0): precheck("web-1"),
        ("tier_1.stop", 0): {"stopped": True, "at": "2026-11-24T03:01:00+00:00"},
        ("tier_1.start", 0): {"started": True, "at": "2026-11-24T03:02:00+00:00"},
    }
    # a real run's XComs by (task id, map index, key); the dry-run plan is absent in a real run
    ti.xcom_pull.side_effect = lambda *, task_ids, default, map_indexes=-1, key="return_value": (
        xcoms.get((task_ids, map_indexes), default) if key == "return_value" else default
    )
    return ti


def test_results_are_collected_per_map_index_so_a_failed_vm_keeps_its_own_row(ti):
    vms, other = collect_vm_results(ti, dag_id="gce_vm_backup__web", run_id="r1", vm_groups=["tier_1"])
    ti.get_task_breadcrumbs.assert_called_once_with(dag_id="gce_vm_backup__web", run_id="r1")
    assert other == {"resolve_tier_1": "success"}
    assert [(vm.map_index, vm.target["instance"]) for vm in vms] == [(0, "web-1"), (1, "web-2")]
    assert vms[0].values["stop"]["stopped"] is True
    assert vms[1].states == {"precheck": "failed", "start": "upstream_failed"}
    assert vms[1].values == {"precheck": None, "start": None}


def test_report_operator_pushes_the_report_then_fails_the_run_naming_the_problem(ti):
    operator = RunReportOperator(task_id="run_report", vm_groups=["tier_1"])
    assert operator.trigger_rule == TriggerRule.ALL_DONE
    with pytest.raises(
        AirflowFailException, match=r"instances/web-2: precheck failed; start upstream_failed"
    ):
        operator.execute({"ti": ti, "run_id": "r1"})
    pushed = ti.xcom_push.call_args.kwargs
    assert pushed["key"] == REPORT_XCOM_KEY
    assert [row["vm"].rsplit("/", 1)[-1] for row in pushed["value"]["vms"]] == ["web-1", "web-2"]


def test_report_operator_returns_the_report_when_every_vm_is_fine(ti):
    ti.get_task_breadcrumbs.return_value = [
        c
        for c in ti.get_task_breadcrumbs.return_value
        if c["map_index"] != 1 or c["task_id"].startswith("resolve")
    ]
    report = RunReportOperator(task_id="run_report", vm_groups=["tier_1"]).execute({"ti": ti, "run_id": "r1"})
    assert report["status"] == "success"
    assert report["vms"][0]["downtime_seconds"] == 60


def test_report_operator_needs_at_least_one_vm_group():
    with pytest.raises(ConfigError, match="'vm_groups' must name at least one"):
        RunReportOperator(task_id="run_report", vm_groups=[])


# ---- notifiers ---------------------------------------------------------------------------------
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


class FakeDag:
    dag_id = "gce_vm_backup__web"


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


def test_the_failure_message_carries_the_reports_summary_and_problems():
    from gce_vm_backup.report import failure_message

    bad = good_vm("web-2", 1)
    bad.states["start"] = "failed"
    report = build_run_report(dag_id="gce_vm_backup__web", run_id="r1", vms=[good_vm(), bad])
    ti = create_autospec(RuntimeTaskInstance, instance=True)
    ti.xcom_pull.return_value = report

    _subject, body = failure_message({"dag": FakeDag(), "run_id": "r1", "reason": "task_failure", "ti": ti})

    ti.xcom_pull.assert_called_once_with(task_ids="run_report", key=REPORT_XCOM_KEY, default=None)
    assert "1/2 VM(s) ok, 2/2 snapshot(s) READY, 2 old snapshot(s) deleted." in body
    assert (
        f"- projects/{PROJECT}/zones/{ZONE}/instances/web-2: VM was RUNNING before the backup and may not be "
        "now: start failed; start failed"
    ) in body


def test_the_failure_message_still_goes_out_when_the_report_cannot_be_read():
    from gce_vm_backup.report import failure_message

    ti = create_autospec(RuntimeTaskInstance, instance=True)
    ti.xcom_pull.side_effect = RuntimeError("API server unreachable")

    subject, body = failure_message({"dag": FakeDag(), "run_id": "r1", "reason": "task_failure", "ti": ti})

    assert subject == "[gce-vm-backup] Backup run failed: gce_vm_backup__web (r1)"
    assert "task_failure" in body


# The Slack notifier's tests (a loopback webhook through the Slack provider) are in tests/notify/.
