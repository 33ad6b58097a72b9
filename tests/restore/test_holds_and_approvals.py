"""The restore's hold on its chosen set (holds.py, hold_ops.py) and the replace-disks approval check
(restore_approval.py): units against the emulator and fakes, then real runs (dag.test) of the restore DAG.

A hold is written with the snapshot's labelFingerprint and, when that is stale, read again and retried; it
is released at the end of every restore, a failed one too. An approval by someone outside the group's
approvers, or (four_eyes) by the user who triggered the run, is refused before anything is changed.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from unittest.mock import create_autospec

import pytest

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED
from gce_vm_backup.compute.holds import HOLD_PREFIX, hold_key, relabel
from gce_vm_backup.compute.restore_hook import RestoreHook
from gce_vm_backup.errors import ApiError, BackupError
from gce_vm_backup.restore.approval import CheckApprovalOperator, approval_problem
from gce_vm_backup.restore.holds import HoldSnapshotsOperator, ReleaseHoldsOperator, planned_snapshots

from ..conftest import generated_dagbag
from .test_restore_runs import (
    DATA,
    MUTATING,
    WEB,
    P,
    attached,
    restore_conf,
    run,
    seed_set,
    states,
    xcom,
)

ALICE = {"id": "alice", "name": "alice"}
BOB = {"id": "7", "name": "bob"}


# ---- the approval check (units) -----------------------------------------------------------------------
def approved_by(user):
    return {"chosen_options": ["Approve"], "params_input": {}, "responded_by_user": user}


def test_four_eyes_refuses_an_approval_by_the_user_who_triggered_the_run():
    problem = approval_problem(
        approved_by(ALICE), triggered_by="alice", approvers=[], four_eyes=True, group="w"
    )

    assert problem == (
        "alice approved the replace-disks restore they triggered themselves; four_eyes needs another user's "
        "approval"
    )


def test_four_eyes_matches_the_triggering_user_by_name_when_the_approver_id_differs():
    problem = approval_problem(approved_by(BOB), triggered_by="bob", approvers=[], four_eyes=True, group="w")

    assert problem is not None
    assert problem.startswith("bob (id 7) approved the replace-disks restore they triggered themselves")


def test_four_eyes_accepts_another_users_approval():
    assert (
        approval_problem(approved_by(BOB), triggered_by="alice", approvers=[], four_eyes=True, group="w")
        is None
    )


def test_four_eyes_refuses_when_airflow_recorded_no_triggering_user():
    problem = approval_problem(approved_by(BOB), triggered_by=None, approvers=[], four_eyes=True, group="w")

    assert problem is not None
    assert "recorded no user who triggered this run" in problem


def test_without_four_eyes_the_requester_may_approve():
    assert (
        approval_problem(approved_by(ALICE), triggered_by="alice", approvers=[], four_eyes=False, group="w")
        is None
    )


def test_an_approval_by_someone_outside_the_approvers_is_refused_naming_them():
    problem = approval_problem(
        approved_by(BOB), triggered_by="alice", approvers=["alice", "carol"], four_eyes=False, group="web"
    )

    assert problem == (
        "bob (id 7) approved, but only alice, carol may approve a replace-disks restore of group web "
        "(restore_approval.approvers)"
    )
    ok = approval_problem(
        approved_by(ALICE), triggered_by="x", approvers=["alice"], four_eyes=False, group="w"
    )
    assert ok is None


def test_an_approver_is_matched_by_id_not_by_a_look_alike_name():
    impostor = {"id": "mallory", "name": "alice"}

    problem = approval_problem(
        approved_by(impostor), triggered_by="bob", approvers=["alice"], four_eyes=False, group="w"
    )

    assert problem is not None
    assert problem.startswith("alice (id mallory) approved, but only alice")


@pytest.mark.parametrize(
    "response", [None, {}, {"responded_by_user": None}, {"responded_by_user": {"id": ""}}]
)
def test_an_approval_that_names_nobody_is_refused(response):
    problem = approval_problem(response, triggered_by="alice", approvers=[], four_eyes=False, group="w")

    assert problem == "the approval names no user who gave it"


@dataclass
class FakeRun:
    triggering_user_name: str | None


class FakeTI:
    def __init__(self, value):
        self.value = value

    def xcom_pull(self, *, task_ids):
        assert task_ids == "approve"
        return self.value


def test_the_check_task_fails_in_one_line_that_says_nothing_was_changed():
    check = CheckApprovalOperator(task_id="check_approval", group="web", four_eyes=True)
    context = {"ti": FakeTI(approved_by(ALICE)), "dag_run": FakeRun("alice")}

    with pytest.raises(BackupError) as raised:
        check.execute(context)

    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("Restore refused: alice approved the replace-disks restore they triggered")
    assert message.endswith("Nothing was changed.")
    context = {"ti": FakeTI(approved_by(BOB)), "dag_run": FakeRun("alice")}
    assert check.execute(context) == {"approved_by": BOB, "triggered_by": "alice"}


# ---- relabel: the fingerprint compare-and-set ----------------------------------------------------------
@pytest.fixture
def emulator(monkeypatch):
    with Emulator(DEMO_SEED, time_scale=60) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
        emulator.seed_snapshot(P, {"name": "s", "sourceDisk": WEB, "labels": {"keep": "me"}})
        yield emulator


def labels_of(emulator, name):
    with emulator.world.lock:
        return dict(emulator.world.snapshots[f"projects/{P}/global/snapshots/{name}"]["labels"])


def test_a_stale_fingerprint_is_read_again_and_the_other_writers_label_survives(emulator):
    hook = RestoreHook()
    other = RestoreHook()
    real_get = hook.get_snapshot
    raced = []

    def get_then_someone_writes(**kwargs):
        snapshot = real_get(**kwargs)
        if not raced:  # between our read and our write, another writer changes the labels
            raced.append(True)
            theirs = other.get_snapshot(**kwargs)
            other.wait_operation(
                other.set_snapshot_labels(
                    project_id=P,
                    name="s",
                    labels={**theirs.labels, "lease": "theirs"},
                    label_fingerprint=theirs.label_fingerprint,
                ),
                timeout=30,
            )
        return snapshot

    hook.get_snapshot = get_then_someone_writes
    held = relabel(hook, project=P, name="s", change=lambda labels: {**labels, "hold": "x"}, timeout=30)

    assert labels_of(emulator, "s") == {"keep": "me", "lease": "theirs", "hold": "x"}
    assert dict(held.labels) == {"keep": "me", "lease": "theirs", "hold": "x"}
    writes = [c for c in emulator.calls if c.method == "compute.snapshots.setLabels"]
    assert [c.status for c in writes] == [200, 412, 200]


def test_relabel_gives_up_after_a_bounded_number_of_stale_writes():
    from gce_vm_backup.errors import LabelsChangedError

    hook = create_autospec(RestoreHook, instance=True)
    hook.get_snapshot.return_value.labels = {}
    hook.get_snapshot.return_value.label_fingerprint = "f"
    hook.set_snapshot_labels.side_effect = LabelsChangedError("set labels of snapshot s: its labels changed")

    with pytest.raises(BackupError, match="changed under each of 3 writes"):
        relabel(
            hook, project=P, name="s", change=lambda labels: {**labels, "h": "1"}, timeout=1, max_writes=3
        )
    assert hook.set_snapshot_labels.call_count == 3


def test_relabel_does_not_retry_another_refusal():
    hook = create_autospec(RestoreHook, instance=True)
    hook.get_snapshot.return_value.labels = {}
    hook.set_snapshot_labels.side_effect = ApiError("HTTP 403: forbidden")

    with pytest.raises(ApiError, match="403"):
        relabel(hook, project=P, name="s", change=lambda labels: {**labels, "h": "1"}, timeout=1)
    assert hook.set_snapshot_labels.call_count == 1


def test_the_plan_names_each_snapshot_once_and_nothing_else():
    plan = {
        "disks": [
            {"source_snapshot": f"projects/{P}/global/snapshots/a"},
            {"source_snapshot": f"projects/{P}/global/snapshots/a"},
            {"source_snapshot": "https://evil/projects/x/global/snapshots/b"},
            {"source_snapshot": None},
        ]
    }
    assert planned_snapshots(plan) == [(P, "a")]
    assert planned_snapshots(None) == []


def context_for(run_id="manual__1"):
    class TI:
        dag_id = "gce_vm_backup_restore__web"

    return {"ti": TI(), "run_id": run_id}


def test_hold_then_release_leaves_only_the_other_labels(emulator):
    plan = {"dry_run": False, "disks": [{"source_snapshot": f"projects/{P}/global/snapshots/s"}]}
    hold = HoldSnapshotsOperator(
        task_id="hold", plan=plan, hold_for=timedelta(hours=1), deployment="test", group="web"
    )
    release = ReleaseHoldsOperator(task_id="release_hold", plan=plan, deployment="test", group="web")

    result = hold.execute(context_for())
    (key,) = [k for k in labels_of(emulator, "s") if k.startswith(HOLD_PREFIX)]
    assert key == result["key"] == hold_key(hold.run_hash(context_for()))
    assert result["snapshots"] == [f"projects/{P}/global/snapshots/s"]
    assert release.execute(context_for()) == [f"projects/{P}/global/snapshots/s"]
    assert labels_of(emulator, "s") == {"keep": "me"}


def test_another_runs_hold_is_not_released(emulator):
    plan = {"dry_run": False, "disks": [{"source_snapshot": f"projects/{P}/global/snapshots/s"}]}
    common = {"plan": plan, "deployment": "test", "group": "web"}
    HoldSnapshotsOperator(task_id="hold", hold_for=timedelta(hours=1), **common).execute(context_for("a"))
    HoldSnapshotsOperator(task_id="hold", hold_for=timedelta(hours=1), **common).execute(context_for("b"))

    ReleaseHoldsOperator(task_id="release_hold", **common).execute(context_for("a"))

    holds = [k for k in labels_of(emulator, "s") if k.startswith(HOLD_PREFIX)]
    assert holds == [hold_key(HoldSnapshotsOperator.run_hash(context_for("b")))]


def test_a_snapshot_gone_since_the_plan_fails_the_hold_before_anything_changes(emulator):
    plan = {"dry_run": False, "disks": [{"source_snapshot": f"projects/{P}/global/snapshots/gone"}]}
    hold = HoldSnapshotsOperator(
        task_id="hold", plan=plan, hold_for=timedelta(hours=1), deployment="test", group="web"
    )

    with pytest.raises(BackupError, match="snapshots/gone of the chosen set is gone since the plan"):
        hold.execute(context_for())


# ---- real runs of the restore DAG --------------------------------------------------------------------
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
  eyes:
    restore_approval: {four_eyes: true}
    targets:
      - {project: demo-project, zone: us-central1-a, instance: web-1}
"""


