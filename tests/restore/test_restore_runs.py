"""Real Airflow runs (dag.test on SQLite) of the drill and restore DAGs against the Compute Engine emulator.

The replace-disks approval (the standard provider's HITL ApprovalOperator) is answered as the HITL REST
API answers it (``approval_answer``): dag.test leaves the task waiting for input until a response is
recorded in the metadata DB from outside, so a thread records it while the run goes on.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED
from gce_vm_backup.config.labels import managed_snapshot_labels
from gce_vm_backup.restore.steps import DRILL_KEY, REPLACED_BY_KEY, RESTORE_KEY

from ..conftest import generated_dagbag

pytestmark = [pytest.mark.airflow, pytest.mark.emulator, pytest.mark.slow]

P, ZA, ZB = "demo-project", "us-central1-a", "us-central1-b"
SCRATCH = "drill-scratch"  # the drill's own project (in the demo seed)
WEB = f"projects/{P}/zones/{ZA}/disks/web-1"
DATA = f"projects/{P}/zones/{ZA}/disks/web-1-data"
VM = f"projects/{P}/zones/{ZA}/instances/web-1"
CONFIG = """\
version: 1
deployment: test
defaults:
  start_date: "2026-01-01T00:00:00+00:00"
  poke_interval: 1
  retries: 0
  timeouts: {stop: 60, start: 60}
groups:
  web:
    targets:
      - {project: demo-project, zone: us-central1-a, instance: web-1}
    restore_drill:
      scratch_project: drill-scratch
      scratch_zone: us-central1-b
      network: drills
      poll_interval: 1
      boot_check: {serial_port: "Reached target Multi-User System"}
      timeouts: {create: 120, boot: 60, cleanup: 120}
  retried:
    retries: 1
    retry_delay: 0
    targets:
      - {project: demo-project, zone: us-central1-a, instance: web-1}
"""
MUTATING = {"insert", "delete", "stop", "start", "attachDisk", "detachDisk", "setLabels"}


@pytest.fixture(scope="module")
def dagbag():
    return generated_dagbag("restore_runs", CONFIG)


@pytest.fixture
def emulator(monkeypatch):
    with Emulator(DEMO_SEED, time_scale=60) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
        seed_set(emulator, "run-old", days_before=2)
        seed_set(emulator, "run-new", days_before=1)
        yield emulator


def seed_set(emulator, run, *, days_before, group="web", data_status="READY"):
    """The snapshots one backup run of web-1 left: both disks, labelled with the run."""
    created = datetime.fromisoformat(emulator.clock.timestamp()) - timedelta(days=days_before)
    for disk, size, status in ((WEB, 10, "READY"), (DATA, 50, data_status)):
        emulator.seed_snapshot(
            P,
            {
                "name": f"{disk.rsplit('/', 1)[-1]}-{run}",
                "sourceDisk": disk,
                "diskSizeGb": size,
                "status": status,
                "labels": managed_snapshot_labels(
                    deployment="test", group=group, instance="web-1", disk_source=disk, run=run
                ),
                "creationTimestamp": created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            },
        )


def run(dagbag, dag_id, **conf):
    return dagbag.get_dag(dag_id).test(run_conf=conf or None)


def restore_conf(**overrides):
    return {
        "vm": "us-central1-a/web-1",
        "snapshot_set": "newest",
        "mode": "new-vm",
        "new_name": None,
        "machine_type": None,
        "network": None,
        "dry_run": False,
        **overrides,
    }


def states(dag_run):
    return {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}


def xcom(dag_run, task_id, key="return_value", map_index=-1):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=dag_run.run_id,
                key=key,
                dag_ids=dag_run.dag_id,
                task_ids=task_id,
                map_indexes=map_index,
            )
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


def resources(emulator, zone, kind):
    table = emulator.world.disks if kind == "disks" else emulator.world.instances
    with emulator.world.lock:
        return {path: dict(body) for path, body in table.items() if f"/zones/{zone}/" in path}


def attached(emulator, vm=VM):
    instance = emulator.instance(P, ZA, vm.rsplit("/", 1)[-1])
    return {
        d["deviceName"]: (d["source"][d["source"].find("projects/") :], d["boot"]) for d in instance["disks"]
    }


def approval_answer(dag_id, option, stop):
    """Answer the approval task of the running ``dag_id`` with ``option`` as the HITL API does: record the
    response, then hand the waiting task its resume event."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.triggers.base import TriggerEvent
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    waiting = (TaskInstanceState.AWAITING_INPUT, TaskInstanceState.DEFERRED)
    while not stop.is_set():
        with create_session() as session:
            ti = session.scalars(
                select(TaskInstance).where(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.task_id == "approve",
                    TaskInstance.state.in_(waiting),
                )
            ).first()
            detail = session.get(HITLDetail, ti.id) if ti is not None else None
            if detail is not None:
                detail.responded_by = {"id": "tester", "name": "tester"}
                detail.responded_at = datetime.now(UTC)
                detail.chosen_options = [option]
                detail.params_input = {}
                session.add(detail)
                if ti.state == TaskInstanceState.AWAITING_INPUT:
                    handle_event_submit(
                        TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session
                    )
                return
        time.sleep(0.3)


