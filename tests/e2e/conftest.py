"""One real Airflow environment (scheduler, DAG processor, triggerer, API server) per executor for the
whole e2e folder.

It is the same code as `vm-backup local-env` (``LocalAirflow``), started once per session and executor to
keep CI time down, with a config of its own: one group per behaviour under test, each on VMs of its own,
so the tests do not see each other's snapshots. The emulator runs ``TIME_SCALE`` times faster than real
time.

A test runs on the LocalExecutor environment (SQLite); ``@pytest.mark.executors("local", "celery")`` runs
it on the Celery one too (CeleryExecutor, two workers, Postgres, Redis: what Composer runs), as
``test_x[local]`` and ``test_x[celery]``. Tests are grouped by executor, so one environment runs at a time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gce_emulator import Emulator
from vm_backup_cli.local_env import LocalAirflow
from vm_backup_cli.services import MissingRequirement

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "e2e"  # gitignored; CI keeps it as the test artifact folder
PROJECT = "e2e-project"
ZONE = "us-central1-a"
TIME_SCALE = 20.0  # a 10 GB snapshot (15 + 5 + 10 simulated s) takes 1.5 s
# A stop takes 3 s: long enough that, without a working cap, the next VM's stop starts while it runs.
EMULATOR_TIMINGS = {"stop": 60.0}
# Airflow 3.3 race (apache/airflow#71172, open): the executor's "success" for one poke of a reschedule
# sensor can reach the scheduler after the next poke started; the scheduler then fails the running poke
# and the task is retried. The worker reports a poke about 2 s after it ends here, so the e2e config pokes
# every 4 s, and the tests that pin try numbers do not meet the race.

E2E_SEED: dict[str, Any] = {
    "projects": {
        PROJECT: {
            "zones": {
                ZONE: {
                    "instances": [
                        # e2e-full: a running VM with a data disk, a stopped VM; db in tier 2
                        {
                            "name": "full-web",
                            "disks": [
                                {"name": "full-web", "size_gb": 10, "boot": True},
                                {"name": "full-web-data", "size_gb": 60},
                            ],
                        },
                        {"name": "full-off", "status": "TERMINATED"},
                        {"name": "full-db"},
                        # e2e-capped (reschedule mode) and e2e-capped-worker: three VMs each, at most
                        # one per stage at once
                        {"name": "cap-1"},
                        {"name": "cap-2"},
                        {"name": "cap-3"},
                        {"name": "capw-1"},
                        {"name": "capw-2"},
                        {"name": "capw-3"},
                        {"name": "capd-1"},
                        {"name": "capd-2"},
                        {"name": "capd-3"},
                        # e2e-cap6: six VMs, at most two down at once (one run)
                        *({"name": f"c6-{n}"} for n in range(1, 7)),
                        # e2e-cap-kill: four VMs, cap 2; the first one's downtime task is killed
                        # mid-capture (its big disk: about 20 s real); the others' downtimes (about
                        # 12 s each) outlast the scheduler's detection of the kill, so a VM left down
                        # by the killed try must be counted against the cap
                        {
                            "name": "ck-1",
                            "disks": [
                                {"name": "ck-1", "size_gb": 10, "boot": True},
                                {"name": "ck-1-data", "size_gb": 400},
                            ],
                        },
                        *(
                            {
                                "name": f"ck-{n}",
                                "disks": [
                                    {"name": f"ck-{n}", "size_gb": 10, "boot": True},
                                    {"name": f"ck-{n}-data", "size_gb": 200},
                                ],
                            }
                            for n in range(2, 5)
                        ),
                        # e2e-kill: a snapshot long enough (about 20 s real) to kill its task mid-wait
                        {
                            "name": "kill-1",
                            "disks": [
                                {"name": "kill-1", "size_gb": 10, "boot": True},
                                {"name": "kill-1-data", "size_gb": 400},
                            ],
                        },
                        # e2e-kill-worker (celery): the Celery worker holding the stop is killed
                        {"name": "killw-1"},
                        # e2e-form: explicit VMs only, so the form's multi-select is a closed list
                        {"name": "form-1"},
                        {"name": "form-2"},
                        {"name": "form-3"},
                        # e2e-names: the grid names each VM's tasks by the VM
                        {"name": "names-web"},
                        {"name": "names-db"},
                    ]
                }
            }
        }
    }
}


def _vm(name: str) -> str:
    return f"{{project: {PROJECT}, zone: {ZONE}, instance: {name}}}"


def _targets(prefix: str, count: int) -> str:
    """``count`` explicit targets ``<prefix>-1`` ... as YAML list items of a group's ``targets``."""
    return "\n".join(f"      - {_vm(f'{prefix}-{n}')}" for n in range(1, count + 1))


