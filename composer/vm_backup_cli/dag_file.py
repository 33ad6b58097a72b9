"""`vm-backup dag-file --out DIR`: write the thin DAG file (gce_vm_backup_dags.py) into DIR.

For an environment that installs gce-vm-backup as a package (PyPI, a wheel) rather than syncing the
repository's folders: the DAG file goes into the environment's dags/ folder, next to the config
(gce_vm_backup.yaml). It imports the installed package; docs/existing-environment.md has the steps.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from vm_backup_cli.demo import directory
from vm_backup_cli.sources import MissingSource, find_sources

CONFIG_FILE = "gce_vm_backup.yaml"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dag-file", help="write the DAG file (gce_vm_backup_dags.py) for a dags/ folder"
    )
    parser.add_argument(
        "--out", type=directory, required=True, help="folder to write it into (created if missing)"
    )
    parser.add_argument("--force", action="store_true", help="replace a different file of the same name")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        source = find_sources().dag_file
    except MissingSource as exc:
        print(f"dag-file: {exc}", file=sys.stderr)
        return 2
    out: Path = args.out
    target = out / source.name
    if target.is_file() and target.read_bytes() != source.read_bytes() and not args.force:
        print(f"dag-file: {target} exists and differs; --force replaces it", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    print(f"Wrote {target}")
    config = out / CONFIG_FILE
    if not config.is_file():
        print(f"Next: the config at {config} (`vm-backup validate {config}` checks it).")
    return 0