def run_approved(dagbag, dag_id, option="Approve", **conf):
    stop = threading.Event()
    answer = threading.Thread(target=approval_answer, args=(dag_id, option, stop), daemon=True)
    answer.start()
    try:
        return run(dagbag, dag_id, **restore_conf(mode="replace-disks", **conf))
    finally:
        stop.set()
        answer.join(timeout=10)


# ---- drill --------------------------------------------------------------------------------------
def test_drill_restores_the_newest_set_boots_it_and_leaves_nothing_behind(dagbag, emulator):
    disks_before, vms_before = resources(emulator, ZB, "disks"), resources(emulator, ZB, "instances")

    dag_run = run(dagbag, "gce_vm_backup_drill__web")

    assert dag_run.state == "success", states(dag_run)
    report = xcom(dag_run, "drill_report", key="drill_report")
    (row,) = report["vms"]
    assert row["vm"] == VM
    assert row["snapshot_set"] == "run-new"
    assert row["result"] == "ok"
    assert row["rpo_seconds"] >= 0
    assert row["rto_seconds"] >= 0
    assert row["booted_at"] is not None
    inserted = [c for c in emulator.calls if c.method in ("compute.disks.insert", "compute.instances.insert")]
    assert {c.resource.split("/")[3] for c in inserted} == {ZB}  # only in the scratch zone
    assert len([c for c in inserted if c.method == "compute.disks.insert"]) == 2
    assert resources(emulator, ZB, "disks") == disks_before
    assert resources(emulator, ZB, "instances") == vms_before
    assert attached(emulator) == {"web-1": (WEB, True), "web-1-data": (DATA, False)}  # the VM untouched
    assert not [c for c in emulator.calls if c.method.endswith((".stop", ".detachDisk", ".attachDisk"))]


def test_the_drill_vm_has_no_external_ip_and_is_labelled_as_the_drill_runs(dagbag, emulator):
    seen = {}

    def look():
        for path, body in resources(emulator, ZB, "instances").items():
            if DRILL_KEY in body.get("labels", {}):
                seen[path] = body

    emulator.faults.on_call("compute.instances.delete", look)

    dag_run = run(dagbag, "gce_vm_backup_drill__web")

    assert dag_run.state == "success", states(dag_run)
    (vm,) = seen.values()
    assert [nic.get("accessConfigs", []) for nic in vm["networkInterfaces"]] == [[]]
    assert vm["labels"]["managed-by"] == "gce-vm-backup"
    assert vm["labels"]["gce-vm-backup-group"] == "web"


def test_drill_skips_an_incomplete_newer_set(dagbag, emulator):
    seed_set(emulator, "run-broken", days_before=0, data_status="FAILED")

    dag_run = run(dagbag, "gce_vm_backup_drill__web")

    assert dag_run.state == "success", states(dag_run)
    assert xcom(dag_run, "drill_report", key="drill_report")["vms"][0]["snapshot_set"] == "run-new"


