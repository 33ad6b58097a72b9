"""The restore and drill DAGs' shape: ids, the trigger form (a contract with the browser test), the
teardowns that always clean up, the failure callbacks."""

from __future__ import annotations

import copy

import pytest

from gce_vm_backup.config.models import BackupConfig, parse_config
from gce_vm_backup.dags.restore import build_restore_dags
from gce_vm_backup.report.notify import EmailFailureNotifier

from ..conftest import TARGET, config, group

SELECTOR = "targets: [{project: demo-project, zones: all, labels: {app: shop}}]"
DRILL = "restore_drill: {scratch_zone: us-central1-b, scratch_project: drill-scratch, network: drills}"


def dags_of(text):
    groups, problems = parse_config(text, "backup.yaml")
    assert problems == []
    return build_restore_dags(BackupConfig("backup.yaml", groups, "test"))


def test_every_group_gets_a_restore_dag_and_only_groups_with_a_drill_get_a_drill_dag():
    dags = dags_of(config(group(f"{TARGET}\n{DRILL}") + group(TARGET, name="db")))

    assert set(dags) == {
        "gce_vm_backup_restore__web",
        "gce_vm_backup_drill__web",
        "gce_vm_backup_restore__db",
    }
    assert dags["gce_vm_backup_drill__web"].schedule is None  # manual unless the drill has a schedule
    scheduled = dags_of(
        config(
            group(
                f"{TARGET}\nrestore_drill: {{scratch_zone: us-central1-b, scratch_project: drill-scratch, network: drills, schedule: '@weekly'}}"
            )
        )
    )
    assert scheduled["gce_vm_backup_drill__web"].schedule == "@weekly"
    assert scheduled["gce_vm_backup_restore__web"].schedule is None  # a restore is never scheduled


def test_the_restore_form_has_the_settled_params_and_defaults():
    dag = dags_of(config(group(TARGET)))["gce_vm_backup_restore__web"]
    params = dag.params

    assert list(params) == ["vm", "snapshot_set", "mode", "new_name", "machine_type", "network", "dry_run"]
    assert params.get_param("vm").schema["enum"] == ["us-central1-a/web-1"]
    assert not params.get_param("vm").has_value  # no VM chosen for the user: the form opens empty
    assert params["snapshot_set"] == "newest"
    assert "vm-backup backups --group web" in params.get_param("snapshot_set").description
    assert params.get_param("mode").schema["enum"] == ["new-vm", "replace-disks"]
    assert params["mode"] == "new-vm"
    assert params["dry_run"] is False
    assert params.get_param("dry_run").schema["type"] == ["null", "boolean"]


def required_in_the_form(schema):
    """Airflow's trigger form (FlexibleForm isParamRequired, 3.1.7 and 3.3): a field is required unless its
    schema's type is a list including "null"."""
    return bool(schema.get("type")) and not (isinstance(schema["type"], list) and "null" in schema["type"])


@pytest.mark.parametrize("targets", [TARGET, SELECTOR])
def test_only_the_vm_and_the_mode_are_required_in_the_form(targets):
    params = dags_of(config(group(targets)))["gce_vm_backup_restore__web"].params
    required = [name for name in params if required_in_the_form(params.get_param(name).schema)]
    assert required == ["vm", "mode"]
    assert params["mode"] == "new-vm"  # the mode is a required choice, opened at the safe one


@pytest.mark.parametrize("targets", [TARGET, SELECTOR])
@pytest.mark.parametrize("conf", [{}, {"vm": None}, {"vm": ""}])
def test_a_run_without_a_vm_is_refused_when_it_is_triggered(targets, conf):
    from airflow.sdk.definitions.param import ParamValidationError

    params = copy.deepcopy(dags_of(config(group(targets)))["gce_vm_backup_restore__web"].params)

    def trigger():
        params.update(conf)
        params.validate()

    with pytest.raises(ParamValidationError, match="vm"):
        trigger()


@pytest.mark.parametrize("field", ["snapshot_set", "new_name", "machine_type", "network", "dry_run"])
def test_an_optional_field_left_empty_is_accepted(field):
    params = dags_of(config(group(TARGET)))["gce_vm_backup_restore__web"].params
    params = copy.deepcopy(params)
    params.update({"vm": "us-central1-a/web-1", field: None})
    assert params.validate()[field] is None


def test_a_selector_group_takes_a_vm_name_by_pattern():
    params = dags_of(config(group(SELECTOR)))["gce_vm_backup_restore__web"].params

    assert "enum" not in params.get_param("vm").schema
    assert params.get_param("vm").schema["pattern"].startswith("^([a-z]+-[a-z]+[0-9]+-[a-z]/)?")


@pytest.mark.parametrize("value", ["replace-everything", ""])
def test_the_form_refuses_a_mode_that_is_not_one_of_the_two(value):
    from airflow.sdk.definitions.param import ParamValidationError

    mode = dags_of(config(group(TARGET)))["gce_vm_backup_restore__web"].params.get_param("mode")

    with pytest.raises(ParamValidationError):
        mode.resolve(value)


