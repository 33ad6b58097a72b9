"""Entry point of `vm-backup` and `python -m vm_backup_cli`.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` (which registers the
subcommand and sets ``func`` on it) and a ``run(args) -> int`` that returns the exit code.
Exit codes: 0 success, 1 the input is invalid or the job failed, 2 wrong usage (argparse).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules are imported lazily so `vm-backup validate` never pays for Google client imports.
SUBCOMMANDS: dict[str, str] = {
    "validate": "vm_backup_cli.validate",
    "sync": "vm_backup_cli.sync",
    "demo": "vm_backup_cli.demo",
    "local-env": "vm_backup_cli.local_env",
    "backups": "vm_backup_cli.backups",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vm-backup",
        description="Back up Compute Engine VMs from Cloud Composer.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # subcommand not shipped in this build
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
