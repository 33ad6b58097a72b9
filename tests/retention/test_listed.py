"""The opt-in ``listed`` stage (group key ``check_listed``): retention's own listing finds each new snapshot.

The operator against create_autospec of the real hook, and its place in the generated DAGs."""

from __future__ import annotations

from unittest.mock import create_autospec

import pytest

from gce_vm_backup.backup import stages
from gce_vm_backup.backup.listed import CheckListedOperator
from gce_vm_backup.backup.plan import NO_VM_RECORD
from gce_vm_backup.compute.hook import ComputeBackupHook
from gce_vm_backup.config.labels import managed_disk_filter
from gce_vm_backup.config.models import BackupConfig, parse_config
from gce_vm_backup.dags.backup import build_dags
from gce_vm_backup.errors import BackupError, ConfigError

from .test_retention_ops_units import DATA, DISK, RECORD, SCOPE, VM, new_record, snapshot, with_hook


def listed(hook, records=None, record=None):
    operator = CheckListedOperator(
        task_id="listed",
        instance_record=RECORD if record is None else record,
        snapshot_records=[new_record(), new_record(DATA, "web-1-data-new")] if records is None else records,
        **SCOPE,
    )
    return with_hook(operator, hook)


def hook_listing(by_disk):
    hook = create_autospec(ComputeBackupHook, instance=True)
    hook.list_snapshots.side_effect = lambda *, project_id, filter, max_results=None, of=None: by_disk[of]
    return hook


def test_every_new_snapshot_listed_as_ours_passes_with_one_listing_per_disk(context):
    hook = hook_listing(
        {DISK: [snapshot("web-1-old"), snapshot("web-1-new")], DATA: [snapshot("web-1-data-new", disk=DATA)]}
    )
    result = listed(hook).execute(context.as_dict())
    assert result == {"vm": VM, "listed": ["web-1-new", "web-1-data-new"]}
    assert [c.kwargs["filter"] for c in hook.list_snapshots.call_args_list] == [
        managed_disk_filter(DISK, **SCOPE),
        managed_disk_filter(DATA, **SCOPE),
    ]


def test_a_snapshot_the_filter_misses_or_that_is_not_ours_fails_the_task_naming_each(context):
    # web-1-new lost its labels (the server-side filter misses it); web-1-data-new is listed but its
    # sourceDisk is another disk's
    hook = hook_listing(
        {DISK: [snapshot("web-1-old")], DATA: [snapshot("web-1-data-new", disk=DATA, source_disk=DISK)]}
    )
    with pytest.raises(BackupError) as failure:
        listed(hook).execute(context.as_dict())
    message = str(failure.value)
    assert "web-1-new of disk" in message
    assert managed_disk_filter(DISK, **SCOPE) in message
    assert "web-1-data-new of disk" in message
    assert "is listed, but" in message
    assert hook.list_snapshots.call_count == 2  # every disk checked before it fails


def test_no_vm_this_run_and_no_snapshot_make_no_call(context):
    hook = create_autospec(ComputeBackupHook, instance=True)
    assert listed(hook, record=NO_VM_RECORD).execute(context.as_dict())["listed"] == []
    assert listed(hook, records=[]).execute(context.as_dict())["listed"] == []
    hook.list_snapshots.assert_not_called()


def test_a_bad_input_is_a_config_error(context):
    hook = create_autospec(ComputeBackupHook, instance=True)
    with pytest.raises(ConfigError):
        listed(hook, record={"no": "instance"}).execute(context.as_dict())
    with pytest.raises(ConfigError):
        listed(hook, records=[{"snapshot": "no disk"}]).execute(context.as_dict())


CONFIG = """
version: 1
deployment: test
defaults:
  start_date: "2026-01-01T00:00:00+00:00"
  check_listed: true
groups:
  tiered:
    retention: {keep_last: 3}
    tiers:
      - - {project: demo-project, zone: us-central1-a, instance: web-1}
      - - {project: demo-project, zone: us-central1-b, instance: db-1}
  instant:
    snapshot_mode: instant
    targets: [{project: demo-project, zone: us-central1-a, instance: app-1}]
  unchecked:
    check_listed: false
    retention: {keep_last: 3}
    targets: [{project: demo-project, zone: us-central1-a, instance: app-2}]
"""


