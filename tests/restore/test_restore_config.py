"""The ``restore_drill`` block: valid drills become models with their defaults; every bad value gets one
message naming the file, the group and the key (the bad-input corpus of this block)."""

from __future__ import annotations

import pytest

from gce_vm_backup.config.models import parse_config
from gce_vm_backup.config.restore import RestoreDrill

from ..conftest import TARGET, config, group

ISOLATED = "scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills"


def drill(body: str) -> str:
    return config(group(f"{TARGET}\nrestore_drill: {body}"))


def parse(text: str):
    groups, problems = parse_config(text, "backup.yaml")
    return groups, [str(p) for p in problems]


def test_a_drill_needs_a_scratch_project_zone_and_network_and_gets_safe_defaults():
    groups, problems = parse(drill(f"{{{ISOLATED}}}"))

    assert problems == []
    drill_config = groups["web"].restore_drill
    assert drill_config == RestoreDrill(
        scratch_zone="us-central1-f", scratch_project="drill-scratch", network="drills"
    )
    assert drill_config.schedule is None  # manual only unless asked
    assert drill_config.create_vm is True
    assert drill_config.machine_type == "e2-small"
    assert drill_config.subnetwork is None
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
            "{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, boot_check: {guest_attribute: {key: drill/boot, value: ok}}}",
            {"kind": "guest_attribute", "key": "drill/boot", "value": "ok"},
        ),
        (
            '{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, boot_check: {serial_port: "Reached target Multi-User"}}',
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
            "subnetwork: projects/host-project/regions/europe-west1/subnetworks/scratch, timeouts: {create: 600, boot: 120, cleanup: 300}, poll_interval: 5}"
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
    (
        "{scratch_project: drill-scratch, network: drills}",
        "key 'restore_drill.scratch_zone': required key is missing",
    ),
    (
        "{scratch_zone: mars-1, scratch_project: drill-scratch, network: drills}",
        "key 'restore_drill.scratch_zone': 'mars-1' is not valid here",
    ),
    (
        "{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, extra: 1}",
        "key 'restore_drill.extra': unknown key",
    ),
    (
        "{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, boot_check: {}}",
        "key 'restore_drill.boot_check': write none, {guest_attribute: {key: NAMESPACE/KEY, value: VALUE}}",
    ),
    (
        "{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, boot_check: {serial_port: booted, guest_attribute: {key: a/b, value: c}}}",
        "key 'restore_drill.boot_check': write none",
    ),
    (
        '{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, create_vm: "true"}',
        "key 'restore_drill.create_vm': Input should be a valid boolean, got 'true'",
    ),
    (
        '{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, schedule: "61 * * * *"}',
        "key 'restore_drill.schedule': invalid cron expression '61 * * * *'",
    ),
    (
        '{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, schedule: "@sometimes"}',
        "key 'restore_drill.schedule': unknown preset '@sometimes'",
    ),
    (
        '{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, schedule: "0 0 * * * *"}',
        "key 'restore_drill.schedule': invalid cron expression '0 0 * * * *': use exactly 5 fields",
    ),
    (
        "{scratch_zone: us-central1-f, network: drills, scratch_project: X}",
        "key 'restore_drill.scratch_project': 'X' is not valid here",
    ),
    (
        "{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, machine_type: zones/x/machineTypes/e2}",
        "key 'restore_drill.machine_type': 'zones/x/machineTypes/e2' is not valid here",
    ),
    (
        "{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: 'a b'}",
        "key 'restore_drill.network': 'a b' is not valid here",
    ),
    (
        "{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, boot_check: ping}",
        "key 'restore_drill.boot_check': write none, {guest_attribute: {key: NAMESPACE/KEY, value: VALUE}}",
    ),
    (
        "{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, boot_check: {guest_attribute: {key: nokey, value: ok}}}",
        "key 'restore_drill.boot_check.guest_attribute.key': 'nokey' is not valid here",
    ),
    (
        "{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, boot_check: {guest_attribute: {key: a/b}}}",
        "key 'restore_drill.boot_check.guest_attribute.value': required key is missing",
    ),
    (
        "{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, boot_check: {serial_port: ''}}",
        "key 'restore_drill.boot_check.serial_port': String should have at least 1 character",
    ),
    (
        "{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, timeouts: {boot: 5}}",
        "key 'restore_drill.timeouts.boot': Input should be greater than or equal to 30",
    ),
    (
        "{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, timeouts: {boot: '600'}}",
        "key 'restore_drill.timeouts.boot': Input should be a valid integer, got '600'",
    ),
    (
        "{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, timeouts: {reboot: 60}}",
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


# ---- isolation from production: the drill's own project and network -------------------------------
SELECTOR_TIER = "tiers:\n  - [{project: demo-project, zone: us-central1-a, instance: web-1}]\n  - [{project: shop-prod, zones: all, labels: {app: shop}}]"


@pytest.mark.parametrize(
    ("targets", "body", "expected"),
    [
        (
            TARGET,
            "{scratch_zone: us-central1-f, network: drills}",
            "key 'restore_drill.scratch_project': required key is missing",
        ),
        (
            TARGET,
            "{scratch_zone: us-central1-f, scratch_project: drill-scratch}",
            "key 'restore_drill.network': required key is missing",
        ),
        (
            TARGET,
            "{scratch_zone: us-central1-a, scratch_project: demo-project, network: drills}",
            "key 'restore_drill.scratch_project': 'demo-project' is a target project of the group "
            "(targets.0); a drill creates and deletes disks and VMs in its scratch project, so it must be a "
            "project where no VM of the group lives",
        ),
        (
            SELECTOR_TIER,
            "{scratch_zone: us-central1-f, scratch_project: shop-prod, network: drills}",
            "key 'restore_drill.scratch_project': 'shop-prod' is a target project of the group (tiers.1.0)",
        ),
        (
            TARGET,
            "{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: default}",
            "key 'restore_drill.network': 'default': a drill boots copies of production VMs, so it needs a "
            "network made for drills, not a project's default network",
        ),
        (
            TARGET,
            "{scratch_zone: us-central1-f, scratch_project: drill-scratch, "
            "network: projects/drill-scratch/global/networks/default}",
            "key 'restore_drill.network': 'projects/drill-scratch/global/networks/default': a drill boots",
        ),
        (
            TARGET,
            "{scratch_zone: us-central1-f, scratch_project: drill-scratch, "
            "network: projects/demo-project/global/networks/prod}",
            "key 'restore_drill.network': 'projects/demo-project/global/networks/prod' is in 'demo-project', "
            "a target project of the group (targets.0); the drill VM, a copy of a production VM, must not "
            "join a production network",
        ),
        (
            TARGET,
            "{scratch_zone: us-central1-f, scratch_project: drill-scratch, "
            "network: projects/host-vpc/global/networks/drills, subnetwork: drills}",
            "key 'restore_drill.subnetwork': 'drills': the network is in project host-vpc; give the "
            "subnetwork as projects/host-vpc/regions/us-central1/subnetworks/NAME",
        ),
        (
            TARGET,
            "{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, "
            "subnetwork: projects/demo-project/regions/us-central1/subnetworks/prod}",
            "key 'restore_drill.subnetwork': 'projects/demo-project/regions/us-central1/subnetworks/prod' is "
            "not in the network's project drill-scratch",
        ),
        (
            TARGET,
            "{scratch_zone: us-central1-f, scratch_project: drill-scratch, network: drills, "
            "subnetwork: projects/drill-scratch/regions/europe-west1/subnetworks/drills}",
            "key 'restore_drill.subnetwork': 'projects/drill-scratch/regions/europe-west1/subnetworks/drills' "
            "is not in region us-central1, the scratch zone's",
        ),
    ],
)
def test_a_drill_that_could_touch_production_is_refused_with_one_message(targets, body, expected):
    groups, problems = parse(config(group(f"{targets}\nrestore_drill: {body}")))

    assert "web" not in groups
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"backup.yaml: group 'web': {expected}"), problems[0]


def test_a_scratch_project_given_as_a_default_is_checked_against_each_group(tmp_path):
    text = config(
        group(TARGET, name="web")
        + group("targets: [{project: drill-scratch, zone: us-central1-a, instance: tools-1}]", name="tools"),
        defaults='start_date: "2026-01-01T00:00:00+00:00"\n  restore_drill: {'
        "scratch_project: drill-scratch, scratch_zone: us-central1-b, network: drills}",
    )

    groups, problems = parse(text)

    assert set(groups) == {"web"}
    assert problems == [
        "backup.yaml: group 'tools': key 'restore_drill.scratch_project': 'drill-scratch' is a target "
        "project of the group (targets.0); a drill creates and deletes disks and VMs in its scratch "
        "project, so it must be a project where no VM of the group lives"
    ]


def test_a_shared_vpc_host_network_outside_the_group_is_accepted():
    groups, problems = parse(
        drill(
            "{scratch_zone: us-central1-f, scratch_project: drill-scratch, "
            "network: projects/host-vpc/global/networks/drills, "
            "subnetwork: projects/host-vpc/regions/us-central1/subnetworks/drills-us}"
        )
    )

    assert problems == []
    assert groups["web"].restore_drill.network == "projects/host-vpc/global/networks/drills"


def test_validate_refuses_a_drill_whose_scratch_project_is_a_target(tmp_path, capsys):
    from vm_backup_cli.__main__ import main

    path = tmp_path / "backup.yaml"
    path.write_text(
        config(
            group(
                f"{SELECTOR_TIER}\nrestore_drill: "
                "{scratch_zone: us-central1-b, scratch_project: shop-prod, network: drills}"
            )
        )
    )

    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if line.strip()]
    assert lines[0] == (
        f"{path}: group 'web': key 'restore_drill.scratch_project': 'shop-prod' is a target project of the "
        "group (tiers.1.0); a drill creates and deletes disks and VMs in its scratch project, so it must be "
        "a project where no VM of the group lives"
    ), lines
    assert "Traceback" not in out.out + out.err
