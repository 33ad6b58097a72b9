"""The generated DAGs: tasks, dependencies, tier order, teardown rules, trigger-form params."""

from __future__ import annotations

import pytest

from gce_vm_backup.backup.stages import (
    CONVERT,
    ENSURE_RUNNING,
    PRECHECK,
    REPORT,
    RETENTION,
    START,
    STOP_SNAPSHOT,
    STOP_SNAPSHOT_START,
    VERIFY,
    resolve_task,
    tier_group,
    tier_started_task,
    tier_stopped_task,
    tier_task,
)
from gce_vm_backup.config.models import load_config
from gce_vm_backup.dags.backup import build_dags, register_dags
from gce_vm_backup.errors import ConfigError

from ..conftest import REPO

EXAMPLE = REPO / "dags" / "gce_vm_backup.yaml"


@pytest.fixture(scope="module")
def dags():
    return build_dags(load_config(EXAMPLE))


def test_every_generated_dag_passes_airflows_own_validation(dags):
    for dag in dags.values():
        dag.validate()


def test_one_dag_per_group(dags):
    assert set(dags) == {
        "gce_vm_backup__shop-nightly",
        "gce_vm_backup__labelled-weekly",
        "gce_vm_backup__batch-manual",
    }


def test_each_vm_chain_is_precheck_then_one_downtime_task_with_ensure_running_as_teardown(dags):
    dag = dags["gce_vm_backup__labelled-weekly"]
    task = dag.get_task
    precheck, downtime = task(tier_task(1, PRECHECK)), task(tier_task(1, STOP_SNAPSHOT_START))
    ensure = task(tier_task(1, ENSURE_RUNNING))
    assert precheck.upstream_task_ids == {resolve_task(1)}
    assert downtime.upstream_task_ids == {precheck.task_id}
    assert ensure.upstream_task_ids == {downtime.task_id, precheck.task_id}
    assert precheck.is_setup
    assert ensure.is_teardown
    assert not downtime.is_teardown
    assert ensure.trigger_rule == "all_done_setup_success"  # runs whatever the downtime task did
    assert ensure.downtime_task == downtime.task_id  # reads that task's down marker and result
    for gone in ("stop", "snapshot", "start"):  # no task hop while a one-tier VM is down
        assert tier_task(1, gone) not in dag.task_dict


def test_after_the_downtime_snapshots_are_verified_then_pruned_and_the_report_runs_last(dags):
    dag = dags["gce_vm_backup__shop-nightly"]
    task = dag.get_task
    assert task(tier_task(2, VERIFY)).upstream_task_ids == {tier_task(2, STOP_SNAPSHOT_START)}
    assert task(tier_task(1, VERIFY)).upstream_task_ids == {tier_task(1, STOP_SNAPSHOT)}
    assert task(tier_task(1, RETENTION)).upstream_task_ids == {tier_task(1, VERIFY), tier_task(1, PRECHECK)}
    assert task(tier_task(1, RETENTION)).policy.keep_last == 7
    # the dry run never reaches retention (the resolve task returns the placeholder): no dry-run wiring
    assert not task(tier_task(1, RETENTION)).plan_only
    report = task(REPORT)
    assert report.trigger_rule == "all_done"
    assert report.vm_groups == [tier_group(1), tier_group(2)]
    assert [t.task_id for t in dag.tasks if not t.downstream_list] == [REPORT]
    assert report.upstream_task_ids == {t.task_id for t in dag.tasks if not t.is_setup} - {REPORT}
    dag.validate()  # Airflow's own checks (e.g. what may follow a setup task)


def test_a_group_without_retention_verifies_and_deletes_nothing(tmp_path):
    text = EXAMPLE.read_text().replace("  retention:\n    keep_last: 7\n    keep_days: 14\n", "")
    path = tmp_path / "gce_vm_backup.yaml"
    path.write_text(text)
    dag = build_dags(load_config(path))["gce_vm_backup__batch-manual"]
    assert tier_task(1, VERIFY) in dag.task_dict
    assert tier_task(1, RETENTION) not in dag.task_dict
    assert tier_task(1, VERIFY) in dag.get_task(REPORT).upstream_task_ids


