"""On-call hears at once: the first notice that a VM may be down goes out within the stop and start
timeouts of its stop request, through the group's notifiers (here a real SMTP server on loopback), not
after every retry. The stop never finishes (the emulator's ``hang`` fault): the VM stays STOPPING.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED
from gce_vm_backup.backup.stages import DOWN_XCOM_KEY, ENSURE_RUNNING, STOP_SNAPSHOT_START, tier_task
from gce_vm_backup.errors import OperationTimeoutError
from gce_vm_backup.operators import PrecheckInstanceOperator, StopSnapshotStartOperator
from gce_vm_backup.report.notify import DOWN_NOTICE_XCOM_KEY, VmDownNotice

from ..conftest import generated_dagbag

pytestmark = pytest.mark.emulator

P, ZONE = "demo-project", "us-central1-a"
DOWNTIME = tier_task(1, STOP_SNAPSHOT_START)
EMAIL = {"to": ["oncall@example.com"], "from_email": "backup@example.com", "smtp_conn_id": "mail_loopback"}
STOP, START = 2.0, 2.0  # seconds: the stop and start timeouts
# Real seconds (time_scale 1, so that the timeouts above are real too): operations that do finish, quick.
QUICK = {
    "stop": 1.0,
    "start": 1.0,
    "snapshot_creating": 1.0,
    "snapshot_uploading": 1.0,
    "snapshot_uploading_per_gb": 0.0,
}


@dataclass
class TI:
    task_id: str = DOWNTIME
    map_index: int = 0
    try_number: int = 1
    dag_id: str = "gce_vm_backup__web"
    run_id: str = "manual__2026-11-24T03:00:00+00:00"
    xcoms: dict[tuple[str, str], Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[(self.task_id, key)] = value

    def xcom_pull(self, task_ids: str, key: str = "return_value", map_indexes: Any = None) -> Any:
        return self.xcoms.get((task_ids, key))


def context_of(ti: TI, **more: Any) -> dict[str, Any]:
    @dataclass
    class DagRun:
        run_after: datetime = datetime(2026, 11, 24, 3, tzinfo=UTC)

    return {"ti": ti, "dag_run": DagRun(), "run_id": ti.run_id, **more}


@pytest.fixture
def emulator(monkeypatch):
    from gce_vm_backup.backup import capture as snapshot_ops
    from gce_vm_backup.backup import instance as instance_ops

    monkeypatch.setattr(instance_ops, "POLL", 0.05)
    monkeypatch.setattr(snapshot_ops, "POLL", 0.05)
    with Emulator(DEMO_SEED, time_scale=1.0, timings=QUICK) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
        yield emulator


def arrivals(mailbox: Any, stop: threading.Event) -> list[float]:
    """Watch ``mailbox`` from a thread: the monotonic time at which each message arrived."""
    seen: list[float] = []

    def watch() -> None:
        while not stop.is_set():
            while len(seen) < len(mailbox.received):
                seen.append(time.monotonic())
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    return seen


def body_of(message: Any) -> str:
    return "".join(
        part.get_payload(decode=True).decode()
        for part in message.walk()
        if part.get_content_type() == "text/html"
    )


def test_a_stop_that_never_finishes_is_noticed_within_the_stop_and_start_timeouts_of_its_request(
    emulator, smtp_server
):
    precheck = PrecheckInstanceOperator(task_id="precheck", project_id=P, zone=ZONE, instance="web-1")
    record = precheck.execute(context_of(TI(task_id="tier_1.precheck")))
    emulator.faults.hang_operation("compute.instances.stop", times=10)
    stop_sent: list[float] = []
    emulator.faults.on_call("compute.instances.stop", lambda: stop_sent.append(time.monotonic()))
    notice = VmDownNotice({"email": EMAIL})
    operator = StopSnapshotStartOperator(
        task_id=DOWNTIME,
        instance_record=record,
        deployment="test",
        group="web",
        stop_timeout=STOP,
        snapshot_timeout=30,
        start_timeout=START,
        down_notice=notice,
    )
    assert notice in operator.on_retry_callback
    assert notice in operator.on_failure_callback
    ti, done = TI(), threading.Event()
    seen = arrivals(smtp_server, done)
    try:
        with pytest.raises(OperationTimeoutError, match=r"The stop of VM .*web-1 did not finish"):
            operator.execute(context_of(ti))
        ended = time.monotonic()
    finally:
        time.sleep(0.1)
        done.set()

    assert len(smtp_server.received) == 1, [m["Subject"] for _, _, m in smtp_server.received]
    # The notice went out while the try was still bringing the VM back (it waits the stop out), within
    # the stop and start timeouts of the stop request; the try itself ended later.
    assert seen[0] - stop_sent[0] <= STOP + START, seen[0] - stop_sent[0]
    assert seen[0] < ended
    (_, recipients, message) = smtp_server.received[0]
    assert recipients == ["oncall@example.com"]
    assert (
        message["Subject"]
        == "[gce-vm-backup] VM MAY BE DOWN: web-1 - backup gce_vm_backup__web (" + ti.run_id + ")"
    )
    body = body_of(message)
    assert f"projects/{P}/zones/{ZONE}/instances/web-1" in body
    assert "gcloud compute instances start web-1 --project=demo-project --zone=us-central1-a" in body
    assert ti.xcoms[(DOWNTIME, DOWN_XCOM_KEY)]["down"] is True  # still counted as down
    # The task's failure (or retry) callback after this try sends nothing more: the try told on-call.
    notice(context_of(ti, task=operator, exception=OperationTimeoutError("stop")))
    assert len(smtp_server.received) == 1


def test_a_try_whose_vm_is_left_down_notifies_from_its_callback_once(emulator, smtp_server):
    """A failure after the stop that the try could not undo (not the stop step): the retry callback sees
    the marker down and sends the notice, naming the VM; a second call of the callback sends nothing."""
    precheck = PrecheckInstanceOperator(task_id="precheck", project_id=P, zone=ZONE, instance="web-1")
    record = precheck.execute(context_of(TI(task_id="tier_1.precheck")))
    operator = StopSnapshotStartOperator(
        task_id=DOWNTIME,
        instance_record=record,
        deployment="test",
        group="web",
        down_notice=VmDownNotice({"email": EMAIL}),
    )
    ti = TI()
    ti.xcom_push(DOWN_XCOM_KEY, {"vm": "x", "map_index": 0, "down": True})
    context = context_of(ti, task=operator, exception=RuntimeError("start failed: QUOTA_EXCEEDED"))
    operator.on_retry_callback[-1](context)
    operator.on_retry_callback[-1](context)
    (message,) = [m for _, _, m in smtp_server.received]
    assert "VM MAY BE DOWN: web-1" in message["Subject"]
    assert "start failed: QUOTA_EXCEEDED; its VM is still down" in body_of(message)
    assert ti.xcoms[(DOWNTIME, DOWN_NOTICE_XCOM_KEY)]["sent"] is True


def test_a_try_whose_vm_is_running_sends_nothing_and_a_vm_not_running_is_noticed(emulator, smtp_server):
    """No marker down: the callback reads the VM. RUNNING: nothing is sent. TERMINATED (a killed earlier
    try stopped it and this retry failed before marking it): noticed."""
    precheck = PrecheckInstanceOperator(task_id="precheck", project_id=P, zone=ZONE, instance="web-1")
    record = precheck.execute(context_of(TI(task_id="tier_1.precheck")))
    notice = VmDownNotice({"email": EMAIL})
    operator = StopSnapshotStartOperator(
        task_id=DOWNTIME, instance_record=record, deployment="test", group="web", down_notice=notice
    )
    notice(context_of(TI(), task=operator))
    assert smtp_server.received == []
    emulator.set_instance_status(P, ZONE, "web-1", "TERMINATED")
    notice(context_of(TI(try_number=2), task=operator))
    (message,) = [m for _, _, m in smtp_server.received]
    assert "its VM is TERMINATED" in body_of(message)


def test_a_notice_that_cannot_be_sent_never_hides_the_tasks_own_error(emulator, smtp_server):
    smtp_server.refuse.add("oncall@example.com")
    precheck = PrecheckInstanceOperator(task_id="precheck", project_id=P, zone=ZONE, instance="web-1")
    record = precheck.execute(context_of(TI(task_id="tier_1.precheck")))
    emulator.faults.hang_operation("compute.instances.stop", times=10)
    operator = StopSnapshotStartOperator(
        task_id=DOWNTIME,
        instance_record=record,
        deployment="test",
        group="web",
        stop_timeout=1,
        start_timeout=1,
        down_notice=VmDownNotice({"email": EMAIL}),
    )
    with pytest.raises(OperationTimeoutError, match=r"The stop of VM .*web-1 did not finish"):
        operator.execute(context_of(TI()))


# ---- a whole run (dag.test): the first notice comes after the first try, not after the last ----------
CONFIG = """\
version: 1
deployment: test
defaults:
  start_date: "2026-01-01T00:00:00+00:00"
  poke_interval: 1
  retries: 2
  retry_delay: 0
