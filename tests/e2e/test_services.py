"""The local environment's processes and services (Postgres, Redis), without Airflow.

The Postgres and Redis cases start Debian's real servers (a few seconds each); without them they are
skipped, except in CI (``CI`` set), where .ci/run installs them.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from vm_backup_cli import services
from vm_backup_cli.__main__ import main
from vm_backup_cli.local_env import LocalAirflow
from vm_backup_cli.services import (
    LocalEnvError,
    MissingRequirement,
    Postgres,
    Processes,
    Redis,
    find_binaries,
)

AS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def binaries() -> services.Binaries:
    try:
        return services.check_celery_requirements()
    except MissingRequirement as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A directory every user can traverse (not list): pytest's own temporary folders are closed (0700)."""
    path = Path(tempfile.mkdtemp(prefix="vm-backup-test-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for_file(path: Path, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} not written in {timeout} s")


# ---- processes -----------------------------------------------------------------------------------
# A parent that forks a child into a process group of its own (as Airflow's supervisor does with every
# task process), writes the child's pid to argv[1] and waits; SIGTERM ends the parent, not the child.
FORKING_PARENT = textwrap.dedent(
    """
    import os, sys, time
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        time.sleep(300)
        os._exit(0)
    open(sys.argv[1] + ".tmp", "w").write(str(pid))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(300)
    """
)


def test_stop_also_kills_children_that_left_the_process_group(tmp_path: Path) -> None:
    processes = Processes(tmp_path / "logs")
    leader = processes.spawn("parent", [sys.executable, "-c", FORKING_PARENT, str(tmp_path / "pid")], {})
    child = int(_wait_for_file(tmp_path / "pid"))
    assert os.getpgid(child) != leader.pid  # out of reach of killpg

    started = time.monotonic()
    processes.stop(timeout=5)

    assert leader.returncode == -signal.SIGTERM
    assert not _alive(child), "the child in a process group of its own outlived stop()"
    assert time.monotonic() - started < 5  # the leader stopped on SIGTERM: no wait for the timeout
    assert processes.running == {}


def test_kill_takes_down_the_whole_session_at_once_and_reports_the_pids(tmp_path: Path) -> None:
    processes = Processes(tmp_path / "logs")
    leader = processes.spawn("parent", [sys.executable, "-c", FORKING_PARENT, str(tmp_path / "pid")], {})
    child = int(_wait_for_file(tmp_path / "pid"))

    killed = processes.kill("parent")

    assert killed == sorted([leader.pid, child])
    assert leader.returncode == -signal.SIGKILL
    assert not _alive(child)
    assert "parent" not in processes.running
    processes.stop()


def test_a_process_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    processes = Processes(tmp_path / "logs")
    processes.spawn("failing", [sys.executable, "-c", "print('no config'); raise SystemExit(3)"], {})
    processes.running["failing"].wait()

    with pytest.raises(LocalEnvError, match=r"failing exited with code 3; log .*failing\.log:\nno config"):
        processes.check_alive()
    processes.stop()


def test_output_is_what_the_process_wrote_since_its_last_start(tmp_path: Path) -> None:
    processes = Processes(tmp_path / "logs")
    for word in ("first", "second"):
        processes.spawn("echo", [sys.executable, "-c", f"print({word!r})"], {})
        processes.running["echo"].wait()
        assert processes.output("echo") == f"{word}\n"
        processes.running.pop("echo")
    assert processes.log("echo").read_text() == "first\nsecond\n"  # the log keeps both
    processes.stop()


# ---- what to install -----------------------------------------------------------------------------
def test_missing_postgres_and_redis_name_the_debian_packages(tmp_path: Path) -> None:
    with pytest.raises(MissingRequirement) as raised:
        find_binaries(path=str(tmp_path), debian_root=tmp_path / "postgresql")

    message = str(raised.value)
    assert "\n" not in message
    assert "initdb/postgres, redis-server" in message
    assert message.endswith("apt-get install postgresql redis-server")


def test_postgres_is_found_in_debians_versioned_directory_newest_first(tmp_path: Path) -> None:
    for version in ("13", "15", "9.6"):
        bindir = tmp_path / "postgresql" / version / "bin"
        bindir.mkdir(parents=True)
        for name in ("initdb", "postgres"):
            (bindir / name).touch()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "redis-server").touch(mode=0o755)

    found = find_binaries(path=str(tmp_path / "bin"), debian_root=tmp_path / "postgresql")

    assert found.postgres_bin == tmp_path / "postgresql" / "15" / "bin"
    assert found.redis_server == tmp_path / "bin" / "redis-server"


def test_half_a_postgres_install_is_not_enough(tmp_path: Path) -> None:
    bindir = tmp_path / "postgresql" / "15" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "initdb").touch()  # no postgres beside it
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "redis-server").touch(mode=0o755)

    with pytest.raises(MissingRequirement, match=r"not found \(initdb/postgres\): apt-get install"):
        find_binaries(path=str(tmp_path / "bin"), debian_root=tmp_path / "postgresql")


def test_local_env_celery_without_the_servers_says_what_to_install_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(services, "DEBIAN_POSTGRES_ROOT", tmp_path / "postgresql")
    home = tmp_path / "home"

    assert main(["local-env", "--executor", "celery", "--home", str(home)]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("local-env: --executor celery runs Debian's PostgreSQL and Redis")
    assert captured.err.rstrip().endswith("apt-get install postgresql redis-server")
    assert not home.exists()  # nothing was started or laid out


def test_local_env_celery_without_the_extra_says_what_to_install_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.metadata.distribution

    def without_asyncpg(name: str) -> importlib.metadata.Distribution:
        if name == "asyncpg":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", without_asyncpg)

    assert main(["local-env", "--executor", "celery", "--home", str(tmp_path / "home")]) == 2

    err = capsys.readouterr().err
    assert err == (
        "local-env: --executor celery needs the 'celery' extra, missing asyncpg: "
        "uv sync --extra celery (make env installs every extra)\n"
    )


@pytest.mark.skipif(not AS_ROOT, reason="as root only")
def test_as_root_without_a_postgres_user_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "POSTGRES_USER", "no-such-user-here")

    with pytest.raises(MissingRequirement, match=r"unprivileged user 'no-such-user-here'.*apt-get install"):
        services._service_user()