def test_failure_notification_only_where_a_group_configures_it(dags):
    from gce_vm_backup.report.notify import EmailFailureNotifier

    (notifier,) = dags["gce_vm_backup__shop-nightly"].on_failure_callback
    assert isinstance(notifier, EmailFailureNotifier)
    assert notifier.settings.to == ["sre-oncall@example.com"]
    assert dags["gce_vm_backup__labelled-weekly"].on_failure_callback is None


def test_tiers_stop_in_order_and_start_in_reverse(dags):
    dag = dags["gce_vm_backup__shop-nightly"]
    stopped, started = dag.get_task(tier_stopped_task(1)), dag.get_task(tier_started_task(2))
    assert stopped.upstream_task_ids == {tier_task(1, STOP_SNAPSHOT)}
    assert stopped.trigger_rule == "none_failed"  # an empty tier 1 is no failure
    assert dag.get_task(resolve_task(2)).upstream_task_ids == {stopped.task_id}
    # the inner tier is back (its ensure_running, whatever happened) before the outer tier starts
    assert started.upstream_task_ids == {tier_task(2, ENSURE_RUNNING)}
    assert started.trigger_rule == "all_done"
    outer_start = dag.get_task(tier_task(1, START))
    assert outer_start.upstream_task_ids == {
        started.task_id,
        tier_task(1, STOP_SNAPSHOT),
        tier_task(1, PRECHECK),
    }
    assert outer_start.is_teardown
    assert outer_start.downtime_task == tier_task(1, STOP_SNAPSHOT)
    assert dag.get_task(tier_task(1, ENSURE_RUNNING)).upstream_task_ids >= {outer_start.task_id}
    assert tier_task(2, START) not in dag.task_dict  # the innermost tier starts inside its downtime task
    assert tier_task(1, STOP_SNAPSHOT_START) not in dag.task_dict


def test_a_tiered_group_checks_the_cap_in_every_resolve_and_counts_every_tier(dags):
    dag = dags["gce_vm_backup__shop-nightly"]
    assert dag.get_task(resolve_task(1)).max_concurrent_vms == 10
    # a later tier's selector may match more VMs at its run time than at tier 1's check
    assert dag.get_task(resolve_task(2)).max_concurrent_vms == 10
    assert dags["gce_vm_backup__labelled-weekly"].get_task(resolve_task(1)).max_concurrent_vms is None
    every_tier = [tier_task(1, STOP_SNAPSHOT), tier_task(2, STOP_SNAPSHOT_START)]
    assert dag.get_task(tier_task(1, STOP_SNAPSHOT)).cap_tasks == every_tier
    assert dag.get_task(tier_task(2, STOP_SNAPSHOT_START)).cap_tasks == every_tier


def test_schedule_start_date_and_run_limits(dags):
    nightly = dags["gce_vm_backup__shop-nightly"]
    assert nightly.schedule == "0 3 * * *"
    assert nightly.start_date.isoformat() == "2026-01-01T00:00:00+00:00"
    assert nightly.max_active_runs == 1
    assert nightly.catchup is False
    assert dags["gce_vm_backup__batch-manual"].schedule is None


