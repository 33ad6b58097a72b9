"""The issue's "done when": a fresh venv with the built wheel and the newest Composer image's Airflow and
Google provider parses the DAG file (written by `vm-backup dag-file`) and lists the "VM backups" plugin:
installed alone (the entry point registers it) and with the repository's plugins/ synced as well (the
plugins folder's file registers it, once, and the parse warns of the two copies).

Installs from PyPI into a temporary venv with uv (its cache makes a repeat run quick: about 45 s for the
install and 20 s for each parse on the 2-core machine)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.packaging.conftest import uv

REPO = Path(__file__).resolve().parents[2]
# composer-3-airflow-3.3.1-build.10, the newest Composer 3 image: its Airflow and Google provider.
AIRFLOW = "apache-airflow==3.3.1"
GOOGLE_PROVIDER = "apache-airflow-providers-google==22.8.0"
PLUGIN = "gce_vm_backup_ui"


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fresh")
    # --no-config: not this checkout's [tool.uv] (compile-bytecode would compile all of Airflow first)
    uv_ = [uv(), "--no-config"]
    subprocess.run(
        [*uv_, "venv", "-q", "--python", "3.11", str(root / "venv")], check=True, capture_output=True
    )
    python = root / "venv" / "bin" / "python"
    subprocess.run(
        [*uv_, "pip", "install", "-q", "--python", str(python), str(wheel), AIRFLOW, GOOGLE_PROVIDER],
        check=True,
        capture_output=True,
        timeout=900,
    )
    return root / "venv"


def parse_and_list(venv: Path, home: Path, plugins: Path) -> tuple[dict, str]:
    dags = home / "dags"
    written = subprocess.run(
        [str(venv / "bin" / "vm-backup"), "dag-file", "--out", str(dags)], capture_output=True, text=True
    )
    assert written.returncode == 0, written.stderr
    shutil.copy(REPO / "dags" / "gce_vm_backup.yaml", dags / "gce_vm_backup.yaml")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "PYTHON", "VIRTUAL_ENV"))
    }
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    result = subprocess.run(
        [str(venv / "bin" / "python"), str(Path(__file__).with_name("parse_and_list.py"))],
        env=env,
        capture_output=True,
        text=True,
        cwd=home,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1]), result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the install waits for uv's cache lock while another uv holds it
def test_the_wheel_alone_parses_the_dag_file_and_lists_the_plugin(venv, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    found, log = parse_and_list(venv, tmp_path, plugins)

    assert found["airflow"] == "3.3.1"
    assert found["dag_import_errors"] == {}
    assert "gce_vm_backup__shop-nightly" in found["dag_ids"]
    ours = [source for name, source in found["plugins"] if name == PLUGIN]
    assert len(ours) == 1
    assert ours[0].startswith("gce-vm-backup==")
    assert found["plugin_import_errors"] == {}
    assert "present twice" not in log


@pytest.mark.slow
def test_the_wheel_and_a_synced_plugins_folder_register_the_plugin_once(venv, tmp_path):
    plugins = tmp_path / "plugins"
    shutil.copytree(REPO / "plugins", plugins, ignore=shutil.ignore_patterns("__pycache__"))
    found, log = parse_and_list(venv, tmp_path, plugins)

    assert found["dag_import_errors"] == {}
    assert [p for p in found["plugins"] if p[0] == PLUGIN] == [
        [PLUGIN, "$PLUGINS_FOLDER/gce_vm_backup_ui_plugin.py"]
    ]
    assert found["plugin_import_errors"] == {}
    assert "already registered" not in log
    # the plugin file (loaded by the plugins manager) and the DAG file's parse each say it, one line each
    warnings = [line for line in log.splitlines() if "present twice" in line]
    assert len(warnings) == 2
    assert all(str(plugins / "operators" / "gce_vm_backup") in line for line in warnings)
