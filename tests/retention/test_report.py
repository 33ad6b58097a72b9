"""The run report on the one-task-per-downtime DAG shape: the pure builder, the XCom collection, the operator.

Records are built by hand in the documented XCom shape (COMMON contract, docs/architecture.md): the
downtime task's dict (stop_requested_at, running_at, snapshots), verify's and convert's SnapshotRecords,
ensure_running's {"vm", "status", "started", "running_at"}. The failure notifiers' tests are in tests/notify/.
"""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from pathlib import Path
from unittest.mock import create_autospec

import pytest
from airflow.sdk import TriggerRule
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

from gce_vm_backup.backup import stages
from gce_vm_backup.compute.hook import ComputeBackupHook
from gce_vm_backup.errors import ApiError, ConfigError, ResourceNotFoundError
from gce_vm_backup.report.model import REPORT_XCOM_KEY, VmTaskResults, build_run_report, peak_down
from gce_vm_backup.report.task import RunReportOperator, collect_vm_results
from gce_vm_backup.report.text import format_report
from gce_vm_backup.runtime.base import ERROR_XCOM_KEY

from .conftest import PROJECT, ZONE

T0 = "2026-11-24T03:01:00+00:00"
BACK = "2026-11-24T03:04:30+00:00"  # 210 s after T0
OK = {
    task: "success"
    for task in (
        stages.PRECHECK,
        stages.STOP_SNAPSHOT_START,
        stages.ENSURE_RUNNING,
        stages.VERIFY,
        stages.RETENTION,
    )
}


def path(instance):
    return f"projects/{PROJECT}/zones/{ZONE}/instances/{instance}"


def precheck(instance, prior="RUNNING"):
    return {"project_id": PROJECT, "zone": ZONE, "instance": instance, "prior_status": prior, "disks": []}


def snap(instance, status="READY", size=3 << 30, disk=None):
    disk = disk or instance
    return {
        "vm": path(instance),
        "disk": disk,
        "disk_source": f"projects/{PROJECT}/zones/{ZONE}/disks/{disk}",
        "snapshot": f"{disk}-snap",
        "status": status,
        "storage_bytes": size,
    }


def instant(instance, disk=None):
    disk = disk or instance
    return {
        "vm": path(instance),
        "disk": disk,
        "disk_source": f"projects/{PROJECT}/zones/{ZONE}/disks/{disk}",
        "instant_snapshot": f"{disk}-instant",
        "instant_scope": f"projects/{PROJECT}/zones/{ZONE}",
        "status": "READY",
    }


def downtime(instance, stop=T0, back=BACK, snapshots=None, mode="standard", stopped=True):
    return {
        "vm": path(instance),
        "prior_status": "RUNNING" if stopped else "TERMINATED",
        "stopped": stopped,
        "stop_requested_at": stop if stopped else None,
        "captured_at": stop if stopped else None,
        "started": stopped,
        "running_at": back if stopped else None,
        "mode": mode,
        "snapshots": [snap(instance, status="UPLOADING", size=0)] if snapshots is None else snapshots,
    }


def good_vm(instance="web-1", map_index=0, stop=T0, back=BACK):
    return VmTaskResults(
        stages.tier_group(1),
        map_index,
        states=dict(OK),
        values={
            stages.PRECHECK: precheck(instance),
            stages.STOP_SNAPSHOT_START: downtime(instance, stop, back),
            stages.ENSURE_RUNNING: {"started": False, "running_at": back, "status": "RUNNING"},
            stages.VERIFY: [snap(instance)],
            stages.RETENTION: {"dry_run": False, "deleted": [{"snapshot": "old-1"}], "not_pruned": []},
        },
    )


def failed_downtime(vm, ensure_state="failed", ensure=None):
    """The downtime task failed (no return value); ensure_running ended ``ensure_state``."""
    vm.states.update({stages.STOP_SNAPSHOT_START: "failed", stages.ENSURE_RUNNING: ensure_state})
    vm.states.update({stages.VERIFY: "upstream_failed", stages.RETENTION: "upstream_failed"})
    vm.values.update({stages.STOP_SNAPSHOT_START: None, stages.ENSURE_RUNNING: ensure, stages.VERIFY: None})
    vm.values[stages.RETENTION] = None
    return vm


def report(*vms, **kwargs):
    return build_run_report(dag_id="d", run_id="r", vms=list(vms), **kwargs)


