"""A snapshot set is one VM's disks from one run, by identity: the real precheck and capture write the VM's
manifest into every snapshot, against the emulator; sets, freshness and `vm-backup backups` go by it.

The world: two VMs named ``web-1`` (boot and data disk, the disks named alike too) in us-central1-a and
us-central1-b of one project, both targets of group ``web``, and ``batch-1`` in us-central1-a.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gce_emulator import Emulator
from gce_vm_backup.backup.capture import CaptureSettings, capture_standard
from gce_vm_backup.config import manifest as vm_manifest
from gce_vm_backup.config.labels import managed_snapshot_labels, run_label
from gce_vm_backup.config.models import Group
from gce_vm_backup.errors import VmStateError
from gce_vm_backup.operators import PrecheckInstanceOperator
from gce_vm_backup.report.freshness import collect_group
from gce_vm_backup.restore.sets import snapshot_sets
from gce_vm_backup.runtime.base import RunKey

pytestmark = pytest.mark.emulator

P, A, B = "identity-project", "us-central1-a", "us-central1-b"
DAG_ID = "gce_vm_backup__web"
RUN_ID = "scheduled__2026-11-24T03:00:00+00:00"
RUN_TIME = datetime(2026, 11, 24, 3, tzinfo=UTC)
WEB_DISKS = [{"name": "web-1", "boot": True, "size_gb": 10}, {"name": "web-1-data", "size_gb": 20}]
SEED: dict[str, Any] = {
    "projects": {
        P: {
            "zones": {
                A: {"instances": [{"name": "web-1", "disks": WEB_DISKS}, {"name": "batch-1"}]},
                B: {"instances": [{"name": "web-1", "disks": WEB_DISKS}]},
            }
        }
    }
}
GROUP = Group.model_validate(
    {
        "schedule": "0 3 * * *",
        "start_date": "2020-01-01T00:00:00+00:00",
        "targets": [
            {"project": P, "zone": A, "instance": "web-1"},
            {"project": P, "zone": B, "instance": "web-1"},
        ],
    }
)
CONFIG = f"""\
version: 1
deployment: test
defaults:
  start_date: "2026-01-01T00:00:00+00:00"
groups:
  web:
    schedule: "0 3 * * *"
    targets:
      - {{project: {P}, zone: {A}, instance: web-1}}
      - {{project: {P}, zone: {B}, instance: web-1}}
