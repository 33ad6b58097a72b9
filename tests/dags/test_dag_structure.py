"""The generated DAGs: tasks, dependencies, tier order, teardown rules, trigger-form params."""

from __future__ import annotations

import pytest

from gce_vm_backup.config import load_config
from gce_vm_backup.dag_factory import build_dags, register_dags
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


def test_each_vm_chain_is_precheck_stop_snapshot_start_with_start_as_teardown(dags):
    dag = dags["gce_vm_backup__labelled-weekly"]
    task = dag.get_task
    assert task("tier_1.precheck").upstream_task_ids == {"resolve_tier_1"}
    assert task("tier_1.stop").upstream_task_ids == {"tier_1.precheck"}
    assert task("tier_1.snapshot").upstream_task_ids == {"tier_1.stop", "tier_1.precheck"}
    assert task("tier_1.start").upstream_task_ids == {"tier_1.snapshot", "tier_1.precheck"}
    assert task("tier_1.precheck").is_setup
    assert task("tier_1.start").is_teardown
    assert task("tier_1.start").trigger_rule == "all_done_setup_success"


def test_after_the_start_snapshots_are_verified_then_pruned_and_the_report_runs_last(dags):
    dag = dags["gce_vm_backup__shop-nightly"]
    task = dag.get_task
    assert task("tier_1.verify").upstream_task_ids == {"tier_1.start", "tier_1.snapshot"}
    assert task("tier_1.retention").upstream_task_ids == {"tier_1.verify", "tier_1.precheck"}
    assert task("tier_1.retention").policy.keep_last == 7
    assert task("tier_1.retention").plan_only == "{{ params.dry_run }}"
    report = task("run_report")
    assert report.trigger_rule == "all_done"
    assert report.vm_groups == ["tier_1", "tier_2"]
    assert [t.task_id for t in dag.tasks if not t.downstream_list] == ["run_report"]
    assert report.upstream_task_ids == {t.task_id for t in dag.tasks if not t.is_setup} - {"run_report"}
    dag.validate()  # Airflow's own checks (e.g. what may follow a setup task)


def test_a_group_without_retention_verifies_and_deletes_nothing(tmp_path):
    text = EXAMPLE.read_text().replace("  retention:\n    keep_last: 7\n    keep_days: 14\n", "")
    path = tmp_path / "gce_vm_backup.yaml"
    path.write_text(text)
    dag = build_dags(load_config(path))["gce_vm_backup__batch-manual"]
    assert "tier_1.verify" in dag.task_dict
    assert "tier_1.retention" not in dag.task_dict
    assert "tier_1.verify" in dag.get_task("run_report").upstream_task_ids


def test_failure_notification_only_where_a_group_configures_it(dags):
    from gce_vm_backup.report import EmailFailureNotifier

    (notifier,) = dags["gce_vm_backup__shop-nightly"].on_failure_callback
    assert isinstance(notifier, EmailFailureNotifier)
    assert notifier.settings.to == ["sre-oncall@example.com"]
    assert dags["gce_vm_backup__labelled-weekly"].on_failure_callback is None


def test_tiers_stop_in_order_and_start_in_reverse(dags):
    dag = dags["gce_vm_backup__shop-nightly"]
    assert dag.get_task("tier_1_stopped").upstream_task_ids == {"tier_1.stop"}
    assert dag.get_task("tier_1_stopped").trigger_rule == "none_failed"  # an empty tier 1 is no failure
    assert dag.get_task("resolve_tier_2").upstream_task_ids == {"tier_1_stopped"}
    assert dag.get_task("tier_2_started").upstream_task_ids == {"tier_2.start"}
    assert dag.get_task("tier_2_started").trigger_rule == "all_done"
    assert "tier_2_started" in dag.get_task("tier_1.start").upstream_task_ids
    assert "tier_1.start" not in dag.get_task("tier_2.start").upstream_task_ids