def test_each_vm_row_has_prior_state_downtime_from_stop_request_to_running_snapshots_and_deletions():
    result = report(good_vm())
    (row,) = result["vms"]
    assert row["vm"] == path("web-1")
    assert (row["prior_status"], row["downtime_seconds"], row["ok"]) == ("RUNNING", 210, True)
    assert (row["stop_requested_at"], row["running_at"]) == (T0, BACK)
    assert row["brought_back_by"] == stages.STOP_SNAPSHOT_START
    assert row["snapshots"] == [
        {
            "disk": "web-1",
            "disk_source": f"projects/{PROJECT}/zones/{ZONE}/disks/web-1",
            "snapshot": "web-1-snap",
            "kind": "standard",
            "status": "READY",  # verify's status, not the downtime task's UPLOADING
            "storage_bytes": 3 << 30,
        }
    ]
    assert row["retention"]["deleted"] == ["old-1"]
    assert result["status"] == "success"
    assert result["summary"] | {"failed_tasks": None} == {
        "vms": 1,
        "vms_ok": 1,
        "vms_with_problems": 0,
        "snapshots": 1,
        "snapshots_ready": 1,
        "storage_bytes": 3 << 30,
        "snapshots_deleted": 1,
        "failed_tasks": None,
    }
    json.dumps(result)  # machine-readable: plain JSON


def test_outer_tier_downtime_runs_from_stop_snapshots_request_to_starts_running():
    vm = good_vm()
    record = vm.values.pop(stages.STOP_SNAPSHOT_START)
    del vm.states[stages.STOP_SNAPSHOT_START]
    for key in ("started", "running_at"):
        record.pop(key)  # stop_snapshot returns the same without them
    vm.values[stages.STOP_SNAPSHOT] = record
    vm.values[stages.START] = {"started": True, "running_at": "2026-11-24T03:11:00+00:00"}
    vm.states.update({stages.STOP_SNAPSHOT: "success", stages.START: "success"})
    (row,) = report(vm)["vms"]
    assert (row["downtime_seconds"], row["brought_back_by"], row["ok"]) == (600, stages.START, True)


def test_a_vm_no_task_saw_running_again_is_the_first_problem_with_how_each_restart_task_ended():
    row = report(failed_downtime(good_vm()))["vms"][0]
    assert row["problems"][0] == (
        "VM web-1 MAY BE DOWN: it was RUNNING before the backup and no task saw it RUNNING again "
        "(stop_snapshot_start failed, ensure_running failed). Check it; to start it by hand: "
        f"gcloud compute instances start web-1 --project={PROJECT} --zone={ZONE}"
    )
    assert row["downtime_seconds"] is None


def test_a_vm_read_down_leads_the_report_with_the_command_that_starts_it():
    vm = failed_downtime(good_vm())
    vm.status_now = "TERMINATED"
    vm.errors[stages.STOP_SNAPSHOT_START] = {"cause": "snapshot of disk web-1 failed: QUOTA_EXCEEDED: quota"}
    vm.errors[stages.ENSURE_RUNNING] = {"cause": "start of VM web-1 failed: ZONE_RESOURCE_POOL_EXHAUSTED"}
    result = report(vm, good_vm("web-2", 1))
    command = f"gcloud compute instances start web-1 --project={PROJECT} --zone={ZONE}"
    assert result["vms_down"] == [{"vm": path("web-1"), "status": "TERMINATED", "command": command}]
    row = result["vms"][0]
    assert row["problems"] == [
        "VM web-1 IS DOWN (TERMINATED): it was RUNNING before the backup and was not brought back "
        f"(stop_snapshot_start failed, ensure_running failed). Start it by hand: {command}",
        "snapshot of disk web-1 failed: QUOTA_EXCEEDED: quota",
        "start of VM web-1 failed: ZONE_RESOURCE_POOL_EXHAUSTED",
        "not run because of the failure above: verify, retention",
    ]
    assert unwrapped_first_line(format_report(result)) == (
        f"VM DOWN: {path('web-1')} is TERMINATED (it was RUNNING before the backup); start it by hand: {command}"
    )


def test_a_vm_still_stopping_is_down_and_a_suspended_one_needs_resume():
    stopping, suspended = failed_downtime(good_vm()), failed_downtime(good_vm("web-2", 1))
    stopping.status_now, suspended.status_now = "STOPPING", "SUSPENDED"
    rows = report(stopping, suspended)["vms"]
    assert (
        "Start it by hand once it is TERMINATED: gcloud compute instances start web-1"
        in rows[0]["problems"][0]
    )
    assert "gcloud compute instances resume web-2" in rows[1]["problems"][0]


def test_a_vm_running_again_although_its_tasks_failed_is_not_called_down():
    vm = failed_downtime(good_vm())
    vm.status_now = "RUNNING"
    result = report(vm)
    assert result["vms_down"] == []
    assert "DOWN" not in " ".join(result["vms"][0]["problems"])
    assert result["status"] == "failed"


