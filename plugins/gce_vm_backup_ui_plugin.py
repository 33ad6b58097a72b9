"""gce-vm-backup's page in the Airflow UI: "VM backups" under Browse (Airflow 3.1+ plugin interface).

Composer 3 syncs plugins/ to the web server, which imports every .py file of the folder under its file
name (hence this file's unique name) and registers the ``AirflowPlugin`` subclasses it finds: here
``GceVmBackupUiPlugin`` from ``gce_vm_backup.ui.plugin``. An installed package registers the same plugin
through its ``airflow.plugins`` entry point; with both, this file's registration is the one (the entry
point then stands aside, see ``gce_vm_backup.ui.plugin``).
"""

from __future__ import annotations

import sys
from pathlib import Path

# The package is synced to plugins/operators/gce_vm_backup and imported under its unique name, as the DAG
# file does (the web server does not run the DAG file). Appended: an installed package comes first.
_operators = Path(__file__).resolve().parent / "operators"
if (_operators / "gce_vm_backup").is_dir() and str(_operators) not in sys.path:
    sys.path.append(str(_operators))

from gce_vm_backup.runtime.install import warn_if_two_copies  # noqa: E402
from gce_vm_backup.ui.plugin import URL_PREFIX, GceVmBackupUiPlugin  # noqa: E402

warn_if_two_copies(_operators)

__all__ = ["URL_PREFIX", "GceVmBackupUiPlugin"]