@pytest.fixture(scope="module")
def dagbag():
    return generated_dagbag("holds_and_approvals", CONFIG)


@pytest.fixture
def fleet(monkeypatch):
    with Emulator(DEMO_SEED, time_scale=60) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
        for group in ("web", "eyes"):
            seed_set(emulator, f"run-{group}", days_before=1, group=group)
        yield emulator


def holds_on(emulator):
    with emulator.world.lock:
        return {
            path.rsplit("/", 1)[-1]: key
            for path, snapshot in emulator.world.snapshots.items()
            for key in snapshot["labels"]
            if key.startswith(HOLD_PREFIX)
        }


def hold_writes(emulator):
    return [c for c in emulator.calls if c.method == "compute.snapshots.setLabels" and c.status == 200]


@pytest.mark.airflow
@pytest.mark.slow
def test_a_restore_holds_its_set_while_it_runs_and_releases_it_at_the_end(dagbag, fleet):
    dag_run = run(dagbag, "gce_vm_backup_restore__web", **restore_conf())

    assert states(dag_run)[("create_vm", -1)] == "success"
    held = xcom(dag_run, "hold")
    assert held["snapshots"] == [
        f"projects/{P}/global/snapshots/web-1-run-web",
        f"projects/{P}/global/snapshots/web-1-data-run-web",
    ]
    assert datetime.fromisoformat(held["until"]) > datetime.now(UTC) + timedelta(hours=20)
    writes = hold_writes(fleet)
    assert len(writes) == 4  # two holds, two releases
    first_disk = next(c for c in fleet.calls if c.method == "compute.disks.insert")
    assert all(c.time <= first_disk.time for c in writes[:2])  # held before anything was made
    assert holds_on(fleet) == {}
    assert states(dag_run)[("release_hold", -1)] == "success"


