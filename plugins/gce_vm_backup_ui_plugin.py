"""gce-vm-backup's page in the Airflow UI: "VM backups" under Browse (Airflow 3.1+ plugin interface).

Composer 3 syncs plugins/ to the web server, which imports every .py file of the folder under its file
name (hence this file's unique name). The page is a FastAPI app (``fastapi_apps``, mounted at
``/gce-vm-backup``: ``/gce-vm-backup/backups`` and ``/gce-vm-backup/backups.json``) shown inside the UI
through an external view (``external_views`` with a ``url_route``, so the UI frames it under
``/plugin/vm-backups``). The app lives in ``gce_vm_backup.ui.app`` and is built on the first
request: loading plugins (which every Airflow component does) imports nothing but this file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from airflow.plugins_manager import AirflowPlugin

# The package is synced to plugins/operators/gce_vm_backup and imported under its unique name, as the DAG
# file does (the web server does not run the DAG file).
_operators = Path(__file__).resolve().parent / "operators"
if (_operators / "gce_vm_backup").is_dir() and str(_operators) not in sys.path:
    sys.path.append(str(_operators))

URL_PREFIX = "/gce-vm-backup"


class _AppOnFirstRequest:
    """An ASGI app that builds ``gce_vm_backup.ui.app.create_app()`` when it is first called."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from gce_vm_backup.ui.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class GceVmBackupUiPlugin(AirflowPlugin):
    name = "gce_vm_backup_ui"
    fastapi_apps = [  # noqa: RUF012 - AirflowPlugin's interface is class attributes
        {"app": _AppOnFirstRequest(), "url_prefix": URL_PREFIX, "name": "gce-vm-backup: VM backups"}
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "VM backups",
            "href": f"{URL_PREFIX.lstrip('/')}/backups",
            "destination": "nav",
            "category": "browse",
            "url_route": "vm-backups",
        }
    ]