def test_a_deleted_vm_is_reported_gone_without_a_start_command():
    vm = failed_downtime(good_vm())
    vm.status_now = "NOT_FOUND"
    result = report(vm)
    assert result["vms_down"][0]["command"] is None
    assert result["vms"][0]["problems"][0] == (
        "VM web-1 was RUNNING before the backup and no longer exists "
        "(stop_snapshot_start failed, ensure_running failed)"
    )
    assert unwrapped_first_line(format_report(result)).endswith(
        "web-1 no longer exists (it was RUNNING before the backup)"
    )


def test_a_vm_ensure_running_had_to_start_is_a_problem_and_its_downtime_lasts_until_then():
    vm = failed_downtime(
        good_vm(),
        "success",
        {"started": True, "running_at": "2026-11-24T03:20:00+00:00", "status": "RUNNING"},
    )
    vm.errors[stages.STOP_SNAPSHOT_START] = {"cause": "stop of VM web-1 failed: timed out after 600 s"}
    result = report(vm)
    row = result["vms"][0]
    assert (row["brought_back_by"], row["stopped"], row["down"]) == (stages.ENSURE_RUNNING, True, None)
    assert result["vms_down"] == []  # seen RUNNING again by ensure_running: no status read needed
    assert row["problems"] == [
        "stop of VM web-1 failed: timed out after 600 s",
        "not run because of the failure above: verify, retention",
        "VM web-1 was started by ensure_running at 2026-11-24T03:20:00+00:00: the backup's own start did "
        "not bring it back",
    ]


def test_ensure_running_starting_a_vm_after_a_successful_downtime_task_is_still_a_problem():
    vm = good_vm()
    vm.values[stages.ENSURE_RUNNING] = {
        "started": True,
        "running_at": "2026-11-24T03:06:00+00:00",
        "status": "RUNNING",
    }
    row = report(vm)["vms"][0]
    assert row["ok"] is False
    assert row["downtime_seconds"] == 210  # the backup's own downtime; the VM went down again later
    assert row["problems"] == [
        "VM web-1 was started by ensure_running at 2026-11-24T03:06:00+00:00 after 210s down: the backup's "
        "own start did not bring it back"
    ]


def test_a_failed_task_without_a_recorded_error_says_where_to_look():
    vm = good_vm()
    vm.states[stages.VERIFY] = "failed"
    vm.values[stages.VERIFY] = None
    row = report(vm)["vms"][0]
    assert row["problems"] == ["verify failed (no error was recorded: see the task's log)"]
    # verify's records are missing: the downtime task's own (UPLOADING) are shown, and not counted READY
    assert [s["status"] for s in row["snapshots"]] == ["UPLOADING"]


def test_instant_mode_reports_convert_s_standard_snapshots_and_the_instant_ones_only_when_convert_failed():
    converted = good_vm()
    converted.values[stages.STOP_SNAPSHOT_START] = downtime(
        "web-1", mode="instant", snapshots=[instant("web-1")]
    )
    converted.values[stages.CONVERT] = converted.values.pop(stages.VERIFY)
    converted.states[stages.CONVERT] = converted.states.pop(stages.VERIFY)
    failed = good_vm("web-2", 1)
    failed.values[stages.STOP_SNAPSHOT_START] = downtime(
        "web-2", mode="instant", snapshots=[instant("web-2")]
    )
    failed.values.update({stages.CONVERT: None, stages.RETENTION: None})
    failed.states.update({stages.CONVERT: "failed", stages.RETENTION: "upstream_failed"})
    del failed.states[stages.VERIFY], failed.values[stages.VERIFY]
    failed.errors[stages.CONVERT] = {"cause": "conversion of web-2-instant failed: disk deleted"}

    result = report(converted, failed)
    ok_row, bad_row = result["vms"]
    assert (ok_row["mode"], ok_row["snapshots"][0]["kind"], ok_row["ok"]) == ("instant", "standard", True)
    assert bad_row["snapshots"][0] | {"disk_source": None} == {
        "disk": "web-2",
        "disk_source": None,
        "snapshot": "web-2-instant",
        "kind": "instant",
        "status": "READY",
        "storage_bytes": 0,
    }
    assert bad_row["problems"] == [
        "conversion of web-2-instant failed: disk deleted",
        "not run because of the failure above: retention",
        "instant snapshot(s) not converted to standard snapshots in this run: web-2-instant",
    ]
    assert (result["summary"]["snapshots"], result["summary"]["snapshots_ready"]) == (2, 1)
    text = format_report(result)
    assert "web-2-instant" in text
    assert "READY*" in text
    assert "* an instant snapshot" in text


