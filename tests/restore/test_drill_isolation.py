"""A drill cannot touch production: its tasks run directly (execute) against the emulator or an autospec
of the restore hook, with inputs a drill run should never see (a plan or a record naming production
resources, production resources carrying the drill run's labels, a scratch project that is a target)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from unittest.mock import create_autospec

import pytest
from google.cloud import compute_v1

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED
from gce_vm_backup.config.labels import run_label
from gce_vm_backup.errors import BackupError
from gce_vm_backup.restore.drill import (
    CREATED_KEY,
    NONCE_KEY,
    VM_TASK_ID,
    DrillCleanupOperator,
    DrillPlanOperator,
    DrillVmOperator,
)
from gce_vm_backup.restore.steps import DRILL_KEY

from .hook_spec import RestoreHookSpec

P, ZA, ZB, SCRATCH = "demo-project", "us-central1-a", "us-central1-b", "drill-scratch"
DAG_ID = "gce_vm_backup_drill__web"
RUN_ID = "scheduled__2026-12-13T05:00:00+00:00"  # a coming run: its id, and so its labels, are known
RUN_HASH = run_label(DAG_ID, RUN_ID)
RUN_LABELS = {
    "managed-by": "gce-vm-backup",
    "gce-vm-backup-deployment": "test",
    "gce-vm-backup-group": "web",
    DRILL_KEY: RUN_HASH,
}
DRILL = {
    "scratch_project": SCRATCH,
    "scratch_zone": ZB,
    "network": "drills",
    "create_vm": True,
    "timeouts": {"create": 60, "boot": 60, "cleanup": 60},
    "poll_interval": 1,
    "boot_check": {"kind": "none"},
}
WEB, DATA = f"projects/{P}/zones/{ZA}/disks/web-1", f"projects/{P}/zones/{ZA}/disks/web-1-data"
VM = f"projects/{P}/zones/{ZA}/instances/web-1"


@dataclass
class FakeTI:
    """The task instance a drill task sees: what it pushes, and the drill_vm records it pulls."""

    dag_id: str = DAG_ID
    map_index: int = -1
    try_number: int = 1
    pushed: dict[str, Any] = field(default_factory=dict)
    records: dict[int, Any] = field(default_factory=dict)  # drill_vm map index -> its CREATED_KEY XCom

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = json.loads(json.dumps(value))  # what XCom keeps: a copy, at push time

    def xcom_pull(self, *, task_ids: str, map_indexes: int, key: str) -> Any:
        assert (task_ids, key) == (VM_TASK_ID, CREATED_KEY)
        return self.records.get(map_indexes)


@dataclass
class FakeDagRun:
    run_after: datetime = datetime(2026, 12, 13, 5, 0, tzinfo=UTC)


def context(ti: FakeTI) -> dict[str, Any]:
    return {"ti": ti, "dag_run": FakeDagRun(), "run_id": RUN_ID, "logical_date": FakeDagRun().run_after}


@pytest.fixture
def emulator(monkeypatch):
    with Emulator(DEMO_SEED, time_scale=60) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
        yield emulator


def label(emulator: Emulator, labels: dict[str, str], *paths: str) -> None:
    """Put ``labels`` on existing resources, as anyone with setLabels in that project could."""
    with emulator.world.lock:
        for path in paths:
            table = emulator.world.instances if "/instances/" in path else emulator.world.disks
            table[path]["labels"] = {**table[path].get("labels", {}), **labels}


def exists(emulator: Emulator, path: str) -> bool:
    with emulator.world.lock:
        emulator.world.tick()
        table = emulator.world.instances if "/instances/" in path else emulator.world.disks
        return path in table


def hostile_plan(nonce: str = "n0") -> dict[str, Any]:
    """A plan naming production: its VM and disks, in the VM's own project and zone."""
    return {
        "plan": {
            "vm": VM,
            "run_hash": RUN_HASH,
            "nonce": nonce,
            "error": None,
            "project": P,
            "zone": ZA,
            "instance_name": "web-1",
            "disks": [{"name": "web-1"}, {"name": "web-1-data"}],
            "set": {"run": "run-new", "created_at": "2026-12-12T03:00:00+00:00"},
        }
    }


