"""Entry point of `vm-backup` and `python -m vm_backup_cli`.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` (which registers the
subcommand and sets ``func`` on it) and a ``run(args) -> int`` that returns the exit code.
Exit codes: 0 success, 1 the input is invalid or the job failed, 2 wrong usage (argparse) or something to
install first (a subcommand whose extra is missing says which, in one line).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

# Modules are imported lazily so `vm-backup validate` never pays for Google client imports.
SUBCOMMANDS: dict[str, str] = {
    "validate": "vm_backup_cli.validate",
    "sync": "vm_backup_cli.sync",
    "demo": "vm_backup_cli.demo",
    "local-env": "vm_backup_cli.local_env",
    "backups": "vm_backup_cli.backups",
    "dag-file": "vm_backup_cli.dag_file",
    "iam-role": "vm_backup_cli.iam_role",
}
# The extra a subcommand's third-party imports come with (`pip install 'gce-vm-backup[cli]'`); the others
# need the runtime dependencies only.
EXTRAS: dict[str, str] = {"sync": "cli"}


def _needs_extra(subparsers: Any, command: str, missing: str) -> None:
    """``command`` as a subcommand that takes any arguments and says, in one line, what to install."""
    extra = EXTRAS.get(command)
    what = f"pip install 'gce-vm-backup[{extra}]'" if extra else f"install the module {missing}"
    message = f"vm-backup {command} needs {missing}, which is not installed: {what}"
    parser = subparsers.add_parser(command, help=f"(not available: {what})", add_help=False)

    def run(args: argparse.Namespace) -> int:
        print(message, file=sys.stderr)
        return 2

    parser.set_defaults(func=run, takes_any_arguments=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vm-backup",
        description="Back up Compute Engine VMs from Cloud Composer.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # subcommand not shipped in this build
            top = (exc.name or "").split(".")[0]
            if not top or top in {"gce_vm_backup", "vm_backup_cli", "gce_emulator"}:
                raise
            _needs_extra(subparsers, command, exc.name or top)
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "takes_any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
