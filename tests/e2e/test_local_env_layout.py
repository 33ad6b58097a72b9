"""The local environment's Airflow home is laid out like Composer's bucket mount (no process started)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from vm_backup_cli import local_env
from vm_backup_cli.local_env import LocalAirflow, LocalEnvError

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


class _FlakyApi(http.server.BaseHTTPRequestHandler):
    """An API server that answers 500 "database is locked" to the first ``failures`` requests, then 200."""

    failures = 0
    seen: ClassVar[list[str]] = []

    def _answer(self) -> None:
        type(self).seen.append(self.command)
        if len(type(self).seen) <= type(self).failures:
            body, status = b'{"detail": "(sqlite3.OperationalError) database is locked"}', 500
        else:
            body, status = b'{"state": "running"}', 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PATCH = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalAirflow, list[float]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = LocalAirflow(tmp_path, "http://127.0.0.1:8089", port=server.server_address[1])
    env._token = "token"  # no auth round trip: the server answers any bearer
    _FlakyApi.seen = []
    slept: list[float] = []
    monkeypatch.setattr(local_env.time, "sleep", slept.append)
    yield env, slept
    server.shutdown()
    thread.join()


def test_a_read_that_meets_a_busy_database_is_read_again(flaky_api: tuple[LocalAirflow, list[float]]) -> None:
    env, slept = flaky_api
    _FlakyApi.failures = 2

    assert env.api_json("GET", "/dags/d/dagRuns/r") == {"state": "running"}
    assert _FlakyApi.seen == ["GET", "GET", "GET"]
    assert slept == [0.5, 1]


def test_a_read_that_stays_failed_raises_after_a_bounded_number_of_tries(
    flaky_api: tuple[LocalAirflow, list[float]],
) -> None:
    env, slept = flaky_api
    _FlakyApi.failures = 100

    with pytest.raises(LocalEnvError, match=r"GET /api/v2/dags/d: HTTP 500 .*database is locked"):
        env.api_json("GET", "/dags/d")
    assert len(_FlakyApi.seen) == 6
    assert sum(slept) == 9.5


def test_a_write_that_fails_is_not_sent_again(flaky_api: tuple[LocalAirflow, list[float]]) -> None:
    env, slept = flaky_api
    _FlakyApi.failures = 1

    with pytest.raises(LocalEnvError, match="PATCH /api/v2/dags/d: HTTP 500"):
        env.api_json("PATCH", "/dags/d", json={"is_paused": False})
    assert _FlakyApi.seen == ["PATCH"]
    assert slept == []
