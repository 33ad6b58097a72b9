"""Shared test setup.

Airflow reads AIRFLOW_HOME when it is first imported, so the tests get their own throw-away home here,
before any test module imports Airflow: nothing touches ~/airflow, and runs are hermetic.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="gce-vm-backup-tests-"))
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


def generated_dagbag(folder: str, config: str) -> Any:
    """A DagBag of the thin DAG file with ``config`` beside it, in AIRFLOW_HOME/dags/<folder> (a folder per
    test module: the config file name is fixed), after migrating the SQLite database."""
    dags = AIRFLOW_HOME / "dags" / folder
    dags.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dags" / "gce_vm_backup_dags.py", dags)
    (dags / "gce_vm_backup.yaml").write_text(config)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ
    )
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag

    bag = DagBag(str(dags))
    assert bag.import_errors == {}
    return bag