E2E_CONFIG = f"""\
version: 1
deployment: test
defaults:
  start_date: "2026-01-01T00:00:00+00:00"
  poke_interval: 4              # > the worker's ~2 s lag after a poke: see conftest
  retries: 2
  retry_delay: 1
groups:
  e2e-full:
    description: Reschedule mode (slot-free), two tiers, one VM already stopped.
    schedule: null
    wait_mode: reschedule
    tiers:
      - - {_vm("full-web")}
        - {_vm("full-off")}
      - - {_vm("full-db")}
  e2e-capped:
    description: At most one VM down at once; the slot-free waits reschedule.
    schedule: null
    wait_mode: reschedule
    max_concurrent_vms: 1
    targets:
      - {_vm("cap-1")}
      - {_vm("cap-2")}
      - {_vm("cap-3")}
  e2e-capped-worker:
    description: At most one VM down at once; the slot-free waits poke on the worker.
    schedule: null
    wait_mode: worker
    max_concurrent_vms: 1
    targets:
      - {_vm("capw-1")}
      - {_vm("capw-2")}
      - {_vm("capw-3")}
  e2e-capped-defer:
    description: At most one VM down at once; the slot-free waits defer on the built-in trigger.
    schedule: null
    wait_mode: defer
    max_concurrent_vms: 1
    targets:
      - {_vm("capd-1")}
      - {_vm("capd-2")}
      - {_vm("capd-3")}
  e2e-cap6:
    description: Six VMs, at most two down at once, in one run.
    schedule: null
    max_concurrent_vms: 2
    targets:
{_targets("c6", 6)}
  e2e-cap-kill:
    description: Four VMs, cap 2; the test kills the first VM's downtime task mid-capture.
    schedule: null
    max_concurrent_vms: 2
    targets:
{_targets("ck", 4)}
  e2e-kill:
    description: Worker mode; the downtime task is killed mid-capture by the test.
    schedule: null
    wait_mode: worker
    targets:
      - {_vm("kill-1")}
  e2e-kill-worker:
    description: Worker mode; the Celery worker running the downtime task is killed by the test.
    schedule: null
    wait_mode: worker
    targets:
      - {_vm("killw-1")}
  e2e-form:
    description: Explicit VMs only; the trigger form's multi-select.
    schedule: null
    targets:
      - {_vm("form-1")}
      - {_vm("form-2")}
      - {_vm("form-3")}
  e2e-names:
    description: Two VMs; the grid names each one's mapped tasks by the VM.
    schedule: null
    targets:
      - {_vm("names-web")}
      - {_vm("names-db")}
"""

# Fast detection of a killed worker: its task instance stops heartbeating, and the scheduler fails it
# (then retries it) after TASK_INSTANCE_HEARTBEAT_TIMEOUT seconds. Option names from Airflow 3.3's
# config_templates/config.yml.
HEARTBEAT_TIMEOUT = 15
E2E_AIRFLOW_ENV = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
    # LocalExecutor forks this many workers; the Celery workers have 4 slots each. 2 CPUs in CI.
    "AIRFLOW__CORE__PARALLELISM": "8",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
}