def test_the_stage_runs_after_verify_or_convert_and_before_retention_only_where_turned_on():
    groups, problems = parse_config(CONFIG, "test.yaml")
    assert problems == []
    dags = build_dags(BackupConfig("test.yaml", groups, "test"))
    tiered = dags["gce_vm_backup__tiered"]
    for tier in (1, 2):
        check = tiered.get_task(stages.tier_task(tier, stages.LISTED))
        assert isinstance(check, CheckListedOperator)
        assert check.upstream_task_ids == {
            stages.tier_task(tier, s) for s in (stages.VERIFY, stages.PRECHECK)
        }
        retention = tiered.get_task(stages.tier_task(tier, stages.RETENTION))
        assert stages.tier_task(tier, stages.LISTED) in retention.upstream_task_ids
    instant = dags["gce_vm_backup__instant"].get_task(stages.tier_task(1, stages.LISTED))
    assert stages.tier_task(1, stages.CONVERT) in instant.upstream_task_ids
    off = dags["gce_vm_backup__unchecked"]
    assert stages.tier_task(1, stages.LISTED) not in off.task_dict
    assert off.get_task(stages.tier_task(1, stages.RETENTION)).upstream_task_ids == {
        stages.tier_task(1, s) for s in (stages.VERIFY, stages.PRECHECK)
    }


def test_check_listed_takes_only_a_boolean():
    _, problems = parse_config(CONFIG.replace("check_listed: true", 'check_listed: "yes"'), "test.yaml")
    assert any("check_listed" in str(problem) for problem in problems)


@pytest.mark.emulator
def test_against_the_emulator_the_real_listing_finds_ours_and_misses_one_without_labels(
    fast_emulator, context
):
    from .test_retention_emulator import seed_old

    seed_old(fast_emulator, "web-1-new", days_before=0)
    seed_old(fast_emulator, "web-1-data-new", disk=DATA, days_before=0, managed=False)
    record = RECORD
    one = [new_record()]
    check = CheckListedOperator(task_id="listed", instance_record=record, snapshot_records=one, **SCOPE)
    assert check.execute(context.as_dict())["listed"] == ["web-1-new"]
    both = [*one, new_record(DATA, "web-1-data-new")]
    check = CheckListedOperator(task_id="listed", instance_record=record, snapshot_records=both, **SCOPE)
    with pytest.raises(BackupError, match=r"web-1-data-new of disk .* missing from retention's listing"):
        check.execute(context.as_dict())


def test_a_failed_check_is_a_problem_on_its_vms_row_and_retention_after_it_did_not_run():
    from .test_report import good_vm, report

    vm = good_vm()
    vm.states.update({stages.LISTED: "failed", stages.RETENTION: "upstream_failed"})
    vm.values.update({stages.LISTED: None, stages.RETENTION: None})
    vm.errors[stages.LISTED] = {
        "cause": "retention would not see this run's snapshot(s): snapshot web-1-snap"
    }
    row = report(vm)["vms"][0]
    assert row["ok"] is False
    assert row["problems"] == [
        "retention would not see this run's snapshot(s): snapshot web-1-snap",
        "not run because of the failure above: retention",
    ]


RUN_CONFIG = """\
version: 1
deployment: test
defaults:
  start_date: "2026-01-01T00:00:00+00:00"
  poke_interval: 1
  retries: 0
groups:
  checked:
    check_listed: true
    retention: {keep_last: 2}
    targets:
      - {project: demo-project, zone: us-central1-a, instance: web-1}
"""


@pytest.mark.airflow
@pytest.mark.emulator
@pytest.mark.slow
def test_a_real_run_checks_each_new_snapshot_between_verify_and_retention(monkeypatch):
    import json

    from gce_emulator import Emulator
    from gce_emulator.__main__ import DEMO_SEED

    from ..conftest import generated_dagbag

    dag = generated_dagbag("listed", RUN_CONFIG).get_dag("gce_vm_backup__checked")
    with Emulator(DEMO_SEED, time_scale=60) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
        run = dag.test(run_conf={"vms": [], "dry_run": False})
    tasks = {ti.task_id: ti for ti in run.get_task_instances()}
    assert run.state == "success", {task: ti.state for task, ti in tasks.items()}
    check = tasks[stages.tier_task(1, stages.LISTED)]
    assert check.state == "success"
    assert len(check.xcom_pull(task_ids=check.task_id, map_indexes=check.map_index)["listed"]) == 2
    assert tasks[stages.tier_task(1, stages.RETENTION)].start_date >= check.end_date
