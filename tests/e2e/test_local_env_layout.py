"""The local environment's Airflow home is laid out like Composer's bucket mount (no process started)."""

from __future__ import annotations

import json
from pathlib import Path

from vm_backup_cli.local_env import LocalAirflow

from ..conftest import REPO


def test_home_mirrors_the_composer_bucket_mount_and_points_at_the_emulator(tmp_path: Path) -> None:
    config = tmp_path / "my_config.yaml"
    config.write_text("version: 1\ngroups: {}\n")
    env = LocalAirflow(tmp_path / "home", "http://127.0.0.1:8089", config=config, port=18080, password="pw")

    home = tmp_path / "home"
    assert sorted(p.name for p in (home / "gcs" / "dags").iterdir()) == [
        "gce_vm_backup.yaml",
        "gce_vm_backup_dags.py",
    ]
    assert (home / "gcs" / "dags" / "gce_vm_backup.yaml").read_text() == config.read_text()
    assert (home / "gcs" / "plugins").is_symlink()
    assert (home / "gcs" / "plugins").resolve() == REPO / "plugins"
    assert env.env["AIRFLOW__CORE__DAGS_FOLDER"] == str(home / "gcs" / "dags")
    assert env.env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(home / "gcs" / "plugins")
    assert env.env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env.env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env.env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    connection = json.loads(env.env["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"])
    assert connection["extra"]["compute_endpoint"] == "http://127.0.0.1:8089"
    assert json.loads((home / "simple_auth_manager_passwords.json").read_text()) == {"admin": "pw"}


def test_preparing_an_existing_home_again_keeps_it_usable(tmp_path: Path) -> None:
    first = LocalAirflow(tmp_path, "http://127.0.0.1:8089", port=18080)
    second = LocalAirflow(tmp_path, "http://127.0.0.1:9099", port=18081)

    assert (tmp_path / "gcs" / "plugins").resolve() == REPO / "plugins"
    assert first.password != second.password
    stored = json.loads((tmp_path / "simple_auth_manager_passwords.json").read_text())
    assert stored == {"admin": second.password}
