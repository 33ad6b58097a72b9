"""The fault matrix's Airflow home: its own dags subfolder (dags/faults) and a migrated SQLite DB."""

from __future__ import annotations

import pytest

from ..conftest import AIRFLOW_HOME, migrate_airflow_db
from .harness import prepare_airflow


@pytest.fixture(scope="module")
def fault_dagbag():
    return prepare_airflow(AIRFLOW_HOME, migrate=migrate_airflow_db)