GROUPS = (
    "e2e-full",
    "e2e-capped",
    "e2e-capped-worker",
    "e2e-cap6",
    "e2e-cap-kill",
    "e2e-kill",
    "e2e-kill-worker",
    "e2e-form",
    "e2e-names",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "executors(*names): run the e2e test on the environment of each executor (default: local only)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses the environment gets the ``executor`` it runs on, as a session-scoped param:
    pytest then orders the tests by executor and keeps one environment (and its emulator) at a time."""
    if "executor" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("executors")
        metafunc.parametrize("executor", marker.args if marker else ("local",), scope="session")


@pytest.fixture(scope="session")
def e2e_emulator(executor: str) -> Iterator[Emulator]:
    with Emulator(E2E_SEED, time_scale=TIME_SCALE, timings=EMULATOR_TIMINGS) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def airflow_env(
    executor: str, tmp_path_factory: pytest.TempPathFactory, e2e_emulator: Emulator
) -> Iterator[LocalAirflow]:
    """The running environment; every process is stopped at the end of the session, even on failure.

    Without Debian's PostgreSQL and Redis the Celery tests are skipped, except in CI (``CI`` set), where
    .ci/run installs them: there they fail.
    """
    home = tmp_path_factory.mktemp(f"local-env-{executor}")
    config = home / "e2e_config.yaml"
    config.write_text(E2E_CONFIG)
    try:
        env = LocalAirflow(
            home, e2e_emulator.url, config=config, extra_env=E2E_AIRFLOW_ENV, executor=executor
        )
    except MissingRequirement as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    started = time.monotonic()
    env.start()
    try:
        print(
            f"\nAirflow ({executor}) up in {time.monotonic() - started:.0f} s at {env.url}; "
            f"logs in {env.log_dir}"
        )
        for group in GROUPS:
            env.wait_for_dag(f"gce_vm_backup__{group}")
        yield env
    finally:
        env.stop()


@dataclass
class RunResult:
    """A finished DAG run, its task instances, and every state each task instance was seen in."""

    run: dict[str, Any]
    task_instances: list[dict[str, Any]]
    seen_states: dict[tuple[str, int], set[str]] = field(default_factory=dict)

    def ti(self, task_id: str, map_index: int = -1) -> dict[str, Any]:
        matches = [t for t in self.task_instances if t["task_id"] == task_id and t["map_index"] == map_index]
        assert len(matches) == 1, f"{task_id}[{map_index}] not in {self.states()}"
        return matches[0]

    def states(self) -> dict[str, str | None]:
        return {f"{t['task_id']}[{t['map_index']}]": t["state"] for t in self.task_instances}


def trigger_and_wait(
    env: LocalAirflow, dag_id: str, conf: dict[str, Any], *, run_id: str, timeout: float = 180.0
) -> RunResult:
    """Trigger ``dag_id`` with ``conf`` exactly as the form sends it, and wait until the run finished."""
    response = env.trigger(dag_id, conf, run_id=run_id)
    assert response.status_code == 200, response.text
    return wait_for(env, dag_id, run_id, timeout=timeout)


# How much longer a run may take on each environment: a Celery task starts in a fork of a worker's pool
# process, next to two workers, Postgres and Redis, all on the same 2 cores (shared in CI); with the
# machine busy, a run takes about 3 times as long as under the LocalExecutor.
RUN_TIMEOUT_FACTOR = {"local": 1.0, "celery": 3.0}


def run_timeout(env: LocalAirflow, seconds: float) -> float:
    """``seconds`` for a run on the LocalExecutor, scaled for ``env``'s executor."""
    return seconds * RUN_TIMEOUT_FACTOR[env.executor]


def wait_for(env: LocalAirflow, dag_id: str, run_id: str, *, timeout: float = 180.0) -> RunResult:
    """The finished run; ``timeout`` is for the LocalExecutor (see ``run_timeout``)."""
    seen: dict[tuple[str, int], set[str]] = {}

    def record(tis: list[dict[str, Any]]) -> None:
        for t in tis:
            seen.setdefault((t["task_id"], t["map_index"]), set()).add(t["state"])

    run = env.wait_for_run(dag_id, run_id, timeout=run_timeout(env, timeout), on_poll=record)
    return RunResult(run, env.task_instances(dag_id, run_id), seen)


def vm_snapshots(emulator: Emulator, instance: str) -> dict[str, list[dict[str, Any]]]:
    """This instance's snapshots in the emulator, by source disk name."""
    by_disk: dict[str, list[dict[str, Any]]] = {}
    for snapshot in emulator.snapshots(PROJECT):
        if snapshot.get("labels", {}).get("gce-vm-backup-instance") == instance:
            by_disk.setdefault(snapshot["sourceDisk"].rsplit("/", 1)[-1], []).append(snapshot)
    return by_disk
