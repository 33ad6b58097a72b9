"""The run report (pure builder, XCom collection, operator) and the failure notifiers."""

from __future__ import annotations

import json
from unittest.mock import create_autospec

import pytest
from airflow.sdk import TriggerRule
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

from gce_vm_backup._base import ERROR_XCOM_KEY
from gce_vm_backup.errors import ApiError, ConfigError, ResourceNotFoundError
from gce_vm_backup.hook import ComputeBackupHook
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
    assert row["problems"][0] == (
        "VM web-1 MAY BE DOWN: it was RUNNING before the backup and its start failed. Check it; to start it "
        f"by hand: gcloud compute instances start web-1 --project={PROJECT} --zone={ZONE}"
    )
    assert row["downtime_seconds"] is None


def test_a_vm_read_down_after_its_start_failed_leads_the_report_with_the_command_that_starts_it():
    vm = good_vm()
    vm.states["start"] = "failed"
    vm.values["start"] = None
    vm.status_now = "TERMINATED"
    vm.errors["start"] = {
        "cause": "start failed: StartInstanceOperator for VM x did not finish within 60 seconds"
    }
    report = build_run_report(dag_id="d", run_id="r", vms=[vm, good_vm("web-2", 1)])
    command = f"gcloud compute instances start web-1 --project={PROJECT} --zone={ZONE}"
    assert report["vms_down"] == [
        {"vm": f"projects/{PROJECT}/zones/{ZONE}/instances/web-1", "status": "TERMINATED", "command": command}
    ]
    row = report["vms"][0]
    assert row["problems"][0].startswith("VM web-1 IS DOWN (TERMINATED): it was RUNNING before the backup")
    assert row["problems"][0].endswith(f"Start it by hand: {command}")
    assert (
        row["problems"][1] == "start failed: StartInstanceOperator for VM x did not finish within 60 seconds"
    )
    first = format_report(report).splitlines()[0]
    assert first == (
        f"VM DOWN: projects/{PROJECT}/zones/{ZONE}/instances/web-1 is TERMINATED (it was RUNNING before the "
        f"backup); start it by hand: {command}"
    )


def test_a_vm_still_stopping_is_down_and_a_suspended_one_needs_resume():
    stopping, suspended = good_vm(), good_vm("web-2", 1)
    for vm, status in ((stopping, "STOPPING"), (suspended, "SUSPENDED")):
        vm.states["start"], vm.values["start"], vm.status_now = "failed", None, status
    rows = build_run_report(dag_id="d", run_id="r", vms=[stopping, suspended])["vms"]
    assert (
        "Start it by hand once it is TERMINATED: gcloud compute instances start web-1"
        in rows[0]["problems"][0]
    )
    assert "gcloud compute instances resume web-2" in rows[1]["problems"][0]


def test_a_vm_running_again_although_its_start_task_failed_is_not_called_down():
    vm = good_vm()
    vm.states["start"] = "failed"
    vm.status_now = "RUNNING"
    vm.errors["start"] = {"cause": "start failed: get VM x failed: HTTP 503: unavailable"}
    report = build_run_report(dag_id="d", run_id="r", vms=[vm])
    assert report["vms_down"] == []
    assert report["vms"][0]["problems"] == ["start failed: get VM x failed: HTTP 503: unavailable"]
    assert report["status"] == "failed"


def test_a_deleted_vm_is_reported_gone_without_a_start_command():
    vm = good_vm()
    vm.states["start"], vm.status_now = "failed", "NOT_FOUND"
    report = build_run_report(dag_id="d", run_id="r", vms=[vm])
    assert report["vms_down"][0]["command"] is None
    assert report["vms"][0]["problems"][0] == (
        "VM web-1 was RUNNING before the backup and no longer exists (start failed)"
    )
    assert (
        format_report(report)
        .splitlines()[0]
        .endswith("web-1 no longer exists (it was RUNNING before the backup)")
    )


def test_each_problem_is_the_cause_and_tasks_that_did_not_run_come_after_it():
    vm = good_vm()
    vm.states.update(snapshot="failed", verify="upstream_failed", retention="upstream_failed")
    vm.errors["snapshot"] = {
        "cause": "snapshot of disk web-1-data failed: QUOTA_EXCEEDED: Quota 'SNAPSHOTS' exceeded (operation op-1)"
    }
    row = build_run_report(dag_id="d", run_id="r", vms=[vm])["vms"][0]
    assert row["problems"] == [
        "snapshot of disk web-1-data failed: QUOTA_EXCEEDED: Quota 'SNAPSHOTS' exceeded (operation op-1)",
        "not run because of the failure above: verify, retention",
    ]


def test_a_failed_task_without_a_recorded_error_says_where_to_look():
    vm = good_vm()
    vm.states["stop"] = "failed"
    row = build_run_report(dag_id="d", run_id="r", vms=[vm])["vms"][0]
    assert row["problems"] == ["stop failed (no error was recorded: see the task's log)"]


