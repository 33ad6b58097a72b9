"""Snapshot names and request ids (hypothesis)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gce_vm_backup.compute.naming import NAME_RE, request_id, snapshot_name

gce_names = st.from_regex(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
locations = st.sampled_from(["us-central1-a", "europe-west1-b", "us-central1", "asia-southeast1-c"])
times = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC))
run_ids = st.text(min_size=1, max_size=80)
S = "prod/nightly"  # deployment/group


@settings(max_examples=300, deadline=None)
@given(gce_names, gce_names, locations, times, run_ids)
def test_names_are_always_valid_and_deterministic(instance, disk, location, when, run_id):
    name = snapshot_name(
        instance=instance, disk=disk, zone_or_region=location, run_time=when, run_id=run_id, scope=S
    )
    assert 1 <= len(name) <= 63
    assert NAME_RE.match(name)
    assert name == snapshot_name(
        instance=instance, disk=disk, zone_or_region=location, run_time=when, run_id=run_id, scope=S
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(gce_names, gce_names, locations), min_size=2, max_size=30, unique=True), times, run_ids
)
def test_distinct_disks_in_one_run_never_share_a_name(disks, when, run_id):
    names = [
        snapshot_name(instance=i, disk=d, zone_or_region=loc, run_time=when, run_id=run_id, scope=S)
        for i, d, loc in disks
    ]
    assert len(set(names)) == len(names)


def test_long_names_are_shortened_with_a_hash_not_truncated_into_a_collision():
    when = datetime(2026, 11, 24, tzinfo=UTC)
    long = "a" * 60
    first = snapshot_name(
        instance=long + "x", disk="data", zone_or_region="us-central1-a", run_time=when, run_id="r", scope=S
    )
    second = snapshot_name(
        instance=long + "y", disk="data", zone_or_region="us-central1-a", run_time=when, run_id="r", scope=S
    )
    assert len(first) <= 63
    assert first != second


def test_name_carries_instance_disk_zone_and_the_run_time():
    when = datetime(2026, 11, 24, 3, 0, 5, tzinfo=UTC)
    name = snapshot_name(
        instance="web-1",
        disk="web-1-data",
        zone_or_region="us-central1-a",
        run_time=when,
        run_id="r",
        scope=S,
    )
    assert name.startswith("web-1-data-us-central1-a-20261124030005-")
    name = snapshot_name(
        instance="app", disk="logs", zone_or_region="europe-west1", run_time=when, run_id="r", scope=S
    )
    assert name.startswith("app-logs-europe-west1-20261124030005-")


def test_two_runs_in_the_same_second_get_different_names():
    when = datetime(2026, 11, 24, tzinfo=UTC)
    a = snapshot_name(
        instance="vm", disk="vm", zone_or_region="z", run_time=when, run_id="manual__1", scope=S
    )
    b = snapshot_name(
        instance="vm", disk="vm", zone_or_region="z", run_time=when, run_id="manual__2", scope=S
    )
    assert a != b


def test_two_groups_backing_up_one_disk_at_the_same_moment_get_different_names():
    """Scheduled run ids are the same in every DAG (scheduled__<time>): without the scope in the hash,
    nightly and monthly would both claim one name, and the second would refuse to adopt the first's."""
    when = datetime(2026, 12, 1, 3, tzinfo=UTC)
    kwargs = {"instance": "vm", "disk": "vm", "zone_or_region": "z", "run_time": when}
    run_id = "scheduled__2026-12-01T03:00:00+00:00"
    names = {
        snapshot_name(**kwargs, run_id=run_id, scope=scope)
        for scope in ("prod/nightly", "prod/monthly", "staging/nightly")
    }
    assert len(names) == 3


def test_naive_run_time_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        snapshot_name(
            instance="vm", disk="vm", zone_or_region="z", run_time=datetime(2026, 1, 1), run_id="r", scope=S
        )


def test_run_time_in_another_timezone_names_the_same_utc_instant():
    utc = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    other = utc.astimezone(datetime.now(UTC).astimezone().tzinfo or UTC) + timedelta(0)
    kwargs = {"instance": "vm", "disk": "vm", "zone_or_region": "z", "run_id": "r", "scope": S}
    assert snapshot_name(run_time=utc, **kwargs) == snapshot_name(run_time=other, **kwargs)


def test_request_id_is_a_stable_non_nil_uuid_that_changes_with_each_input():
    base = {"dag_id": "d", "run_id": "r", "map_index": 0, "resource": "vm", "action": "stop", "try_number": 1}
    first = request_id(**base)
    assert uuid.UUID(first).int != 0
    assert first == request_id(**base)
    for key, value in {
        "dag_id": "e",
        "run_id": "s",
        "map_index": 1,
        "resource": "vm2",
        "action": "start",
        "try_number": 2,
        "deployment": "staging",
    }.items():
        assert request_id(**{**base, key: value}) != first
