"""A synced plugins/operators/gce_vm_backup and an installed gce-vm-backup in one environment: one warning
line naming both folders and versions, and which one Python imports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gce_vm_backup.runtime import install

REPO = Path(__file__).resolve().parents[2]


def package(folder: Path, version: str | None) -> Path:
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(f'"""x"""\n__version__ = "{version}"\n' if version else '"""x"""\n')
    return folder


@pytest.fixture
def copies(tmp_path, monkeypatch):
    synced = package(tmp_path / "plugins" / "operators" / "gce_vm_backup", "0.1.0")
    installed = package(tmp_path / "site-packages" / "gce_vm_backup", "0.2.0")
    monkeypatch.setattr(install, "installed_copy", lambda: (installed.resolve(), "0.2.0"))
    return synced, installed


def test_the_installed_package_in_use_shadows_the_synced_copy(copies):
    synced, installed = copies
    line = install.two_copies(synced.parent, in_use=installed)

    assert line == (
        f"gce_vm_backup is present twice: {installed.resolve()} (gce-vm-backup 0.2.0, installed package) is in "
        f"use and shadows {synced.resolve()} (0.1.0, synced copy); remove one (docs/existing-environment.md)"
    )


def test_the_synced_copy_in_use_shadows_the_installed_package(copies):
    synced, installed = copies
    line = install.two_copies(synced.parent, in_use=synced)

    assert line is not None
    assert line.startswith(
        f"gce_vm_backup is present twice: {synced.resolve()} (0.1.0, synced copy) is in use"
    )
    assert f"shadows {installed.resolve()} (gce-vm-backup 0.2.0, installed package)" in line


def test_one_copy_or_the_same_folder_twice_says_nothing(copies, tmp_path, monkeypatch):
    synced, installed = copies
    assert install.two_copies(tmp_path / "nothing-synced", in_use=installed) is None
    monkeypatch.setattr(install, "installed_copy", lambda: (synced.resolve(), "0.1.0"))
    assert install.two_copies(synced.parent, in_use=synced) is None  # an install that is the synced folder
    monkeypatch.setattr(install, "installed_copy", lambda: None)
    assert install.two_copies(synced.parent, in_use=synced) is None


def test_a_synced_copy_without_a_version_says_unknown(copies, tmp_path):
    _, installed = copies
    old = package(tmp_path / "old" / "gce_vm_backup", None)
    line = install.two_copies(old.parent, in_use=installed)
    assert line is not None
    assert f"{old.resolve()} (unknown, synced copy)" in line


def test_an_editable_install_of_a_checkout_is_no_second_copy():
    """This venv installs the checkout editable (`make env`): its files are the checkout's."""
    assert install.installed_copy() is None


def test_the_warning_is_one_log_line(copies, caplog):
    synced, installed = copies
    import gce_vm_backup

    with caplog.at_level("WARNING", logger="gce_vm_backup"):
        line = install.warn_if_two_copies(synced.parent)
    assert Path(gce_vm_backup.__file__).parent != installed  # in use: this checkout, neither of the two
    assert [r.getMessage() for r in caplog.records] == [line]
    assert "\n" not in line


@pytest.mark.slow
def test_parsing_the_dag_file_with_a_wheel_installed_and_a_synced_copy_warns_once(installed_wheel, tmp_path):
    """The real thing: the wheel's files installed (first on sys.path), the repository's plugins/ synced
    with another version, the DAG file parsed."""
    plugins = tmp_path / "plugins"
    shutil.copytree(REPO / "plugins", plugins, ignore=shutil.ignore_patterns("__pycache__"))
    init = plugins / "operators" / "gce_vm_backup" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "0.0.9-synced+'))
    dags = tmp_path / "dags"
    dags.mkdir()
    for name in ("gce_vm_backup_dags.py", "gce_vm_backup.yaml"):
        shutil.copy(REPO / "dags" / name, dags / name)
    env = {
        **os.environ,
        "PYTHONPATH": str(installed_wheel),
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
    }
    script = (
        "import runpy, sys; dags = runpy.run_path(sys.argv[1]); import gce_vm_backup; "
        "print('in use:', gce_vm_backup.__file__); "
        "print('dags:', sum(type(v).__name__ == 'DAG' for v in dags.values()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(dags / "gce_vm_backup_dags.py")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if "present twice" in line]

    assert f"in use: {installed_wheel / 'gce_vm_backup' / '__init__.py'}" in output
    assert int(output.split("dags: ")[1].split()[0]) > 0
    assert len(warnings) == 1
    assert f"{installed_wheel / 'gce_vm_backup'} (gce-vm-backup " in warnings[0]
    assert "installed package) is in use and shadows" in warnings[0]
    assert f"{plugins / 'operators' / 'gce_vm_backup'} (0.0.9-synced+" in warnings[0]