def shared(instance, carrier, map_index):
    """A VM whose disk 'shared' is snapshotted by ``carrier``'s backup."""
    vm = good_vm(instance, map_index)
    source = f"projects/{PROJECT}/zones/{ZONE}/disks/shared"
    vm.values["precheck"]["disks"] = [{"name": "shared", "source": source, "carried_by": carrier}]
    return vm


def test_a_shared_disk_is_counted_once_and_the_report_names_the_vm_whose_backup_carried_it():
    carrier = good_vm("web-1", 0)
    carrier.values["snapshot"].append({**snap("shared"), "vm": "x", "snapshot": "web-1-shared-snap"})
    path = f"projects/{PROJECT}/zones/{ZONE}/instances/web-1"
    report = build_run_report(dag_id="d", run_id="r", vms=[carrier, shared("web-2", path, 1)])
    row = report["vms"][1]
    assert row["ok"] is True
    carried = row["snapshots"][-1]
    assert (carried["snapshot"], carried["status"], carried["carried_by"]) == (
        "web-1-shared-snap",
        "READY",
        path,
    )
    assert report["summary"]["snapshots"] == 3  # web-1, shared (once), web-2
    assert "carried by web-1" in format_report(report)


def test_a_shared_disk_whose_carrier_made_no_ready_snapshot_is_a_problem_of_both_vms():
    carrier = good_vm("web-1", 0)
    carrier.states.update(snapshot="failed")
    carrier.values["snapshot"] = None
    path = f"projects/{PROJECT}/zones/{ZONE}/instances/web-1"
    report = build_run_report(dag_id="d", run_id="r", vms=[carrier, shared("web-2", path, 1)])
    assert report["vms"][1]["ok"] is False
    assert report["vms"][1]["problems"] == [
        f"disk shared is snapshotted by web-1's backup ({path}), which has no READY snapshot of it in this run"
    ]


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
    assert "PROBLEM: snapshot failed (no error was recorded" in text


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
    errors = {
        ("tier_1.precheck", 1): {
            "task": "tier_1.precheck",
            "cause": f"precheck failed: VM projects/{PROJECT}/zones/{ZONE}/instances/web-2 is STOPPING (in transition)",
        }
    }
    # a real run's XComs by (task id, map index, key); the dry-run plan is absent in a real run
    ti.xcom_pull.side_effect = lambda *, task_ids, default, map_indexes=-1, key="return_value": (
        xcoms.get((task_ids, map_indexes), default)
        if key == "return_value"
        else errors.get((task_ids, map_indexes), default)
        if key == ERROR_XCOM_KEY
        else default
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
    assert vms[1].errors["precheck"]["cause"].startswith("precheck failed: VM")
    assert vms[0].errors == {}  # only failed tasks' errors are read


def test_report_operator_pushes_the_report_then_fails_the_run_naming_the_problem(ti):
    operator = RunReportOperator(task_id="run_report", vm_groups=["tier_1"])
    assert operator.trigger_rule == TriggerRule.ALL_DONE
    with pytest.raises(
        AirflowFailException,
        match=r"web-2: precheck failed: VM \S+/web-2 is STOPPING \(in transition\) \| "
        r"web-2: not run because of the failure above: start",
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


def _start_failed(ti):
    """web-1's start failed (web-2 left out of the run)."""
    crumbs = [c for c in ti.get_task_breadcrumbs.return_value if c["map_index"] != 1]
    ti.get_task_breadcrumbs.return_value = [
        {**c, "state": "failed"} if c["task_id"] == "tier_1.start" else c for c in crumbs
    ]


def report_operator(status=None, error=None):
    hook = create_autospec(ComputeBackupHook, instance=True)
    if error is not None:
        hook.get_instance.side_effect = error
    else:
        hook.get_instance.return_value.status = status
    operator = RunReportOperator(task_id="run_report", vm_groups=["tier_1"])
    operator._hook = hook
    return operator, hook


def test_report_operator_reads_a_vm_whose_start_failed_and_fails_the_run_naming_it_down_first(ti):
    _start_failed(ti)
    operator, hook = report_operator("TERMINATED")
    with pytest.raises(AirflowFailException) as failure:
        operator.execute({"ti": ti, "run_id": "r1"})
    hook.get_instance.assert_called_once_with(project_id=PROJECT, zone=ZONE, name="web-1")
    assert str(failure.value).startswith(
        "The backup run had problems (full report in XCom 'run_report'): VM DOWN: "
        f"projects/{PROJECT}/zones/{ZONE}/instances/web-1 is TERMINATED"
    )
    report = ti.xcom_push.call_args.kwargs["value"]
    assert report["vms_down"][0]["status"] == "TERMINATED"
    assert report["vms"][0]["status_after"] == "TERMINATED"


def test_report_operator_does_not_call_a_vm_down_that_is_running_again(ti):
    _start_failed(ti)
    operator, _ = report_operator("RUNNING")
    with pytest.raises(AirflowFailException) as failure:
        operator.execute({"ti": ti, "run_id": "r1"})
    assert "DOWN" not in str(failure.value)
    assert ti.xcom_push.call_args.kwargs["value"]["vms_down"] == []


WEB_1 = f"projects/{PROJECT}/zones/{ZONE}/instances/web-1"


@pytest.mark.parametrize(
    ("error", "expected", "first_line"),
    [
        (
            ApiError("get VM x failed: HTTP 503: unavailable"),
            "MAY BE DOWN",
            f"VM MAY BE DOWN: {WEB_1}: its status could not be read (it was RUNNING before the backup); start "
            f"it by hand: gcloud compute instances start web-1 --project={PROJECT} --zone={ZONE}",
        ),
        (
            ResourceNotFoundError("get VM x: not found"),
            "no longer exists",
            f"VM DOWN: {WEB_1} no longer exists (it was RUNNING before the backup)",
        ),
    ],
)
def test_report_operator_still_reports_when_the_vm_cannot_be_read(ti, error, expected, first_line):
    _start_failed(ti)
    operator, _ = report_operator(error=error)
    with pytest.raises(AirflowFailException):
        operator.execute({"ti": ti, "run_id": "r1"})
    report = ti.xcom_push.call_args.kwargs["value"]
    (row,) = report["vms"]
    assert expected in row["problems"][0]
    assert format_report(report).splitlines()[0] == first_line


def test_report_operator_reads_no_vm_whose_start_succeeded(ti):
    operator, hook = report_operator("RUNNING")
    with pytest.raises(AirflowFailException):  # web-2's precheck failed: not a start problem
        operator.execute({"ti": ti, "run_id": "r1"})
    hook.get_instance.assert_not_called()


def test_a_failed_task_outside_the_vm_groups_is_reported_with_its_cause(ti):
    ti.get_task_breadcrumbs.return_value = [
        {"task_id": "resolve_tier_1", "map_index": -1, "state": "failed"},
        {"task_id": "run_report", "map_index": -1, "state": "running"},
    ]
    cause = "resolve_tier_1 failed: Refusing to run: what this run would act on differs from its conf"
    ti.xcom_pull.side_effect = lambda *, task_ids, default, map_indexes=-1, key="return_value": (
        {"cause": cause} if key == ERROR_XCOM_KEY and task_ids == "resolve_tier_1" else default
    )
    operator, _ = report_operator()
    with pytest.raises(AirflowFailException, match=f"resolve_tier_1: {cause}"):
        operator.execute({"ti": ti, "run_id": "r1"})
    report = ti.xcom_push.call_args.kwargs["value"]
    assert report["task_errors"] == {"resolve_tier_1": cause}
    assert f"    resolve_tier_1: {cause}" in format_report(report)


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
    assert "- web-2: VM web-2 MAY BE DOWN: it was RUNNING before the backup and its start failed." in body
    assert "- web-2: start failed (no error was recorded: see the task's log)" in body


def test_the_failure_message_leads_with_the_vms_that_are_down():
    from gce_vm_backup.report import failure_message

    down = good_vm("web-2", 1)
    down.states["snapshot"], down.states["start"], down.status_now = "failed", "failed", "TERMINATED"
    down.errors["snapshot"] = {"cause": "snapshot of disk web-2 failed: QUOTA_EXCEEDED: Quota exceeded"}
    report = build_run_report(dag_id="gce_vm_backup__web", run_id="r1", vms=[good_vm(), down])
    ti = create_autospec(RuntimeTaskInstance, instance=True)
    ti.xcom_pull.return_value = report

    subject, body = failure_message({"dag": FakeDag(), "run_id": "r1", "reason": "task_failure", "ti": ti})

    assert subject == "[gce-vm-backup] VM(s) DOWN: web-2 - backup run failed: gce_vm_backup__web (r1)"
    assert body.splitlines()[0] == (
        f"VM DOWN: projects/{PROJECT}/zones/{ZONE}/instances/web-2 is TERMINATED (it was RUNNING before the "
        f"backup); start it by hand: gcloud compute instances start web-2 --project={PROJECT} --zone={ZONE}"
    )
    assert "- web-2: snapshot of disk web-2 failed: QUOTA_EXCEEDED: Quota exceeded" in body


def test_the_failure_message_still_goes_out_when_the_report_cannot_be_read():
    from gce_vm_backup.report import failure_message

    ti = create_autospec(RuntimeTaskInstance, instance=True)
    ti.xcom_pull.side_effect = RuntimeError("API server unreachable")

    subject, body = failure_message({"dag": FakeDag(), "run_id": "r1", "reason": "task_failure", "ti": ti})

    assert subject == "[gce-vm-backup] Backup run failed: gce_vm_backup__web (r1)"
    assert "task_failure" in body


# The Slack notifier's tests (a loopback webhook through the Slack provider) are in tests/notify/.