def cleanup(**overrides: Any) -> DrillCleanupOperator:
    return DrillCleanupOperator(
        task_id="cleanup",
        plans=overrides.pop("plans", [hostile_plan()]),
        drill={**DRILL, **overrides},
        deployment="test",
        group="web",
    )


def test_the_cleanup_deletes_nothing_in_production_labelled_as_a_coming_run_whatever_its_inputs(emulator):
    # The attack: production web-1 and web-1-data get the labels of a coming drill run (a nonce too),
    # and the cleanup's inputs name them: its plan, and a record saying drill_vm made them.
    label(emulator, {**RUN_LABELS, NONCE_KEY: "n0"}, VM, WEB, DATA)
    ti = FakeTI(records={0: [{"path": p, "request_id": "r", "state": "created"} for p in (WEB, DATA, VM)]})

    result = cleanup().execute(context(ti))

    assert all(exists(emulator, path) for path in (VM, WEB, DATA))
    assert not [c for c in emulator.calls if c.method.endswith(".delete")]
    assert {c.resource.split("/")[1] for c in emulator.calls} == {SCRATCH}  # it only looked there
    assert result["deleted"] == []
    assert f"{VM}: left alone, not in the scratch project and zone {SCRATCH}/{ZB}" in result["refused"]


def test_a_cleanup_whose_scratch_project_holds_a_vm_of_the_plan_deletes_nothing(emulator):
    label(emulator, {**RUN_LABELS, NONCE_KEY: "n0"}, VM, WEB, DATA)
    ti = FakeTI(records={0: [{"path": p, "request_id": "r", "state": "created"} for p in (WEB, DATA, VM)]})

    with pytest.raises(BackupError, match="scratch project 'demo-project' is missing or holds a VM"):
        cleanup(scratch_project=P, scratch_zone=ZA).execute(context(ti))

    assert all(exists(emulator, path) for path in (VM, WEB, DATA))
    assert emulator.calls == []


def seed_scratch_disk(emulator: Emulator, name: str, labels: dict[str, str]) -> str:
    from gce_emulator.compute import load_seed

    with emulator.world.lock:
        load_seed(
            emulator.world,
            {"projects": {SCRATCH: {"zones": {ZB: {"disks": [{"name": name, "labels": labels}]}}}}},
        )
    return f"projects/{SCRATCH}/zones/{ZB}/disks/{name}"


def scratch_plan(nonce: str, *names: str) -> dict[str, Any]:
    plan = hostile_plan(nonce)["plan"]
    return {
        "plan": {
            **plan,
            "project": SCRATCH,
            "zone": ZB,
            "instance_name": None,
            "disks": [{"name": n} for n in names],
        }
    }


def test_in_the_scratch_project_only_what_is_planned_recorded_and_carries_the_nonce_is_deleted(emulator):
    ours = seed_scratch_disk(emulator, "drill-web-1-aaaa", {**RUN_LABELS, NONCE_KEY: "n1"})
    not_planned = seed_scratch_disk(emulator, "someone-else", {**RUN_LABELS, NONCE_KEY: "n1"})
    not_recorded = seed_scratch_disk(emulator, "drill-web-1-data-bbbb", {**RUN_LABELS, NONCE_KEY: "n1"})
    other_nonce = seed_scratch_disk(emulator, "drill-web-1-cccc", {**RUN_LABELS, NONCE_KEY: "guessed"})
    plans = [scratch_plan("n1", "drill-web-1-aaaa", "drill-web-1-data-bbbb", "drill-web-1-cccc")]
    records = [{"path": p, "request_id": "r", "state": "created"} for p in (ours, not_planned, other_nonce)]
    ti = FakeTI(records={0: records})

    result = cleanup(plans=plans).execute(context(ti))

    assert result["deleted"] == [ours]
    assert not exists(emulator, ours)
    assert all(exists(emulator, p) for p in (not_planned, not_recorded, other_nonce))
    assert sorted(result["refused"]) == sorted(
        [
            f"{not_planned}: left alone, this run did not plan and record it",
            f"{not_recorded}: left alone, this run did not plan and record it",
            f"{other_nonce}: left alone, it does not carry this run's labels",
        ]
    )
    assert result["left"] == []


