"""The config cannot take the DAG processor down, and means what it says.

The exact message of each refused file is pinned in tests/bad_input/test_corpus.py; these tests pin the
time it takes, what the DAG processor shows, and what is still accepted (merge keys, ISO dates, hourly).
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gce_vm_backup.config.models import cron_minutes, load_config, validate_file
from gce_vm_backup.errors import ConfigError

from ..bad_input.test_corpus import BILLION_LAUGHS
from ..conftest import REPO, TARGET, config, group


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gce_vm_backup.yaml"
    path.write_text(text)
    return path


def test_an_alias_bomb_is_refused_in_well_under_a_second(tmp_path):
    path = write(tmp_path, BILLION_LAUGHS + config(group(f"tags: *i\n{TARGET}")).replace("version: 1\n", ""))
    assert path.stat().st_size < 700

    started = time.monotonic()
    problems = [str(p) for p in validate_file(path)]
    elapsed = time.monotonic() - started

    assert elapsed < 0.2
    assert len(problems) == 1
    assert "more than 100000 values once its aliases are expanded" in problems[0]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["alias-bomb", "fifo", "deep", "not-utf8"])
def test_the_dag_processor_shows_one_import_error_and_no_memory_error_for_a_hostile_config(
    tmp_path, monkeypatch, kind
):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.delenv("GCE_VM_BACKUP_STRICT", raising=False)
    monkeypatch.delenv("GCE_VM_BACKUP_CONFIG", raising=False)
    shutil.copy(REPO / "dags" / "gce_vm_backup_dags.py", tmp_path)
    path = tmp_path / "gce_vm_backup.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "not-utf8":
        path.write_bytes(b"version: 1\ndeployment: caf\xe9\n")
    else:
        path.write_text(BILLION_LAUGHS if kind == "alias-bomb" else "a: " + "[" * 5000 + "]" * 5000)

    started = time.monotonic()
    bag = DagBag(str(tmp_path))
    elapsed = time.monotonic() - started

    assert elapsed < 10
    assert bag.dags == {}
    assert list(bag.import_errors) == [str(tmp_path / "gce_vm_backup_dags.py")]
    error = next(iter(bag.import_errors.values()))
    assert f"ConfigError: {path}: " in error
    assert len(error.splitlines()) <= 8  # two frames of the thin DAG file and the factory, then the message
    for bad in ("MemoryError", "RecursionError", "UnicodeDecodeError", "yaml."):
        assert bad not in error


def test_yaml_merge_keys_are_supported_and_explicit_keys_win(tmp_path):
    anchors = """\
version: 1
deployment: test
defaults:
  start_date: "2026-01-01T00:00:00+00:00"
  snapshot: &snap {labels: {team: ops}}
groups:
  web: &web
    retries: 1
    poke_interval: 5
    snapshot: *snap
    targets: [{project: demo-project, zone: us-central1-a, instance: web-1}]
  web-again:
    <<: *web
    retries: 4
  db:
    <<: [{retry_delay: 900, poke_interval: 60}, *web]
    targets: [{project: demo-project, zone: us-central1-b, instance: db-1}]