def unwrapped_first_line(text):
    """The report's first line as it reads, its wrapped continuation lines (indented) joined."""
    first, *rest = text.splitlines()
    for line in rest:
        if not line.startswith("    "):
            break
        first += " " + line.strip()
    return first


def shared(instance, carrier, map_index):
    """A VM whose disk 'shared' is snapshotted by ``carrier``'s backup."""
    vm = good_vm(instance, map_index)
    source = f"projects/{PROJECT}/zones/{ZONE}/disks/shared"
    vm.values[stages.PRECHECK]["disks"] = [{"name": "shared", "source": source, "carried_by": carrier}]
    return vm


def test_a_shared_disk_is_counted_once_and_the_report_names_the_vm_whose_backup_carried_it():
    carrier = good_vm("web-1", 0)
    carrier.values[stages.VERIFY].append(snap("web-1", disk="shared"))
    result = report(carrier, shared("web-2", path("web-1"), 1))
    row = result["vms"][1]
    assert row["ok"] is True
    carried = row["snapshots"][-1]
    assert (carried["snapshot"], carried["status"], carried["carried_by"]) == (
        "shared-snap",
        "READY",
        path("web-1"),
    )
    assert result["summary"]["snapshots"] == 3  # web-1, shared (once), web-2
    assert "carried by web-1" in format_report(result)


def test_a_shared_disk_whose_carrier_made_no_ready_snapshot_is_a_problem_of_both_vms():
    carrier = failed_downtime(
        good_vm("web-1", 0), "success", {"started": False, "running_at": T0, "status": "RUNNING"}
    )
    result = report(carrier, shared("web-2", path("web-1"), 1))
    assert result["vms"][1]["ok"] is False
    assert result["vms"][1]["problems"] == [
        f"disk shared is snapshotted by web-1's backup ({path('web-1')}), which has no READY snapshot of it in "
        "this run"
    ]


def test_a_vm_that_was_stopped_before_has_no_downtime_no_restart_problem_and_is_not_counted_down():
    vm = good_vm()
    vm.values[stages.PRECHECK] = precheck("batch-1", "TERMINATED")
    vm.values[stages.STOP_SNAPSHOT_START] = downtime("batch-1", stopped=False)
    vm.values[stages.ENSURE_RUNNING] = {"started": False, "running_at": BACK, "status": "TERMINATED"}
    result = report(vm)
    row = result["vms"][0]
    assert (row["downtime_seconds"], row["problems"], row["down"]) == (0, [], None)
    assert result["downtime"]["peak_vms_down"] == 0


def test_no_vm_placeholders_are_left_out():
    placeholder = VmTaskResults(
        stages.tier_group(2),
        0,
        states={stages.PRECHECK: "success"},
        values={stages.PRECHECK: precheck("", "NO_VM")},
    )
    result = report(good_vm(), placeholder)
    assert [row["vm"] for row in result["vms"]] == [path("web-1")]


def test_a_failed_resolve_fails_the_report_even_with_no_vm():
    result = report(other_tasks={stages.resolve_task(1): "failed"})
    assert result["status"] == "failed"
    assert result["summary"]["failed_tasks"] == [stages.resolve_task(1)]


def at(minute, second=0):
    return datetime(2026, 11, 24, 3, minute, second, tzinfo=UTC).isoformat()


def test_peak_vms_down_counts_overlapping_downtimes_and_a_vm_back_as_another_stops_does_not_overlap_it():
    vms = [
        good_vm("a", 0, at(0), at(10)),
        good_vm("b", 1, at(5), at(15)),
        good_vm("c", 2, at(10), at(20)),  # stopped the very moment a is back
        good_vm("d", 3, at(30), at(31)),
    ]
    result = report(*vms, max_concurrent_vms=2)
    assert result["downtime"] == {
        "peak_vms_down": 2,
        "peak_at": at(5),
        "max_concurrent_vms": 2,
        "within_cap": True,
        "slowest": {"vm": path("a"), "seconds": 600},
        "vms_stopped": 4,
    }
    assert "VMs down at once: at most 2 (max_concurrent_vms 2); slowest downtime 600s (a)" in format_report(
        result
    )


def test_a_peak_above_the_cap_is_called_out_beside_it():
    vms = [good_vm(name, i, at(0), at(10)) for i, name in enumerate("abc")]
    result = report(*vms, max_concurrent_vms=2)
    assert (result["downtime"]["peak_vms_down"], result["downtime"]["within_cap"]) == (3, False)
    assert (
        format_report(result)
        .splitlines()[2]  # after the run's status and its totals
        .startswith("VMs down at once: at most 3, ABOVE max_concurrent_vms 2")
    )