def test_replace_disks_waits_for_the_approval_before_touching_the_vm():
    dag = dags_of(config(group(TARGET)))["gce_vm_backup_restore__web"]

    assert type(dag.get_task("approve")).__name__ == "ApprovalOperator"
    upstream_of_stop = dag.get_task("stop").get_flat_relative_ids(upstream=True)
    assert {"plan", "choose", "approve", "create_disks"} <= upstream_of_stop
    assert "approve" in dag.get_task("swap_disks").get_flat_relative_ids(upstream=True)
    assert "approve" not in dag.get_task("create_vm").get_flat_relative_ids(upstream=True)


def test_ensure_vm_is_the_teardown_of_the_plan_and_the_report_runs_whatever_happened():
    dag = dags_of(config(group(TARGET)))["gce_vm_backup_restore__web"]

    ensure = dag.get_task("ensure_vm")
    assert ensure.is_teardown
    assert dag.get_task("plan").is_setup
    assert "plan" in ensure.upstream_task_ids
    report = dag.get_task("restore_report")
    assert report.trigger_rule == "all_done"
    # a branch and a rejection skip their DIRECT downstream tasks: the report must not be one of them
    assert "restore_report" not in dag.get_task("choose").downstream_task_ids
    assert "restore_report" not in dag.get_task("approve").downstream_task_ids


def test_the_drill_cleanup_is_a_teardown_and_the_report_runs_last():
    dag = dags_of(config(group(f"{TARGET}\n{DRILL}")))["gce_vm_backup_drill__web"]

    cleanup = dag.get_task("cleanup")
    assert cleanup.is_teardown
    assert dag.get_task("plan").is_setup
    assert "drill_vm" in cleanup.upstream_task_ids
    assert dag.get_task("drill_report").trigger_rule == "all_done"
    assert {"drill_vm", "cleanup"} <= dag.get_task("drill_report").upstream_task_ids


def test_both_dags_notify_through_the_groups_notify_block():
    body = f"{TARGET}\n{DRILL}\nnotify: {{email: {{to: ops@example.com}}}}"
    dags = dags_of(config(group(body)))

    for dag_id in ("gce_vm_backup_restore__web", "gce_vm_backup_drill__web"):
        callbacks = dags[dag_id].on_failure_callback
        assert [type(c) for c in callbacks] == [EmailFailureNotifier]
    assert dags_of(config(group(TARGET)))["gce_vm_backup_restore__web"].on_failure_callback is None


def test_the_chosen_set_is_held_right_after_the_plan_and_released_by_a_teardown_after_ensure_vm():
    dag = dags_of(config(group(TARGET)))["gce_vm_backup_restore__web"]

    hold, release = dag.get_task("hold"), dag.get_task("release_hold")
    assert hold.upstream_task_ids == {"plan"}
    assert dag.get_task("choose").upstream_task_ids == {"plan", "hold"}  # plan: its XCom
    assert release.is_teardown
    assert {"plan", "hold", "ensure_vm"} <= release.upstream_task_ids
    # a teardown of the plan: it runs however the restore ended, also after a failed or rejected one
    assert release.trigger_rule == "all_done_setup_success"
    assert "release_hold" in dag.get_task("restore_report").upstream_task_ids


def test_the_approval_is_assigned_to_the_approvers_and_checked_before_any_change():
    body = f"{TARGET}\nrestore_approval: {{approvers: [alice, {{id: '7', name: bob}}], four_eyes: true}}"
    dag = dags_of(config(group(body)))["gce_vm_backup_restore__web"]

    approve, check = dag.get_task("approve"), dag.get_task("check_approval")
    assert approve.assigned_users == [{"id": "alice", "name": "alice"}, {"id": "7", "name": "bob"}]
    assert check.approvers == ["alice", "7"]
    assert check.four_eyes is True
    assert check.upstream_task_ids == {"approve"}
    assert dag.get_task("create_disks").upstream_task_ids == {"plan", "check_approval"}
    assert check.retries == 0
    unassigned = dags_of(config(group(TARGET)))["gce_vm_backup_restore__web"]
    assert unassigned.get_task("approve").assigned_users is None
    assert unassigned.get_task("check_approval").four_eyes is False


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ("{four_eyes: 'yes'}", "restore_approval.four_eyes"),
        ("{approvers: [{id: ''}]}", "restore_approval.approvers.0.id"),
        ("{approver: [alice]}", "restore_approval.approver"),
    ],
)
def test_a_bad_approval_block_is_refused_naming_the_key(block, key):
    groups, problems = parse_config(config(group(f"{TARGET}\nrestore_approval: {block}")), "backup.yaml")

    assert groups == {}
    assert [p.key for p in problems] == [key]
