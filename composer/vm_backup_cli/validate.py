"""`vm-backup validate [CONFIG ...]`: check backup configs the way the DAG processor will read them.

Prints every problem on its own line (file, group, key) and exits 1; otherwise builds every DAG in
strict mode (no API call) and prints a short summary. Default config: dags/gce_vm_backup.yaml.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path("dags/gce_vm_backup.yaml")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a backup config file",
        description="Check backup config files; exit 1 on problems.",
    )
    parser.add_argument("configs", nargs="*", type=Path, default=[DEFAULT_CONFIG], metavar="CONFIG")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gce_vm_backup.config import read_config
    from gce_vm_backup.dag_factory import build_dags

    failed = False
    for path in args.configs:
        config, problems = read_config(path)
        if problems:
            failed = True
            for problem in problems:
                print(problem, file=sys.stderr)
            continue
        dags = build_dags(config)
        vms = sum(len(group.all_targets()) for group in config.groups.values())
        print(f"{path}: OK: {len(config.groups)} group(s), {vms} target(s)")
        for dag_id, dag in dags.items():
            schedule = config.groups[dag_id.removeprefix("gce_vm_backup__")].schedule or "manual only"
            print(f"  {dag_id}: {schedule}, {len(dag.tasks)} tasks")
    return 1 if failed else 0
