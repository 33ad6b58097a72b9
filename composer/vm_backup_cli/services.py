"""Child processes of `vm-backup local-env`, and the Postgres and Redis servers its Celery executor runs on.

``Processes`` starts each child as the leader of a session of its own, with its output in a log file, and
stops them (a stop signal, a wait, then SIGKILL of the whole session: also the task processes that Airflow
puts in process groups of their own). ``Postgres`` and ``Redis`` are Debian's servers (packages
``postgresql`` and ``redis-server``) run by us on loopback: Postgres listens on a unix socket only, in a
directory only its user can enter, and Redis on 127.0.0.1 with a free port and a random password.

PostgreSQL refuses to run as root (initdb and postgres exit), so as root both run as Debian's unprivileged
``postgres`` user (``setpriv``), and the cluster directory belongs to that user.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

DEBIAN_PACKAGES = ("postgresql", "redis-server")
DEBIAN_POSTGRES_ROOT = Path("/usr/lib/postgresql")  # Debian keeps initdb and postgres off PATH, by version
POSTGRES_USER = "postgres"  # the unprivileged user Debian's postgresql package creates
# The `celery` extra's distributions (looked up by name: importing the provider would load Airflow).
# Airflow 3 opens the metadata database twice: psycopg2 (sync) and asyncpg (its async engine).
CELERY_EXTRA = ("apache-airflow-providers-celery", "psycopg2-binary", "asyncpg", "redis")
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes on Linux, with the terminating NUL


class LocalEnvError(RuntimeError):
    """A process did not start, died, or a service did not answer; the message names the log file."""


class MissingRequirement(LocalEnvError):
    """Something to install first (Debian packages, a Python extra); the message says what, in one line."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


# ---- processes -----------------------------------------------------------------------------------
def session_pids(sid: int) -> list[int]:
    """Every live process of session ``sid`` (Linux ``/proc``; empty where there is none)."""
    pids = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.getsid(int(entry.name)) == sid:
                        pids.append(int(entry.name))
    return pids