def test_a_vm_still_down_counts_until_the_report_is_made():
    down = failed_downtime(good_vm("a", 0))
    down.values[stages.STOP_SNAPSHOT_START] = None
    rows = [
        {"stopped": True, "stop_requested_at": at(0), "running_at": None},  # not seen back
        {"stopped": True, "stop_requested_at": at(50), "running_at": at(51)},
    ]
    assert peak_down(rows, now=datetime(2026, 11, 24, 3, 55, tzinfo=UTC)) == (2, at(50))
    assert peak_down(rows, now=datetime(2026, 11, 24, 3, 40, tzinfo=UTC)) == (1, at(0))


def test_hostile_or_missing_times_count_no_downtime_instead_of_failing_the_report():
    vm = good_vm()
    vm.values[stages.STOP_SNAPSHOT_START].update(stop_requested_at="yesterday", running_at=17)
    vm.values[stages.ENSURE_RUNNING] = "not a mapping"
    result = report(vm)
    assert (result["vms"][0]["downtime_seconds"], result["downtime"]["peak_vms_down"]) == (None, 0)


def test_the_table_names_each_vm_snapshot_and_problem():
    vm = good_vm()
    vm.states[stages.VERIFY] = "failed"
    text = format_report(report(vm, max_concurrent_vms=4))
    assert "Backup run r of d: FAILED\n0/1 VM(s) ok" in text
    assert "us-central1-a/instances/web-1" in text
    assert "us-central1-a/instances/web-1: RUNNING before the run, down 210s\n    web-1 web-1-snap " in text
    assert "web-1-snap" in text
    assert "3.0 GiB" in text
    assert "retention deleted: old-1" in text
    assert "PROBLEM: verify failed (no error was recorded" in text


REPORT_MODULES = ("report/model.py", "report/text.py", "report/task.py", "report/notify.py")
TASK_MAPS = {"states", "values", "errors"}  # VmTaskResults' maps, keyed by task name


def _task_ids_spelled_out(tree: ast.AST) -> list[str]:
    """Task ids written as strings: a task map's key, or xcom_pull's task_ids (literal or f-string)."""
    found = []
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Subscript) and getattr(node.value, "attr", None) in TASK_MAPS:
            key = node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if (
                node.func.attr in ("get", "pop", "setdefault")
                and getattr(node.func.value, "attr", None) in TASK_MAPS
            ):
                key = node.args[0] if node.args else None
            elif node.func.attr == "xcom_pull":
                key = next((k.value for k in node.keywords if k.arg == "task_ids"), None)
        if isinstance(key, ast.Constant | ast.JoinedStr):
            found.append(ast.unparse(node))
    return found


@pytest.mark.parametrize("module", REPORT_MODULES)
def test_the_report_code_spells_out_no_task_id(module):
    """Task ids come from stages only: a renamed stage cannot leave the report reading a task that is gone."""
    source = (Path(stages.__file__).parents[1] / module).read_text()
    assert _task_ids_spelled_out(ast.parse(source)) == []


def test_the_task_id_check_finds_spelled_out_ids():
    tree = ast.parse(
        "vm.states.get('start')\nvm.values['verify']\nti.xcom_pull(task_ids=f'resolve_{g}')\n"
        "vm.values[stages.VERIFY]\nti.xcom_pull(task_ids=resolve[g])\n"
    )
    assert len(_task_ids_spelled_out(tree)) == 3


# ---- the operator: collection by map index and the status read -----------------------------------
TIER = stages.tier_group(1)


def task(stage):
    return stages.tier_task(1, stage)


