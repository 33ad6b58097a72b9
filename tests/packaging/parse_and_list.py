"""Run inside a fresh venv: parse the dags folder as the DAG processor does (a DagBag) and list the
plugins Airflow registers; prints one JSON line (DAG ids, import errors, plugins, plugin import errors)."""

from __future__ import annotations

import json

import airflow
from airflow import plugins_manager
from airflow.configuration import conf

try:  # Airflow 3.2+
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.1
    from airflow.models.dagbag import DagBag

bag = DagBag(conf.get("core", "dags_folder"))
get_errors = getattr(plugins_manager, "get_import_errors", None)
print(
    json.dumps(
        {
            "airflow": airflow.__version__,
            "dag_ids": sorted(bag.dag_ids),
            "dag_import_errors": bag.import_errors,
            "plugins": [[p["name"], str(p["source"])] for p in plugins_manager.get_plugin_info()],
            "plugin_import_errors": get_errors() if get_errors else plugins_manager.import_errors,
        }
    )
)
