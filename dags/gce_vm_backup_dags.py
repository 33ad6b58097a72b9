"""gce-vm-backup: the DAGs of gce_vm_backup.yaml (next to this file): per group a backup DAG, a restore DAG
and, with ``restore_drill:``, a drill DAG; and the freshness check.

Kept thin on purpose: the DAG processor re-parses this file all the time. It imports no Google library
and makes no API or database call. It reads the config's compiled form (gce_vm_backup.compiled.json,
written by `vm-backup validate` and `vm-backup sync`) while that one matches the YAML, else the YAML.
The code lives in plugins/operators/gce_vm_backup, imported under its unique name (a top-level
`operators` package could belong to any team sharing the bucket), or in an installed gce-vm-backup package
(`vm-backup dag-file` writes this file from it; docs/existing-environment.md).
"""

import sys
from pathlib import Path

# The provider modules the package builds its DAGs with, named here so that the DAG processor imports them
# once, before it forks the process that parses this file (Airflow's [dag_processor]
# parsing_pre_import_modules, on by default), rather than in every parse. (What the package takes from
# airflow.sdk is imported at its first use, in the parse: a few milliseconds.)
import airflow.providers.standard.operators.empty
import airflow.providers.standard.operators.hitl
import airflow.providers.standard.operators.python  # noqa: F401
from airflow.configuration import conf

_package_root = Path(conf.get("core", "plugins_folder", fallback="") or Path(__file__).parents[1] / "plugins")
if str(_package_root / "operators") not in sys.path:
    sys.path.append(str(_package_root / "operators"))

from gce_vm_backup.dags.backup import default_config_path, register_dags  # noqa: E402
from gce_vm_backup.runtime.install import warn_if_two_copies  # noqa: E402

warn_if_two_copies(_package_root / "operators")  # a synced copy and an installed package: one log line
register_dags(globals(), default_config_path(__file__))
