"""Where the DAG file and the plugins folder come from: a clone of the repository, or an installed wheel.

In a clone, ``dags/gce_vm_backup_dags.py`` and ``plugins/`` (the UI plugin's file and the package under
``plugins/operators``) sit next to each other. A wheel carries the DAG file as package data
(``vm_backup_cli/data``) and has no plugins folder: the installed package is imported from site-packages and
its ``airflow.plugins`` entry point registers the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DAG_FILE = "gce_vm_backup_dags.py"
PLUGIN_FILE = "gce_vm_backup_ui_plugin.py"
SHIPPED_DAG_FILE = Path(__file__).resolve().parent / "data" / DAG_FILE


class MissingSource(Exception):
    """Neither a clone of the repository nor the wheel's copy of the DAG file is there."""


@dataclass(frozen=True)
class Sources:
    dag_file: Path
    plugins: Path | None  # the clone's plugins/ folder; None from an installed wheel
    checkout: Path | None  # the clone's root; None from an installed wheel


def checkout_root() -> Path | None:
    """The clone of the repository ``gce_vm_backup`` is imported from, if it is one."""
    import gce_vm_backup

    plugins = Path(gce_vm_backup.__file__).resolve().parents[2]
    root = plugins.parent
    if (plugins / PLUGIN_FILE).is_file() and (root / "dags" / DAG_FILE).is_file():
        return root
    return None


def find_sources(shipped_dag_file: Path = SHIPPED_DAG_FILE) -> Sources:
    """The clone's DAG file and plugins folder, else the wheel's DAG file.

    Raises MissingSource (its message says what to do) when there is neither.
    """
    root = checkout_root()
    if root is not None:
        return Sources(root / "dags" / DAG_FILE, root / "plugins", root)
    if shipped_dag_file.is_file():
        return Sources(shipped_dag_file, None, None)
    raise MissingSource(
        f"no DAG file: neither a clone of the repository nor {shipped_dag_file} (a wheel's copy); "
        "run this from a clone of the repository or reinstall gce-vm-backup from its wheel"
    )