def test_the_cap_bounds_the_downtime_tasks_and_the_wait_mode_the_slot_free_waits(dags, tmp_path):
    downtime = dags["gce_vm_backup__labelled-weekly"].get_task(tier_task(1, STOP_SNAPSHOT_START))
    # the scheduler runs up to twice the cap: tries beyond it start ahead and wait for room (cap.py)
    assert downtime.max_active_tis_per_dagrun == 2 * downtime.max_concurrent_vms == 20
    assert (downtime.stop_timeout, downtime.snapshot_timeout, downtime.start_timeout) == (900, 7200, 900)
    assert downtime.cap_wait == 900 + 7200 + 900 + 600  # its bounds plus the retry delay of a killed try
    assert not hasattr(downtime, "wait_mode")  # the downtime never waits slot-free: it long-polls
    verify = dags["gce_vm_backup__labelled-weekly"].get_task(tier_task(1, VERIFY))
    assert verify.wait_mode == "defer"
    # a slot-free wait keeps no VM down: the cap does not queue it behind the others
    assert verify.max_active_tis_per_dagrun is None
    text = EXAMPLE.read_text().replace("max_concurrent_vms: 10", "max_concurrent_vms: 3")
    text = text.replace("wait_mode: defer ", "wait_mode: worker ")
    path = tmp_path / "gce_vm_backup.yaml"
    path.write_text(text)
    dag = build_dags(load_config(path))["gce_vm_backup__shop-nightly"]
    for task_id in (tier_task(1, STOP_SNAPSHOT), tier_task(2, STOP_SNAPSHOT_START)):
        assert dag.get_task(task_id).max_active_tis_per_dagrun == 6, task_id
    for tier in (1, 2):
        task = dag.get_task(tier_task(tier, VERIFY))
        assert (task.max_active_tis_per_dagrun, task.mode) == (3, "poke"), task.task_id
        # bringing a VM back never waits for room under the cap
        assert dag.get_task(tier_task(tier, ENSURE_RUNNING)).max_active_tis_per_dagrun is None
    assert dag.get_task(tier_task(1, START)).max_active_tis_per_dagrun is None


def test_early_restart_waits_for_uploading_only(dags):
    assert (
        dags["gce_vm_backup__batch-manual"].get_task(tier_task(1, STOP_SNAPSHOT_START)).early_restart is True
    )
    assert (
        dags["gce_vm_backup__shop-nightly"].get_task(tier_task(2, STOP_SNAPSHOT_START)).early_restart is False
    )


def test_snapshot_mode_defaults_to_standard_before_the_config_key_exists(dags):
    for dag in dags.values():
        for task in dag.tasks:
            if task.task_id.endswith((STOP_SNAPSHOT_START, STOP_SNAPSHOT)):
                assert task.snapshot_mode == "standard"
        assert not any(task.task_id.endswith(CONVERT) for task in dag.tasks)


def test_trigger_form_offers_a_vm_multi_select_and_a_dry_run_toggle(dags):
    params = dags["gce_vm_backup__shop-nightly"].params
    vms = params.get_param("vms").schema
    assert vms["type"] == ["null", "array"]  # optional: the form renders the multi-select, unmarked
    assert vms["examples"] == ["us-central1-a/web-1", "us-central1-b/db-1"]
    assert vms["items"]["enum"] == ["us-central1-a/web-1", "us-central1-b/db-1"]
    assert params.get_param("dry_run").schema["type"] == ["null", "boolean"]  # a toggle, unmarked
    assert params["dry_run"] is False
    assert params["vms"] == []


def test_selector_group_cannot_enumerate_its_vms_in_the_form(dags):
    vms = dags["gce_vm_backup__labelled-weekly"].params.get_param("vms").schema
    assert "enum" not in vms["items"]
    assert "examples" not in vms


def test_invalid_form_value_is_rejected_by_the_params(dags):
    from airflow.sdk.definitions.param import ParamsDict

    try:
        from airflow.sdk.exceptions import ParamValidationError
    except ImportError:  # Airflow 3.1
        from airflow.exceptions import ParamValidationError

    params = ParamsDict(dags["gce_vm_backup__shop-nightly"].params)
    with pytest.raises(
        ParamValidationError, match="Invalid input for param vms: 'us-central1-a/ghost' is not one of"
    ):
        params["vms"] = ["us-central1-a/ghost"]


def test_register_dags_puts_the_dags_in_the_namespace(tmp_path):
    namespace: dict = {}
    register_dags(namespace, EXAMPLE, strict=True)
    assert sorted(k for k in namespace if k.startswith("gce_vm_backup__")) == sorted(
        build_dags(load_config(EXAMPLE))
    )


