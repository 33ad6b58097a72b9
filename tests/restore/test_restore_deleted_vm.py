"""A VM backed up, then deleted with its disks, then restored: real restore DAG runs (dag.test on SQLite)
against the Compute Engine emulator.

Most tests model the backup as it leaves things (one snapshot per disk, labelled with the run, whose
description carries the VM's manifest, ``vm_manifest.describe``), to choose what the manifest holds;
one runs the real backup DAG first.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED
from gce_emulator.model import ApiError
from gce_emulator.restore_vm import delete_instance
from gce_vm_backup.config import manifest as vm_manifest
from gce_vm_backup.config.labels import managed_snapshot_labels
from gce_vm_backup.restore.steps import RESTORE_KEY

from ..conftest import generated_dagbag

pytestmark = [pytest.mark.airflow, pytest.mark.emulator, pytest.mark.slow]

P, ZA = "demo-project", "us-central1-a"
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
  shop:
    targets:
      - {project: demo-project, zones: [us-central1-a], labels: {tier: web}}
"""
NETWORK = f"projects/{P}/global/networks/prod"
SUBNETWORK = f"projects/{P}/regions/us-central1/subnetworks/prod-a"
ACCOUNT = {
    "email": "web@demo-project.iam.gserviceaccount.com",
    "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
}


@pytest.fixture(scope="module")
def dagbag():
    return generated_dagbag("restore_deleted_vm", CONFIG)


@pytest.fixture
def emulator(monkeypatch):
    with Emulator(DEMO_SEED, time_scale=60) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
        with emulator.world.lock:  # web-1 as a production VM looks: its own network, an external IP, ...
            vm = emulator.world.instances[VM]
            vm["machineType"] = emulator.world.url(f"projects/{P}/zones/{ZA}/machineTypes/n2-standard-2")
            vm["networkInterfaces"] = [
                {
                    "network": emulator.world.url(NETWORK),
                    "subnetwork": emulator.world.url(SUBNETWORK),
                    "networkIP": "10.1.0.5",
                    "accessConfigs": [
                        {"type": "ONE_TO_ONE_NAT", "name": "External NAT", "natIP": "203.0.113.9"}
                    ],
                }
            ]
            vm["serviceAccounts"] = [ACCOUNT]
            vm["scheduling"] = {
                "automaticRestart": True,
                "onHostMaintenance": "MIGRATE",
                "preemptible": False,
            }
            vm["tags"] = {"items": ["http-server", "web"], "fingerprint": "x"}
            vm["metadata"] = {
                "items": [
                    {"key": "startup-script", "value": "#!/bin/sh\necho up"},
                    {"key": "ssh-keys", "value": "alice:ssh-ed25519 AAAA"},
                ]
            }
        yield emulator


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


def xcom(dag_run, task_id, key="return_value"):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=dag_run.run_id, key=key, dag_ids=dag_run.dag_id, task_ids=task_id, map_indexes=-1
            )
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


def back_up(emulator, run_id, *, group="web", days_before=1, manifest=True, cut=()):
    """The snapshots one backup run of web-1 leaves (both disks, labelled with the run), with the VM's
    manifest in their descriptions: metadata values kept, except ``ssh-keys`` (a key without value)."""
    with emulator.world.lock:
        vm = json.loads(json.dumps(emulator.world.instances[VM]))
        details = {d: {"id": emulator.world.disks[d]["id"], "type": "pd-ssd"} for d in (WEB, DATA)}
    body = vm_manifest.build(vm, project=P, zone=ZA, disk_details=details, metadata_values=True)
    body["spec"]["metadata"]["ssh-keys"] = None
    for part in cut:
        body["spec"].pop(part)
    created = datetime.fromisoformat(emulator.clock.timestamp()) - timedelta(days=days_before)
    for disk in (WEB, DATA):
        name = f"{disk.rsplit('/', 1)[-1]}-{run_id}"
        emulator.seed_snapshot(
            P,
            {
                "name": name,
                "sourceDisk": disk,
                "diskSizeGb": 10,
                "labels": managed_snapshot_labels(
                    deployment="test", group=group, instance="web-1", disk_source=disk, run=run_id
                ),
                "creationTimestamp": created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            },
        )
        if manifest:
            description = vm_manifest.describe({**body, "cut": list(cut)} if cut else body, disk_source=disk)
            with emulator.world.lock:
                emulator.world.snapshots[f"projects/{P}/global/snapshots/{name}"]["description"] = description


