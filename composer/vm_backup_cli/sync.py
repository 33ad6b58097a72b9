"""`vm-backup sync`: upload dags/ and plugins/ to a Composer environment's bucket, changes only.

    vm-backup sync --bucket my-composer-bucket [--delete [--delete-excluded]] [--dry-run]
    vm-backup sync --environment vm-backup --location europe-west1 [--project my-project]

Before anything is uploaded the backup config (dags/**/gce_vm_backup*.yaml) is validated; a broken
config never reaches the bucket. Each valid config is compiled beside it (``gce_vm_backup.compiled.json``:
what the DAG file reads while it matches the YAML, gce_vm_backup/config/compiled.py). The config's
``deployment`` (or ``--deployment``) names what this sync owns: its manifest lists exactly what it
uploaded, and ``--delete`` removes nothing else (sync_plan.py). Uploads go plugins/ first, then dags/, the
compiled forms, the configs last; deletes after every upload. A symlink that does not point to a file
sync uploads anyway is refused, and nothing is uploaded. Exit codes: 0 ok (also when
nothing changed), 1 invalid config, refused symlink or a failed sync, 2 wrong usage.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import mimetypes
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from vm_backup_cli.sync_plan import (
    CONFIG_GLOB,
    MANAGED_METADATA_KEY,
    MANIFEST_PREFIX,
    SYNCED_FOLDERS,
    LocalFile,
    Manifest,
    ManifestError,
    RemoteObject,
    SyncPlan,
    plan_sync,
    scan_local,
)

if TYPE_CHECKING:
    import google.cloud.storage as storage

log = logging.getLogger(__name__)


class SyncError(Exception):
    """A sync that cannot go on; the message is printed as is."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sync",
        help="sync dags/ and plugins/ to a Composer environment's bucket",
        description="Upload what changed in dags/ and plugins/ to the environment's bucket.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--bucket", help="bucket name or gs://bucket")
    target.add_argument("--environment", help="Composer environment name (needs --location)")
    parser.add_argument("--location", help="region of the Composer environment")
    parser.add_argument("--project", help="project of the environment (default: from credentials)")
    parser.add_argument(
        "--source", type=Path, default=Path.cwd(), help="repo root holding dags/ and plugins/"
    )
    parser.add_argument(
        "--deployment",
        help="the deployment id whose objects this sync owns (default: the config's `deployment`; "
        "needed when --source has no backup config)",
    )
    parser.add_argument(
        "--delete",
        action="store_true",
        help="delete objects this deployment uploaded earlier that no longer exist locally",
    )
    parser.add_argument(
        "--delete-excluded",
        action="store_true",
        help="with --delete: also delete objects this deployment uploaded that .vmbackupignore now excludes",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.set_defaults(func=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    if args.environment and not args.location:
        parser.error("--environment needs --location (the environment's region)")
    if args.location and not args.environment:
        parser.error("--location goes with --environment")
    if args.bucket:
        try:
            normalise_bucket(args.bucket)
        except SyncError as exc:
            parser.error(str(exc))
    source: Path = args.source.resolve()
    if not any((source / folder).is_dir() for folder in SYNCED_FOLDERS):
        parser.error(f"--source: {source} has neither a dags/ nor a plugins/ folder")

    if args.delete_excluded and not args.delete:
        parser.error("--delete-excluded goes with --delete")
    problems, deployments = validate_configs(source)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(
            f"sync: the config is invalid ({len(problems)} problem(s)); nothing was uploaded.",
            file=sys.stderr,
        )
        return 1
    deployment = _deployment(parser, args.deployment, deployments)

    try:
        bucket_name = args.bucket or lookup_bucket(args.environment, args.location, args.project)
        bucket_name = normalise_bucket(bucket_name)
        return sync(
            source,
            bucket_name,
            deployment=deployment,
            project=args.project,
            delete=args.delete,
            delete_excluded=args.delete_excluded,
            dry_run=args.dry_run,
        )
    except SyncError as exc:
        print(f"sync: {exc}", file=sys.stderr)
        return 1


# Cloud Storage bucket names: 3-63 characters (dotted names up to 222), lowercase letters, digits, -, _, .
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


def normalise_bucket(value: str) -> str:
    """'gs://name/' -> 'name'. Raises SyncError naming the value when it is not a bucket name."""
    name = value.removeprefix("gs://").strip("/")
    if not BUCKET_NAME.match(name) or (len(name) > 63 and "." not in name):
        raise SyncError(
            f"--bucket: {value!r} is not a bucket name (expected NAME or gs://NAME; lowercase letters, "
            "digits, -, _ and .)"
        )
    return name


def validate_configs(source: Path) -> tuple[list[str], dict[str, str]]:
    """Every problem of every backup config under dags/, one line each (file, group, key), and the
    deployment each valid config names (GCE_VM_BACKUP_DEPLOYMENT overrides it, as at parse time). Each
    valid config is compiled beside it (a config that cannot be is read as YAML by the DAG file)."""
    from gce_vm_backup.config.compiled import write_compiled
    from gce_vm_backup.config.models import read_config

    problems: list[str] = []
    deployments: dict[str, str] = {}
    for path in sorted((source / "dags").glob(CONFIG_GLOB)):
        config, found = read_config(path)
        problems.extend(str(problem) for problem in found)
        if not found:
            deployments[path.relative_to(source).as_posix()] = config.deployment
            try:
                write_compiled(path)
            except (OSError, ValueError) as exc:  # ValueError: ConfigFileError, the file changed since
                log.warning("%s: not compiled (%s); the DAG file reads the YAML", path, exc)
    return problems, deployments


def _deployment(parser: argparse.ArgumentParser, given: str | None, deployments: dict[str, str]) -> str:
    """The one deployment this sync acts for; exits 2 (usage) naming the argument otherwise."""
    from gce_vm_backup.config.labels import DEPLOYMENT

    named = set(deployments.values())
    if given is not None and not DEPLOYMENT.match(given):
        parser.error(f"--deployment: {given!r} is not a deployment id (1-40 of a-z, 0-9 and -)")
    if len(named) > 1:
        listed = ", ".join(f"{file}: {value}" for file, value in sorted(deployments.items()))
        parser.error(
            f"--source: the backup configs name different deployments ({listed}); sync one at a time"
        )
    if given is not None and named and given not in named:
        parser.error(f"--deployment: {given!r} differs from the config's deployment {named.pop()!r}")
    if given is None and not named:
        parser.error("--deployment is needed: --source has no backup config under dags/ that names one")
    return given if given is not None else named.pop()


def lookup_bucket(environment: str, location: str, project: str | None) -> str:
    """The bucket of a Composer environment, from its DAG folder prefix (gs://BUCKET/dags)."""
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions
    from google.cloud.orchestration.airflow.service_v1 import EnvironmentsClient

    try:
        if project is None:
            import google.auth

            _, project = google.auth.default()
            if not project:
                raise SyncError("--project is needed: the credentials name no default project")
        name = f"projects/{project}/locations/{location}/environments/{environment}"
        env = EnvironmentsClient().get_environment(name=name)
    except auth_exceptions.DefaultCredentialsError as exc:
        raise SyncError(
            f"no Google credentials ({exc}); run `gcloud auth application-default login`"
        ) from exc
    except api_exceptions.NotFound as exc:
        raise SyncError(f"--environment: {environment!r} not found in {project}/{location}") from exc
    except api_exceptions.GoogleAPICallError as exc:
        raise SyncError(f"--environment: could not read {environment!r}: {exc.message}") from exc
    prefix = env.config.dag_gcs_prefix
    if not prefix.startswith("gs://"):
        raise SyncError(f"--environment: {environment!r} has no DAG bucket yet (is it still being created?)")
    return prefix.removeprefix("gs://").split("/", 1)[0]


def list_remote(bucket: storage.Bucket, folders: Iterable[str] = SYNCED_FOLDERS) -> dict[str, RemoteObject]:
    """One listing per synced folder; md5 and our marker come with the listing (no per-object GET)."""
    remote: dict[str, RemoteObject] = {}
    for folder in folders:
        for blob in bucket.list_blobs(prefix=f"{folder}/"):
            if blob.name.endswith("/"):
                continue  # folder placeholder objects
            owner = (blob.metadata or {}).get(MANAGED_METADATA_KEY)
            remote[blob.name] = RemoteObject(blob.name, blob.md5_hash, blob.size or 0, owner, blob.generation)
    return remote


def read_manifests(bucket: storage.Bucket, bucket_name: str) -> dict[str, Manifest]:
    """Every deployment's manifest, by deployment. Raises SyncError naming an unreadable one: what a
    deployment owns must be known before anything is deleted or replaced."""
    manifests: dict[str, Manifest] = {}
    for blob in bucket.list_blobs(prefix=MANIFEST_PREFIX):
        if not blob.name.endswith(".json"):
            continue
        location = f"gs://{bucket_name}/{blob.name}"
        try:
            manifest = Manifest.from_json(location, blob.download_as_bytes())
        except ManifestError as exc:
            raise SyncError(f"{exc}; fix or remove it (it lists what one deployment uploaded)") from exc
        if Manifest.object_name(manifest.deployment) != blob.name:
            raise SyncError(f"{location}: names deployment {manifest.deployment!r}; fix or remove it")
        manifests[manifest.deployment] = manifest
    return manifests


def _write_manifest(bucket: storage.Bucket, manifest: Manifest) -> None:
    blob = bucket.blob(Manifest.object_name(manifest.deployment))
    blob.upload_from_string(manifest.to_json(), content_type="application/json")


def print_plan(plan: SyncPlan, bucket_name: str, out: TextIO) -> None:
    for item in plan.uploads:
        replaces = plan.replaces.get(item.object_name)
        note = f", replaces the copy deployment {replaces!r} uploaded" if replaces else ""
        print(f"upload  gs://{bucket_name}/{item.object_name} ({item.size} bytes{note})", file=out)
    for obj in plan.deletes:
        print(f"delete  gs://{bucket_name}/{obj.name}", file=out)
    print_kept(plan, bucket_name, out)


def print_kept(plan: SyncPlan, bucket_name: str, out: TextIO) -> None:
    for name, why in plan.kept:
        print(f"kept    gs://{bucket_name}/{name} ({why})", file=out)


def sync(
    source: Path,
    bucket_name: str,
    *,
    deployment: str,
    project: str | None = None,
    delete: bool = False,
    delete_excluded: bool = False,
    dry_run: bool = False,
    out: TextIO | None = None,
) -> int:
    """Sync ``source``'s plugins/ and dags/ to ``bucket_name`` for ``deployment``; returns the exit code.

    Raises SyncError (printed by ``run``) for a refused symlink, a missing bucket, missing credentials,
    an unreadable manifest or an API error.
    """
    out = out or sys.stdout
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions
    from google.cloud.storage import Client

    try:
        local = scan_local(source)
        if local.refused:
            raise SyncError(
                "; ".join(local.refused) + ". Nothing was uploaded: a symlink is synced only when it points "
                "to a file that is synced anyway (replace it with the file, or exclude it in .vmbackupignore)"
            )
        client = Client(project=project)
        bucket = client.bucket(bucket_name)
        manifests = read_manifests(bucket, bucket_name)
        previous = manifests.pop(deployment, None)
        plan = plan_sync(
            local,
            list_remote(bucket, local.covered),
            deployment=deployment,
            previous=previous,
            others=manifests.values(),
            delete=delete,
            delete_excluded=delete_excluded,
        )
        if delete and previous is None:
            print(
                f"no manifest of deployment {deployment!r} in gs://{bucket_name} yet: this sync deletes "
                "nothing, and records what it uploads for the next --delete",
                file=out,
            )
        if dry_run:
            print_plan(plan, bucket_name, out)
            print(
                f"dry run: would upload {len(plan.uploads)} ({plan.upload_bytes} bytes), "
                f"delete {len(plan.deletes)}, unchanged {len(plan.unchanged)}; nothing was changed.",
                file=out,
            )
            return 0
        print_kept(plan, bucket_name, out)
        _apply(bucket, bucket_name, plan, previous, out)
    except auth_exceptions.DefaultCredentialsError as exc:
        raise SyncError(
            f"no Google credentials ({exc}); run `gcloud auth application-default login`"
        ) from exc
    except api_exceptions.NotFound as exc:
        raise SyncError(f"--bucket: gs://{bucket_name} not found ({exc.message})") from exc
    except api_exceptions.GoogleAPICallError as exc:
        raise SyncError(f"gs://{bucket_name}: {exc.message}") from exc
    kept = f", kept {len(plan.kept)}" if plan.kept else ""
    print(
        f"synced gs://{bucket_name} for deployment {deployment!r}: uploaded {len(plan.uploads)} "
        f"({plan.upload_bytes} bytes), deleted {len(plan.deletes)}, unchanged {len(plan.unchanged)}{kept}",
        file=out,
    )
    return 0


def _apply(
    bucket: storage.Bucket, bucket_name: str, plan: SyncPlan, previous: Manifest | None, out: TextIO
) -> None:
    """Uploads in plan order (plugins/, dags/, configs), then deletes. The manifest is written first
    with everything this sync may come to own and, after the last step, with exactly what it owns."""

    def upload(item: LocalFile) -> None:
        blob = bucket.blob(item.object_name)
        blob.metadata = {MANAGED_METADATA_KEY: plan.deployment}
        content_type = mimetypes.guess_type(item.path.name)[0] or "application/octet-stream"
        blob.upload_from_filename(str(item.path), content_type=content_type)

    def remove(obj: RemoteObject) -> None:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        # Only the generation that was listed (and checked as ours): a copy uploaded since is kept.
        with contextlib.suppress(NotFound, PreconditionFailed):  # already gone, or replaced since
            bucket.blob(obj.name).delete(if_generation_match=obj.generation)

    def upload_label(item: LocalFile) -> str:
        replaces = plan.replaces.get(item.object_name)
        note = f" (replaces the copy deployment {replaces!r} uploaded)" if replaces else ""
        return f"upload gs://{bucket_name}/{item.object_name}{note}"

    steps: list[tuple[str, Callable[[], None], int]] = [
        (upload_label(item), functools.partial(upload, item), item.size) for item in plan.uploads
    ]
    steps += [
        (f"delete gs://{bucket_name}/{obj.name}", functools.partial(remove, obj), 0) for obj in plan.deletes
    ]
    final = plan.final_manifest()
    if not steps:
        if previous is None or dict(previous.objects) != dict(final.objects):
            _write_manifest(bucket, final)
        return
    _write_manifest(bucket, plan.intent_manifest(previous))
    if out.isatty():
        _run_with_progress(steps, out)
    else:
        for label, action, _ in steps:
            action()
            print(label, file=out)
    _write_manifest(bucket, final)


def _run_with_progress(steps: list[tuple[str, Callable[[], None], int]], out: TextIO) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    total = sum(size for _, _, size in steps) or len(steps)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
    with Progress(*columns, console=Console(file=out)) as progress:
        task = progress.add_task("syncing", total=total)
        for label, action, size in steps:
            progress.update(task, description=label)
            action()
            progress.advance(task, size or 1)
