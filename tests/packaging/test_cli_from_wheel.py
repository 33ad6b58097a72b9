"""`vm-backup` from an installed wheel (not a clone): `dag-file` writes the wheel's DAG file, `demo` and
`local-env` lay out their Airflow home from the wheel; without the DAG file each says what it needs in one
line, exit code 2. A subcommand whose extra is missing says which extra."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vm_backup_cli import __main__ as cli
from vm_backup_cli.sources import find_sources

REPO = Path(__file__).resolve().parents[2]


def run_from(site: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m vm_backup_cli ...`` with the wheel's files first on sys.path (as an installed wheel)."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, *argv], env=env, capture_output=True, text=True, check=False, cwd=cwd, timeout=300
    )


@pytest.mark.slow
def test_dag_file_writes_the_wheels_dag_file(installed_wheel, tmp_path):
    result = run_from(installed_wheel, "-m", "vm_backup_cli", "dag-file", "--out", "dags", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "dags" / "gce_vm_backup_dags.py").read_bytes() == (
        REPO / "dags" / "gce_vm_backup_dags.py"
    ).read_bytes()
    assert "Next: the config at dags/gce_vm_backup.yaml" in result.stdout
    # a different file of that name is kept unless --force
    (tmp_path / "dags" / "gce_vm_backup_dags.py").write_text("# mine\n")
    again = run_from(installed_wheel, "-m", "vm_backup_cli", "dag-file", "--out", "dags", cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr == "dag-file: dags/gce_vm_backup_dags.py exists and differs; --force replaces it\n"
    forced = run_from(
        installed_wheel, "-m", "vm_backup_cli", "dag-file", "--out", "dags", "--force", cwd=tmp_path
    )
    assert forced.returncode == 0
    assert (tmp_path / "dags" / "gce_vm_backup_dags.py").read_text() != "# mine\n"


@pytest.mark.slow
def test_demo_and_local_env_lay_out_their_home_from_the_wheel(installed_wheel, tmp_path):
    script = """
import json, sys
from pathlib import Path
import gce_vm_backup
from vm_backup_cli.demo import prepare_airflow_home
from vm_backup_cli.local_env import LocalAirflow, default_home
from vm_backup_cli.sources import find_sources
home = Path(sys.argv[1])
env = prepare_airflow_home(home / "demo", "http://127.0.0.1:1")
local = LocalAirflow(home / "local", "http://127.0.0.1:1", port=1)
print(json.dumps({
    "package": gce_vm_backup.__file__,
    "sources": [str(find_sources().dag_file), find_sources().plugins],
    "demo_plugins": env["AIRFLOW__CORE__PLUGINS_FOLDER"],
    "local_plugins": local.env["AIRFLOW__CORE__PLUGINS_FOLDER"],
    "default_home": str(default_home()),
}))
"""
    result = run_from(installed_wheel, "-c", script, str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    import json

    found = json.loads(result.stdout.splitlines()[-1])
    assert found["package"] == str(installed_wheel / "gce_vm_backup" / "__init__.py")
    assert found["sources"] == [
        str(installed_wheel / "vm_backup_cli" / "data" / "gce_vm_backup_dags.py"),
        None,
    ]
    for home in ("demo", "local/gcs"):
        dags = tmp_path / home / "dags"
        assert sorted(p.name for p in dags.iterdir()) == ["gce_vm_backup.yaml", "gce_vm_backup_dags.py"]
        plugins = tmp_path / home / "plugins"
        assert plugins.is_dir()
        assert not plugins.is_symlink()
        assert list(plugins.iterdir()) == []  # the entry point registers the page
    assert found["demo_plugins"] == str(tmp_path / "demo" / "plugins")
    assert found["local_plugins"] == str(tmp_path / "local" / "gcs" / "plugins")
    assert found["default_home"] == str(tmp_path / ".airflow" / "local-env")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["demo", "local-env", "dag-file --out dags"])
def test_without_the_dag_file_each_command_says_what_it_needs_in_one_line(installed_wheel, tmp_path, command):
    (installed_wheel / "vm_backup_cli" / "data" / "gce_vm_backup_dags.py").unlink()
    result = run_from(installed_wheel, "-m", "vm_backup_cli", *command.split(), cwd=tmp_path)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    name = command.split()[0]
    assert result.stderr == (
        f"{name}: no DAG file: neither a clone of the repository nor "
        f"{installed_wheel / 'vm_backup_cli' / 'data' / 'gce_vm_backup_dags.py'} (a wheel's copy); run this "
        "from a clone of the repository or reinstall gce-vm-backup from its wheel\n"
    )
    assert not (tmp_path / ".airflow").exists()  # nothing started, nothing laid out


def test_in_a_clone_the_sources_are_the_clones():
    sources = find_sources(shipped_dag_file=Path("/nonexistent"))
    assert sources.dag_file == REPO / "dags" / "gce_vm_backup_dags.py"
    assert sources.plugins == REPO / "plugins"


def test_a_subcommand_whose_extra_is_missing_says_which_in_one_line(monkeypatch, capsys):
    real = importlib.import_module

    def without_pathspec(name: str, *args, **kwargs):
        if name == "vm_backup_cli.sync":
            raise ModuleNotFoundError("No module named 'pathspec'", name="pathspec")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(cli.importlib, "import_module", without_pathspec)
    code = cli.main(["sync", "--environment", "x", "--location", "y"])

    assert code == 2
    assert capsys.readouterr().err == (
        "vm-backup sync needs pathspec, which is not installed: pip install 'gce-vm-backup[cli]'\n"
    )
    assert cli.main(["validate", str(REPO / "dags" / "gce_vm_backup.yaml")]) == 0  # the others still work


def test_a_broken_import_of_our_own_is_not_taken_for_a_missing_extra(monkeypatch):
    real = importlib.import_module

    def broken(name: str, *args, **kwargs):
        if name == "vm_backup_cli.sync":
            raise ModuleNotFoundError("No module named 'gce_vm_backup.gone'", name="gce_vm_backup.gone")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(cli.importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError, match=r"gce_vm_backup\.gone"):
        cli.build_parser()
