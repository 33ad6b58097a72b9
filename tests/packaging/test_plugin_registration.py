"""The "VM backups" page registers exactly once whichever way the package arrives: the plugins folder's
file (a bucket sync), the installed package's ``airflow.plugins`` entry point, or both (then the plugins
folder's file, and Airflow records no "already registered" import error)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gce_vm_backup.ui import plugin

REPO = Path(__file__).resolve().parents[2]
ENTRY_POINT = "gce-vm-backup==0.1.0: EntryPoint(name='gce_vm_backup_ui', value='gce_vm_backup.ui.plugin:entry_point_plugin', group='airflow.plugins')"


def registered(plugins_folder: Path, home: Path) -> dict:
    """What Airflow registers in a process of this checkout's venv (the package installed with its entry
    point, as `make env` does) with ``plugins_folder``."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    result = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("list_plugins.py"))],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(result.stdout.splitlines()[-1])
    found["ours"] = [p for p in found["plugins"] if p[0] == "gce_vm_backup_ui"]
    found["log"] = result.stdout + result.stderr
    return found


@pytest.mark.slow
def test_a_synced_plugin_file_and_the_entry_point_register_the_page_once(tmp_path):
    found = registered(REPO / "plugins", tmp_path)

    assert found["ours"] == [["gce_vm_backup_ui", "$PLUGINS_FOLDER/gce_vm_backup_ui_plugin.py"]]
    assert found["import_errors"] == {}
    assert "already registered" not in found["log"]


@pytest.mark.slow
def test_without_a_plugins_file_the_entry_point_registers_the_page(tmp_path):
    (tmp_path / "plugins").mkdir()
    found = registered(tmp_path / "plugins", tmp_path)

    assert found["ours"] == [["gce_vm_backup_ui", ENTRY_POINT.replace("0.1.0", plugin_version())]]
    assert found["import_errors"] == {}


@pytest.mark.slow
def test_a_plugins_folder_of_other_plugins_leaves_the_page_to_the_entry_point(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "someone_elses_plugin.py").write_text("X = 1\n")
    shutil.copytree(REPO / "plugins" / "operators", folder / "operators")  # the package synced, not the page
    found = registered(folder, tmp_path)

    assert [source for _, source in found["ours"]] == [ENTRY_POINT.replace("0.1.0", plugin_version())]


def plugin_version() -> str:
    import gce_vm_backup

    return gce_vm_backup.__version__


def test_the_entry_point_stands_aside_only_when_the_plugins_folder_holds_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__PLUGINS_FOLDER", str(tmp_path))
    assert plugin.entry_point_plugin is plugin.GceVmBackupUiPlugin
    (tmp_path / "gce_vm_backup_ui_plugin.py").mkdir()  # a folder of that name is not the plugin file
    assert plugin.entry_point_plugin is plugin.GceVmBackupUiPlugin
    (tmp_path / "gce_vm_backup_ui_plugin.py").rmdir()
    (tmp_path / "gce_vm_backup_ui_plugin.py").write_text("")
    assert plugin.entry_point_plugin is None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = plugin.nothing
