"""The config file: the shipped example is valid, and each kind of mistake gets its exact message."""

from __future__ import annotations

from pathlib import Path

import pytest

from gce_vm_backup.config import load_config, validate_file
from gce_vm_backup.errors import ConfigError
from vm_backup_cli.__main__ import main

from ..conftest import REPO

GOOD_GROUP = """\
    schedule: "@daily"
    targets:
      - {project: demo-project, zone: us-central1-a, instance: web-1}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gce_vm_backup.yaml"
    path.write_text(text)
    return path


def config(groups: str, defaults: str = 'start_date: "2026-01-01T00:00:00+00:00"') -> str:
    return f"version: 1\ndefaults:\n  {defaults}\ngroups:\n{groups}"


def group(body: str, name: str = "web") -> str:
    return f"  {name}:\n" + "".join(f"    {line}\n" for line in body.strip("\n").splitlines())


TARGET = "targets: [{project: demo-project, zone: us-central1-a, instance: web-1}]"

# (config text, expected message after "<file>: ")
BAD = [
    ("version: 1\ngroups: [\n", "invalid YAML (line 3, column 1): expected the node content"),
    ("- a\n- b\n", "the file must be a mapping with 'version' and 'groups'"),
    (config(group(TARGET)).replace("version: 1", "version: 2"), "key 'version': must be 1, got 2"),
    ("version: 1\ngroups: {}\n", "key 'groups': must be a non-empty mapping of group id to group"),
    (config(group(TARGET)) + "extra: 1\n", "key 'extra': unknown key"),
    (
        config(group(f'schedule: "61 * * * *"\n{TARGET}')),
        "group 'web': key 'schedule': invalid cron expression '61 * * * *'",
    ),
    (
        config(group(f'schedule: "@sometimes"\n{TARGET}')),
        "group 'web': key 'schedule': unknown preset '@sometimes'",
    ),
    (
        config(group(TARGET), defaults='start_date: "not a date"'),
        "group 'web': key 'start_date': Input should be a valid datetime",
    ),
    (
        config(group(f"timezone: Mars/Olympus\n{TARGET}")),
        "group 'web': key 'timezone': unknown timezone 'Mars/Olympus'",
    ),
    (
        config(group(f"wait_mode: sometimes\n{TARGET}")),
        "group 'web': key 'wait_mode': Input should be 'reschedule' or 'worker'",
    ),
    (
        config(group(f"local_ssd: keep\n{TARGET}")),
        "group 'web': key 'local_ssd': Input should be 'refuse', 'discard' or 'preserve'",
    ),
    (
        config(group(f"max_concurrent_vms: 0\n{TARGET}")),
        "group 'web': key 'max_concurrent_vms': Input should be greater than or equal to 1",
    ),
    (config(group(f"colour: blue\n{TARGET}")), "group 'web': key 'colour': unknown key"),
    (config(group("schedule: null")), "group 'web': a group needs exactly one of 'targets' or 'tiers'"),
    (
        config(group("targets: [{project: demo-project, zone: us-central1-a}]")),
        "group 'web': key 'targets.0': a target needs 'instance' (one VM) or 'labels' (a label selector)",
    ),
    (
        config(group("targets: [{project: demo-project, zones: all, labels: {}}]")),
        "group 'web': key 'targets.0.labels': Dictionary should have at least 1 item after validation, not 0",
    ),
    (
        config(group("targets: [{project: demo-project, zones: all, labels: {a: b}, disks: [x]}]")),
        "group 'web': key 'targets.0.disks': unknown key",
    ),
    (
        config(group("targets: [{project: Demo, zone: us-central1-a, instance: web-1}]")),
        "group 'web': key 'targets.0.project': 'Demo' is not valid here (it must match ^[a-z][-a-z0-9]{4,28}[a-z0-9]$)",
    ),
    (
        config(group("targets: [{project: demo-project, zone: nowhere, instance: web-1}]")),
        "group 'web': key 'targets.0.zone': 'nowhere' is not valid here (it must match ^[a-z]+-[a-z]+[0-9]+-[a-z]$)",
    ),
    (
        config(group(f"{TARGET}\nsnapshot: {{snapshot_type: COLD}}")),
        "group 'web': key 'snapshot.snapshot_type': Input should be 'STANDARD' or 'ARCHIVE'",
    ),
    (
        config(group(f"{TARGET}\nsnapshot: {{labels: {{managed-by: me}}}}")),
        "group 'web': key 'snapshot.labels': label(s) managed-by are reserved for gce-vm-backup's own bookkeeping",
    ),
    (
        config(group(f"{TARGET}\nretention: {{keep_last: 0}}")),
        "group 'web': key 'retention.keep_last': Input should be greater than or equal to 1",
    ),
    (
        config(group(f"{TARGET}\nretention: {{keep_forever: true}}")),
        "group 'web': key 'retention.keep_forever': unknown key",
    ),
    (
        config(
            group(
                "targets:\n  - {project: demo-project, zone: us-central1-a, instance: web-1}\n  - {project: demo-project, zone: us-central1-a, instance: web-1}"
            )
        ),
        "group 'web': VM demo-project/us-central1-a/web-1 is listed twice",
    ),
    (
        config(group(TARGET, name="Web Servers")),
        "group 'Web Servers': group ids are 1-50 chars: lowercase letters, digits, _ and -, starting with a letter",
    ),
    (config(group(TARGET) + group(TARGET)), "invalid YAML (line 7, column 3): duplicate key 'web'"),
    (
        config(group(f"tiers: []\n{TARGET}")),
        "group 'web': key 'tiers': List should have at least 1 item after validation, not 0",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[b[1][:60] for b in BAD])
def test_bad_config_gets_its_exact_message(tmp_path, text, expected):
    path = write(tmp_path, text)
    problems = [str(p) for p in validate_file(path)]
    assert any(p.startswith(f"{path}: {expected}") for p in problems), problems


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


def test_one_broken_group_does_not_hide_the_others(tmp_path):
    text = config(group(TARGET, name="good") + group(f'schedule: "bad"\n{TARGET}', name="bad"))
    from gce_vm_backup.config import read_config

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
        f"{path}: group 'web': key 'wait_mode': Input should be 'reschedule' or 'worker'",
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
    from gce_vm_backup.config import Group, SnapshotSettings, Timeouts
    from gce_vm_backup.retention import GfsPolicy, RetentionPolicy

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Config reference") :]
    start = section.index("```yaml\n") + len("```yaml\n")
    example = section[start : section.index("```\n", start)]

    loaded = load_config(write(tmp_path, example))

    assert set(loaded.groups) == {"shop-nightly", "labelled-weekly", "batch-manual"}
    models = (Group, SnapshotSettings, Timeouts, RetentionPolicy, GfsPolicy)
    missing = [f"{m.__name__}.{key}" for m in models for key in m.model_fields if f"{key}:" not in example]
    assert missing == [], f"the README's config reference does not show {missing}"
