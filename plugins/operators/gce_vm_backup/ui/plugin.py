"""The Airflow plugin of the "VM backups" page (Airflow 3.1+ plugin interface), registered one of two ways:

- a bucket sync: ``plugins/gce_vm_backup_ui_plugin.py`` imports ``GceVmBackupUiPlugin``, and Airflow's
  plugin loader registers it from the plugins folder;
- an installed package (PyPI, a wheel): the ``airflow.plugins`` entry point ``gce_vm_backup_ui`` names
  ``entry_point_plugin``.

When both are there, the plugins folder's file wins: ``entry_point_plugin`` is then ``None``, which Airflow's
entry point loader skips without a word, so the plugin registers once and Airflow 3.2+ records no
"already registered" import error. (The page's code comes from whichever ``gce_vm_backup`` Python imports
first; ``gce_vm_backup.runtime.install`` warns when there are two.)

The page is a FastAPI app (``fastapi_apps``, mounted at ``/gce-vm-backup``: ``/gce-vm-backup/backups`` and
``/gce-vm-backup/backups.json``) shown inside the UI through an external view (``external_views`` with a
``url_route``, so the UI frames it under ``/plugin/vm-backups``). The app lives in ``gce_vm_backup.ui.app``
and is built on the first request: loading plugins (which every Airflow component does) imports nothing
else of the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/gce-vm-backup"
PLUGIN_FILE = "gce_vm_backup_ui_plugin.py"


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


def synced_plugin_file() -> Path | None:
    """The plugins folder's ``gce_vm_backup_ui_plugin.py``, if there is one ([core] plugins_folder)."""
    from airflow.configuration import conf

    folder = conf.get("core", "plugins_folder", fallback="")
    if not folder:
        return None
    path = Path(folder) / PLUGIN_FILE
    return path if path.is_file() else None


def __getattr__(name: str) -> Any:
    """``entry_point_plugin``: the plugin class, or None when the plugins folder registers it."""
    if name == "entry_point_plugin":
        return None if synced_plugin_file() is not None else GceVmBackupUiPlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
