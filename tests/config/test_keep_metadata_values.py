"""``snapshot.keep_metadata_values``: whether the manifest in each snapshot's description keeps the VM's
metadata values (off by default: they may hold secrets); the backup DAG's precheck gets it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gce_vm_backup.config.models import load_config, read_config

from ..conftest import TARGET, config, group


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gce_vm_backup.yaml"
    path.write_text(text)
    return path


def test_metadata_values_are_left_out_unless_the_group_opts_in(tmp_path):
    text = config(group(TARGET) + group("snapshot: {keep_metadata_values: true}\n" + TARGET, name="db"))
    groups = load_config(write(tmp_path, text)).groups
    assert groups["web"].snapshot.keep_metadata_values is False
    assert groups["db"].snapshot.keep_metadata_values is True


@pytest.mark.parametrize("value", ["'yes please'", "[true]", "{a: 1}"])
def test_a_value_that_is_not_a_boolean_gets_one_message_naming_group_and_key(tmp_path, value):
    text = config(group(f"snapshot: {{keep_metadata_values: {value}}}\n" + TARGET))
    parsed, problems = read_config(write(tmp_path, text))
    assert list(parsed.groups) == []
    (problem,) = problems
    assert problem.group == "web"
    assert "snapshot.keep_metadata_values" in str(problem)


def test_the_backup_dags_precheck_gets_the_groups_choice_and_description(tmp_path):
    from gce_vm_backup.dags.backup import build_dags

    text = config(group('snapshot: {keep_metadata_values: true, description: "nightly"}\n' + TARGET))
    (dag,) = build_dags(load_config(write(tmp_path, text))).values()
    precheck = dag.get_task("tier_1.precheck")
    assert precheck.metadata_values is True
    assert precheck.description == "nightly"