@pytest.fixture
def hook(monkeypatch):
    """The restore hook every drill task of the test builds (an autospec of the real one)."""
    spec = create_autospec(RestoreHookSpec, instance=True)
    monkeypatch.setattr("gce_vm_backup.compute.restore_hook.RestoreHook", lambda **kwargs: spec)
    return spec


def test_the_plan_refuses_a_scratch_project_that_is_a_target_before_any_call(hook):
    task = DrillPlanOperator(
        task_id="plan",
        targets=[{"project_id": P, "zones": None, "labels": {"app": "shop"}}],
        drill={**DRILL, "scratch_project": P},
        deployment="test",
        group="web",
    )

    with pytest.raises(BackupError, match="scratch project 'demo-project' is missing or is a target project"):
        task.execute(context(FakeTI()))

    assert hook.method_calls == []


def vm_plan() -> dict[str, Any]:
    return {
        "vm": VM,
        "run_hash": RUN_HASH,
        "nonce": "n2",
        "error": None,
        "set": {"run": "run-new", "created_at": "2026-12-12T03:00:00+00:00"},
        "project": SCRATCH,
        "zone": ZB,
        "instance_name": "drill-web-1-vm",
        "disks": [
            {
                "name": "drill-web-1-d1",
                "source_snapshot": f"projects/{P}/global/snapshots/web-1-run-new",
                "disk_source": WEB,
                "device_name": "web-1",
                "boot": True,
                "mode": "READ_WRITE",
            }
        ],
    }


def test_drill_vm_records_what_it_creates_before_its_first_insert(hook):
    ti = FakeTI(map_index=0)
    seen: list[Any] = []
    hook.get_disk.return_value = None
    hook.insert_disk.side_effect = lambda **kw: seen.append(ti.pushed.get(CREATED_KEY))
    hook.wait_operation.side_effect = RuntimeError("the worker died here")  # killed after the insert
    task = DrillVmOperator(task_id=VM_TASK_ID, plan=vm_plan(), drill=DRILL, deployment="test", group="web")

    with pytest.raises(RuntimeError):
        task.execute(context(ti))

    where = f"projects/{SCRATCH}/zones/{ZB}"
    assert [r["path"] for r in seen[0]] == [
        f"{where}/disks/drill-web-1-d1",
        f"{where}/instances/drill-web-1-vm",
    ]
    assert {r["state"] for r in seen[0]} == {"requested"}
    assert hook.insert_disk.call_args.kwargs["request_id"] == seen[0][0]["request_id"]
    assert hook.insert_disk.call_args.kwargs["labels"] == {**RUN_LABELS, NONCE_KEY: "n2"}
    assert hook.insert_disk.call_args.kwargs["project_id"] == SCRATCH


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ({"project": P, "zone": ZA}, "names demo-project/us-central1-a, not the scratch project and zone"),
        ({"project": SCRATCH, "zone": ZA}, "names drill-scratch/us-central1-a, not the scratch project"),
    ],
)
def test_drill_vm_creates_nothing_outside_the_scratch_project_and_zone(hook, plan, message):
    task = DrillVmOperator(
        task_id=VM_TASK_ID, plan={**vm_plan(), **plan}, drill=DRILL, deployment="test", group="web"
    )

    with pytest.raises(BackupError, match=message):
        task.execute(context(FakeTI(map_index=0)))

    assert hook.method_calls == []


def test_drill_vm_fails_when_its_vm_has_an_external_ip(hook):
    hook.get_disk.return_value = None
    hook.get_instance.side_effect = [
        None,
        compute_v1.Instance(
            name="drill-web-1-vm",
            status="RUNNING",
            network_interfaces=[compute_v1.NetworkInterface(access_configs=[compute_v1.AccessConfig()])],
        ),
    ]
    task = DrillVmOperator(task_id=VM_TASK_ID, plan=vm_plan(), drill=DRILL, deployment="test", group="web")

    with pytest.raises(BackupError, match="has an external IP; a drill VM never gets one"):
        task.execute(context(FakeTI(map_index=0)))
    (insert,) = hook.insert_instance.call_args_list
    assert [list(nic.access_configs) for nic in insert.kwargs["instance"].network_interfaces] == [[]]
    assert insert.kwargs["instance"].network_interfaces[0].network == (
        f"projects/{SCRATCH}/global/networks/drills"
    )
