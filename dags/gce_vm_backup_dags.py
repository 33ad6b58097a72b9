"""gce-vm-backup: one backup DAG per group of gce_vm_backup.yaml (next to this file).

Kept thin on purpose: the DAG processor re-parses this file all the time. It imports no Google library
and makes no API or database call. The code lives in plugins/operators/gce_vm_backup, imported under its
unique name (a top-level `operators` package could belong to any team sharing the bucket).
"""

import sys
from pathlib import Path

# The Airflow modules the package builds its DAGs with, named here so that the DAG processor imports them
# once, before it forks the process that parses this file (Airflow's [dag_processor]
# parsing_pre_import_modules, on by default), rather than in every parse.
import airflow.providers.standard.operators.empty
import airflow.providers.standard.operators.hitl
import airflow.providers.standard.operators.python
import airflow.sdk.bases.sensor
import airflow.sdk.definitions.decorators.task_group  # noqa: F401
from airflow.configuration import conf

_package_root = Path(conf.get("core", "plugins_folder", fallback="") or Path(__file__).parents[1] / "plugins")
if str(_package_root / "operators") not in sys.path:
    sys.path.append(str(_package_root / "operators"))

from gce_vm_backup.dags.backup import default_config_path, register_dags  # noqa: E402

register_dags(globals(), default_config_path(__file__))