def test_unknown_executor_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="executor must be one of"):
        LocalAirflow(tmp_path, "http://127.0.0.1:8089", executor="kubernetes")


# ---- Postgres and Redis --------------------------------------------------------------------------
@pytest.mark.slow
def test_postgres_keeps_its_cluster_between_runs_and_runs_unprivileged(
    binaries: services.Binaries, reachable_dir: Path
) -> None:
    import psycopg2

    root = reachable_dir / "home" / "postgres"
    for run in (1, 2):
        processes = Processes(reachable_dir / "logs")
        postgres = Postgres(root, binaries.postgres_bin, processes)
        assert (postgres.root, postgres.temporary) == (root, False)
        try:
            postgres.start()
            server = psutil.Process(processes.running["postgres"].pid)
            if AS_ROOT:
                assert server.username() == "postgres"
                assert root.stat().st_uid == server.uids().real
            assert server.net_connections(kind="inet") == []  # the unix socket only
            assert oct(root.stat().st_mode & 0o777) == "0o700"
            db = psycopg2.connect(host=str(root), port=Postgres.PORT, user="airflow", dbname="airflow")
            db.autocommit = True
            with db.cursor() as cursor:
                if run == 1:
                    cursor.execute("CREATE TABLE kept (n int)")
                    cursor.execute("INSERT INTO kept VALUES (42)")
                else:
                    cursor.execute("SELECT n FROM kept")
                    assert cursor.fetchall() == [(42,)]
            db.close()
        finally:
            processes.stop()
            postgres.stop()
        assert (root / "data" / "PG_VERSION").is_file()
    assert "received fast shutdown request" in processes.log("postgres").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not AS_ROOT, reason="as root only: another user cannot reach a closed directory")
def test_postgres_moves_to_a_temporary_cluster_when_its_user_cannot_reach_the_home(
    binaries: services.Binaries, tmp_path: Path
) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    processes = Processes(tmp_path / "logs")
    postgres = Postgres(closed / "postgres", binaries.postgres_bin, processes)
    try:
        assert postgres.temporary
        assert postgres.root.parent == Path(tempfile.gettempdir())
        assert not (closed / "postgres").exists()  # nothing half-made left in the home
        assert f"host={postgres.root}&" in postgres.url
        postgres.start()
    finally:
        processes.stop()
        postgres.stop()
    assert not postgres.root.exists()


def test_a_home_too_long_for_the_postgres_socket_is_refused(
    binaries: services.Binaries, reachable_dir: Path
) -> None:
    deep = reachable_dir / ("d" * 100)
    with pytest.raises(LocalEnvError, match=r"longer than 107 bytes: choose a shorter --home"):
        Postgres(deep / "postgres", binaries.postgres_bin, Processes(reachable_dir / "logs"))


@pytest.mark.slow
def test_redis_listens_on_loopback_and_wants_its_password(
    binaries: services.Binaries, tmp_path: Path
) -> None:
    import redis

    processes = Processes(tmp_path / "logs")
    server = Redis(tmp_path / "redis", binaries.redis_server, processes)
    try:
        server.start()
        assert oct((tmp_path / "redis" / "redis.conf").stat().st_mode & 0o777) == "0o600"
        anonymous = redis.Redis(host="127.0.0.1", port=server.port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        assert client.config_get("save") == {"save": ""}
        anonymous.close()
        client.close()
    finally:
        processes.stop()


def test_celery_environment_points_airflow_at_postgres_redis_and_two_workers(
    binaries: services.Binaries, tmp_path: Path
) -> None:
    env = LocalAirflow(tmp_path / "home", "http://127.0.0.1:8089", executor="celery", port=18080)
    try:
        assert env.postgres is not None
        assert env.redis is not None
        assert env.env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        conn = env.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert conn == f"postgresql+psycopg2://airflow@/airflow?host={env.postgres.root}&port=5432"
        assert env.env["AIRFLOW__CELERY__RESULT_BACKEND"] == f"db+{conn}"
        assert env.env["AIRFLOW__CELERY__BROKER_URL"] == (
            f"redis://:{env.redis.password}@127.0.0.1:{env.redis.port}/0"
        )
        assert env.workers == ("worker-1", "worker-2")
        ports = set(env._worker_ports.values())
        assert len(ports) == 2
        assert int(env.env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"]) not in ports
        described = env.describe()
        assert "CeleryExecutor, workers worker-1 (log server port" in described
        assert f"Redis on 127.0.0.1:{env.redis.port}" in described
        assert env.redis.password not in described
    finally:
        env.stop()
    assert not env.postgres.temporary or not env.postgres.root.exists()


def test_local_executor_environment_is_unchanged(tmp_path: Path) -> None:
    env = LocalAirflow(tmp_path / "home", "http://127.0.0.1:8089", port=18080)

    assert env.env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'home' / 'airflow.db'}"
    assert not [key for key in env.env if key.startswith("AIRFLOW__CELERY__")]
    assert (env.postgres, env.redis, env.workers) == (None, None, ())
    assert not (tmp_path / "home" / "postgres").exists()
