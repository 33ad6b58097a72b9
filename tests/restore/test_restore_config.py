"""The ``restore_drill`` block: valid drills become models with their defaults; every bad value gets one
message naming the file, the group and the key (the bad-input corpus of this block)."""

from __future__ import annotations

import pytest

from gce_vm_backup.config import parse_config
from gce_vm_backup.restore_config import RestoreDrill

from ..conftest import TARGET, config, group


def drill(body: str) -> str:
    return config(group(f"{TARGET}\nrestore_drill: {body}"))


def parse(text: str):
    groups, problems = parse_config(text, "backup.yaml")
    return groups, [str(p) for p in problems]


def test_a_drill_needs_only_a_scratch_zone_and_gets_safe_defaults():
    groups, problems = parse(drill("{scratch_zone: us-central1-f}"))

    assert problems == []
    drill_config = groups["web"].restore_drill
    assert drill_config == RestoreDrill(scratch_zone="us-central1-f")
    assert drill_config.schedule is None  # manual only unless asked
    assert drill_config.create_vm is True
    assert drill_config.scratch_project is None  # each VM's own project
    assert drill_config.machine_type == "e2-small"
    assert drill_config.boot_check is None
    assert drill_config.boot_check_spec() == {"kind": "none"}
    assert (drill_config.timeouts.create, drill_config.timeouts.boot, drill_config.timeouts.cleanup) == (
        1800,
        600,
        900,
    )


def test_a_group_without_a_drill_has_none():
    groups, problems = parse(config(group(TARGET)))

    assert problems == []
    assert groups["web"].restore_drill is None


@pytest.mark.parametrize(
    ("body", "spec"),
    [
        (
            "{scratch_zone: us-central1-f, boot_check: {guest_attribute: {key: drill/boot, value: ok}}}",
            {"kind": "guest_attribute", "key": "drill/boot", "value": "ok"},
        ),
        (
            '{scratch_zone: us-central1-f, boot_check: {serial_port: "Reached target Multi-User"}}',
            {"kind": "serial_port", "text": "Reached target Multi-User"},
        ),
    ],
)
def test_boot_checks_parse_into_their_spec(body, spec):
    groups, problems = parse(drill(body))

    assert problems == []
    assert groups["web"].restore_drill.boot_check_spec() == spec


def test_a_full_drill_block_keeps_every_value():
    groups, problems = parse(
        drill(
            '{schedule: "0 5 * * 0", scratch_zone: europe-west1-b, scratch_project: drill-project, '
            "create_vm: false, machine_type: n2-standard-2, network: projects/host-project/global/networks/vpc, "
            "subnetwork: scratch, timeouts: {create: 600, boot: 120, cleanup: 300}, poll_interval: 5}"
        )
    )

    assert problems == []
    got = groups["web"].restore_drill
    assert got.schedule == "0 5 * * 0"
    assert got.scratch_project == "drill-project"
    assert got.create_vm is False
    assert got.network == "projects/host-project/global/networks/vpc"
    assert got.timeouts.boot == 120


BAD = [
    ("{}", "key 'restore_drill.scratch_zone': required key is missing"),
    ("{scratch_zone: mars-1}", "key 'restore_drill.scratch_zone': 'mars-1' is not valid here"),
    ("{scratch_zone: us-central1-f, extra: 1}", "key 'restore_drill.extra': unknown key"),
    (
        "{scratch_zone: us-central1-f, boot_check: {}}",
        "key 'restore_drill.boot_check': write none, {guest_attribute: {key: NAMESPACE/KEY, value: VALUE}}",
    ),
    (
        "{scratch_zone: us-central1-f, boot_check: {serial_port: booted, guest_attribute: {key: a/b, value: c}}}",
        "key 'restore_drill.boot_check': write none",
    ),
    (
        '{scratch_zone: us-central1-f, create_vm: "true"}',
        "key 'restore_drill.create_vm': Input should be a valid boolean, got 'true'",
    ),
    (
        '{scratch_zone: us-central1-f, schedule: "61 * * * *"}',
        "key 'restore_drill.schedule': invalid cron expression '61 * * * *'",
    ),
    (
        '{scratch_zone: us-central1-f, schedule: "@sometimes"}',
        "key 'restore_drill.schedule': unknown preset '@sometimes'",
    ),
    (
        '{scratch_zone: us-central1-f, schedule: "0 0 * * * *"}',
        "key 'restore_drill.schedule': invalid cron expression '0 0 * * * *': use exactly 5 fields",
    ),
    (
        "{scratch_zone: us-central1-f, scratch_project: X}",
        "key 'restore_drill.scratch_project': 'X' is not valid here",
    ),
    (
        "{scratch_zone: us-central1-f, machine_type: zones/x/machineTypes/e2}",
        "key 'restore_drill.machine_type': 'zones/x/machineTypes/e2' is not valid here",
    ),
    (
        "{scratch_zone: us-central1-f, network: 'a b'}",
        "key 'restore_drill.network': 'a b' is not valid here",
    ),
    (
        "{scratch_zone: us-central1-f, boot_check: ping}",
        "key 'restore_drill.boot_check': write none, {guest_attribute: {key: NAMESPACE/KEY, value: VALUE}}",
    ),
    (
        "{scratch_zone: us-central1-f, boot_check: {guest_attribute: {key: nokey, value: ok}}}",
        "key 'restore_drill.boot_check.guest_attribute.key': 'nokey' is not valid here",
    ),
    (
        "{scratch_zone: us-central1-f, boot_check: {guest_attribute: {key: a/b}}}",
        "key 'restore_drill.boot_check.guest_attribute.value': required key is missing",
    ),
    (
        "{scratch_zone: us-central1-f, boot_check: {serial_port: ''}}",
        "key 'restore_drill.boot_check.serial_port': String should have at least 1 character",
    ),
    (
        "{scratch_zone: us-central1-f, timeouts: {boot: 5}}",
        "key 'restore_drill.timeouts.boot': Input should be greater than or equal to 30",
    ),
    (
        "{scratch_zone: us-central1-f, timeouts: {boot: '600'}}",
        "key 'restore_drill.timeouts.boot': Input should be a valid integer, got '600'",
    ),
    (
        "{scratch_zone: us-central1-f, timeouts: {reboot: 60}}",
        "key 'restore_drill.timeouts.reboot': unknown key",
    ),
    ("us-central1-f", "key 'restore_drill': Input should be a valid dictionary or instance of RestoreDrill"),
]


@pytest.mark.parametrize(("body", "expected"), BAD)
def test_a_bad_drill_value_gets_one_message_naming_file_group_and_key(body, expected):
    groups, problems = parse(drill(body))

    assert "web" not in groups  # a broken group gets no DAG
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"backup.yaml: group 'web': {expected}"), problems[0]
