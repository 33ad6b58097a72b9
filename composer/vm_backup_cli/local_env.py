"""`vm-backup local-env`: a real Airflow 3 environment on loopback, against the Compute Engine emulator.

Starts the emulator (demo fleet) and Airflow's components one by one as subprocesses: scheduler,
DAG processor, triggerer and API server (REST API + UI) on 127.0.0.1 and a free port. With
``--executor local`` (the default) the scheduler runs the tasks (LocalExecutor) on SQLite; with
``--executor celery`` it is what Composer runs: the CeleryExecutor with two ``airflow celery worker``
processes, Postgres as the metadata database (and Celery's result backend) and Redis as the broker
(``services.py``). The Airflow home is laid out like a Composer bucket mount: ``<home>/gcs/dags`` holds
the thin DAG file and the config, ``<home>/gcs/plugins`` is a symlink to the repository's ``plugins/``
(from an installed wheel: an empty folder; the installed package's entry point registers the page).
Ctrl-C or SIGTERM stops every process (Airflow's first, then Redis and Postgres: terminate, wait, kill).

``LocalAirflow`` is the reusable part (start/stop, token, trigger, wait for a run); the e2e tests use it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests

from gce_emulator.__main__ import port_number, time_scale
from vm_backup_cli.demo import directory, prepare_airflow_home, regular_file
from vm_backup_cli.services import (
    LocalEnvError,
    MissingRequirement,
    Postgres,
    Processes,
    Redis,
    check_celery_requirements,
    free_port,
)
from vm_backup_cli.sources import MissingSource, checkout_root, find_sources

__all__ = ["EXECUTORS", "LocalAirflow", "LocalEnvError", "free_port"]

COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
EXECUTORS = ("local", "celery")
CELERY_WORKERS = ("worker-1", "worker-2")
HEALTH_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
FINISHED_RUN_STATES = frozenset({"success", "failed"})
DEFAULT_HOME = Path(".airflow") / "local-env"  # .airflow/ is gitignored
USERNAME = "admin"


class LocalAirflow:
    """Airflow 3 (scheduler, DAG processor, triggerer, API server) in ``home``, talking to ``emulator_url``.

    ``executor`` is ``local`` (LocalExecutor on SQLite in ``home``) or ``celery`` (CeleryExecutor with the
    workers ``CELERY_WORKERS``, each running ``worker_concurrency`` tasks at once; Postgres in
    ``<home>/postgres`` and Redis, see ``services.py``). ``config`` is the backup config copied next to
    the DAG file (default: the demo config). ``extra_env`` adds or overrides environment variables (e.g.
    ``AIRFLOW__SCHEDULER__...``) for every component. Use as a context manager, or call ``start()`` and
    always ``stop()``.

    Raises MissingRequirement (celery) when Debian's PostgreSQL or Redis, the ``postgres`` user (as root)
    or the ``celery`` extra is missing.
    """

    def __init__(
        self,
        home: Path,
        emulator_url: str,
        *,
        config: Path | None = None,
        port: int | None = None,
        password: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        executor: str = "local",
        worker_concurrency: int = 4,
    ):
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
        self.home = home.resolve()
        self.executor = executor
        self.worker_concurrency = worker_concurrency
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.username = USERNAME
        self.password = password or secrets.token_urlsafe(12)
        self.emulator_url = emulator_url
        self.config = config
        self.extra_env = dict(extra_env or {})
        self.dags_folder = self.home / "gcs" / "dags"
        self.plugins_folder = self.home / "gcs" / "plugins"
        self.log_dir = self.home / "component-logs"
        # Airflow's processes stop before the services they use.
        self.components = Processes(self.log_dir)
        self.services = Processes(self.log_dir)
        self.postgres: Postgres | None = None
        self.redis: Redis | None = None
        self.workers: tuple[str, ...] = ()
        self._worker_ports: dict[str, int] = {}
        if executor == "celery":
            binaries = check_celery_requirements()
            self.postgres = Postgres(self.home / "postgres", binaries.postgres_bin, self.services)
            self.redis = Redis(self.home / "redis", binaries.redis_server, self.services)
            self.workers = CELERY_WORKERS
            # Each worker serves its task logs on a port of its own, as on separate machines.
            self._worker_ports = {name: free_port() for name in self.workers}
        self._token: str | None = None
        self.session = requests.Session()
        try:
            self.env = self._prepare()
        except BaseException:
            self.stop()  # a temporary Postgres directory, if one was made
            raise

    def describe(self) -> str:
        """Lines (each ending in a newline) on the executor and, for celery, the workers and services."""
        if self.postgres is None or self.redis is None:
            return f"  executor: LocalExecutor, metadata database {self.home / 'airflow.db'}\n"
        workers = ", ".join(f"{w} (log server port {self._worker_ports[w]})" for w in self.workers)
        kept = "temporary, removed on stop" if self.postgres.temporary else "kept between runs"
        return (
            f"  executor: CeleryExecutor, workers {workers}\n"
            f"  metadata database and Celery results: Postgres on the unix socket in {self.postgres.root} "
            f"({kept})\n"
            f"  broker: Redis on 127.0.0.1:{self.redis.port}\n"
        )

    # ---- layout and environment ----------------------------------------------------------------
    def _prepare(self) -> dict[str, str]:
        """The Composer-like layout under ``home`` and the environment every component runs with."""
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            sources = find_sources()
        except MissingSource as exc:
            raise MissingRequirement(str(exc)) from None
        if self.plugins_folder.is_symlink():
            self.plugins_folder.unlink()
        # The demo's helper copies the DAG file and the demo config into <gcs>/dags (and, from an
        # installed wheel, makes <gcs>/plugins an empty folder).
        env = prepare_airflow_home(self.home / "gcs", self.emulator_url, sources)
        if self.config is not None:
            shutil.copy(self.config, self.dags_folder / "gce_vm_backup.yaml")
        if sources.plugins is not None:
            if self.plugins_folder.exists():
                raise LocalEnvError(f"{self.plugins_folder} exists and is not a symlink; remove it")
            self.plugins_folder.symlink_to(sources.plugins, target_is_directory=True)
        self.log_dir.mkdir(exist_ok=True)
        passwords = self.home / "simple_auth_manager_passwords.json"
        passwords.write_text(json.dumps({self.username: self.password}) + "\n")
        passwords.chmod(0o600)
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.plugins_folder),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
                # Scheduler (signs task tokens) and API server (checks them) must share the secret.
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.postgres is not None and self.redis is not None:
            env.update(
                {
                    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url,
                    "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
                    # What Airflow derives when it is unset: the metadata database, through Celery's
                    # SQLAlchemy backend.
                    "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{self.postgres.url}",
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                }
            )
        env.pop("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", None)
        env.update(self.extra_env)
        return env

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 240.0) -> LocalAirflow:
        """Start Postgres and Redis (celery), migrate the database, start every component and wait until
        the health endpoint says healthy and every Celery worker consumes from the broker.

        Raises LocalEnvError (after stopping whatever started) when a step fails or times out.
        """
        try:
            if self.postgres is not None and self.redis is not None:
                self.postgres.start()
                self.redis.start()
            self._migrate()
            for component in COMPONENTS:
                self._spawn(component)
            for worker in self.workers:
                self._spawn_worker(worker)
            self.wait_healthy(timeout)
            for worker in self.workers:
                self.wait_worker_ready(worker, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _migrate(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise LocalEnvError(
                f"`airflow db migrate` failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )

    def _spawn(self, component: str) -> None:
        self.components.spawn(component, [sys.executable, "-m", "airflow", component], self.env)

    def _spawn_worker(self, worker: str) -> None:
        env = {**self.env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self._worker_ports[worker])}
        argv = [sys.executable, "-m", "airflow", "celery", "worker", "--celery-hostname", f"{worker}@%h"]
        argv += ["--concurrency", str(self.worker_concurrency)]
        self.components.spawn(worker, argv, env)

    def check_alive(self) -> None:
        """Raises LocalEnvError naming the log file of a component or service that exited."""
        self.services.check_alive()
        self.components.check_alive()

    def health(self) -> dict[str, Any]:
        response = self.session.get(f"{self.url}/api/v2/monitor/health", timeout=5)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def wait_healthy(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        last: Any = "no answer"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                body = self.health()
                last = body
                if all((body.get(c) or {}).get("status") == "healthy" for c in HEALTH_COMPONENTS):
                    return
            except requests.RequestException as exc:
                last = exc
            time.sleep(1)
        raise LocalEnvError(
            f"Airflow not healthy after {timeout:.0f} s (last: {last}); logs in {self.log_dir}"
        )

    def wait_worker_ready(self, worker: str, timeout: float = 240.0) -> None:
        """Returns once ``worker`` (since it was last started) consumes from the broker: Celery then logs
        "<hostname> ready." (celery/apps/worker.py, ``on_consumer_ready``).

        Raises LocalEnvError naming the worker's log when it does not in ``timeout`` s, or exits.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if re.search(rf"\b{re.escape(worker)}@\S+ ready\.", self.components.output(worker)):
                return
            time.sleep(1)
        raise LocalEnvError(
            f"Celery {worker} not ready after {timeout:.0f} s; log {self.components.log(worker)}"
        )

    def worker_of(self, pid: int) -> str | None:
        """The Celery worker whose process tree holds ``pid`` (e.g. a task instance's), if any."""
        try:
            sid = os.getsid(pid)
        except OSError:
            return None
        for worker in self.workers:
            process = self.components.running.get(worker)
            if process is not None and process.pid == sid:
                return worker
        return None

    def kill_worker(self, worker: str) -> list[int]:
        """SIGKILL a Celery worker and every process it started, at once (a crashed machine or pod).

        Returns the pids killed. ``start_worker`` starts it again.
        """
        if worker not in self.workers:
            raise ValueError(f"no Celery worker {worker!r}; workers: {self.workers}")
        return self.components.kill(worker)

    def start_worker(self, worker: str, timeout: float = 240.0) -> None:
        self._spawn_worker(worker)
        self.wait_worker_ready(worker, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop Airflow's processes, then Redis and Postgres: the stop signal to each process group, up to
        ``timeout`` s, then SIGKILL to every process of its session."""
        self.components.stop(timeout)
        self.services.stop(timeout)
        if self.postgres is not None:
            self.postgres.stop()
        self.session.close()

    def __enter__(self) -> LocalAirflow:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- REST API ------------------------------------------------------------------------------
    def token(self) -> str:
        """A bearer token from the simple auth manager (``POST /auth/token``), cached."""
        if self._token is None:
            response = self.session.post(
                f"{self.url}/auth/token",
                json={"username": self.username, "password": self.password},
                timeout=30,
            )
            if response.status_code != 201:
                raise LocalEnvError(f"POST /auth/token: HTTP {response.status_code} {response.text[:500]}")
            self._token = str(response.json()["access_token"])
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A call to ``/api/v2<path>`` with the bearer token; returns the response whatever its status."""
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        return self.session.request(method, f"{self.url}/api/v2{path}", headers=headers, timeout=30, **kwargs)

    def api_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON body of a call; raises on HTTP 4xx/5xx. A GET that meets a 5xx is sent again, up to five
        more times over 9.5 s: on SQLite a busy API server answers 500 "database is locked" while the
        scheduler writes, and a read has nothing to undo. Any other method is sent once."""
        response = self.api(method, path, **kwargs)
        if method == "GET":
            for wait in (0.5, 1, 2, 2, 4):
                if response.status_code < 500:
                    break
                time.sleep(wait)
                response = self.api(method, path, **kwargs)
        if response.status_code >= 400:
            raise LocalEnvError(f"{method} /api/v2{path}: HTTP {response.status_code} {response.text[:1000]}")
        return response.json()

    def import_errors(self) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = self.api_json("GET", "/importErrors")["import_errors"]
        return errors

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """The DAG once the DAG processor has parsed it; raises with the import errors if it never shows."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            response = self.api("GET", f"/dags/{dag_id}")
            if response.status_code == 200:
                dag: dict[str, Any] = response.json()
                return dag
            time.sleep(1)
        raise LocalEnvError(
            f"DAG {dag_id} not parsed after {timeout:.0f} s; import errors: {self.import_errors()}"
        )

    def unpause(self, dag_id: str) -> None:
        self.api_json("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: Mapping[str, Any], run_id: str | None = None) -> requests.Response:
        """``POST /dags/{dag_id}/dagRuns`` with ``conf`` as the trigger form sends it; the raw response."""
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf)}
        if run_id is not None:
            body["dag_run_id"] = run_id
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.api_json("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})[
            "dag_runs"
        ]
        return runs

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run, page by page (the API serves at most 100 a page, whatever the
        limit asked: a 40-VM run has more)."""
        tis: list[dict[str, Any]] = []
        while True:
            body = self.api_json(
                "GET",
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": len(tis)},
            )
            page = body["task_instances"]
            tis.extend(page)
            if not page or len(tis) >= int(body.get("total_entries", 0)):
                return tis

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, key: str = "return_value"
    ) -> Any:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.api_json("GET", path, params={"map_index": map_index, "deserialize": True})["value"]

    def reschedule_counts(self, dag_id: str, run_id: str) -> dict[tuple[str, int], int]:
        """How often each task instance of the run was rescheduled, by (task id, map index).

        Read from the metadata database (read-only): the REST API does not expose task reschedules.
        """
        query = (
            "SELECT ti.task_id, ti.map_index, COUNT(*) FROM task_reschedule AS tr"
            " JOIN task_instance AS ti ON ti.id = tr.ti_id"
            " WHERE ti.dag_id = %s AND ti.run_id = %s GROUP BY ti.task_id, ti.map_index"
        )
        return {(task_id, index): count for task_id, index, count in self._query(query, (dag_id, run_id))}

    def _query(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the metadata database (``%s`` placeholders)."""
        if self.postgres is None:
            uri = f"file:{self.home / 'airflow.db'}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
                return list(db.execute(query.replace("%s", "?"), params))
        import psycopg2

        db = psycopg2.connect(
            host=str(self.postgres.root),
            port=self.postgres.PORT,
            user=Postgres.ROLE,
            dbname=Postgres.DATABASE,
        )
        try:
            db.set_session(readonly=True)
            with db.cursor() as cursor:
                cursor.execute(query, params)
                return list(cursor.fetchall())
        finally:
            db.close()

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = 300.0,
        *,
        on_poll: Callable[[list[dict[str, Any]]], None] | None = None,
        interval: float = 0.5,
    ) -> dict[str, Any]:
        """The DAG run once it is success or failed. ``on_poll`` sees the task instances at every poll.

        Raises LocalEnvError when a component died or the run did not finish in ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            run: dict[str, Any] = self.api_json("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if on_poll is not None:
                on_poll(self.task_instances(dag_id, run_id))
            if run["state"] in FINISHED_RUN_STATES:
                return run
            time.sleep(interval)
        states = {
            f"{t['task_id']}[{t['map_index']}]": t["state"] for t in self.task_instances(dag_id, run_id)
        }
        raise LocalEnvError(f"run {dag_id}/{run_id} not finished after {timeout:.0f} s; tasks: {states}")


# ---- the command ---------------------------------------------------------------------------------
def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "local-env",
        help="run Airflow 3 (scheduler, DAG processor, triggerer, UI) locally against the emulator",
    )
    parser.add_argument(
        "--home",
        type=directory,
        help=f"Airflow home (default: <repo>/{DEFAULT_HOME}, kept between runs)",
    )
    parser.add_argument(
        "--config", type=regular_file, help="backup config for the DAG file (default: the demo config)"
    )
    parser.add_argument(
        "--port", type=port_number, default=0, help="API server / UI port (default: a free port)"
    )
    parser.add_argument("--time-scale", type=time_scale, default=60.0, help="emulator speed-up (default 60)")
    parser.add_argument("--password", help="password of the UI user 'admin' (default: a new random one)")
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: LocalExecutor on SQLite (default); celery: as Composer, CeleryExecutor with two "
        "workers, Postgres and Redis (Debian's postgresql and redis-server)",
    )
    parser.set_defaults(func=run)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM ends the command like Ctrl-C: every component is stopped


def default_home() -> Path:
    """``<repo>/.airflow/local-env`` (.airflow/ is gitignored), wherever the command is run from; from an
    installed wheel, ``.airflow/local-env`` in the current folder."""
    root = checkout_root()
    return (root if root is not None else Path.cwd()) / DEFAULT_HOME


def run(args: argparse.Namespace) -> int:
    from gce_emulator import Emulator
    from gce_emulator.__main__ import DEMO_SEED

    if args.config is not None and not args.config.is_file():
        print(f"local-env: --config: no such file {args.config}", file=sys.stderr)
        return 2
    try:
        find_sources()
    except MissingSource as exc:
        print(f"local-env: {exc}", file=sys.stderr)
        return 2
    if args.executor == "celery":
        try:
            check_celery_requirements()
        except MissingRequirement as exc:
            print(f"local-env: {exc}", file=sys.stderr)
            return 2
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Emulator(DEMO_SEED, time_scale=args.time_scale) as emulator:
            try:
                env = LocalAirflow(
                    args.home or default_home(),
                    emulator.url,
                    config=args.config,
                    port=args.port or None,
                    password=args.password,
                    executor=args.executor,
                )
            except LocalEnvError as exc:
                print(f"local-env: {exc}", file=sys.stderr)
                return 2 if isinstance(exc, MissingRequirement) else 1
            print(f"Compute Engine emulator on {emulator.url} (demo fleet, time x{args.time_scale:g})")
            print(f"Starting Airflow in {env.home} (component logs in {env.log_dir}) ...", flush=True)
            try:
                env.start()  # stops what it started if it fails or is interrupted
                print(
                    f"\nAirflow is ready: {env.url}\n  login: {env.username} / {env.password}\n"
                    f"  DAGs: {env.dags_folder}\n  plugins: {env.plugins_folder}\n{env.describe()}"
                    "Press Ctrl-C to stop.",
                    flush=True,
                )
                while True:
                    time.sleep(2)
                    env.check_alive()
            except KeyboardInterrupt:
                pass
            except LocalEnvError as exc:
                print(f"local-env: {exc}", file=sys.stderr)
                return 1
            finally:
                # A second Ctrl-C must not cut the shutdown short and leave processes behind.
                for signum in previous:
                    signal.signal(signum, signal.SIG_IGN)
                print("Stopping Airflow ...", flush=True)
                env.stop()
        print("Stopped.")
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
