"""Shared test setup.

Airflow reads AIRFLOW_HOME when it is first imported, so the tests get their own throw-away home here,
before any test module imports Airflow: nothing touches ~/airflow, and runs are hermetic.
"""

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="gce-vm-backup-tests-"))
os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(AIRFLOW_HOME / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.pop("GCE_VM_BACKUP_COMPUTE_ENDPOINT", None)
os.environ.pop("GCE_VM_BACKUP_CONFIG", None)

pytest_plugins = ["gce_emulator.pytest_plugin"]