def delete_web_1(emulator):
    """instances.delete of web-1, its disks auto-deleted with it (the disaster), waited for."""
    with emulator.world.lock:
        emulator.world.tick()
        for attached in emulator.world.instances[VM]["disks"]:
            attached["autoDelete"] = True
        delete_instance(emulator.world, P, ZA, "web-1", {})
    deadline = time.monotonic() + 30
    while True:
        with emulator.world.lock:
            emulator.world.tick()
            if VM not in emulator.world.instances:
                break
        assert time.monotonic() < deadline, "web-1 was not deleted"
        time.sleep(0.05)
    with emulator.world.lock:
        assert WEB not in emulator.world.disks
        assert DATA not in emulator.world.disks


def assert_rebuilt(emulator, dag_run, name):
    assert dag_run.state == "success", states(dag_run)
    new = emulator.instance(P, ZA, name)
    assert new["status"] == "RUNNING"
    assert new["machineType"].endswith(f"/zones/{ZA}/machineTypes/n2-standard-2")
    plan = xcom(dag_run, "plan")
    devices = {
        d["deviceName"]: (d["source"][d["source"].find("projects/") :], d["boot"]) for d in new["disks"]
    }
    assert devices == {d["device_name"]: (d["new_source"], d["boot"]) for d in plan["disks"]}
    assert {device: boot for device, (_, boot) in devices.items()} == {"web-1": True, "web-1-data": False}
    with emulator.world.lock:
        made = {
            source: (
                emulator.world.disks[source]["sourceSnapshot"].rsplit("/", 1)[-1],
                emulator.world.disks[source]["type"].rsplit("/", 1)[-1],
            )
            for source, _ in devices.values()
        }
    assert sorted(made.values()) == [("web-1-data-run-2", "pd-ssd"), ("web-1-run-2", "pd-ssd")]
    (nic,) = new["networkInterfaces"]
    assert (nic["network"].endswith(NETWORK), nic["subnetwork"].endswith(SUBNETWORK)) == (True, True)
    assert "accessConfigs" not in nic  # no external IP
    labels = new["labels"]
    assert {k: labels[k] for k in ("app", "tier", "backup")} == {
        "app": "shop",
        "tier": "web",
        "backup": "daily",
    }
    assert labels[RESTORE_KEY] == plan["run_hash"]
    assert {i["key"]: i["value"] for i in new["metadata"]["items"]} == {
        "startup-script": "#!/bin/sh\necho up"
    }
    assert new["tags"]["items"] == ["http-server", "web"]
    assert new["serviceAccounts"] == [ACCOUNT]
    assert new["scheduling"]["onHostMaintenance"] == "MIGRATE"
    text = xcom(dag_run, "plan", key="restore_plan_text")
    assert "metadata keys not restored (no value in the manifest): ssh-keys" in text
    return plan


def test_a_deleted_vm_is_rebuilt_under_its_old_name_from_its_newest_set(dagbag, emulator):
    back_up(emulator, "run-1", days_before=2)
    back_up(emulator, "run-2", days_before=1)
    delete_web_1(emulator)

    dag_run = run(dagbag, "gce_vm_backup_restore__web", **restore_conf())

    plan = assert_rebuilt(emulator, dag_run, "web-1")
    assert plan["new_vm"]["name"] == "web-1"
    assert plan["prior_status"] == "NOT_FOUND"
    report = xcom(dag_run, "restore_report", key="restore_report")
    assert report["state"].startswith(f"VM {VM} (it did not exist) is RUNNING, rebuilt from set run-2")


def test_a_deleted_vm_is_rebuilt_under_a_new_name(dagbag, emulator):
    back_up(emulator, "run-2")
    delete_web_1(emulator)

    dag_run = run(dagbag, "gce_vm_backup_restore__web", **restore_conf(new_name="web-1-back"))

    assert_rebuilt(emulator, dag_run, "web-1-back")
    with pytest.raises(ApiError, match="was not found"):
        emulator.instance(P, ZA, "web-1")