@pytest.fixture
def ti():
    ti = create_autospec(RuntimeTaskInstance, instance=True)
    ti.dag_id, ti.task_id = "gce_vm_backup__web", stages.REPORT
    crumbs = [
        {"task_id": stages.resolve_task(1), "map_index": -1, "state": "success"},
        {"task_id": task(stages.PRECHECK), "map_index": 0, "state": "success"},
        {"task_id": task(stages.PRECHECK), "map_index": 1, "state": "failed"},
        {"task_id": task(stages.STOP_SNAPSHOT_START), "map_index": 0, "state": "success"},
        {"task_id": task(stages.STOP_SNAPSHOT_START), "map_index": 1, "state": "upstream_failed"},
        {"task_id": task(stages.ENSURE_RUNNING), "map_index": 0, "state": "success"},
        {"task_id": task(stages.ENSURE_RUNNING), "map_index": 1, "state": "upstream_failed"},
        {"task_id": stages.REPORT, "map_index": -1, "state": "running"},
    ]
    ti.get_task_breadcrumbs.return_value = crumbs
    xcoms = {
        (stages.resolve_task(1), -1): [
            {"project_id": PROJECT, "zone": ZONE, "instance": i} for i in ("web-1", "web-2")
        ],
        (task(stages.PRECHECK), 0): precheck("web-1"),
        (task(stages.STOP_SNAPSHOT_START), 0): downtime("web-1", T0, "2026-11-24T03:02:00+00:00"),
        (task(stages.ENSURE_RUNNING), 0): {"started": False, "running_at": BACK, "status": "RUNNING"},
    }
    errors = {
        (task(stages.PRECHECK), 1): {
            "task": task(stages.PRECHECK),
            "cause": f"precheck failed: VM {path('web-2')} is STOPPING (in transition)",
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
    vms, other = collect_vm_results(ti, dag_id="gce_vm_backup__web", run_id="r1", vm_groups=[TIER])
    ti.get_task_breadcrumbs.assert_called_once_with(dag_id="gce_vm_backup__web", run_id="r1")
    assert other == {stages.resolve_task(1): "success"}
    assert [(vm.map_index, vm.target["instance"]) for vm in vms] == [(0, "web-1"), (1, "web-2")]
    assert vms[0].values[stages.STOP_SNAPSHOT_START]["stopped"] is True
    assert vms[1].states == {
        stages.PRECHECK: "failed",
        stages.STOP_SNAPSHOT_START: "upstream_failed",
        stages.ENSURE_RUNNING: "upstream_failed",
    }
    assert set(vms[1].values.values()) == {None}
    assert vms[1].errors[stages.PRECHECK]["cause"].startswith("precheck failed: VM")
    assert vms[0].errors == {}  # only failed tasks' errors are read


def report_operator(status=None, error=None, **kwargs):
    hook = create_autospec(ComputeBackupHook, instance=True)
    if error is not None:
        hook.get_instance.side_effect = error
    else:
        hook.get_instance.return_value.status = status
    operator = RunReportOperator(task_id=stages.REPORT, vm_groups=[TIER], **kwargs)
    operator._hook = hook
    return operator, hook


def test_report_operator_pushes_the_report_then_fails_the_run_naming_the_problem(ti):
    operator, hook = report_operator("RUNNING")
    assert operator.trigger_rule == TriggerRule.ALL_DONE
    with pytest.raises(
        AirflowFailException,
        match=r"web-2: precheck failed: VM \S+/web-2 is STOPPING \(in transition\) \| "
        r"web-2: not run because of the failure above: stop_snapshot_start, ensure_running",
    ):
        operator.execute({"ti": ti, "run_id": "r1"})
    pushed = ti.xcom_push.call_args.kwargs
    assert pushed["key"] == REPORT_XCOM_KEY
    assert [row["vm"].rsplit("/", 1)[-1] for row in pushed["value"]["vms"]] == ["web-1", "web-2"]
    hook.get_instance.assert_not_called()  # web-1 was seen back; web-2 was never stopped (no precheck)


def _web_1_only(ti):
    ti.get_task_breadcrumbs.return_value = [
        c for c in ti.get_task_breadcrumbs.return_value if c["map_index"] != 1
    ]


def test_report_operator_returns_the_report_with_the_peak_beside_the_cap_when_every_vm_is_fine(ti):
    _web_1_only(ti)
    operator, _ = report_operator(max_concurrent_vms=4)
    result = operator.execute({"ti": ti, "run_id": "r1"})
    assert result["status"] == "success"
    assert result["vms"][0]["downtime_seconds"] == 60
    assert (result["downtime"]["peak_vms_down"], result["downtime"]["max_concurrent_vms"]) == (1, 4)


def _nothing_brought_web_1_back(ti):
    _web_1_only(ti)
    ti.get_task_breadcrumbs.return_value = [
        {**c, "state": "failed"}
        if c["task_id"] in (task(stages.STOP_SNAPSHOT_START), task(stages.ENSURE_RUNNING))
        else c
        for c in ti.get_task_breadcrumbs.return_value
    ]
    pull = ti.xcom_pull.side_effect
    ti.xcom_pull.side_effect = lambda *, task_ids, default, map_indexes=-1, key="return_value": (
        default
        if key == "return_value"
        and task_ids in (task(stages.STOP_SNAPSHOT_START), task(stages.ENSURE_RUNNING))
        else pull(task_ids=task_ids, default=default, map_indexes=map_indexes, key=key)
    )


def test_report_operator_reads_a_vm_no_task_saw_back_and_fails_the_run_naming_it_down_first(ti):
    _nothing_brought_web_1_back(ti)
    operator, hook = report_operator("TERMINATED")
    with pytest.raises(AirflowFailException) as failure:
        operator.execute({"ti": ti, "run_id": "r1"})
    hook.get_instance.assert_called_once_with(project_id=PROJECT, zone=ZONE, name="web-1")
    assert str(failure.value).startswith(
        f"The backup run had problems (full report in XCom 'run_report'): VM DOWN: {path('web-1')} is TERMINATED"
    )
    pushed = ti.xcom_push.call_args.kwargs["value"]
    assert pushed["vms_down"][0]["status"] == "TERMINATED"
    assert pushed["vms"][0]["status_after"] == "TERMINATED"


def test_report_operator_does_not_call_a_vm_down_that_is_running_again(ti):
    _nothing_brought_web_1_back(ti)
    operator, _ = report_operator("RUNNING")
    with pytest.raises(AirflowFailException) as failure:
        operator.execute({"ti": ti, "run_id": "r1"})
    assert "DOWN" not in str(failure.value)
    assert ti.xcom_push.call_args.kwargs["value"]["vms_down"] == []


@pytest.mark.parametrize(
    ("error", "expected", "first_line"),
    [
        (
            ApiError("get VM x failed: HTTP 503: unavailable"),
            "MAY BE DOWN",
            f"VM MAY BE DOWN: {path('web-1')}: its status could not be read (it was RUNNING before the backup); "
            f"start it by hand: gcloud compute instances start web-1 --project={PROJECT} --zone={ZONE}",
        ),
        (
            ResourceNotFoundError("get VM x: not found"),
            "no longer exists",
            f"VM DOWN: {path('web-1')} no longer exists (it was RUNNING before the backup)",
        ),
    ],
)
def test_report_operator_still_reports_when_the_vm_cannot_be_read(ti, error, expected, first_line):
    _nothing_brought_web_1_back(ti)
    operator, _ = report_operator(error=error)
    with pytest.raises(AirflowFailException):
        operator.execute({"ti": ti, "run_id": "r1"})
    pushed = ti.xcom_push.call_args.kwargs["value"]
    (row,) = pushed["vms"]
    assert expected in row["problems"][0]
    assert unwrapped_first_line(format_report(pushed)) == first_line


def test_a_failed_task_outside_the_vm_groups_is_reported_with_its_cause(ti):
    resolve = stages.resolve_task(1)
    ti.get_task_breadcrumbs.return_value = [
        {"task_id": resolve, "map_index": -1, "state": "failed"},
        {"task_id": stages.REPORT, "map_index": -1, "state": "running"},
    ]
    cause = f"{resolve} failed: Refusing to run: what this run would act on differs from its conf"
    ti.xcom_pull.side_effect = lambda *, task_ids, default, map_indexes=-1, key="return_value": (
        {"cause": cause} if key == ERROR_XCOM_KEY and task_ids == resolve else default
    )
    operator, _ = report_operator()
    with pytest.raises(AirflowFailException, match=f"{resolve}: {cause}"):
        operator.execute({"ti": ti, "run_id": "r1"})
    pushed = ti.xcom_push.call_args.kwargs["value"]
    assert pushed["task_errors"] == {resolve: cause}
    text = format_report(pushed)
    assert f"\n    {resolve}: " in text  # indented under "Failed tasks outside the VM groups"
    assert f"{resolve}: {cause}" in " ".join(text.split())  # wrapped at the log's width, all of it


@pytest.mark.parametrize("groups", [[], ["backup_vm"], [TIER, "resolve_tier_1"]])
def test_report_operator_needs_tier_groups_of_the_stages(groups):
    with pytest.raises(ConfigError, match="'vm_groups' must name at least one per-VM task group"):
        RunReportOperator(task_id=stages.REPORT, vm_groups=groups)


def test_a_vm_someone_else_stopped_after_the_precheck_is_down_but_on_call_is_not_told_to_start_it_blindly():
    vm = failed_downtime(good_vm(), ensure_state="success", ensure={"status": "TERMINATED", "started": False})
    vm.values[stages.ENSURE_RUNNING]["not_stopped_by_run"] = True
    vm.status_now = "TERMINATED"
    vm.errors[stages.STOP_SNAPSHOT_START] = {"cause": "VM web-1 is TERMINATED: stopped by someone else"}
    result = report(vm)
    command = f"gcloud compute instances start web-1 --project={PROJECT} --zone={ZONE}"
    assert result["vms_down"] == [
        {"vm": path("web-1"), "status": "TERMINATED", "command": command, "not_stopped_by_run": True}
    ]
    first = unwrapped_first_line(format_report(result))
    assert first == (
        f"VM DOWN: {path('web-1')} is TERMINATED, stopped by someone else after the precheck (not by this run; "
        f"not backed up): find out who before you start it: {command}"
    )
    assert result["vms"][0]["problems"][0].startswith(
        "VM web-1 IS DOWN (TERMINATED), but this run did not stop it"
    )


def hostile_report():
    """Names as long as Compute Engine allows, every kind of line: down VMs, problems, a failed task."""
    long_name = "a" * 62 + "z"
    down = failed_downtime(good_vm(long_name, 0))
    down.status_now = "TERMINATED"
    down.errors[stages.STOP_SNAPSHOT_START] = {"cause": "start of VM failed: " + "x " * 120}
    ok = good_vm("web-2", 1)
    ok.values[stages.VERIFY][0].update(snapshot="q" * 63, disk="j" * 63)
    return report(down, ok, max_concurrent_vms=4), long_name


def test_no_line_of_the_logged_report_is_wider_than_the_log_viewer():
    from gce_vm_backup.report.text import LOG_WIDTH

    result, long_name = hostile_report()
    lines = format_report(result).splitlines()
    assert max(map(len, lines)) <= LOG_WIDTH
    assert max(map(len, lines)) > LOG_WIDTH - 10  # the lines do use the room
    text = " ".join(" ".join(lines).split())
    # nothing is lost in the wrapping: every word of a problem and of the start command is there
    command = result["vms_down"][0]["command"]
    assert " ".join(command.split()) in text
    # the longest snapshot and disk names fold within their columns, every character kept
    assert (text.count("q"), text.replace("project", "").count("j")) == (63, 63)
    assert long_name in text


def test_the_snapshot_table_keeps_each_vm_and_its_snapshots_together():
    result, _ = hostile_report()
    lines = format_report(result).splitlines()
    heading = next(i for i, line in enumerate(lines) if line.startswith("us-central1-a/instances/web-2: "))
    assert lines[heading] == "us-central1-a/instances/web-2: RUNNING before the run, down 210s"
    assert lines[heading + 1].startswith("    ")  # its snapshot, under it (folded when too wide)


def test_the_summary_counts_vms_downtime_and_names_the_set():
    from gce_vm_backup.config.labels import run_label
    from gce_vm_backup.report.text import run_summary

    result, _ = hostile_report()
    summary = run_summary(result)
    assert {k: summary[k] for k in ("status", "vms_ok", "vms_failed", "vms_skipped")} == {
        "status": "failed",
        "vms_ok": 1,
        "vms_failed": 1,
        "vms_skipped": 0,
    }
    assert summary["downtime_seconds"] == sum(row["downtime_seconds"] or 0 for row in result["vms"]) > 0
    assert summary["set_id"] == run_label(result["dag_id"], result["run_id"])
    assert summary["text"] == (
        f"FAILED: 1 VM(s) ok, 1 failed, 0 skipped; downtime {summary['downtime_seconds']}s in all; "
        f"snapshot set {summary['set_id']}"
    )
    assert json.loads(json.dumps(summary)) == summary  # an XCom value


def test_a_dry_runs_vms_are_skipped_without_a_set_and_a_skipped_vm_with_a_problem_is_failed():
    from gce_vm_backup.report.text import run_summary

    idle = good_vm("web-2", 1)
    idle.states = dict.fromkeys(idle.states, "skipped")
    idle.values = {stages.PRECHECK: idle.values[stages.PRECHECK]}
    summary = run_summary(report(good_vm(), idle))  # idle: RUNNING before, never seen back
    assert (summary["vms_ok"], summary["vms_failed"], summary["vms_skipped"]) == (1, 1, 0)
    dry = report(dry_run_plan=[{"vm": path("web-1"), "status": "RUNNING", "action": "stop", "snapshots": []}])
    assert (run_summary(dry)["vms_skipped"], run_summary(dry)["set_id"]) == (1, None)


def test_the_report_task_pushes_the_summary_to_its_xcom_tab(ti):
    from gce_vm_backup.report.text import SUMMARY_XCOM_KEY

    operator, _ = report_operator("RUNNING")
    with pytest.raises(AirflowFailException):
        operator.execute({"ti": ti, "run_id": "r1"})
    pushed = {c.kwargs["key"]: c.kwargs["value"] for c in ti.xcom_push.call_args_list}
    assert pushed[SUMMARY_XCOM_KEY]["vms_failed"] == 1
    assert pushed[SUMMARY_XCOM_KEY]["text"].startswith("FAILED: 1 VM(s) ok, 1 failed, 0 skipped")