def test_schedule_start_date_and_run_limits(dags):
    nightly = dags["gce_vm_backup__shop-nightly"]
    assert nightly.schedule == "0 3 * * *"
    assert nightly.start_date.isoformat() == "2026-01-01T00:00:00+00:00"
    assert nightly.max_active_runs == 1
    assert nightly.catchup is False
    assert dags["gce_vm_backup__batch-manual"].schedule is None


def test_concurrency_cap_and_wait_mode_reach_every_waiting_task(dags, tmp_path):
    stop = dags["gce_vm_backup__shop-nightly"].get_task("tier_1.stop")
    assert stop.max_active_tis_per_dagrun == 10
    assert stop.wait_mode == "defer"
    assert stop.timeout == 900
    text = EXAMPLE.read_text().replace("max_concurrent_vms: 10", "max_concurrent_vms: 3")
    text = text.replace("wait_mode: defer ", "wait_mode: worker ")
    path = tmp_path / "gce_vm_backup.yaml"
    path.write_text(text)
    dag = build_dags(load_config(path))["gce_vm_backup__shop-nightly"]
    for name in ("stop", "snapshot", "start", "verify"):
        for tier in (1, 2):
            task = dag.get_task(f"tier_{tier}.{name}")
            assert (task.max_active_tis_per_dagrun, task.mode) == (3, "poke"), task.task_id


def test_early_restart_waits_for_uploading_only(dags):
    assert dags["gce_vm_backup__batch-manual"].get_task("tier_1.snapshot").ready_when == "UPLOADING"
    assert dags["gce_vm_backup__shop-nightly"].get_task("tier_1.snapshot").ready_when == "READY"


def test_trigger_form_offers_a_vm_multi_select_and_a_dry_run_toggle(dags):
    params = dags["gce_vm_backup__shop-nightly"].params
    vms = params.get_param("vms").schema
    assert vms["type"] == "array"
    assert vms["examples"] == ["us-central1-a/web-1", "us-central1-b/db-1"]
    assert vms["items"]["enum"] == ["us-central1-a/web-1", "us-central1-b/db-1"]
    assert params.get_param("dry_run").schema["type"] == "boolean"
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
    from gce_vm_backup.instance_ops import TRIGGER_CONF_KEYS

    for dag in dags.values():
        assert set(dag.params) == set(TRIGGER_CONF_KEYS)
        assert dag.get_task("resolve_tier_1").conf == "{{ dag_run.conf }}"


def test_room_for_every_capped_stage_and_vms_already_down_go_first(dags):
    dag = dags["gce_vm_backup__shop-nightly"]
    assert dag.max_active_tasks == 4 * 10 + 16
    # "upstream": a task's priority is the sum over its upstream tasks, so start > snapshot > stop
    from airflow.providers.standard.operators.empty import EmptyOperator

    upstream = EmptyOperator(task_id="probe", weight_rule="upstream").weight_rule  # not a str on Airflow 3.1
    assert all(task.weight_rule == upstream for task in dag.tasks)


def test_the_start_waits_out_a_stop_that_timed_out_and_is_retried_on_its_own_timeout(dags):
    """Issue 12 item 4: a sensor timeout is never retried, so the start's is not one, and its bound covers
    the stop's (a VM still shutting down when the stop task timed out) as well as its own."""
    dag = dags["gce_vm_backup__shop-nightly"]
    start, stop = dag.get_task("tier_1.start"), dag.get_task("tier_1.stop")
    assert start.retry_on_timeout is True
    assert start.timeout == stop.timeout + 900 == 1800
    assert start.retries >= 3


def test_the_resolve_tasks_hand_each_vm_the_shared_disks_another_vms_backup_carries(dags):
    dag = dags["gce_vm_backup__shop-nightly"]
    precheck = dag.get_task("tier_1.precheck")
    assert "carried_by" in precheck.template_fields
    assert dag.get_task("run_report").gcp_conn_id == dag.get_task("tier_1.stop").gcp_conn_id