def _gone(pid: int) -> bool:
    """The process has exited: no such pid, or a zombie (its parent has not reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def _kill_session(leader: subprocess.Popen[bytes], timeout: float) -> list[int]:
    """SIGKILL the leader's process group and every other process of its session, reap the leader, and
    wait up to ``timeout`` s for the others to go (SIGKILL takes effect when the kernel next runs each).

    Returns the pids still there after ``timeout``.
    """
    pids = session_pids(leader.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader.pid, signal.SIGKILL)  # the group led by our own child (start_new_session=True)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    leader.wait()
    deadline = time.monotonic() + timeout
    while [pid for pid in pids if not _gone(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if not _gone(pid)]


class Processes:
    """Named child processes, each leading a session of its own, each writing to ``<log_dir>/<name>.log``."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self._stop_signals: dict[str, int] = {}
        self._log_files: dict[str, IO[bytes]] = {}
        self._log_starts: dict[str, int] = {}  # where each log was when its process last started

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        stop_signal: int = signal.SIGTERM,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` as ``name``. ``stop_signal`` is what ``stop()`` sends first."""
        if name in self.running:
            raise LocalEnvError(f"{name} is already running (pid {self.running[name].pid})")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        old = self._log_files.pop(name, None)
        if old is not None:
            old.close()
        log = self.log(name).open("ab")
        self._log_files[name] = log
        self._log_starts[name] = log.tell()
        # A session of its own, so stop() reaches the process's whole tree and nothing else.
        process = subprocess.Popen(  # noqa: S603 - fixed arguments, no shell
            list(argv),
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
        )
        self.running[name] = process
        self._stop_signals[name] = stop_signal
        return process

    def check_alive(self) -> None:
        """Raises LocalEnvError naming the log file of a process that exited."""
        for name, process in self.running.items():
            code = process.poll()
            if code is not None:
                log = self.log(name)
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise LocalEnvError(f"{name} exited with code {code}; log {log}:\n{tail}")

    def output(self, name: str) -> str:
        """What ``name`` wrote to its log since it was last started."""
        log = self.log(name)
        if not log.exists():
            return ""
        with log.open("rb") as file:
            file.seek(self._log_starts.get(name, 0))
            return file.read().decode(errors="replace")

    def kill(self, name: str, timeout: float = 10.0) -> list[int]:
        """SIGKILL ``name`` and every process of its session at once, as a crash would; returns their pids
        once they are gone (SIGKILL takes effect when the kernel next runs each of them).

        Raises LocalEnvError naming the pids still there after ``timeout`` s.
        """
        process = self.running.pop(name)
        pids = sorted({process.pid, *session_pids(process.pid)})
        left = _kill_session(process, timeout)
        if left:
            raise LocalEnvError(f"{name}: processes {left} still there {timeout:.0f} s after SIGKILL")
        return pids

    def stop(self, timeout: float = 30.0) -> None:
        """Send every process its stop signal, wait up to ``timeout`` s, then SIGKILL what is left."""
        for name, process in self.running.items():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, self._stop_signals[name])
        deadline = time.monotonic() + timeout
        for process in self.running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            # Also children that outlived it (e.g. a task process in a process group of its own).
            _kill_session(process, timeout=5.0)
        self.running.clear()
        for log in self._log_files.values():
            log.close()
        self._log_files.clear()


# ---- what to install -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Binaries:
    postgres_bin: Path  # the directory holding initdb and postgres
    redis_server: Path


def _postgres_version(bindir: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", bindir.parent.name)) or (0,)


def find_binaries(path: str | None = None, debian_root: Path | None = None) -> Binaries:
    """PostgreSQL's initdb and postgres (from one directory: PATH's, else Debian's newest) and redis-server.

    Raises MissingRequirement naming the Debian packages to install.
    """
    path = os.environ.get("PATH", os.defpath) if path is None else path
    debian_root = DEBIAN_POSTGRES_ROOT if debian_root is None else debian_root
    candidates = []
    on_path = shutil.which("initdb", path=path)
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    candidates += sorted(debian_root.glob("*/bin"), key=_postgres_version, reverse=True)
    postgres_bin = next(
        (d for d in candidates if (d / "initdb").is_file() and (d / "postgres").is_file()), None
    )
    redis_server = shutil.which("redis-server", path=path)
    missing = [
        name
        for name, found in (("initdb/postgres", postgres_bin), ("redis-server", redis_server))
        if not found
    ]
    if postgres_bin is None or redis_server is None:
        raise MissingRequirement(
            f"--executor celery runs Debian's PostgreSQL and Redis, not found ({', '.join(missing)}): "
            f"apt-get install {' '.join(DEBIAN_PACKAGES)}"
        )
    return Binaries(postgres_bin, Path(redis_server))


def check_python_modules() -> None:
    """Raises MissingRequirement when the ``celery`` extra (the Celery provider, Postgres and Redis clients)
    is not installed."""
    missing = []
    for dist in CELERY_EXTRA:
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
    if missing:
        raise MissingRequirement(
            f"--executor celery needs the 'celery' extra, missing {', '.join(missing)}: "
            "uv sync --extra celery (make env installs every extra)"
        )


def check_celery_requirements() -> Binaries:
    """Everything ``--executor celery`` needs before it starts anything; raises MissingRequirement."""
    check_python_modules()
    binaries = find_binaries()
    _service_user()
    return binaries


# ---- Postgres ------------------------------------------------------------------------------------
def _service_user() -> pwd.struct_passwd | None:
    """The user Postgres runs as: ``postgres`` when we are root (it refuses root), else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(POSTGRES_USER)
    except KeyError:
        raise MissingRequirement(
            f"running as root, Postgres must run as the unprivileged user {POSTGRES_USER!r}, which does not "
            f"exist: apt-get install {' '.join(DEBIAN_PACKAGES)}"
        ) from None


class Postgres:
    """A PostgreSQL cluster under ``root`` (created on first start, kept), on a unix socket only.

    The socket lives in the cluster's directory (mode 0700, owned by the user Postgres runs as), so only that
    user and root can connect, and the port only names the socket. As root, when the ``postgres`` user
    cannot reach ``root`` (a parent directory closed to other users, e.g. /root or pytest's temporary
    folders), the cluster goes to a private temporary directory instead and is removed on ``stop()``
    (``temporary`` is True). Call ``stop()`` even if ``start()`` was never called.
    """

    PORT = 5432
    DATABASE = "airflow"
    ROLE = "airflow"

    def __init__(self, root: Path, bindir: Path, processes: Processes):
        self.bindir = bindir
        self.processes = processes
        self.user = _service_user()
        self.temporary = False
        self.root = self._claim(root.resolve())
        self.data_dir = self.root / "data"
        socket_path = self.root / f".s.PGSQL.{self.PORT}"
        if len(str(socket_path)) > SOCKET_PATH_MAX:
            self.stop()
            raise LocalEnvError(
                f"the Postgres socket path {socket_path} is longer than {SOCKET_PATH_MAX} bytes: "
                "choose a shorter --home"
            )

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Airflow connects with (psycopg2, over the unix socket)."""
        return f"postgresql+psycopg2://{self.ROLE}@/{self.DATABASE}?host={self.root}&port={self.PORT}"

    def _claim(self, root: Path) -> Path:
        """``root``, created and handed to the service user, or a private temporary directory."""
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)
        if self.user is None:
            return root
        os.chown(root, self.user.pw_uid, self.user.pw_gid)
        if self._as_user(["test", "-w", str(root), "-a", "-x", str(root)], cwd=Path("/")).returncode == 0:
            return root
        if not any(root.iterdir()):
            root.rmdir()  # ours, just made
        fallback = Path(tempfile.mkdtemp(prefix="vm-backup-postgres-"))
        os.chown(fallback, self.user.pw_uid, self.user.pw_gid)
        self.temporary = True
        return fallback

    def _argv(self, argv: Sequence[str]) -> list[str]:
        if self.user is None:
            return list(argv)
        # setpriv (util-linux) sets uid, gid and groups and execs: the pid we hold is the server's own.
        return [
            "setpriv",
            f"--reuid={self.user.pw_uid}",
            f"--regid={self.user.pw_gid}",
            "--init-groups",
            "--",
            *argv,
        ]

    def _env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        if self.user is not None:
            env.update(HOME=self.user.pw_dir, USER=self.user.pw_name, LOGNAME=self.user.pw_name)
        return env

    def _as_user(self, argv: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - fixed arguments, no shell
            self._argv(argv), env=self._env(), cwd=cwd, capture_output=True, text=True, check=False
        )

    def start(self, timeout: float = 60.0) -> None:
        """initdb on first start, then the server; returns once the ``airflow`` database accepts connections.

        Raises LocalEnvError (with initdb's output or the server's log) when a step fails or times out.
        """
        if not (self.data_dir / "PG_VERSION").is_file():
            result = self._as_user(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    f"--username={self.ROLE}",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                cwd=self.root,
            )
            if result.returncode != 0:
                raise LocalEnvError(f"initdb failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        settings = {
            "listen_addresses": "",  # no TCP at all: the unix socket below only
            "unix_socket_directories": str(self.root),
            "port": str(self.PORT),
            "max_connections": "200",
            # A development database: commits are not flushed to disk (a crash of the machine may lose
            # the last ones, a crash of a process loses nothing).
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        argv = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        # SIGINT is Postgres' fast shutdown (SIGTERM would wait for every client to disconnect).
        self.processes.spawn(
            "postgres", self._argv(argv), self._env(), stop_signal=signal.SIGINT, cwd=self.root
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            self.processes.check_alive()
            try:
                connection = psycopg2.connect(
                    host=str(self.root), port=self.PORT, user=self.ROLE, dbname="postgres"
                )
            except psycopg2.OperationalError as exc:
                last = exc
                time.sleep(0.2)
                continue
            try:
                connection.autocommit = True
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.DATABASE,))
                    if cursor.fetchone() is None:
                        cursor.execute(f"CREATE DATABASE {self.DATABASE}")
            finally:
                connection.close()
            return
        raise LocalEnvError(
            f"Postgres did not accept connections in {timeout:.0f} s ({last}); "
            f"log {self.processes.log('postgres')}"
        )

    def stop(self) -> None:
        """Removes the temporary cluster, if that is what was used (stop the server first)."""
        if self.temporary:
            shutil.rmtree(self.root, ignore_errors=True)


# ---- Redis ---------------------------------------------------------------------------------------
class Redis:
    """redis-server on 127.0.0.1 and a free port, with a random password and no persistence.

    Its config file (mode 0600, it holds the password) is ``<root>/redis.conf``.
    """

    def __init__(self, root: Path, binary: Path, processes: Processes):
        self.root = root.resolve()
        self.binary = binary
        self.processes = processes
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> None:
        """Raises LocalEnvError with the server's log when it does not answer a PING in ``timeout`` s."""
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "redis.conf"
        config.touch(mode=0o600)
        config.chmod(0o600)
        config.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {self.port}",
                    "protected-mode yes",
                    f"requirepass {self.password}",
                    'save ""',  # a broker for one session: nothing written to disk
                    "appendonly no",
                    f"dir {self.root}",
                    "daemonize no",
                    'logfile ""',
                ]
            )
            + "\n"
        )
        self.processes.spawn("redis", [str(self.binary), str(config)], {"PATH": os.environ.get("PATH", "")})
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2)
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        try:
            while time.monotonic() < deadline:
                self.processes.check_alive()
                try:
                    if client.ping():
                        return
                except redis.RedisError as exc:
                    last = exc
                time.sleep(0.2)
        finally:
            client.close()
        raise LocalEnvError(
            f"Redis did not answer in {timeout:.0f} s ({last}); log {self.processes.log('redis')}"
        )
