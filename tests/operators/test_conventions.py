"""Provider conventions on the operators: a backfill run refused by the first task, ``deferrable`` on the
slot-free waits, and the Cloud Console links of the operators that act on a VM or its snapshots."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gce_emulator import Emulator
from gce_vm_backup.backup.downtime import StopSnapshotOperator, StopSnapshotStartOperator
from gce_vm_backup.backup.instant_convert import ConvertInstantSnapshotsOperator
from gce_vm_backup.backup.listed import CheckListedOperator
from gce_vm_backup.backup.precheck import EnsureRunningOperator, PrecheckInstanceOperator
from gce_vm_backup.backup.resolve import ResolveTargetsOperator
from gce_vm_backup.backup.retention import ApplyRetentionOperator, VerifySnapshotsOperator
from gce_vm_backup.report.task import RunReportOperator
from gce_vm_backup.restore.drill import DrillPlanOperator
from gce_vm_backup.runtime.compat import AirflowFailException, conf
from gce_vm_backup.runtime.links import (
    SnapshotsConsoleLink,
    VmConsoleLink,
    snapshot_console_url,
    vm_console_url,
)
from gce_vm_backup.runtime.waits import SlotFreeWait

from .conftest import PROJECT, RUN_TIME, ZONE_A, Context

REFUSAL = (
    "backfill runs are refused: a backup stops VMs now and names snapshots by the run's date; "
    "trigger the DAG instead"
)
VM = f"projects/{PROJECT}/zones/{ZONE_A}/instances/web-1"
DISK = f"projects/{PROJECT}/zones/{ZONE_A}/disks/web-1"


@dataclass
class RunOfType:
    run_type: Any
    run_after: Any = RUN_TIME


def context_of(run_type: Any) -> dict[str, Any]:
    return {**Context().as_dict(), "dag_run": RunOfType(run_type)}


# ---- no backfill ----
def resolve() -> ResolveTargetsOperator:
    return ResolveTargetsOperator(
        task_id="resolve_tier_1",
        deployment="test",
        group="web",
        targets=[{"project_id": PROJECT, "zones": None, "labels": {"app": "shop"}}],
    )


@pytest.mark.parametrize("run_type", ["backfill", "DagRunType.BACKFILL_JOB"])
def test_the_first_task_refuses_a_backfill_run_in_one_line_before_any_call(emulator: Emulator, run_type):
    from airflow.utils.types import DagRunType

    value = DagRunType.BACKFILL_JOB if run_type.startswith("DagRunType") else run_type
    with pytest.raises(AirflowFailException) as raised:  # failed without retries: a retry would refuse too
        resolve().execute(context_of(value))

    assert str(raised.value) == REFUSAL
    assert emulator.calls == []


@pytest.mark.parametrize("run_type", ["scheduled", "manual"])
def test_the_first_task_runs_scheduled_and_manual_runs(emulator: Emulator, run_type):
    vms = resolve().execute(context_of(run_type))

    assert {vm["instance"] for vm in vms} >= {"web-1"}
    assert emulator.calls  # it did look the selector up


def test_the_drill_plan_refuses_a_backfill_run_before_any_call(emulator: Emulator):
    plan = DrillPlanOperator(
        task_id="plan",
        targets=[{"project_id": PROJECT, "zones": None, "labels": {"app": "shop"}}],
        drill={"scratch_project": "drills-prj", "scratch_zone": "us-central1-f", "network": "drills"},
        deployment="test",
        group="web",
    )

    with pytest.raises(
        AirflowFailException, match=r"^backfill runs are refused: a drill restores .*instead$"
    ):
        plan.execute(context_of("backfill"))
    assert emulator.calls == []


# ---- deferrable ----
class LookOnce(SlotFreeWait):
    def poke(self, context: Any) -> bool:
        return False


def test_deferrable_defaults_to_airflows_operators_default_deferrable():
    default = inspect.signature(SlotFreeWait.__init__).parameters["deferrable"].default

    assert default is conf.getboolean("operators", "default_deferrable", fallback=False)


@pytest.mark.parametrize(("setting", "expected"), [("True", "True defer"), ("False", "False reschedule")])
def test_the_config_default_picks_the_mode_of_a_wait_built_without_arguments(setting, expected):
    code = (
        "from gce_vm_backup.backup.retention import VerifySnapshotsOperator as V\n"
        "v = V(task_id='verify', snapshot_records=[])\n"
        "print(v.deferrable, v.wait_mode)"
    )
    env = {**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": setting}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)

    assert done.stdout.split("\n")[-2] == expected


def test_deferrable_true_defers_between_looks():
    wait = LookOnce(task_id="wait", deferrable=True, timeout=60, poke_interval=5)

    with pytest.raises(BaseException) as raised:  # TaskDeferred (a BaseException, where it lives moved)
        wait.execute(Context().as_dict())

    assert type(raised.value).__name__ == "TaskDeferred"
    assert type(raised.value.trigger).__name__ == "TimeDeltaTrigger"  # type: ignore[attr-defined]
    assert (wait.deferrable, wait.wait_mode, wait.mode) == (True, "defer", "poke")


def test_deferrable_false_reschedules_and_never_defers():
    wait = LookOnce(task_id="wait", deferrable=False)

    assert (wait.deferrable, wait.wait_mode, wait.mode) == (False, "reschedule", "reschedule")


@pytest.mark.parametrize(
    ("wait_mode", "deferrable", "expected"),
    [
        ("worker", True, (False, "poke")),
        ("reschedule", True, (False, "reschedule")),
        ("defer", False, (True, "poke")),
    ],
)
def test_an_explicit_wait_mode_wins_over_deferrable(wait_mode, deferrable, expected):
    wait = LookOnce(task_id="wait", wait_mode=wait_mode, deferrable=deferrable)

    assert (wait.deferrable, wait.mode) == expected
    assert wait.wait_mode == wait_mode


def test_the_instant_conversion_takes_deferrable_too():
    convert = ConvertInstantSnapshotsOperator(
        task_id="convert", instant_records=[], deployment="test", group="web", deferrable=False
    )

    assert (convert.deferrable, convert.mode) == (False, "reschedule")


# ---- Cloud Console links ----
def test_the_vm_link_is_the_consoles_instance_page():
    assert vm_console_url(PROJECT, ZONE_A, "web-1") == (
        "https://console.cloud.google.com/compute/instancesDetail/zones/us-central1-a/instances/web-1"
        "?project=demo-project"
    )
    assert snapshot_console_url(PROJECT, "web-1-20261124") == (
        "https://console.cloud.google.com/compute/snapshotsDetail/projects/demo-project/global/snapshots/"
        "web-1-20261124?project=demo-project"
    )


def test_hostile_names_are_percent_encoded_and_cannot_change_the_path_or_the_query():
    url = vm_console_url("p&evil=1#x", "../../admin", "a/b?c=d#e")
    parts = urlsplit(url)

    assert parts.netloc == "console.cloud.google.com"
    assert parts.path == "/compute/instancesDetail/zones/..%2F..%2Fadmin/instances/a%2Fb%3Fc%3Dd%23e"
    assert parse_qs(parts.query) == {"project": ["p&evil=1#x"]}
    assert parts.fragment == ""


@pytest.mark.parametrize("zone", ["..", ".", ""])
def test_a_dot_segment_gets_no_link_rather_than_a_path_the_browser_would_resolve(zone):
    task = PrecheckInstanceOperator(task_id="precheck", project_id=PROJECT, zone=zone, instance="web-1")

    assert VmConsoleLink().get_link(task, ti_key=None) == ""


def test_the_precheck_links_to_its_vm_from_its_arguments():
    task = PrecheckInstanceOperator(task_id="precheck", project_id=PROJECT, zone=ZONE_A, instance="web-1")

    assert VmConsoleLink().get_link(task, ti_key=None) == vm_console_url(PROJECT, ZONE_A, "web-1")
    assert SnapshotsConsoleLink().get_link(task, ti_key=None) == ""


def test_a_task_of_an_empty_tier_has_empty_links():
    task = PrecheckInstanceOperator(task_id="precheck", project_id="", zone="", instance="")

    assert VmConsoleLink().get_link(task, ti_key=None) == ""


def test_the_bring_back_task_links_to_the_vm_of_its_instance_record():
    record = {"project_id": PROJECT, "zone": ZONE_A, "instance": "web-1"}
    task = EnsureRunningOperator(task_id="ensure_running", instance_record=record, downtime_task="x")

    assert VmConsoleLink().get_link(task, ti_key=None) == vm_console_url(PROJECT, ZONE_A, "web-1")


def snapshot(name: str) -> dict[str, Any]:
    return {"vm": VM, "disk_source": DISK, "snapshot": name}


def test_the_snapshots_link_is_the_one_snapshots_page_or_the_projects_list_for_several():
    one = VerifySnapshotsOperator(task_id="verify", snapshot_records=[snapshot("web-1-a")])
    two = VerifySnapshotsOperator(task_id="verify", snapshot_records=[snapshot("web-1-a"), snapshot("d-a")])
    none = VerifySnapshotsOperator(task_id="verify", snapshot_records=[])

    assert SnapshotsConsoleLink().get_link(one, ti_key=None) == snapshot_console_url(PROJECT, "web-1-a")
    assert SnapshotsConsoleLink().get_link(two, ti_key=None) == (
        "https://console.cloud.google.com/compute/snapshots?project=demo-project"
    )
    assert SnapshotsConsoleLink().get_link(none, ti_key=None) == ""
    assert VmConsoleLink().get_link(one, ti_key=None) == vm_console_url(PROJECT, ZONE_A, "web-1")


def test_a_wait_given_the_downtime_tasks_whole_result_links_to_its_snapshots():
    result = {"vm": VM, "stopped": True, "snapshots": [snapshot("web-1-a")]}
    verify = VerifySnapshotsOperator(task_id="verify", snapshot_records=result)

    assert SnapshotsConsoleLink().get_link(verify, ti_key=None) == snapshot_console_url(PROJECT, "web-1-a")


def test_the_downtime_task_links_to_the_snapshots_it_made():
    task = StopSnapshotOperator(task_id="stop_snapshot", instance_record=None, deployment="test", group="web")
    assert SnapshotsConsoleLink().get_link(task, ti_key=None) == ""

    task.console_snapshots = [snapshot("web-1-a")]

    assert SnapshotsConsoleLink().get_link(task, ti_key=None) == snapshot_console_url(PROJECT, "web-1-a")


@pytest.mark.parametrize(
    "operator",
    [
        PrecheckInstanceOperator,
        StopSnapshotOperator,
        StopSnapshotStartOperator,
        EnsureRunningOperator,
        VerifySnapshotsOperator,
        ConvertInstantSnapshotsOperator,
        CheckListedOperator,
        ApplyRetentionOperator,
    ],
)
def test_every_operator_acting_on_a_vm_has_both_console_links(operator):
    assert [(link.name, link.xcom_key) for link in operator.operator_extra_links] == [
        ("Compute Engine VM", "gce_vm_backup_vm_link"),
        ("Snapshots", "gce_vm_backup_snapshots_link"),
    ]


@pytest.mark.parametrize("operator", [ResolveTargetsOperator, RunReportOperator])
def test_tasks_that_act_on_no_single_vm_have_no_console_links(operator):
    assert list(operator.operator_extra_links) == []