"""
    groups = load_config(write(tmp_path, anchors)).groups

    assert (groups["web"].retries, groups["web"].poke_interval) == (1, 5)
    assert (groups["web-again"].retries, groups["web-again"].poke_interval) == (4, 5)  # explicit key wins
    assert groups["web-again"].explicit_vm_names() == ["us-central1-a/web-1"]
    assert groups["web-again"].snapshot.labels == {"team": "ops"}
    # in a list of merges the first mapping that has a key wins, as YAML's merge key specifies
    assert (groups["db"].retry_delay, groups["db"].poke_interval, groups["db"].retries) == (900, 60, 1)
    assert groups["db"].explicit_vm_names() == ["us-central1-b/db-1"]


def test_a_real_duplicate_key_is_still_refused_next_to_a_merge_key(tmp_path):
    text = config(group(f"<<: {{retries: 1}}\nretries: 2\npoke_interval: 5\npoke_interval: 6\n{TARGET}"))
    problems = [str(p) for p in validate_file(write(tmp_path, text))]
    assert problems == [
        f"{tmp_path / 'gce_vm_backup.yaml'}: invalid YAML (line 10, column 5): duplicate key 'poke_interval'"
    ]


def test_yaml_ints_stay_ints_and_start_date_takes_an_iso_string_a_yaml_timestamp_or_a_date(tmp_path):
    for start in ('"2026-01-01T03:00:00+00:00"', "2026-01-01 03:00:00+00:00", "2026-01-01T03:00:00Z"):
        web = load_config(
            write(tmp_path, config(group(f"retries: 3\n{TARGET}"), defaults=f"start_date: {start}"))
        )
        web_group = web.groups["web"]
        assert web_group.start_date == datetime(2026, 1, 1, 3, tzinfo=UTC)
        assert type(web_group.retries) is int
        assert web_group.retries == 3
    dated = load_config(write(tmp_path, config(group(TARGET), defaults="start_date: 2026-01-01")))
    assert dated.groups["web"].start_date == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "schedule", ["@hourly", "@daily", "0 * * * *", "15 */2 * * *", "59 23 * * 1-5", "@once"]
)
def test_hourly_or_rarer_schedules_need_no_opt_in(tmp_path, schedule):
    assert validate_file(write(tmp_path, config(group(f'schedule: "{schedule}"\n{TARGET}')))) == []


def test_a_frequent_schedule_is_accepted_with_the_opt_in(tmp_path):
    text = config(group(f'schedule: "*/15 8-18 * * 1-5"\nallow_frequent_schedule: true\n{TARGET}'))
    web = load_config(write(tmp_path, text)).groups["web"]
    assert (web.schedule, web.allow_frequent_schedule) == ("*/15 8-18 * * 1-5", True)


def test_the_opt_in_can_come_from_defaults(tmp_path):
    text = config(
        group(f'schedule: "*/30 * * * *"\n{TARGET}'),
        defaults='start_date: "2026-01-01T00:00:00+00:00"\n  allow_frequent_schedule: true',
    )
    assert validate_file(write(tmp_path, text)) == []


CRONS = [
    "0 3 * * *",
    "*/30 * * * *",
    "0,59 */2 * * *",
    "0,1 0 1 1 *",
    "5 * * * *",
    "0 0 29 2 *",
    "30 9-17 * * 1-5",
    "0-1 12 * * 0",
    "* 4 * * *",
    "59 23 31 12 *",
]


@pytest.mark.parametrize("schedule", CRONS)
def test_more_often_than_hourly_is_exactly_two_or_more_minutes_per_hour(schedule):
    """Checks the field rule against croniter's fire times: the smallest gap between consecutive runs over
    eight years (leap days included, no run skipped) is under an hour exactly when the rule says so."""
    from croniter import croniter

    frequent_by_rule = len(cron_minutes(schedule)) > 1
    runs = croniter(schedule, datetime(2026, 1, 1, tzinfo=UTC))
    previous = runs.get_next(datetime)
    smallest = timedelta.max
    for _ in range(20_000):
        current = runs.get_next(datetime)
        smallest = min(smallest, current - previous)
        if current.year >= 2034 or smallest < timedelta(hours=1):
            break
        previous = current

    assert (smallest < timedelta(hours=1)) == frequent_by_rule


def test_selector_labels_accept_every_valid_label_value(tmp_path):
    text = config(
        group(
            'targets: [{project: demo-project, zones: all, labels: {env: prod, team: "", ab_c-1: "0a_b-c"}}]'
        )
    )
    web = load_config(write(tmp_path, text)).groups["web"]
    assert web.all_targets()[0].as_operator_target() == {
        "project_id": "demo-project",
        "zones": None,
        "labels": {"env": "prod", "team": "", "ab_c-1": "0a_b-c"},
    }


def test_zones_all_and_a_zone_list_reach_the_operator(tmp_path):
    text = config(group("targets: [{project: demo-project, zones: [us-central1-a], labels: {env: prod}}]"))
    target = load_config(write(tmp_path, text)).groups["web"].all_targets()[0]
    assert target.as_operator_target()["zones"] == ["us-central1-a"]


def test_a_config_at_the_size_limit_is_read(tmp_path):
    text = config(group(TARGET)) + "#"
    path = write(tmp_path, text + "#" * ((1 << 20) - len(text)))
    assert path.stat().st_size == 1 << 20
    assert set(load_config(path).groups) == {"web"}


def test_load_config_raises_one_config_error_for_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "gce_vm_backup.yaml")
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path / "gce_vm_backup.yaml")
    assert raised.value.problems == [
        f"{tmp_path / 'gce_vm_backup.yaml'}: cannot read the file: it is a FIFO (named pipe); a config must be a regular file"
    ]


def test_a_long_or_aliased_value_is_cut_short_in_its_message(tmp_path):
    long_project = "p" * 5000
    text = config(group(f"targets: [{{project: {long_project}, zone: us-central1-a, instance: web-1}}]"))
    text = text.replace("version: 1", "version: &v [" + ", ".join(["x"] * 50) + "]\nalso: *v")
    problems = [str(p) for p in validate_file(write(tmp_path, text))]

    assert len(problems) == 3  # version, the unknown key 'also', the project
    assert all(len(problem) < 400 for problem in problems), problems
    assert "key 'version': must be 1, got ['x', 'x', 'x', 'x', 'x', ...]" in problems[1]