@pytest.mark.airflow
@pytest.mark.slow
def test_a_failed_restore_still_releases_its_hold(dagbag, fleet):
    fleet.faults.http_error("compute.disks.insert", 403, times=10)

    dag_run = run(dagbag, "gce_vm_backup_restore__web", **restore_conf())

    assert dag_run.state == "failed"
    assert states(dag_run)[("new_vm_disks", -1)] == "failed"
    assert len(hold_writes(fleet)) == 4
    assert holds_on(fleet) == {}


def answer_as(dag_id, user, stop):
    """Approve the waiting approval of ``dag_id`` as ``user``, the way the HITL REST API records it."""
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
                detail.responded_by = user
                detail.responded_at = datetime.now(UTC)
                detail.chosen_options = ["Approve"]
                detail.params_input = {}
                session.add(detail)
                if ti.state == TaskInstanceState.AWAITING_INPUT:
                    handle_event_submit(
                        TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session
                    )
                return
        time.sleep(0.3)


@pytest.mark.airflow
@pytest.mark.slow
def test_four_eyes_refuses_the_requesters_own_approval_before_anything_changes(dagbag, fleet):
    """dag.test records its runs as triggered by the user "dag_test"; that user approves here."""
    stop = threading.Event()
    answer = threading.Thread(
        target=answer_as,
        args=("gce_vm_backup_restore__eyes", {"id": "dag_test", "name": "dag_test"}, stop),
        daemon=True,
    )
    answer.start()
    try:
        dag_run = run(dagbag, "gce_vm_backup_restore__eyes", **restore_conf(mode="replace-disks"))
    finally:
        stop.set()
        answer.join(timeout=10)

    assert states(dag_run)[("approve", -1)] == "success"
    assert states(dag_run)[("check_approval", -1)] == "failed"
    assert states(dag_run)[("create_disks", -1)] == "upstream_failed"
    mutating = [c.method for c in fleet.calls if c.method.rsplit(".", 1)[-1] in MUTATING]
    assert set(mutating) == {"compute.snapshots.setLabels"}  # the hold and its release only
    assert attached(fleet) == {"web-1": (WEB, True), "web-1-data": (DATA, False)}
    assert holds_on(fleet) == {}