groups:
  web:
    notify:
      email: {to: [oncall@example.com], from_email: backup@example.com, smtp_conn_id: mail_loopback}
    targets:
      - {project: demo-project, zone: us-central1-a, instance: web-1}
"""


@pytest.mark.airflow
@pytest.mark.slow
def test_in_a_run_the_first_notice_comes_after_the_first_try_not_after_every_retry(emulator, smtp_server):
    dag = generated_dagbag("vm_down_notice", CONFIG).get_dag("gce_vm_backup__web")
    downtime, ensure = dag.get_task(DOWNTIME), dag.get_task(tier_task(1, ENSURE_RUNNING))
    downtime.stop_timeout, downtime.start_timeout = STOP, START
    ensure.timeout, ensure.stop_timeout = START, STOP
    emulator.faults.hang_operation("compute.instances.stop", times=50)
    stops: list[float] = []
    emulator.faults.on_call("compute.instances.stop", lambda: stops.append(time.monotonic()), times=50)
    done = threading.Event()
    seen = arrivals(smtp_server, done)
    try:
        run = dag.test(run_conf={"vms": [], "dry_run": False})
        ended = time.monotonic()
    finally:
        time.sleep(0.1)
        done.set()

    assert run.state == "failed"
    tries = {ti.task_id: ti.try_number for ti in run.get_task_instances()}
    assert tries[DOWNTIME] == 3, tries  # the first try and its two retries each waited the stop out
    assert seen, "no notice at all"
    assert seen[0] - stops[0] <= STOP + START, seen[0] - stops[0]
    # ... while the run went on far longer: a notice at its end would have come after every retry
    assert ended - stops[0] > 3 * (STOP + START)
    subjects = [m["Subject"] for _, _, m in smtp_server.received]
    assert subjects[0].startswith("[gce-vm-backup] VM MAY BE DOWN: web-1"), subjects
    assert len([s for s in subjects if "VM MAY BE DOWN" in s]) <= 3, subjects  # at most one per try


@pytest.mark.airflow
@pytest.mark.slow
def test_in_a_run_a_start_that_never_finishes_is_noticed_by_the_retry_callback(emulator, smtp_server):
    """The stop and the snapshots succeed, the start never finishes: the try cannot bring the VM back and
    ends with its marker down; its retry callback (run by Airflow's task runner) sends the notice."""
    dag = generated_dagbag("vm_down_notice", CONFIG).get_dag("gce_vm_backup__web")
    downtime, ensure = dag.get_task(DOWNTIME), dag.get_task(tier_task(1, ENSURE_RUNNING))
    downtime.stop_timeout, downtime.start_timeout = 60, START
    ensure.timeout, ensure.stop_timeout = START, STOP
    downtime.retries = 0
    emulator.faults.hang_operation("compute.instances.start", times=50)
    run = dag.test(run_conf={"vms": [], "dry_run": False})

    assert run.state == "failed"
    subjects = [m["Subject"] for _, _, m in smtp_server.received]
    assert subjects[:1] == [
        f"[gce-vm-backup] VM MAY BE DOWN: web-1 - backup gce_vm_backup__web ({run.run_id})"
    ], subjects
    assert "its VM is still down" in body_of(smtp_server.received[0][2])
