"""`vm-backup sync`: upload dags/ and plugins/ to a Composer environment's bucket, changes only.

    vm-backup sync --bucket my-composer-bucket [--delete] [--dry-run]
    vm-backup sync --environment vm-backup --location europe-west1 [--project my-project]

Before anything is uploaded the backup config (dags/**/gce_vm_backup*.yaml) is validated; a broken
config never reaches the bucket. Exit codes: 0 ok (also when nothing changed), 1 invalid config or a
failed sync, 2 wrong usage.
"""

from __future__ import annotations

import argparse
import functools
import logging
import mimetypes
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from vm_backup_cli.sync_plan import (
    MANAGED_METADATA_KEY,
    SYNCED_FOLDERS,
    LocalFile,
    RemoteObject,
    SyncPlan,
    plan_sync,
    scan_local,
)

if TYPE_CHECKING:
    import google.cloud.storage as storage

log = logging.getLogger(__name__)
CONFIG_GLOB = "**/gce_vm_backup*.yaml"


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
        "--delete",
        action="store_true",
        help="delete objects this command uploaded earlier that no longer exist locally",
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

    problems = validate_configs(source)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(
            f"sync: the config is invalid ({len(problems)} problem(s)); nothing was uploaded.",
            file=sys.stderr,
        )
        return 1

    try:
        bucket_name = args.bucket or lookup_bucket(args.environment, args.location, args.project)
        bucket_name = normalise_bucket(bucket_name)
        return sync(source, bucket_name, project=args.project, delete=args.delete, dry_run=args.dry_run)
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


def validate_configs(source: Path) -> list[str]:
    """Every problem of every backup config under dags/, one line each (file, group, key)."""
    from gce_vm_backup.config import validate_file

    problems: list[str] = []
    for path in sorted((source / "dags").glob(CONFIG_GLOB)):
        problems.extend(str(problem) for problem in validate_file(path))
    return problems


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
            managed = bool(blob.metadata and blob.metadata.get(MANAGED_METADATA_KEY))
            remote[blob.name] = RemoteObject(blob.name, blob.md5_hash, blob.size or 0, managed)
    return remote


def print_plan(plan: SyncPlan, bucket_name: str, out: TextIO) -> None:
    for item in plan.uploads:
        print(f"upload  gs://{bucket_name}/{item.object_name} ({item.size} bytes)", file=out)
    for obj in plan.deletes:
        print(f"delete  gs://{bucket_name}/{obj.name}", file=out)


def sync(
    source: Path,
    bucket_name: str,
    *,
    project: str | None = None,
    delete: bool = False,
    dry_run: bool = False,
    out: TextIO | None = None,
) -> int:
    """Sync ``source``'s dags/ and plugins/ to ``bucket_name``; returns the exit code.

    Raises SyncError (printed by ``run``) for a missing bucket, missing credentials or an API error.
    """
    out = out or sys.stdout
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions
    from google.cloud.storage import Client

    try:
        client = Client(project=project)
        bucket = client.bucket(bucket_name)
        local = scan_local(source)
        plan = plan_sync(local, list_remote(bucket), delete=delete)
        if dry_run:
            print_plan(plan, bucket_name, out)
            print(
                f"dry run: would upload {len(plan.uploads)} ({plan.upload_bytes} bytes), "
                f"delete {len(plan.deletes)}, unchanged {len(plan.unchanged)}; nothing was changed.",
                file=out,
            )
            return 0
        _apply(bucket, bucket_name, plan, out)
    except auth_exceptions.DefaultCredentialsError as exc:
        raise SyncError(
            f"no Google credentials ({exc}); run `gcloud auth application-default login`"
        ) from exc
    except api_exceptions.NotFound as exc:
        raise SyncError(f"--bucket: gs://{bucket_name} not found ({exc.message})") from exc
    except api_exceptions.GoogleAPICallError as exc:
        raise SyncError(f"gs://{bucket_name}: {exc.message}") from exc
    print(
        f"synced gs://{bucket_name}: uploaded {len(plan.uploads)} ({plan.upload_bytes} bytes), "
        f"deleted {len(plan.deletes)}, unchanged {len(plan.unchanged)}",
        file=out,
    )
    return 0


def _apply(bucket: storage.Bucket, bucket_name: str, plan: SyncPlan, out: TextIO) -> None:
    def upload(item: LocalFile) -> None:
        blob = bucket.blob(item.object_name)
        blob.metadata = {MANAGED_METADATA_KEY: "true"}
        content_type = mimetypes.guess_type(item.path.name)[0] or "application/octet-stream"
        blob.upload_from_filename(str(item.path), content_type=content_type)

    def remove(obj: RemoteObject) -> None:
        bucket.blob(obj.name).delete()

    steps: list[tuple[str, Callable[[], None], int]] = [
        (f"upload gs://{bucket_name}/{item.object_name}", functools.partial(upload, item), item.size)
        for item in plan.uploads
    ]
    steps += [
        (f"delete gs://{bucket_name}/{obj.name}", functools.partial(remove, obj), 0) for obj in plan.deletes
    ]
    if not steps:
        return
    if out.isatty():
        _run_with_progress(steps, out)
    else:
        for label, action, _ in steps:
            action()
            print(label, file=out)


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