def test_a_tasks_process_builds_only_its_own_backup_dag(monkeypatch):
    """The task runner sets Airflow's parsing context to the task's DAG before it parses the file."""
    # What the task runner sets (airflow.sdk.definitions.context._AIRFLOW_PARSING_CONTEXT_DAG_ID); set
    # here with monkeypatch, as Airflow's own context manager leaves it set when it was not set before.
    key = "_AIRFLOW_PARSING_CONTEXT_DAG_ID"
    monkeypatch.delenv(key, raising=False)
    everything: dict = {}
    register_dags(everything, EXAMPLE, strict=True)
    for dag_id in ("gce_vm_backup__shop-nightly", "gce_vm_backup__labelled-weekly"):
        namespace: dict = {}
        monkeypatch.setenv(key, dag_id)
        register_dags(namespace, EXAMPLE, strict=True)
        assert list(namespace) == [dag_id]
        assert namespace[dag_id].task_dict.keys() == everything[dag_id].task_dict.keys()
    # any other DAG id (a restore DAG, the freshness check, one not in the config): every DAG is built
    for dag_id in ("gce_vm_backup_restore__shop-nightly", "gce_vm_backup_freshness", "gce_vm_backup__gone"):
        namespace = {}
        monkeypatch.setenv(key, dag_id)
        register_dags(namespace, EXAMPLE, strict=True)
        assert namespace.keys() == everything.keys(), dag_id


def test_register_dags_leaves_out_a_broken_group_unless_strict(tmp_path):
    text = EXAMPLE.read_text().replace('schedule: "@weekly"', 'schedule: "not cron"')
    path = tmp_path / "gce_vm_backup.yaml"
    path.write_text(text)
    namespace: dict = {}
    register_dags(namespace, path, strict=False)
    assert "gce_vm_backup__labelled-weekly" not in namespace
    assert "gce_vm_backup__shop-nightly" in namespace
    with pytest.raises(ConfigError, match="group 'labelled-weekly': key 'schedule'"):
        register_dags({}, path, strict=True)


def test_register_dags_raises_when_no_group_is_valid(tmp_path):
    path = tmp_path / "gce_vm_backup.yaml"
    path.write_text("version: 1\ngroups: {}\n")
    with pytest.raises(ConfigError, match="key 'groups'"):
        register_dags({}, path, strict=False)


def test_the_form_fields_are_exactly_the_conf_keys_the_resolve_task_accepts(dags):
    from gce_vm_backup.backup.resolve import TRIGGER_CONF_KEYS

    for dag in dags.values():
        assert set(dag.params) == set(TRIGGER_CONF_KEYS)
        assert dag.get_task("resolve_tier_1").conf == "{{ dag_run.conf }}"


def test_room_for_every_capped_stage_and_later_stages_go_first(dags):
    dag = dags["gce_vm_backup__shop-nightly"]
    assert dag.max_active_tasks == 3 * 10 + 16  # downtime tries (2 x cap), verifies (cap), the rest
    # "upstream": a task's priority is the sum over its upstream tasks: a verify before another downtime
    from airflow.providers.standard.operators.empty import EmptyOperator

    upstream = EmptyOperator(task_id="probe", weight_rule="upstream").weight_rule  # not a str on Airflow 3.1
    assert all(task.weight_rule == upstream for task in dag.tasks)


def test_bringing_a_vm_back_waits_out_a_stop_that_timed_out_and_is_retried(dags):
    """The bound covers the stop's (a VM still shutting down when the stop timed out) as
    well as the start's; its timeout is an OperationTimeoutError, which Airflow retries."""
    dag = dags["gce_vm_backup__shop-nightly"]
    for task_id in (tier_task(2, ENSURE_RUNNING), tier_task(1, START), tier_task(1, ENSURE_RUNNING)):
        task = dag.get_task(task_id)
        assert (task.timeout, task.stop_timeout) == (900, 900)
        assert task.retries >= 3


def test_the_resolve_tasks_hand_each_vm_the_shared_disks_another_vms_backup_carries(dags):
    dag = dags["gce_vm_backup__shop-nightly"]
    precheck = dag.get_task(tier_task(1, PRECHECK))
    assert "carried_by" in precheck.template_fields
    assert dag.get_task(REPORT).gcp_conn_id == dag.get_task(tier_task(1, STOP_SNAPSHOT)).gcp_conn_id
