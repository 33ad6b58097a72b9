"""Snapshot sets as the backups view reads them (restore_sets, h-restore-dags' module, has tests of its own
in tests/restore), and when a VM's backup is stale (freshness), without an API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gce_vm_backup.config.labels import managed_snapshot_labels, run_label
from gce_vm_backup.report.freshness import VmBackups, format_age, schedule_period, schedule_runs, set_status
from gce_vm_backup.restore.sets import newest_complete, snapshot_sets

P, Z = "backup-project", "us-central1-a"
T0 = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
# These snapshots have no manifest (made before manifests): they are grouped for the live VM that has
# their disks attached (restore_sets), here web-1.
LIVE = {
    f"projects/{P}/zones/{Z}/instances/web-1": [
        f"projects/{P}/zones/{Z}/disks/{d}" for d in ("web-1", "web-1-data")
    ]
}


def snap(
    name, disk, *, run="r1", status="READY", at=T0, instance="web-1", group="web", deployment="test", size=1
):
    source = f"projects/{P}/zones/{Z}/disks/{disk}"
    labels = managed_snapshot_labels(
        deployment="test", group=group, instance=instance, disk_source=source, run=run and run_label("d", run)
    )
    labels["gce-vm-backup-deployment"] = deployment  # as another deployment would write it
    return {
        "name": name,
        "sourceDisk": f"https://compute.googleapis.com/compute/v1/{source}",
        "status": status,
        "labels": labels,
        "storageBytes": str(size),
        "creationTimestamp": at.isoformat(),
        "selfLink": f"https://compute.googleapis.com/compute/v1/projects/{P}/global/snapshots/{name}",
    }


def test_snapshots_of_one_run_form_one_set_and_sets_come_newest_first():
    sets = snapshot_sets(
        [
            snap("a1", "web-1", run="r1", at=T0 - timedelta(days=1)),
            snap("a2", "web-1-data", run="r1", at=T0 - timedelta(days=1), size=5),
            snap("b1", "web-1", run="r2", at=T0),
            snap("b2", "web-1-data", run="r2", at=T0 + timedelta(seconds=40), status="FAILED"),
        ],
        group="web",
        deployment="test",
        attached=LIVE,
    )

    (vm,) = sets
    assert vm == f"projects/{P}/zones/{Z}/instances/web-1"
    newest, older = sets[vm]
    assert newest.run == run_label("d", "r2")
    assert (newest.complete, newest.ready, set_status(newest)) == (False, False, "FAILED")
    assert (older.complete, older.ready, set_status(older)) == (True, True, "READY")
    assert older.storage_bytes == 6
    assert older.disks == [f"projects/{P}/zones/{Z}/disks/web-1", f"projects/{P}/zones/{Z}/disks/web-1-data"]
    assert newest_complete(sets[vm]) is older


def test_snapshots_without_the_run_label_group_by_the_stamp_in_their_name():
    sets = snapshot_sets(
        [
            snap("web-1-us-central1-a-20261101030000-0123abcd", "web-1", run=None),
            snap("web-1-data-us-central1-a-20261101030000-89abcdef", "web-1-data", run=None),
            snap("web-1-us-central1-a-20261102030000-0123abcd", "web-1", run=None),
            snap("hand-made-snapshot", "web-1", run=None),  # neither label nor stamp: not a set
        ],
        group="web",
        deployment="test",
        attached=LIVE,
    )

    assert [(s.run, len(s.snapshots)) for s in sets[f"projects/{P}/zones/{Z}/instances/web-1"]] == [
        ("20261102030000", 1),
        ("20261101030000", 2),
    ]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"deployment": "staging"}, "another deployment"),
        ({"group": "db"}, "another group"),
    ],
)
def test_another_scopes_snapshots_are_never_in_a_set(change, why):
    sets = snapshot_sets([snap("x", "web-1", **change)], group="web", deployment="test")
    assert sets == {}, why


def test_a_snapshot_without_managed_by_or_instance_or_source_disk_is_left_out():
    no_owner = snap("x1", "web-1")
    del no_owner["labels"]["managed-by"]
    no_instance = snap("x2", "web-1")
    del no_instance["labels"]["gce-vm-backup-instance"]
    no_source = snap("x3", "web-1")
    del no_source["sourceDisk"]

    assert snapshot_sets([no_owner, no_instance, no_source], group="web", deployment="test") == {}


def test_compute_v1_snapshot_objects_work_as_well_as_json():
    from google.cloud import compute_v1

    data = snap("o1", "web-1")
    snapshot = compute_v1.Snapshot(
        name=data["name"],
        source_disk=data["sourceDisk"],
        status="READY",
        labels=data["labels"],
        storage_bytes=7,
        creation_timestamp=data["creationTimestamp"],
        self_link=data["selfLink"],
    )
    ((only,),) = snapshot_sets([snapshot], group="web", deployment="test", attached=LIVE).values()
    assert (only.storage_bytes, only.complete, only.created_at) == (7, True, T0)


# ---- schedule periods and staleness ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("schedule", "now", "period"),
    [
        ("0 3 * * *", T0 + timedelta(hours=5), timedelta(days=1)),
        ("@hourly", T0, timedelta(hours=1)),
        ("@weekly", T0, timedelta(days=7)),
        # weekdays at 03:00: on Monday morning the last two runs were Friday and Monday
        ("0 3 * * 1-5", datetime(2026, 11, 30, 10, tzinfo=UTC), timedelta(days=3)),
        (None, T0, None),
        ("@once", T0, None),
    ],
)
def test_the_schedule_period_is_the_gap_between_its_last_two_runs(schedule, now, period):
    assert schedule_period(schedule, now=now) == period


def test_the_runs_are_counted_in_the_dags_timezone_across_a_dst_change():
    # 02:30 Paris daily, just after the autumn change (25 Oct 2026, 03:00 CEST -> 02:00 CET)
    paris = ZoneInfo("Europe/Paris")
    runs = schedule_runs("30 2 * * *", now=datetime(2026, 10, 26, 12, tzinfo=paris), timezone=paris)
    assert runs is not None
    assert runs[0].astimezone(paris).strftime("%d %H:%M") == "26 02:30"
    # the run of the 25th (02:30 came twice that night; croniter releases differ on which one it is)
    assert runs[1].astimezone(paris).day == 25
    assert timedelta(hours=24) <= runs[0] - runs[1] <= timedelta(hours=26)


def _vm(sets_at, *, schedule="0 3 * * *", now=T0 + timedelta(hours=5), in_config=True, since=None):
    snaps = [snap(f"s{i}", "web-1", run=f"r{i}", at=at) for i, at in enumerate(sets_at)]
    sets = snapshot_sets(snaps, group="web", deployment="test", attached=LIVE).get(
        f"projects/{P}/zones/{Z}/instances/web-1", []
    )
    runs = schedule_runs(schedule, now=now)
    return VmBackups(
        group="web",
        vm=f"projects/{P}/zones/{Z}/instances/web-1",
        in_config=in_config,
        sets=tuple(sets),
        checked_at=now,
        period=None if runs is None else runs[0] - runs[1],
        stale_before=None if runs is None else runs[-1],
        since=since or now - timedelta(days=300),
    )


def test_stale_only_when_the_last_two_scheduled_runs_made_no_ready_set():
    # daily at 03:00, checked at 08:00 on the 30th: the last two runs were the 29th and the 30th
    assert not _vm([T0 - timedelta(days=1, minutes=-1)]).stale  # the 29th's run made one
    assert _vm([T0 - timedelta(days=1, seconds=1)]).stale  # before the 29th's run: two runs made none
    assert not _vm([T0 - timedelta(days=5), T0 + timedelta(minutes=2)]).stale  # the newest set counts


def test_an_irregular_schedule_counts_its_own_runs():
    # weekdays at 03:00, checked Monday 30 Nov 08:00: Friday's set is fresh, Thursday's is not
    friday, thursday = datetime(2026, 11, 27, 3, 5, tzinfo=UTC), datetime(2026, 11, 26, 3, 5, tzinfo=UTC)
    assert not _vm([friday], schedule="0 3 * * 1-5").stale
    assert _vm([thursday], schedule="0 3 * * 1-5").stale


def test_a_vm_never_backed_up_is_stale_once_two_runs_passed_since_the_start_date():
    assert not _vm([], since=T0 - timedelta(hours=1)).stale
    assert _vm([], since=T0 - timedelta(days=3)).stale


def test_a_manual_group_and_a_former_target_are_never_stale():
    assert not _vm([T0 - timedelta(days=300)], schedule=None).stale
    assert not _vm([T0 - timedelta(days=300)], schedule="@once").stale
    assert not _vm([T0 - timedelta(days=300)], in_config=False).stale


def test_an_incomplete_newer_set_does_not_make_a_vm_fresh():
    now = T0 + timedelta(hours=5)
    failed = snap("new", "web-1", run="new", at=now - timedelta(hours=1), status="FAILED")
    sets = snapshot_sets(
        [failed, snap("old", "web-1", run="old", at=now - timedelta(days=4))],
        group="web",
        deployment="test",
        attached=LIVE,
    )
    vm = _vm([])
    vm = VmBackups(
        group="web",
        vm=vm.vm,
        in_config=True,
        sets=tuple(sets[vm.vm]),
        checked_at=now,
        period=vm.period,
        stale_before=vm.stale_before,
    )
    assert vm.stale
    assert vm.age == timedelta(days=4)
    assert vm.stale_line() == (
        "web-1 (projects/backup-project/zones/us-central1-a/instances/web-1): newest READY set 4d 0h old "
        "(made 2026-11-26 08:00 UTC); none from the 2 scheduled runs since 2026-11-29 03:00 UTC (group web)"
    )


@pytest.mark.parametrize(
    ("age", "text"),
    [
        (timedelta(minutes=4), "4m"),
        (timedelta(hours=5, minutes=10), "5h 10m"),
        (timedelta(days=2, hours=3), "2d 3h"),
    ],
)
def test_ages_read_as_days_hours_minutes(age, text):
    assert format_age(age) == text


def test_a_vm_made_again_under_its_name_is_not_fresh_by_its_predecessors_sets():
    from dataclasses import replace

    old = _vm([T0 + timedelta(minutes=2)])
    predecessor = tuple(replace(s, vm_id="41") for s in old.sets)
    now = old.checked_at
    made_again = VmBackups(
        group="web",
        vm=old.vm,
        in_config=True,
        sets=predecessor,
        checked_at=now,
        period=old.period,
        stale_before=old.stale_before,
        since=old.since,
        vm_id="42",
    )

    assert made_again.newest is None
    assert made_again.stale
    assert len(made_again.sets) == 1  # still listed
    assert not replace(made_again, vm_id="41").stale
