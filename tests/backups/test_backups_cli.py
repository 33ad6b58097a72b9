"""`vm-backup backups` against the emulator: each VM's sets newest first, stale VMs flagged; bad input gets
one line and exit 2 (the CLI bad-input corpus's cases for this subcommand)."""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest

from vm_backup_cli.__main__ import main

from .conftest import PROJECT, RUNS, vm_path

pytestmark = pytest.mark.emulator


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def _vm_lines(out: str, instance: str) -> list[str]:
    """The VM's head line and its set lines."""
    lines = out.splitlines()
    start = next(
        i for i, line in enumerate(lines) if line.rstrip().split(": ")[0].endswith(vm_path(instance))
    )
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("           "):
            break
        block.append(line)
    return block


def test_each_vm_lists_its_sets_newest_first_and_the_stale_ones_are_flagged(fleet, config_file):
    code, out, err = run_cli(["backups", "--config", str(config_file)])

    assert (code, err) == (0, "")
    assert re.search(
        r"^group web \(schedule 0 3 \* \* \*, stale without a READY set since 20\d\d-\d\d-\d\d 03:00 UTC \(the "
        r"last 2 runs\)\): 3 VM\(s\), 2 stale$",
        out,
        re.MULTILINE,
    ), out
    head, *sets = _vm_lines(out, "web-1")
    assert not head.lstrip().startswith("STALE")
    # a day old: not the other deployment's hour-old set
    assert re.search(r"newest READY set 23h 5\dm old, 4 set\(s\)$", head), head
    assert [line.split()[4] for line in sets] == ["READY", "FAILED", "READY", "READY"]
    assert sets[0].split()[5:7] == ["23.0", "GiB"]
    assert sets[0].split()[3] == next(r for r in RUNS if r.instance == "web-1" and r.age.days == 1).label()
    assert "2 disk(s): web-1 READY, web-1-data READY" in sets[0]
    assert "web-1-data FAILED" in sets[1]
    times = [" ".join(line.split()[:2]) for line in sets]
    assert times == sorted(times, reverse=True)

    head, *sets = _vm_lines(out, "web-2")
    assert head.lstrip().startswith("STALE")
    # the 6-hour-old set is incomplete and group db's hour-old set is not this group's
    assert re.search(r"newest READY set 4d 23h old, 2 set\(s\)$", head), head
    assert [line.split()[4] for line in sets] == ["CREATING", "READY"]
    (head,) = _vm_lines(out, "web-3")
    assert head.lstrip().startswith("STALE")
    assert "no complete READY set, 0 set(s)" in head

    assert "group batch (schedule manual only, never stale): 1 VM(s), 0 stale" in out
    (head, _set) = _vm_lines(out, "batch-1")
    assert not head.lstrip().startswith("STALE")


def test_the_json_has_every_set_and_the_stale_flags(fleet, config_file):
    code, out, _ = run_cli(["backups", "--config", str(config_file), "--json"])

    assert code == 0
    report = json.loads(out)
    assert report["deployment"] == "test"
    vms = {vm["vm"].rsplit("/", 1)[-1]: vm for vm in report["groups"]["web"]}
    assert {name: vm["stale"] for name, vm in vms.items()} == {"web-1": False, "web-2": True, "web-3": True}
    web_1 = vms["web-1"]
    labelled = {run.label() for run in RUNS if run.instance == "web-1" and run.deployment == "test"}
    newest = next(r for r in RUNS if r.instance == "web-1" and r.age.days == 1)
    assert web_1["newest_ready_set"] == newest.label()
    assert [s["run"] for s in web_1["sets"][:3]] == [
        r.label() for r in RUNS if r.instance == "web-1" and r.deployment == "test" and r.labelled
    ]
    # the set made before the run label is grouped by its name stamp (YYYYmmddHHMMSS)
    assert re.fullmatch(r"\d{14}", web_1["sets"][3]["run"])
    assert web_1["sets"][3]["run"] not in labelled
    assert web_1["sets"][1]["complete"] is False
    assert web_1["sets"][0]["storage_bytes"] == 23 << 30
    assert web_1["schedule_period_seconds"] == 86400
    assert web_1["stale_before"].endswith("T03:00:00+00:00")
    assert 86000 < web_1["age_seconds"] < 86500
    assert vms["web-3"]["sets"] == []
    assert vms["web-3"]["age_seconds"] is None
    assert report["groups"]["batch"][0]["stale"] is False


