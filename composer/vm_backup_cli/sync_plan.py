"""What `vm-backup sync` would change: scan the local tree, compare with the bucket, plan.

Pure functions, no Google imports, so the plan is easy to test and to print in a dry run.

Ownership: a deployment (the config's ``deployment`` id) owns exactly the objects listed in its manifest,
``gce-vm-backup-sync/<deployment>.json`` at the bucket root (outside the folders Composer syncs). Every
uploaded object also carries the deployment in its metadata. ``--delete`` removes an object only when it
is in this deployment's previous manifest, is gone locally, still holds the content this deployment
uploaded (same MD5, same metadata marker), is listed by no other deployment's manifest, and lies in a
folder this sync covers. An object that a new ignore line now excludes is kept unless the user asks
(``--delete-excluded``).

A config's compiled form (``gce_vm_backup*.compiled.json``, written by sync beside each valid config) is
an object like any other: uploaded right before its config, listed in the manifest, deleted by ``--delete``
once gone. One whose config is not in the tree is not synced (as if it were not there): the DAG file would
never read it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pathspec

from gce_vm_backup.config.compiled import SUFFIX as COMPILED_SUFFIX

SYNCED_FOLDERS = ("plugins", "dags")  # upload order: the code before the DAG files that import it
IGNORE_FILE = ".vmbackupignore"
CONFIG_GLOB = "**/gce_vm_backup*.yaml"
COMPILED_PATTERN = f"gce_vm_backup*{COMPILED_SUFFIX}"  # beside its config: gce_vm_backup.compiled.json
# Every object this command uploads carries this metadata key; its value is the uploading deployment.
MANAGED_METADATA_KEY = "gce-vm-backup-sync"
# Manifests live outside dags/, plugins/ and data/, so Composer neither syncs nor parses them.
MANIFEST_PREFIX = "gce-vm-backup-sync/"
MANIFEST_VERSION = 1
# Composer writes and manages this object itself.
PROTECTED_OBJECTS = frozenset({"dags/airflow_monitoring.py"})

DEFAULT_EXCLUDES = (
    "__pycache__/",
    "*.pyc",
    "*.pyo",
    ".*",  # hidden files and folders: .pytest_cache, .DS_Store, editor swap files
    # ...but the package's own .airflowignore, which keeps Airflow's plugin loader out of its modules
    "!plugins/operators/gce_vm_backup/.airflowignore",
    "tests/",
    "test_*.py",
    "*_test.py",
    "conftest.py",
)


class ManifestError(ValueError):
    """A manifest object that cannot be read; the message names it."""


@dataclass(frozen=True)
class LocalFile:
    object_name: str  # e.g. "plugins/operators/gce_vm_backup/compute/hook.py"
    path: Path
    size: int
    md5_base64: str


@dataclass(frozen=True)
class RemoteObject:
    name: str
    md5_base64: str | None
    size: int
    owner: str | None  # the deployment in our metadata marker; "true" from versions before manifests
    generation: int | None = None


@dataclass
class LocalTree:
    files: list[LocalFile] = field(default_factory=list)
    excluded: set[str] = field(default_factory=set)  # object names present locally but excluded
    # The synced folders this sync covers: present in --source with at least one file to sync (an empty
    # or wholly excluded folder never lets --delete empty its prefix in the bucket).
    covered: tuple[str, ...] = ()
    refused: list[str] = field(default_factory=list)  # one line per symlink that is not uploaded


@dataclass(frozen=True)
class Manifest:
    """What one deployment uploaded: object name -> MD5 (base64) of the content it uploaded."""

    deployment: str
    objects: Mapping[str, str]

    @staticmethod
    def object_name(deployment: str) -> str:
        return f"{MANIFEST_PREFIX}{deployment}.json"

    def to_json(self) -> str:
        body = {"version": MANIFEST_VERSION, "deployment": self.deployment, "objects": dict(self.objects)}
        return json.dumps(body, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, name: str, text: str | bytes) -> Manifest:
        """Raises ManifestError naming the object when it is not a manifest this version wrote."""
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise ManifestError(f"{name}: not JSON ({exc})") from exc
        objects = body.get("objects") if isinstance(body, dict) else None
        if (
            not isinstance(body, dict)
            or body.get("version") != MANIFEST_VERSION
            or not isinstance(body.get("deployment"), str)
            or not isinstance(objects, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in objects.items())
        ):
            raise ManifestError(f"{name}: not a version {MANIFEST_VERSION} sync manifest")
        return cls(body["deployment"], objects)


@dataclass
class SyncPlan:
    deployment: str
    uploads: list[LocalFile] = field(default_factory=list)  # in upload order
    deletes: list[RemoteObject] = field(default_factory=list)  # in delete order
    unchanged: list[LocalFile] = field(default_factory=list)
    replaces: dict[str, str] = field(default_factory=dict)  # upload name -> the other deployment's copy
    kept: list[tuple[str, str]] = field(default_factory=list)  # (name, why) stale objects not deleted
    manifest: dict[str, str] = field(default_factory=dict)  # this deployment's objects after the sync

    @property
    def upload_bytes(self) -> int:
        return sum(item.size for item in self.uploads)

    def is_empty(self) -> bool:
        return not self.uploads and not self.deletes

    def intent_manifest(self, previous: Manifest | None) -> Manifest:
        """Written before the first upload: what this deployment may own once any step has run, so a
        sync that stops half way still knows every object it may have written."""
        before = dict(previous.objects) if previous else {}
        return Manifest(self.deployment, {**before, **self.manifest})

    def final_manifest(self) -> Manifest:
        return Manifest(self.deployment, dict(self.manifest))


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


def upload_rank(object_name: str) -> tuple[int, str]:
    """plugins/ first, then dags/, the configs' compiled forms, the backup configs last: Composer never
    parses a new config against old code, nor a new DAG file against a plugin that is not there yet, and a
    new config finds its compiled form already there (until then the old config and the new compiled form
    do not match, and the DAG file reads the YAML)."""
    folder = object_name.split("/", 1)[0]
    if folder != "dags":
        return 0, object_name
    path = PurePosixPath(object_name)
    if path.match(COMPILED_PATTERN):
        return 2, object_name
    return (3 if path.match("gce_vm_backup*.yaml") else 1), object_name


def _orphan_compiled(path: Path) -> bool:
    """A compiled form whose config is not beside it."""
    return (
        path.match(COMPILED_PATTERN)
        and not path.with_name(path.name.removesuffix(COMPILED_SUFFIX) + ".yaml").is_file()
    )


def _symlink_problem(
    link: Path, relative: str, roots: Mapping[str, Path], spec: pathspec.PathSpec
) -> str | None:
    """Why a symlink is not uploaded, or None when it points to a file that sync uploads anyway."""
    target = Path(os.path.realpath(link))
    shown = os.readlink(link)
    if not target.exists():
        return f"{relative}: a symlink to {shown}, which does not exist"
    for folder, root in roots.items():
        if target.is_relative_to(root):
            inside = f"{folder}/{target.relative_to(root).as_posix()}"
            if target.is_dir():
                return f"{relative}: a symlink to the folder {inside}; symlinked folders are not followed"
            if spec.match_file(inside):
                return f"{relative}: a symlink to {inside}, which is excluded"
            return None
    return f"{relative}: a symlink to {target}, outside {' and '.join(f'{f}/' for f in roots)} of --source"


def scan_local(source: Path, folders: Iterable[str] = SYNCED_FOLDERS) -> LocalTree:
    """Every file under ``source/<folder>`` that is not excluded, in upload order.

    A symlink is uploaded (with its target's content) only when it points to a file that is itself
    uploaded; any other symlink (out of the tree, to a folder, excluded, dangling) is listed in
    ``refused`` and its target is never read.
    """
    spec = load_ignore_spec(source)
    present = tuple(f for f in folders if (source / f).is_dir())
    tree = LocalTree()
    roots = {folder: Path(os.path.realpath(source / folder)) for folder in present}
    for folder in present:
        for directory, subfolders, names in os.walk(source / folder):
            base = Path(directory)
            subfolders.sort()
            for name in sorted([*names, *(d for d in subfolders if (base / d).is_symlink())]):
                path = base / name
                relative = path.relative_to(source).as_posix()
                is_folder = path.is_dir()
                if spec.match_file(f"{relative}/" if is_folder else relative):
                    if path.is_file() and not path.is_symlink():
                        tree.excluded.add(relative)
                    continue
                if path.is_symlink():
                    problem = _symlink_problem(path, relative, roots, spec)
                    if problem:
                        tree.refused.append(problem)
                        continue
                elif not path.is_file():
                    continue  # sockets, FIFOs, devices
                if _orphan_compiled(path):
                    continue
                tree.files.append(LocalFile(relative, path, path.stat().st_size, md5_base64(path)))
    tree.files.sort(key=lambda item: upload_rank(item.object_name))
    synced = {item.object_name.split("/", 1)[0] for item in tree.files}
    tree.covered = tuple(folder for folder in present if folder in synced)
    return tree


def plan_sync(
    local: LocalTree,
    remote: Mapping[str, RemoteObject],
    *,
    deployment: str,
    previous: Manifest | None,
    others: Iterable[Manifest] = (),
    delete: bool = False,
    delete_excluded: bool = False,
) -> SyncPlan:
    """Upload what is new or changed; with ``delete``, remove what this deployment uploaded and no
    longer has locally (see the module docstring for every condition)."""
    delete = delete or delete_excluded
    plan = SyncPlan(deployment)
    shared: dict[str, str] = {}  # object name -> another deployment that lists it
    for other in others:
        if other.deployment != deployment:
            shared.update(dict.fromkeys(other.objects, other.deployment))
    local_names = set()
    for item in local.files:
        local_names.add(item.object_name)
        plan.manifest[item.object_name] = item.md5_base64
        existing = remote.get(item.object_name)
        same = existing is not None and existing.md5_base64 == item.md5_base64
        if same and existing is not None and (existing.owner == deployment or item.object_name in shared):
            plan.unchanged.append(item)
            continue
        plan.uploads.append(item)
        if existing is not None and existing.owner not in (None, deployment, "true"):
            plan.replaces[item.object_name] = existing.owner
        elif item.object_name in shared and not same:
            plan.replaces[item.object_name] = shared[item.object_name]

    uncovered: dict[str, int] = {}  # folder -> objects of ours there, all kept
    for name, md5 in sorted((previous.objects if previous else {}).items()):
        if name in local_names:
            continue
        obj = remote.get(name)
        folder = name.split("/", 1)[0]
        if folder not in local.covered:
            plan.manifest[name] = md5
            uncovered[folder] = uncovered.get(folder, 0) + 1
        elif obj is None:
            continue  # already gone
        elif obj.md5_base64 != md5 or obj.owner != deployment:
            if delete:  # dropped from the manifest: someone else's copy now
                plan.kept.append((name, "replaced since this deployment uploaded it; no longer ours"))
        elif name in shared:
            if delete:
                plan.kept.append((name, f"deployment {shared[name]!r} synced it too"))
        elif name in PROTECTED_OBJECTS:
            if delete:
                plan.kept.append((name, "managed by Composer"))
        elif name in local.excluded and not delete_excluded:
            plan.manifest[name] = md5
            if delete:
                plan.kept.append((name, f"excluded by {IGNORE_FILE}; --delete-excluded removes it"))
        elif delete:
            plan.deletes.append(obj)
        else:
            plan.manifest[name] = md5  # stale but still ours: a later --delete removes it
    if delete:
        for folder, count in sorted(uncovered.items()):
            why = f"{count} object(s) of ours; --source has no file in {folder}/, this sync does not cover it"
            plan.kept.insert(0, (f"{folder}/", why))
    # DAG files and configs go before the code they import.
    plan.deletes.sort(key=lambda obj: upload_rank(obj.name), reverse=True)
    return plan
