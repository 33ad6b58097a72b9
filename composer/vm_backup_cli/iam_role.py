"""`vm-backup iam-role`: the gcloud commands that give an existing environment's service account the backup
role in one project (the custom role terraform creates, with exactly ``REQUIRED_PERMISSIONS``).

Prints them, runs nothing: read them, then run them (docs/existing-environment.md).
"""

from __future__ import annotations

import argparse
import re
import shlex
from typing import Any

ROLE_ID = "gceVmBackupOperator"  # terraform's default custom_role_id
TITLE = "GCE VM backup operator"


def role_id(text: str) -> str:
    """argparse type: a custom role id (3 to 64 letters, digits, ``_`` and ``.``)."""
    if not re.fullmatch(r"[A-Za-z0-9_.]{3,64}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a role id (3-64 letters, digits, _ and .)")
    return text


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "iam-role", help="print the gcloud commands that grant an existing service account the backup role"
    )
    parser.add_argument("--project", required=True, help="a project whose VMs are backed up")
    parser.add_argument("--service-account", required=True, help="the environment's service account (email)")
    parser.add_argument(
        "--role-id", type=role_id, default=ROLE_ID, help=f"custom role id (default {ROLE_ID})"
    )
    parser.set_defaults(func=run)


def commands(project: str, service_account: str, role: str) -> list[list[str]]:
    from gce_vm_backup.compute.permissions import REQUIRED_PERMISSIONS

    create = ["gcloud", "iam", "roles", "create", role, f"--project={project}", f"--title={TITLE}"]
    create.append(f"--permissions={','.join(sorted(REQUIRED_PERMISSIONS))}")
    bind = ["gcloud", "projects", "add-iam-policy-binding", project]
    bind += [f"--member=serviceAccount:{service_account}", f"--role=projects/{project}/roles/{role}"]
    return [create, bind]


def run(args: argparse.Namespace) -> int:
    for argv in commands(args.project, args.service_account, args.role_id):
        print(shlex.join(argv))
    return 0