"""


def vm(zone: str, name: str = "web-1") -> str:
    return f"projects/{P}/zones/{zone}/instances/{name}"


def disk(zone: str, name: str) -> str:
    return f"projects/{P}/zones/{zone}/disks/{name}"


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    from gce_vm_backup.backup import capture as snapshot_ops

    monkeypatch.setattr(snapshot_ops, "POLL", 0.02)
    with Emulator(SEED, time_scale=600.0, timings={"snapshot_rate_limit": 0.0}) as emulator:
        monkeypatch.setenv("GCE_VM_BACKUP_COMPUTE_ENDPOINT", emulator.url)
        monkeypatch.delenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", raising=False)
        yield emulator


def precheck(zone: str, name: str = "web-1", **kwargs: Any) -> dict[str, Any]:
    operator = PrecheckInstanceOperator(task_id="precheck", project_id=P, zone=zone, instance=name, **kwargs)
    return operator.execute({})


def backup(zone: str, name: str = "web-1", *, run_id: str = RUN_ID, **kwargs: Any) -> dict[str, Any]:
    """The precheck, then the capture step of the downtime task (what a backup run of the VM makes)."""
    record = precheck(zone, name, **kwargs)
    hook = PrecheckInstanceOperator(task_id="p", project_id=P, zone=zone, instance=name).hook
    capture_standard(
        hook,
        record,
        RunKey(DAG_ID, run_id, 0, 1, RUN_TIME),
        deadline=time.monotonic() + 60,
        settings=CaptureSettings(deployment="test", group="web"),
    )
    return record


def snapshots(emulator: Emulator) -> list[dict[str, Any]]:
    with emulator.world.lock:
        return [dict(s) for s in emulator.world.snapshots.values()]


def checked_at(emulator: Emulator) -> datetime:
    """An hour after the newest snapshot (the emulator's clock is its own)."""
    newest = max(s["creationTimestamp"] for s in snapshots(emulator))
    return datetime.fromisoformat(newest.replace("Z", "+00:00")) + timedelta(hours=1)


def freshness(emulator: Emulator) -> dict[str, Any]:
    hook = PrecheckInstanceOperator(task_id="p", project_id=P, zone=A, instance="x").hook
    return {v.vm: v for v in collect_group(hook, "web", GROUP, deployment="test", now=checked_at(emulator))}


def seed_copy(emulator: Emulator, name: str, *, source: str, like: dict[str, Any], **change: Any) -> None:
    """A snapshot of ``source`` carrying ``like``'s labels and description (anyone may copy those)."""
    emulator.seed_snapshot(
        P,
        {
            "name": name,
            "sourceDisk": source,
            "labels": dict(like["labels"]),
            "description": like.get("description"),
            "creationTimestamp": like["creationTimestamp"],
            **change,
        },
    )


# ---- the precheck records the VM; every snapshot carries it ---------------------------------------
def test_the_precheck_records_the_vms_id_and_manifest_and_each_snapshot_carries_it(emulator):
    record = backup(A)

    with emulator.world.lock:
        live_id = emulator.world.instances[vm(A)]["id"]
    assert record["id"] == live_id
    assert record["manifest"]["vm"] == {"project": P, "zone": A, "name": "web-1", "id": live_id}
    for snapshot in snapshots(emulator):
        manifest = vm_manifest.parse(snapshot["description"])
        assert manifest is not None, snapshot["description"]
        assert manifest.vm.path == vm(A)
        assert manifest.vm.id == live_id
        assert manifest.disk == snapshot["sourceDisk"].split("/compute/v1/")[1]
        assert sorted(d.source for d in manifest.disks) == [disk(A, "web-1"), disk(A, "web-1-data")]
        with emulator.world.lock:  # each disk's id and type, as disks.get gives them
            assert {d.source: d.id for d in manifest.disks} == {
                d.source: emulator.world.disks[d.source]["id"] for d in manifest.disks
            }
        assert snapshot["sourceDiskId"] == manifest.disk_entry(manifest.disk).id
        assert {d.type for d in manifest.disks} == {"pd-balanced"}


def test_the_groups_description_survives_as_the_manifests_note(emulator):
    backup(A, description="nightly backup of the shop")

    notes = {vm_manifest.parse(s["description"]).note for s in snapshots(emulator)}
    assert notes == {"nightly backup of the shop"}


def test_a_disk_this_vm_does_not_back_up_is_recorded_and_not_required_for_a_complete_set(emulator):
    backup(A, disks=["web-1"])

    (only,) = snapshot_sets(snapshots(emulator), group="web", deployment="test")[vm(A)]
    assert only.disks == [disk(A, "web-1")]
    assert {d.source: d.covered for d in only.manifest.disks} == {
        disk(A, "web-1"): True,
        disk(A, "web-1-data"): False,
    }
    assert only.complete


# ---- same-name VMs in two zones ---------------------------------------------------------------------
def test_two_vms_named_web_1_in_two_zones_each_get_only_their_own_disks_sets(emulator):
    backup(A)
    backup(B)

    sets = snapshot_sets(snapshots(emulator), group="web", deployment="test")

    assert set(sets) == {vm(A), vm(B)}
    for zone in (A, B):
        (only,) = sets[vm(zone)]
        assert only.disks == [disk(zone, "web-1"), disk(zone, "web-1-data")]
        assert only.complete
        assert only.ready
        with emulator.world.lock:
            assert only.vm_id == emulator.world.instances[vm(zone)]["id"]
        assert {s.disk_source: s.boot for s in only.snapshots} == {
            disk(zone, "web-1"): True,
            disk(zone, "web-1-data"): False,
        }
        as_dict = json.loads(json.dumps(only.as_dict()))
        assert as_dict["vm_id"] == only.vm_id
        assert as_dict["manifest"]["vm"]["zone"] == zone


def test_each_web_1_is_fresh_only_by_its_own_sets(emulator):
    backup(B)  # zone a's web-1 (first in path order) is never backed up

    vms = freshness(emulator)

    assert set(vms) == {vm(A), vm(B)}
    assert not vms[vm(B)].stale
    assert len(vms[vm(B)].sets) == 1
    assert vms[vm(A)].stale
    assert vms[vm(A)].sets == ()


# ---- snapshots that claim to be web-1's ----------------------------------------------------------
@pytest.mark.parametrize("description", ["batch-1's own", "none"])
def test_a_snapshot_of_batch_1s_disk_relabelled_as_web_1_joins_no_web_1_set(emulator, description):
    backup(A, "batch-1")  # batch-1's own backup run (its manifest names batch-1)
    (made,) = snapshots(emulator)
    emulator.world.snapshots.clear()
    labels = managed_snapshot_labels(
        deployment="test",
        group="web",
        instance="web-1",
        disk_source=disk(A, "batch-1"),
        run=run_label(DAG_ID, RUN_ID),
    )
    seed_copy(
        emulator,
        "relabelled",
        source=disk(A, "batch-1"),
        like={
            **made,
            "labels": labels,
            "description": made["description"] if description != "none" else None,
        },
    )

    vms = freshness(emulator)
    assert vms[vm(A)].stale
    assert vms[vm(A)].sets == ()

    sets = snapshot_sets(
        snapshots(emulator), group="web", deployment="test", attached={vm(A): [disk(A, "web-1")]}
    )
    assert vm(A) not in sets
    assert vm(B) not in sets


@pytest.mark.parametrize("other", [disk(A, "batch-1"), disk(B, "web-1-data")], ids=["batch-1", "zone-b-data"])
def test_a_snapshot_with_web_1s_description_but_another_source_disk_is_refused(emulator, other):
    backup(A)
    data = next(s for s in snapshots(emulator) if s["sourceDisk"].endswith(disk(A, "web-1-data")))

    seed_copy(emulator, "copied", source=other, like=data)

    (only,) = snapshot_sets(snapshots(emulator), group="web", deployment="test")[vm(A)]
    assert "copied" not in {s.name for s in only.snapshots}
    assert only.disks == [disk(A, "web-1"), disk(A, "web-1-data")]
    assert vm(B) not in snapshot_sets(snapshots(emulator), group="web", deployment="test")


def test_a_snapshot_of_web_1s_disk_whose_copied_manifest_records_another_disk_list_is_left_out(emulator):
    backup(A)
    boot = next(s for s in snapshots(emulator) if s["sourceDisk"].endswith(disk(A, "web-1")))
    data = next(s for s in snapshots(emulator) if s["sourceDisk"].endswith(disk(A, "web-1-data")))
    body = json.loads(data["description"][len(vm_manifest.PREFIX) :])
    body["disks"] = [d for d in body["disks"] if d["source"] == disk(A, "web-1-data")]
    emulator.world.snapshots.pop(f"projects/{P}/global/snapshots/{data['name']}")
    seed_copy(
        emulator,
        "other-list",
        source=disk(A, "web-1-data"),
        like=data,
        description=vm_manifest.PREFIX + json.dumps(body),
    )

    (only,) = snapshot_sets(snapshots(emulator), group="web", deployment="test")[vm(A)]
    assert [s.name for s in only.snapshots] == [boot["name"]]  # the boot disk's manifest decides
    assert not only.complete


# ---- vm-backup backups --------------------------------------------------------------------------
def run_cli(argv: list[str]) -> tuple[int, str, str]:
    from vm_backup_cli.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_a_deleted_vms_sets_are_still_listed_by_vm_backup_backups_marked_gone(emulator, tmp_path):
    backup(A)
    backup(B)
    with emulator.world.lock:
        del emulator.world.instances[vm(A)]
    config = tmp_path / "gce_vm_backup.yaml"
    config.write_text(CONFIG)

    code, out, err = run_cli(["backups", "--config", str(config), "--json"])

    assert (code, err) == (0, "")
    vms = {v["vm"]: v for v in json.loads(out)["groups"]["web"]}
    assert vms[vm(A)]["exists"] is False
    assert len(vms[vm(A)]["sets"]) == 1
    assert vms[vm(B)]["exists"] is True
    assert len(vms[vm(B)]["sets"]) == 1
    code, out, _ = run_cli(["backups", "--config", str(config)])
    (gone,) = [line for line in out.splitlines() if f"{vm(A)}:" in line]
    assert "GONE" in gone
    assert "1 set(s)" in gone
    (live,) = [line for line in out.splitlines() if f"{vm(B)}:" in line]
    assert "GONE" not in live


def test_a_connection_whose_key_path_does_not_exist_gets_one_line_and_exit_1(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-key.json"
    monkeypatch.setenv(
        "AIRFLOW_CONN_BADKEY",
        json.dumps({"conn_type": "google_cloud_platform", "extra": {"key_path": str(missing)}}),
    )
    config = tmp_path / "gce_vm_backup.yaml"
    config.write_text(
        CONFIG.replace('    schedule: "0 3 * * *"\n', '    schedule: "0 3 * * *"\n    gcp_conn_id: badkey\n')
    )

    code, out, err = run_cli(["backups", "--config", str(config)])

    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"backups: group web: connection 'badkey': key_path {missing} does not exist or is not a file"
    ]


# ---- the description's size -----------------------------------------------------------------------
def test_the_description_fits_the_limit_with_a_big_metadata_map(emulator):
    metadata = {f"key-{n:03d}": "v" * 200 for n in range(300)}
    with emulator.world.lock:
        emulator.world.instances[vm(A)]["metadata"] = {
            "kind": "compute#metadata",
            "items": [{"key": k, "value": v} for k, v in metadata.items()],
        }

    backup(A, metadata_values=True)

    for snapshot in snapshots(emulator):
        assert len(snapshot["description"]) <= vm_manifest.MAX_DESCRIPTION
        manifest = vm_manifest.parse(snapshot["description"])
        assert manifest.vm.path == vm(A)
        assert len(manifest.disks) == 2
        assert "metadata" in manifest.cut
    assert snapshot_sets(snapshots(emulator), group="web", deployment="test")[vm(A)][0].complete


def test_metadata_values_stay_out_of_the_manifest_unless_the_group_opts_in(emulator):
    from gce_emulator import compute

    seed = {"name": "web-3", "metadata": {"startup-script": "secret"}}
    with emulator.world.lock:
        compute.load_seed(emulator.world, {"projects": {P: {"zones": {A: {"instances": [seed]}}}}})

    assert precheck(A, "web-3")["manifest"]["spec"]["metadata"] == {"startup-script": None}
    opted_in = precheck(A, "web-3", metadata_values=True)["manifest"]["spec"]["metadata"]
    assert opted_in == {"startup-script": "secret"}


def test_a_vm_with_many_disks_gets_lean_disk_entries_and_every_snapshot_still_forms_its_set(emulator):
    from gce_emulator import compute

    many = [{"name": f"db-1-data-{n:02d}", "size_gb": 10} for n in range(14)]
    with emulator.world.lock:
        compute.load_seed(
            emulator.world,
            {"projects": {P: {"zones": {A: {"instances": [{"name": "db-1", "disks": many}]}}}}},
        )

    record = backup(A, "db-1")

    assert record["manifest"]["lean"]  # some disk fields left out to fit
    for snapshot in snapshots(emulator):
        assert len(snapshot["description"]) <= vm_manifest.MAX_DESCRIPTION
        assert len(vm_manifest.parse(snapshot["description"]).disks) == 14
    (only,) = snapshot_sets(snapshots(emulator), group="web", deployment="test")[vm(A, "db-1")]
    assert len(only.disks) == 14
    assert only.complete


def test_a_vm_whose_manifest_cannot_fit_is_refused_by_the_precheck_naming_it(emulator):
    many = [{"name": f"web-2-{'d' * 50}-{n:02d}", "size_gb": 10} for n in range(20)]
    from gce_emulator import compute

    with emulator.world.lock:
        compute.load_seed(
            emulator.world,
            {"projects": {P: {"zones": {A: {"instances": [{"name": "web-2", "disks": many}]}}}}},
        )

    with pytest.raises(VmStateError, match=rf"VM {vm(A, 'web-2')} cannot be backed up: .*does not fit"):
        precheck(A, "web-2")
    assert snapshots(emulator) == []


def test_the_page_shows_each_web_1_apart_and_the_deleted_one_as_gone(emulator, tmp_path):
    from gce_vm_backup.compute.hook import ComputeBackupHook
    from gce_vm_backup.ui.app import build_view
    from gce_vm_backup.ui.page import render_page, view_json

    backup(A)
    with emulator.world.lock:
        del emulator.world.instances[vm(A)]
    config = tmp_path / "gce_vm_backup.yaml"
    config.write_text(CONFIG)

    view = build_view(
        None,
        config_path=config,
        hook_factory=lambda conn_id: ComputeBackupHook(gcp_conn_id=conn_id),
        reports_reader=lambda dag_id: [],
        is_authorized=lambda user, dag_id: True,
        now=checked_at(emulator),
    )

    page = render_page(view)
    rows = {path: page.split(f'data-vm="{path}"')[1].split("</tr>")[0] for path in (vm(A), vm(B))}
    assert "GONE" in rows[vm(A)]
    assert "GONE" not in rows[vm(B)]
    group = view_json(view)["groups"]["web"]
    by_path = {v["vm"]: v for v in group["vms"]}
    assert (by_path[vm(A)]["exists"], len(by_path[vm(A)]["sets"])) == (False, 1)
    assert (by_path[vm(B)]["exists"], len(by_path[vm(B)]["sets"])) == (True, 0)
