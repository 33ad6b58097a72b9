"""Two copies of the package in one environment: a synced ``plugins/operators/gce_vm_backup`` and an
installed ``gce-vm-backup`` distribution (PyPI, a wheel). Python imports whichever comes first on
``sys.path`` (the installed one: the DAG file and the UI plugin append the synced folder at the end), and
the other is silently unused. ``two_copies`` names both, with their paths and versions, in one line that
the DAG file and the UI plugin log as a warning.

Cheap on purpose (the DAG processor runs it at every parse): the installed distribution's metadata and the
synced copy's ``__init__.py``, read as text. No API call, no Google import, nothing of the synced copy
imported.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from pathlib import Path

DISTRIBUTION = "gce-vm-backup"
PACKAGE = "gce_vm_backup"
_VERSION = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)

log = logging.getLogger(PACKAGE)


def source_version(package_dir: Path) -> str:
    """The ``__version__`` written in ``package_dir/__init__.py`` (not imported), or ``unknown``."""
    try:
        match = _VERSION.search((package_dir / "__init__.py").read_text(encoding="utf-8"))
    except OSError:
        return "unknown"
    return match.group(1) if match else "unknown"


def installed_copy() -> tuple[Path, str] | None:
    """The installed distribution's package folder and version, when one is installed as files of its
    own (an editable install of a checkout points at its source folder and has none)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    folder = Path(str(dist.locate_file(PACKAGE)))
    if not (folder / "__init__.py").is_file():
        return None
    return folder.resolve(), dist.version


def two_copies(synced_operators: Path, in_use: Path) -> str | None:
    """One line naming both copies when a synced copy under ``synced_operators`` (the plugins folder's
    ``operators``) and an installed distribution are both present and differ; ``in_use`` is the folder
    Python imported ``gce_vm_backup`` from. None when there is only one copy (or they are the same
    folder)."""
    synced = synced_operators / PACKAGE
    if not (synced / "__init__.py").is_file():
        return None
    installed = installed_copy()
    if installed is None:
        return None
    installed_dir, installed_version = installed
    synced = synced.resolve()
    if installed_dir == synced:
        return None
    synced_version = source_version(synced)
    installed_text = f"{installed_dir} ({DISTRIBUTION} {installed_version}, installed package)"
    synced_text = f"{synced} ({synced_version}, synced copy)"
    used, unused = (
        (synced_text, installed_text) if in_use.resolve() == synced else (installed_text, synced_text)
    )
    return (
        f"gce_vm_backup is present twice: {used} is in use and shadows {unused}; "
        "remove one (docs/existing-environment.md)"
    )


def warn_if_two_copies(synced_operators: Path) -> str | None:
    """Logs ``two_copies`` as a warning, if any; returns the line."""
    import gce_vm_backup

    line = two_copies(synced_operators, Path(gce_vm_backup.__file__).parent)
    if line is not None:
        log.warning("%s", line)
    return line
