"""What `vm-backup sync` would change: scan the local tree, compare with the bucket, plan.

Pure functions, no Google imports, so the plan is easy to test and to print in a dry run.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pathspec

SYNCED_FOLDERS = ("dags", "plugins")
IGNORE_FILE = ".vmbackupignore"
# Objects this command uploaded carry this metadata key; `--delete` only ever removes such objects,
# so files other teams put in the same bucket folders are never touched.
MANAGED_METADATA_KEY = "gce-vm-backup-sync"
# Composer writes and manages this object itself.
PROTECTED_OBJECTS = frozenset({"dags/airflow_monitoring.py"})

DEFAULT_EXCLUDES = (
    "__pycache__/",
    "*.pyc",
    "*.pyo",
    ".*",  # hidden files and folders: .pytest_cache, .DS_Store, editor swap files
    "tests/",
    "test_*.py",
    "*_test.py",
    "conftest.py",
)


@dataclass(frozen=True)
class LocalFile:
    object_name: str  # e.g. "plugins/operators/gce_vm_backup/hook.py"
    path: Path
    size: int
    md5_base64: str


@dataclass(frozen=True)
class RemoteObject:
    name: str
    md5_base64: str | None
    size: int
    managed: bool


@dataclass
class SyncPlan:
    uploads: list[LocalFile] = field(default_factory=list)
    deletes: list[RemoteObject] = field(default_factory=list)
    unchanged: list[LocalFile] = field(default_factory=list)
    kept_remote: list[RemoteObject] = field(default_factory=list)  # remote-only objects left alone

    @property
    def upload_bytes(self) -> int:
        return sum(item.size for item in self.uploads)

    def is_empty(self) -> bool:
        return not self.uploads and not self.deletes


def md5_base64(path: Path) -> str:
    """The MD5 of a file as Cloud Storage reports it (base64 of the raw digest)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode("ascii")


def load_ignore_spec(source: Path) -> pathspec.PathSpec:
    """Default excludes plus the gitignore-style patterns of ``<source>/.vmbackupignore``."""
    lines = list(DEFAULT_EXCLUDES)
    ignore_file = source / IGNORE_FILE
    if ignore_file.is_file():
        lines.extend(ignore_file.read_text(encoding="utf-8").splitlines())
    return pathspec.PathSpec.from_lines("gitignore", lines)


def scan_local(source: Path, folders: Iterable[str] = SYNCED_FOLDERS) -> list[LocalFile]:
    """Every file under ``source/<folder>`` that is not excluded, sorted by object name."""
    spec = load_ignore_spec(source)
    found: list[LocalFile] = []
    for folder in folders:
        root = source / folder
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if not path.is_file():
                continue
            relative = PurePosixPath(path.relative_to(source).as_posix())
            if spec.match_file(str(relative)):
                continue
            found.append(LocalFile(str(relative), path, path.stat().st_size, md5_base64(path)))
    return found


def plan_sync(
    local: Iterable[LocalFile],
    remote: Mapping[str, RemoteObject],
    *,
    delete: bool,
    folders: Iterable[str] = SYNCED_FOLDERS,
) -> SyncPlan:
    """Upload what is new or changed; with ``delete``, remove stale objects this command uploaded.

    A remote object is a delete candidate only if it lies under one of the synced folders, carries
    the managed marker, is not protected, and has no local counterpart.
    """
    plan = SyncPlan()
    local_names = set()
    for item in local:
        local_names.add(item.object_name)
        existing = remote.get(item.object_name)
        if existing is not None and existing.md5_base64 == item.md5_base64:
            plan.unchanged.append(item)
        else:
            plan.uploads.append(item)
    prefixes = tuple(f"{folder}/" for folder in folders)
    for name in sorted(remote):
        if name in local_names or not name.startswith(prefixes):
            continue
        obj = remote[name]
        if delete and obj.managed and name not in PROTECTED_OBJECTS:
            plan.deletes.append(obj)
        else:
            plan.kept_remote.append(obj)
    return plan