def test_a_selector_vm_that_is_gone_is_restored_by_its_path(dagbag, emulator):
    back_up(emulator, "run-2", group="shop")
    delete_web_1(emulator)

    dag_run = run(dagbag, "gce_vm_backup_restore__shop", **restore_conf(vm=VM))

    assert_rebuilt(emulator, dag_run, "web-1")


def nothing_changed(dag_run, emulator):
    assert dag_run.state == "failed"
    mutating = {"insert", "delete", "stop", "start", "attachDisk", "detachDisk", "setLabels"}
    assert not [c for c in emulator.calls if c.method.rsplit(".", 1)[-1] in mutating]
    state = xcom(dag_run, "restore_report", key="restore_report")["state"]
    assert state.startswith("Nothing was changed: ")
    assert "\n" not in state
    assert "Traceback" not in state
    assert "ResourceNotFound" not in state
    return state


def test_a_deleted_vm_with_only_a_set_made_before_manifests_is_refused_in_one_line(dagbag, emulator):
    back_up(emulator, "run-2", manifest=False)
    delete_web_1(emulator)

    dag_run = run(dagbag, "gce_vm_backup_restore__web", **restore_conf())

    state = nothing_changed(dag_run, emulator)
    assert (
        f"Cannot rebuild {VM}: it does not exist any more, and no snapshot set of group web records it"
        in state
    )
    assert "snapshots made before sets carried the VM's manifest" in state


def test_replace_disks_of_a_deleted_vm_is_refused_and_suggests_new_vm(dagbag, emulator):
    back_up(emulator, "run-2")
    delete_web_1(emulator)

    dag_run = run(dagbag, "gce_vm_backup_restore__web", **restore_conf(mode="replace-disks"))

    state = nothing_changed(dag_run, emulator)
    assert f"Cannot restore {VM} (replace-disks): the VM does not exist any more" in state
    assert "mode new-vm" in state


def test_a_vm_gone_without_any_set_of_the_group_is_a_clear_form_error(dagbag, emulator):
    back_up(emulator, "run-2", group="web")  # the web group's sets only
    delete_web_1(emulator)

    dag_run = run(dagbag, "gce_vm_backup_restore__shop", **restore_conf())

    state = nothing_changed(dag_run, emulator)
    assert "vm: 'us-central1-a/web-1' matches no VM of group shop" in state


def test_a_vm_backed_up_by_the_backup_dag_then_deleted_is_rebuilt_running_with_its_sets_disks(
    dagbag, emulator
):
    backup = run(dagbag, "gce_vm_backup__web")
    assert backup.state == "success", states(backup)
    with emulator.world.lock:
        made = {
            s["name"]: s["sourceDisk"][s["sourceDisk"].find("projects/") :]
            for s in emulator.world.snapshots.values()
            if s.get("labels", {}).get("gce-vm-backup-group") == "web"
        }
    assert sorted(made.values()) == [WEB, DATA]
    delete_web_1(emulator)

    dag_run = run(dagbag, "gce_vm_backup_restore__web", **restore_conf())

    assert dag_run.state == "success", states(dag_run)
    new = emulator.instance(P, ZA, "web-1")
    assert new["status"] == "RUNNING"
    assert new["machineType"].endswith("/machineTypes/n2-standard-2")
    assert "accessConfigs" not in new["networkInterfaces"][0]
    with emulator.world.lock:
        restored = {
            d["deviceName"]: (
                d["boot"],
                emulator.world.disks[d["source"][d["source"].find("projects/") :]]["sourceSnapshot"].rsplit(
                    "/", 1
                )[-1],
            )
            for d in new["disks"]
        }
    by_disk = {disk: name for name, disk in made.items()}
    assert restored == {"web-1": (True, by_disk[WEB]), "web-1-data": (False, by_disk[DATA])}
    # metadata values are not in a manifest unless the group opts in: the keys are named, not restored
    text = xcom(dag_run, "plan", key="restore_plan_text")
    assert "metadata keys not restored (no value in the manifest): ssh-keys, startup-script" in text