def test_a_selector_groups_vms_are_those_it_matches_now_and_former_ones_are_shown_not_flagged(
    fleet, config_file
):
    config_file.write_text(
        config_file.read_text()
        + f"""\
  shop:
    schedule: "@daily"
    targets:
      - {{project: {PROJECT}, zones: all, labels: {{app: shop}}}}
"""
    )

    code, out, _ = run_cli(["backups", "--config", str(config_file), "--group", "shop", "--json"])

    assert code == 0
    vms = {vm["vm"]: vm for vm in json.loads(out)["groups"]["shop"]}
    assert vms[vm_path("web-3")]["in_config"] is True
    assert vms[vm_path("web-3")]["stale"] is True  # matched, never backed up by this group
    assert vms[vm_path("batch-1")]["in_config"] is False
    assert vms[vm_path("batch-1")]["stale"] is False
    assert len(vms[vm_path("batch-1")]["sets"]) == 1
    assert set(vms) == {vm_path("web-3"), vm_path("batch-1")}
    (listing,) = fleet.calls_for("compute.instances.aggregatedList")
    assert listing.status == 200


def test_one_group_only(fleet, config_file):
    code, out, _ = run_cli(["backups", "--config", str(config_file), "--group", "batch"])

    assert code == 0
    assert out.startswith("group batch ")
    assert "group web" not in out
    assert len(fleet.calls_for("compute.snapshots.list")) == 1  # the web group was not listed


def test_a_failed_listing_is_one_line_and_exit_1(fleet, config_file):
    fleet.faults.http_error(
        "compute.snapshots.list", 403, times=1, message="Required 'compute.snapshots.list'"
    )

    code, out, err = run_cli(["backups", "--config", str(config_file), "--group", "web"])

    assert code == 1
    assert out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("backups: group web: list snapshots of group web failed: HTTP 403")
    assert "Traceback" not in err


def test_an_invalid_config_lists_its_problems_and_exits_1(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\ndeployment: test\ngroups:\n  web:\n    schedule: '@sometimes'\n")

    code, out, err = run_cli(["backups", "--config", str(path)])

    assert code == 1
    assert out == ""
    assert f"{path}: group 'web': key 'schedule': unknown preset '@sometimes'" in err
    assert "Traceback" not in err


def test_an_endpoint_the_package_refuses_is_one_line(fleet, config_file, monkeypatch):
    monkeypatch.setenv("GCE_VM_BACKUP_COMPUTE_ENDPOINT", "http://compute.example.com")

    code, _, err = run_cli(["backups", "--config", str(config_file)])

    assert code == 1
    (line,) = err.strip().splitlines()
    assert line.startswith("backups: group web: ")
    assert "GCE_VM_BACKUP_COMPUTE_ENDPOINT: plain http is only allowed on a loopback host" in line


CLI_CASES = [
    (
        ["backups", "--config", "/nonexistent.yaml"],
        "vm-backup backups: error: argument --config: cannot read /nonexistent.yaml: No such file or directory",
    ),
    (
        ["backups", "--config", "/dev/zero"],
        "vm-backup backups: error: argument --config: /dev/zero is not a regular file",
    ),
    (
        ["backups", "--config", "CONFIG", "--group", "Web!"],
        "vm-backup backups: error: argument --group: 'Web!' is not a group id (1-50 chars: lowercase letters, "
        "digits, _ and -, starting with a letter)",
    ),
    (
        ["backups", "--config", "CONFIG", "--group", "db"],
        "vm-backup backups: error: argument --group: no group 'db' in CONFIG (groups: web, batch)",
    ),
    (
        ["backups", "--config", "CONFIG", "--json=yes"],
        "vm-backup backups: error: argument --json: ignored explicit argument 'yes'",
    ),
    (
        ["backups", "--config", "CONFIG", "--stale"],
        "vm-backup: error: unrecognized arguments: --stale",
    ),
]


@pytest.mark.parametrize(("argv", "expected"), CLI_CASES, ids=[" ".join(c[0][1:]) for c in CLI_CASES])
def test_bad_command_line_exits_2_with_one_message_naming_the_argument(
    argv, expected, config_file, monkeypatch
):
    monkeypatch.chdir(
        config_file.parent
    )  # the default --config, dags/gce_vm_backup.yaml, does not exist here
    argv = [str(config_file) if a == "CONFIG" else a for a in argv]

    code, out, err = run_cli(argv)

    assert code == 2
    assert out == ""
    assert err.strip().splitlines()[-1] == expected.replace("CONFIG", str(config_file))
    assert "Traceback" not in err


def test_without_a_config_the_default_path_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    code, _, err = run_cli(["backups"])

    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "vm-backup backups: error: argument --config: cannot read dags/gce_vm_backup.yaml: No such file or "
        "directory"
    )
