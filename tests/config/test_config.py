"""The config file: the shipped example is valid, and each kind of mistake gets its exact message."""

from __future__ import annotations

from pathlib import Path

import pytest

from gce_vm_backup.config.models import load_config
from gce_vm_backup.errors import ConfigError
from vm_backup_cli.__main__ import main

from ..conftest import REPO, TARGET, config, group

GOOD_GROUP = """\
    schedule: "@daily"
    targets:
      - {project: demo-project, zone: us-central1-a, instance: web-1}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gce_vm_backup.yaml"
    path.write_text(text)
    return path


def test_the_shipped_example_config_is_valid():
    config = load_config(REPO / "dags" / "gce_vm_backup.yaml")
    assert set(config.groups) == {"shop-nightly", "labelled-weekly", "batch-manual"}
    assert config.groups["shop-nightly"].retention is not None


def test_defaults_are_inherited_and_nested_blocks_merge(tmp_path):
    text = config(
        group("snapshot: {guest_flush: true}\ntimeouts: {stop: 60}\n" + TARGET),
        defaults='start_date: "2026-01-01T00:00:00+00:00"\n  snapshot: {labels: {team: ops}}\n  retries: 5',
    )
    web = load_config(write(tmp_path, text)).groups["web"]
    assert web.retries == 5
    assert web.snapshot.labels == {"team": "ops"}
    assert web.snapshot.guest_flush is True
    assert web.timeouts.stop == 60
    assert web.timeouts.snapshot == 7200


def test_naive_start_date_takes_the_group_timezone(tmp_path):
    text = config(group(f"timezone: Europe/Paris\n{TARGET}"), defaults='start_date: "2026-01-01T00:00:00"')
    start = load_config(write(tmp_path, text)).groups["web"].start_date
    assert start.utcoffset().total_seconds() == 3600


@pytest.mark.parametrize(
    ("zone", "start_date"),
    [
        ("Europe/Paris", "2026-01-01T03:00:00+01:00"),  # right in winter, wrong all summer
        ("Europe/Paris", "2026-07-01T03:00:00+00:00"),
        ("UTC", "2026-01-01T03:00:00+01:00"),
        ("America/New_York", "2026-01-01T03:00:00Z"),
    ],
)
def test_a_timezone_with_a_start_date_that_has_its_own_offset_is_refused_naming_both_keys(
    tmp_path, zone, start_date
):
    text = config(group(f"timezone: {zone}\n{TARGET}"), defaults=f'start_date: "{start_date}"')
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [str(problem) for problem in info.value.problems] == [
        f"{path}: group 'web': keys 'timezone' and 'start_date': start_date "
        f"{load_start(start_date)} has its own UTC offset, so timezone {zone!r} would be ignored (the "
        f"schedule would follow {load_start(start_date)[-6:].replace(':', '')} all year); give "
        "start_date without an offset to schedule in the timezone, or drop 'timezone'"
    ]


def load_start(text: str) -> str:
    from datetime import datetime

    return datetime.fromisoformat(text).isoformat()


@pytest.mark.parametrize(
    ("zone", "start_date", "offset_hours"),
    [
        ("UTC", "2026-01-01T03:00:00+00:00", 0),  # the zone changes nothing: accepted
        ("Etc/GMT-1", "2026-01-01T03:00:00+01:00", 1),  # a fixed zone of the same offset
        ("Europe/Paris", "2026-07-01T03:00:00", 2),  # naive: read in the zone
    ],
)
def test_a_timezone_that_agrees_with_the_start_date_or_a_naive_start_date_is_accepted(
    tmp_path, zone, start_date, offset_hours
):
    text = config(group(f"timezone: {zone}\n{TARGET}"), defaults=f'start_date: "{start_date}"')
    start = load_config(write(tmp_path, text)).groups["web"].start_date
    assert start.utcoffset().total_seconds() == 3600 * offset_hours


def test_a_start_date_with_an_offset_and_no_timezone_key_keeps_its_offset(tmp_path):
    text = config(group(TARGET), defaults='start_date: "2026-01-01T03:00:00+05:30"')
    assert (
        load_config(write(tmp_path, text)).groups["web"].start_date.isoformat() == "2026-01-01T03:00:00+05:30"
    )


def test_one_broken_group_does_not_hide_the_others(tmp_path):
    text = config(group(TARGET, name="good") + group(f'schedule: "bad"\n{TARGET}', name="bad"))
    from gce_vm_backup.config.models import read_config

    parsed, problems = read_config(write(tmp_path, text))
    assert list(parsed.groups) == ["good"]
    assert [p.group for p in problems] == ["bad"]


def test_load_config_raises_config_error_with_every_problem(tmp_path):
    text = config(group(f'schedule: "bad"\nwait_mode: x\n{TARGET}'))
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert len(info.value.problems) == 2


def test_validate_command_prints_every_problem_and_exits_1(tmp_path, capsys):
    path = write(tmp_path, config(group(f'schedule: "bad"\nwait_mode: x\n{TARGET}')))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"{path}: group 'web': key 'schedule': invalid cron expression 'bad'",
        f"{path}: group 'web': key 'wait_mode': Input should be 'defer', 'reschedule' or 'worker'",
    ]


def test_validate_command_ok_summary(capsys):
    assert main(["validate", str(REPO / "dags" / "gce_vm_backup.yaml")]) == 0
    out = capsys.readouterr().out
    assert "OK: 3 group(s)" in out
    assert "gce_vm_backup__batch-manual: manual only" in out


def test_validate_command_missing_file_is_one_line(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
    assert (
        capsys.readouterr().err
        == f"{tmp_path / 'nope.yaml'}: cannot read the file: No such file or directory\n"
    )


def test_the_readme_config_reference_example_is_valid_and_names_every_key(tmp_path):
    from gce_vm_backup.config.models import Group, SnapshotSettings, Timeouts
    from gce_vm_backup.config.retention import GfsPolicy, RetentionPolicy

    readme = (REPO / "docs" / "config.md").read_text()
    section = readme[readme.index("## Config reference") :]
    start = section.index("```yaml\n") + len("```yaml\n")
    example = section[start : section.index("```\n", start)]

    loaded = load_config(write(tmp_path, example))

    assert set(loaded.groups) == {"shop-nightly", "labelled-weekly", "batch-manual"}
    models = (Group, SnapshotSettings, Timeouts, RetentionPolicy, GfsPolicy)
    missing = [f"{m.__name__}.{key}" for m in models for key in m.model_fields if f"{key}:" not in example]
    assert missing == [], f"the README's config reference does not show {missing}"


def test_deployment_is_required_and_named_in_the_message(tmp_path):
    from gce_vm_backup.config.models import validate_file

    text = config(group(TARGET)).replace("deployment: test\n", "")
    problems = [str(p) for p in validate_file(write(tmp_path, text))]
    assert len(problems) == 1
    assert "key 'deployment': required key is missing" in problems[0]


@pytest.mark.parametrize("value", ["Prod", "x y", "-prod", "prod-", "a" * 41, "1prod", '"x\\" OR"'])
def test_deployment_must_be_a_label_value(tmp_path, value):
    from gce_vm_backup.config.models import validate_file

    text = config(group(TARGET)).replace("deployment: test", f"deployment: {value}")
    problems = [str(p) for p in validate_file(write(tmp_path, text))]
    assert len(problems) == 1
    assert "key 'deployment'" in problems[0]
    assert "is not valid here" in problems[0]


def test_deployment_env_overrides_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GCE_VM_BACKUP_DEPLOYMENT", "staging")
    assert load_config(write(tmp_path, config(group(TARGET)))).deployment == "staging"
    monkeypatch.setenv("GCE_VM_BACKUP_DEPLOYMENT", "Bad!")
    with pytest.raises(
        ConfigError, match="environment variable GCE_VM_BACKUP_DEPLOYMENT: 'Bad!' is not valid"
    ):
        load_config(write(tmp_path, config(group(TARGET))))
