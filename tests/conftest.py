"""Shared test setup.

Airflow reads AIRFLOW_HOME when it is first imported, so the tests get their own throw-away home here,
before any test module imports Airflow: nothing touches ~/airflow, and runs are hermetic. Under
pytest-xdist (``make pytest`` runs ``-n``) every worker is a process of its own, so each worker has its
own home, SQLite DB and dags folder; the emulators and the e2e Airflow bind free loopback ports.
"""

import fcntl
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="gce-vm-backup-tests-"))
# One folder per pytest run, shared by its xdist workers (they inherit the variable from the controller,
# which imports this file before it starts them): it holds the migrated template DB.
_SHARED_VAR = "GCE_VM_BACKUP_TESTS_SHARED"
_OWNS_SHARED = _SHARED_VAR not in os.environ
if _OWNS_SHARED:
    os.environ[_SHARED_VAR] = tempfile.mkdtemp(prefix="gce-vm-backup-tests-shared-")
SHARED = Path(os.environ[_SHARED_VAR])
os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(AIRFLOW_HOME / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.pop("GCE_VM_BACKUP_COMPUTE_ENDPOINT", None)
os.environ.pop("GCE_VM_BACKUP_CONFIG", None)

pytest_plugins = ["gce_emulator.pytest_plugin"]


# ---- config text helpers, shared by the config tests and the bad-input corpus ----
def config(groups: str, defaults: str = 'start_date: "2026-01-01T00:00:00+00:00"') -> str:
    return f"version: 1\ndeployment: test\ndefaults:\n  {defaults}\ngroups:\n{groups}"


def group(body: str, name: str = "web") -> str:
    return f"  {name}:\n" + "".join(f"    {line}\n" for line in body.strip("\n").splitlines())


TARGET = "targets: [{project: demo-project, zone: us-central1-a, instance: web-1}]"


# ---- VMs down at once, from the Compute Engine emulator's own history (its stop and start operations) ----
def most_down_at_once(emulator: Any) -> tuple[int, list[str]]:
    """The most VMs down at one moment: a VM is down from its stop request until its next start (or
    resume) operation is DONE, or to the end when there is none. Returns the count and those VMs."""
    with emulator.world.lock:
        emulator.world.tick()
        ops = sorted(emulator.world.operations.values(), key=lambda op: op.insert_time)
        spans: dict[str, list[tuple[float, float]]] = {}
        for op in ops:
            if op.operation_type != "stop":
                continue
            back = [
                start.end_time if start.end_time is not None else math.inf
                for start in ops
                if start.operation_type in ("start", "resume")
                and start.target == op.target
                and start.insert_time >= op.insert_time
            ]
            spans.setdefault(op.target, []).append((op.insert_time, min(back, default=math.inf)))
    worst: tuple[int, list[str]] = (0, [])
    for moment in sorted(begin for found in spans.values() for begin, _ in found):
        down = sorted(vm for vm, found in spans.items() if any(a <= moment < b for a, b in found))
        worst = max(worst, (len(down), down))
    return worst


_migrated = False


def migrate_airflow_db() -> None:
    """This process's SQLite DB (AIRFLOW_HOME/airflow.db) at Airflow's head revision, once per process.

    ``airflow db migrate`` (a subprocess, about 5 s) runs once per pytest run: the first process to get
    here migrates its own DB and keeps a copy in SHARED as the template; the others copy the template,
    under a lock so no one reads a half-written one. The copy is written in place, as the migration
    itself writes the file, so an engine this process already has sees the migrated DB.
    """
    global _migrated
    if _migrated:
        return
    template, db = SHARED / "airflow.db", AIRFLOW_HOME / "airflow.db"
    with open(SHARED / "migrate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if template.exists():
            shutil.copyfile(template, db)
        else:
            subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                check=True,
                capture_output=True,
                env=os.environ,
            )
            shutil.copyfile(db, SHARED / "airflow.db.part")
            (SHARED / "airflow.db.part").rename(template)
    _migrated = True


def generated_dagbag(folder: str, config: str) -> Any:
    """A DagBag of the thin DAG file with ``config`` beside it, in AIRFLOW_HOME/dags/<folder> (a folder per
    test module: the config file name is fixed, and the other modules' folders go, as dag.test() parses
    the whole dags folder before each run), after migrating the SQLite database."""
    from .faults.harness import only_dags_folder

    dags = AIRFLOW_HOME / "dags" / folder
    only_dags_folder(dags)
    dags.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dags" / "gce_vm_backup_dags.py", dags)
    (dags / "gce_vm_backup.yaml").write_text(config)
    migrate_airflow_db()
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag

    bag = DagBag(str(dags))
    assert bag.import_errors == {}
    return bag


# ---- scheduling under pytest-xdist ----
E2E_PREFIX = "tests/e2e/"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` (pyproject's addopts), with every test of tests/e2e in one group: one worker
    runs them all, so the session-scoped Airflow environment of tests/e2e/conftest.py starts once.

    The group is made here rather than with ``xdist_group`` marks: pytest-xdist 3.8 marks a group by
    rewriting the test's node id, which pytest 9.2's structured node ids ignore, so the marks silently
    group nothing (pytest-dev/pytest-xdist#1386). The largest group is handed out first, so the e2e
    tests, the longest chain of the run, start at once; every other test is a unit of its own.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class E2EOnOneWorker(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "e2e" if nodeid.startswith(E2E_PREFIX) else super()._split_scope(nodeid)

    return E2EOnOneWorker(config, log)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Each process removes its own Airflow home; the process that made SHARED removes it too."""
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)
    if _OWNS_SHARED:
        shutil.rmtree(SHARED, ignore_errors=True)