def test_a_boot_check_that_never_passes_fails_the_drill_and_still_cleans_up(dagbag, emulator):
    from gce_emulator.restore_guest import configure_boot

    configure_boot(emulator, SCRATCH, serial_lines=[])  # an OS that never says it came up

    dag_run = run(dagbag, "gce_vm_backup_drill__web")

    assert dag_run.state == "failed"
    row = xcom(dag_run, "drill_report", key="drill_report")["vms"][0]
    assert row["result"] == "failed"
    assert "boot check" in row["cause"]
    assert row["rto_seconds"] is not None  # it was RUNNING; only the OS check failed
    assert not [p for p, d in resources(emulator, ZB, "disks").items() if DRILL_KEY in d.get("labels", {})]
    assert not [
        p for p, d in resources(emulator, ZB, "instances").items() if DRILL_KEY in d.get("labels", {})
    ]


@pytest.mark.parametrize(
    "method", ["compute.disks.insert", "compute.instances.insert", "compute.instances.delete"]
)
def test_a_failed_drill_step_fails_the_drill_and_leaves_nothing_behind(dagbag, emulator, method):
    # instances.delete fails once: the cleanup's retry deletes it
    emulator.faults.fail_operation(method, "QUOTA_EXCEEDED", times=1)

    dag_run = run(dagbag, "gce_vm_backup_drill__web")

    left = [p for p, d in resources(emulator, ZB, "disks").items() if DRILL_KEY in d.get("labels", {})]
    left += [p for p, d in resources(emulator, ZB, "instances").items() if DRILL_KEY in d.get("labels", {})]
    assert left == []
    report = xcom(dag_run, "drill_report", key="drill_report")
    if method == "compute.instances.delete":  # the cleanup retried
        assert report["cleanup"]["left"] == []
    else:
        assert dag_run.state == "failed"
        assert "QUOTA_EXCEEDED" in report["vms"][0]["cause"]


def test_a_lost_response_to_a_disk_insert_makes_one_disk_not_two(dagbag, emulator):
    emulator.faults.http_error_after_apply("compute.disks.insert", 503, times=1)

    dag_run = run(dagbag, "gce_vm_backup_drill__web")

    assert dag_run.state == "success", states(dag_run)
    inserts = [c for c in emulator.calls_for("compute.disks.insert")]
    assert len(inserts) == 3  # the lost one repeated once, with the same request id
    assert inserts[0].request_id == inserts[1].request_id
    assert len({c.request_id for c in inserts}) == 2  # two disks, each asked for under one id


def coming_run(dag_id="gce_vm_backup_drill__web"):
    """A drill run whose id, and so whose labels, anyone can know before it starts."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.types import DagRunType

    from gce_vm_backup.config.labels import run_label

    logical_date = datetime(2026, 12, 13, 5, 0, tzinfo=UTC)
    run_id = DagRun.generate_run_id(
        run_type=DagRunType.MANUAL, logical_date=logical_date, run_after=logical_date
    )
    labels = {
        "managed-by": "gce-vm-backup",
        "gce-vm-backup-deployment": "test",
        "gce-vm-backup-group": "web",
        DRILL_KEY: run_label(dag_id, run_id),
    }
    return logical_date, labels


def put_labels(emulator, labels, *paths):
    with emulator.world.lock:
        for path in paths:
            table = emulator.world.instances if "/instances/" in path else emulator.world.disks
            table[path]["labels"] = {**table[path].get("labels", {}), **labels}


def test_a_drill_run_deletes_nothing_in_production_labelled_as_it_and_makes_only_its_own(dagbag, emulator):
    logical_date, labels = coming_run()
    put_labels(emulator, labels, VM, WEB, DATA)  # production web-1 and web-1-data, labelled as the run
    seen = {}

    def look():
        for path, body in resources(emulator, ZB, "instances").items():
            if DRILL_KEY in body.get("labels", {}):
                seen[path] = body

    emulator.faults.on_call("compute.instances.delete", look)

    dag_run = dagbag.get_dag("gce_vm_backup_drill__web").test(
        run_after=logical_date, logical_date=logical_date
    )

    assert dag_run.state == "success", states(dag_run)
    assert xcom(dag_run, "plan")[0]["plan"]["run_hash"] == labels[DRILL_KEY]  # the labels were the run's
    assert attached(emulator) == {"web-1": (WEB, True), "web-1-data": (DATA, False)}  # all still there
    with emulator.world.lock:
        assert {WEB, DATA} <= set(emulator.world.disks)
    changed = [c for c in emulator.calls if c.method.rsplit(".", 1)[-1] in MUTATING]
    assert {c.resource.split("/")[1] for c in changed} == {SCRATCH}  # nothing elsewhere
    assert len([c for c in changed if c.method.endswith(".insert")]) == 3  # two disks and a VM
    deleted = [c.resource for c in changed if c.method.endswith(".delete")]
    assert len(deleted) == len(set(deleted)) == 3  # each deleted once
    (vm,) = seen.values()
    assert [nic.get("accessConfigs", []) for nic in vm["networkInterfaces"]] == [[]]  # no external IP
    assert vm["networkInterfaces"][0]["network"].endswith(f"projects/{SCRATCH}/global/networks/drills")
    assert not [p for p in resources(emulator, ZB, "disks") if p.startswith(f"projects/{SCRATCH}/")]


def test_a_resource_in_the_scratch_project_with_the_runs_labels_but_not_its_plan_is_left_and_reported(
    dagbag, emulator
):
    from gce_emulator.compute import load_seed

    logical_date, labels = coming_run()
    with emulator.world.lock:
        load_seed(
            emulator.world,
            {"projects": {SCRATCH: {"zones": {ZB: {"disks": [{"name": "drill-web-1", "labels": labels}]}}}}},
        )
    planted = f"projects/{SCRATCH}/zones/{ZB}/disks/drill-web-1"

    dag_run = dagbag.get_dag("gce_vm_backup_drill__web").test(
        run_after=logical_date, logical_date=logical_date
    )

    assert planted in resources(emulator, ZB, "disks")  # left alone
    assert [p for p in resources(emulator, ZB, "disks") if p.startswith(f"projects/{SCRATCH}/")] == [planted]
    report = xcom(dag_run, "drill_report", key="drill_report")
    assert report["vms"][0]["result"] == "ok"
    assert report["cleanup"]["refused"] == [f"{planted}: left alone, it does not carry this run's labels"]
    assert dag_run.state == "failed"  # on-call hears of it


def test_what_a_drill_task_killed_after_its_insert_made_is_still_deleted(dagbag, emulator, monkeypatch):
    from gce_vm_backup.restore import drill as restore_drill_ops

    def insert_then_die(hook, **kwargs):  # the insert is sent; the worker dies before anything else
        hook.insert_disk(
            project_id=kwargs["project"],
            zone=kwargs["zone"],
            name=kwargs["name"],
            source_snapshot=kwargs["source_snapshot"],
            labels=dict(kwargs["labels"]),
            replica_zones=None,
            request_id=kwargs["request_id"],
        )
        raise RuntimeError("worker killed")

    monkeypatch.setattr(restore_drill_ops, "ensure_disk", insert_then_die)

    dag_run = run(dagbag, "gce_vm_backup_drill__web")

    assert dag_run.state == "failed"
    (made,) = [c for c in emulator.calls_for("compute.disks.insert")]
    assert made.resource.startswith(f"projects/{SCRATCH}/zones/{ZB}/")
    report = xcom(dag_run, "drill_report", key="drill_report")
    assert len(report["cleanup"]["deleted"]) == 1
    assert report["cleanup"]["refused"] == []
    assert not [p for p in resources(emulator, ZB, "disks") if p.startswith(f"projects/{SCRATCH}/")]


# ---- restore: new-vm ----------------------------------------------------------------------------
def test_new_vm_restores_beside_the_original_and_leaves_it_untouched(dagbag, emulator):
    dag_run = run(dagbag, "gce_vm_backup_restore__web", **restore_conf(new_name="web-1-copy"))

    assert dag_run.state == "success", states(dag_run)
    new = emulator.instance(P, ZA, "web-1-copy")
    assert new["status"] == "RUNNING"
    assert new["machineType"].endswith("/machineTypes/e2-small")  # the original's
    devices = {d["deviceName"]: d["boot"] for d in new["disks"]}
    assert devices == {"web-1": True, "web-1-data": False}
    assert new["labels"][RESTORE_KEY]
    assert attached(emulator) == {"web-1": (WEB, True), "web-1-data": (DATA, False)}
    assert emulator.instance(P, ZA, "web-1")["status"] == "RUNNING"
    assert not emulator.calls_for("compute.instances.stop")
    report = xcom(dag_run, "restore_report", key="restore_report")
    assert report["state"].startswith(f"New VM projects/{P}/zones/{ZA}/instances/web-1-copy is RUNNING")


def test_a_chosen_older_set_is_restored(dagbag, emulator):
    dag_run = run(dagbag, "gce_vm_backup_restore__web", **restore_conf(snapshot_set="run-old"))

    assert dag_run.state == "success", states(dag_run)
    assert len(emulator.calls_for("compute.disks.insert")) == 2
    plan = xcom(dag_run, "plan")
    assert plan["set"]["run"] == "run-old"
    assert {d["source_snapshot"].rsplit("/", 1)[-1] for d in plan["disks"]} == {
        "web-1-run-old",
        "web-1-data-run-old",
    }


def test_a_dry_run_changes_nothing_and_shows_the_plan(dagbag, emulator):
    dag_run = run(dagbag, "gce_vm_backup_restore__web", **restore_conf(mode="replace-disks", dry_run=True))

    assert dag_run.state == "success", states(dag_run)
    assert not [c for c in emulator.calls if c.method.rsplit(".", 1)[-1] in MUTATING]
    report = xcom(dag_run, "restore_report", key="restore_report")
    assert report["state"] == f"Dry run: nothing was changed ({VM} is RUNNING)"
    assert any("replacing " + WEB in line for line in report["lines"])


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"snapshot_set": "run-nope"}, "no snapshot set 'run-nope'"),
        (
            {"mode": "replace-disks", "new_name": "x"},
            "new_name, machine_type and network are for mode new-vm",
        ),
    ],
)
def test_a_restore_that_cannot_be_done_changes_nothing_and_says_why(dagbag, emulator, conf, message):
    dag_run = run(dagbag, "gce_vm_backup_restore__web", **restore_conf(**conf))

    assert dag_run.state == "failed"
    assert not [c for c in emulator.calls if c.method.rsplit(".", 1)[-1] in MUTATING]
    report = xcom(dag_run, "restore_report", key="restore_report")
    assert report["state"].startswith("Nothing was changed: ")
    assert message in report["state"]


# ---- restore: replace-disks ---------------------------------------------------------------------
def new_disks(plan):
    return {d["device_name"]: (d["new_source"], d["boot"]) for d in plan["disks"]}


def test_replace_disks_after_approval_swaps_in_the_new_disks_and_keeps_the_old(dagbag, emulator):
    dag_run = run_approved(dagbag, "gce_vm_backup_restore__web")

    assert dag_run.state == "success", states(dag_run)
    plan = xcom(dag_run, "plan")
    assert attached(emulator) == new_disks(plan)
    assert emulator.instance(P, ZA, "web-1")["status"] == "RUNNING"
    for old in (WEB, DATA):
        disk = emulator.world.disks[old]
        assert disk["labels"][REPLACED_BY_KEY] == plan["run_hash"]  # kept, labelled, for a rollback
        assert disk["users"] == []
    report = xcom(dag_run, "restore_report", key="restore_report")
    assert report["state"] == f"VM {VM} is RUNNING with its NEW disks (restored from set run-new)"
    assert not emulator.calls_for("compute.disks.delete")


def test_a_rejected_replace_changes_nothing(dagbag, emulator):
    dag_run = run_approved(dagbag, "gce_vm_backup_restore__web", option="Reject")

    # the only writes are the hold on the chosen set's snapshots and its release (holds.py)
    mutating = [c for c in emulator.calls if c.method.rsplit(".", 1)[-1] in MUTATING]
    assert {c.method for c in mutating} == {"compute.snapshots.setLabels"}
    assert attached(emulator) == {"web-1": (WEB, True), "web-1-data": (DATA, False)}
    report = xcom(dag_run, "restore_report", key="restore_report")
    assert report["state"].startswith("Not approved: nothing was changed")


@pytest.mark.parametrize(
    "method",
    [
        "compute.disks.insert",
        "compute.instances.stop",
        "compute.disks.setLabels",
        "compute.instances.detachDisk",
        "compute.instances.attachDisk",
        "compute.instances.start",
    ],
)
def test_a_failed_replace_step_leaves_the_vm_running_with_a_boot_disk_and_the_report_exact(
    dagbag, emulator, method
):
    emulator.faults.fail_operation(method, "INTERNAL_ERROR", times=1)

    dag_run = run_approved(dagbag, "gce_vm_backup_restore__web")

    # bringing the VM back gets retries of its own (at least 3): a failed start is tried again
    assert dag_run.state == ("success" if method == "compute.instances.start" else "failed")
    instance = emulator.instance(P, ZA, "web-1")
    assert instance["status"] == "RUNNING"
    assert [d["deviceName"] for d in instance["disks"] if d["boot"]] == ["web-1"]
    assert_report_matches(dag_run, emulator)


def assert_report_matches(dag_run, emulator):
    """The report's first line says what is attached at each device, and the VM's status."""
    plan = xcom(dag_run, "plan")
    state = xcom(dag_run, "restore_report", key="restore_report")["state"]
    now = attached(emulator)
    status = emulator.instance(P, ZA, "web-1")["status"]
    kinds = {
        "new" if now.get(d["device_name"], (None,))[0] == d["new_source"] else "old" for d in plan["disks"]
    }
    assert state.startswith(f"VM {VM} is {status} with ")
    if kinds == {"old"}:
        assert "its OLD disks" in state
    elif kinds == {"new"}:
        assert "its NEW disks" in state
    else:
        assert "a MIX of disks" in state
        for device, (source, _) in now.items():
            assert f"device {device}" in state
            assert source in state


def test_a_worker_killed_after_the_boot_disk_detach_gets_the_old_boot_disk_back_and_running(
    dagbag, emulator, monkeypatch
):
    from gce_vm_backup.restore.ops import SwapDisksOperator

    def killed(self, disk):
        if disk["boot"]:
            raise RuntimeError("worker killed")  # the try dies between the detach and the attach

    monkeypatch.setattr(SwapDisksOperator, "detached", killed)

    dag_run = run_approved(dagbag, "gce_vm_backup_restore__web")

    assert dag_run.state == "failed"
    instance = emulator.instance(P, ZA, "web-1")
    assert instance["status"] == "RUNNING"
    assert attached(emulator)["web-1"] == (WEB, True)  # the teardown re-attached the old boot disk
    assert_report_matches(dag_run, emulator)


def test_a_retry_after_a_worker_killed_mid_swap_finishes_the_swap(dagbag, emulator, monkeypatch):
    from gce_vm_backup.restore.ops import SwapDisksOperator

    calls = []

    def killed_once(self, disk):
        calls.append(disk["device_name"])
        if disk["boot"] and calls.count(disk["device_name"]) == 1:
            raise RuntimeError("worker killed")

    monkeypatch.setattr(SwapDisksOperator, "detached", killed_once)
    seed_set(emulator, "run-r", days_before=1, group="retried")

    dag_run = run_approved(dagbag, "gce_vm_backup_restore__retried")

    assert dag_run.state == "success", states(dag_run)
    assert attached(emulator) == new_disks(xcom(dag_run, "plan"))
    assert emulator.instance(P, ZA, "web-1")["status"] == "RUNNING"
    assert calls == ["web-1-data", "web-1"]  # the retry found the boot disk detached and only attached
