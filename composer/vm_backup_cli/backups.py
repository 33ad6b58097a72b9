"""`vm-backup backups [--config PATH] [--group G] [--json]`: what backups exist, per VM of each group.

For every VM of each group (or of ``--group``): its snapshot sets newest first (time, disks, status,
total size) and the age of its newest complete READY set against the group's schedule; older than two
schedule periods is flagged STALE (a group without a schedule never is). The snapshots are listed
with the package's hook, as the backup DAG lists them: the group's connection (``gcp_conn_id``) when
Airflow has it, else Application Default Credentials, and ``GCE_VM_BACKUP_COMPUTE_ENDPOINT`` for another
endpoint (the emulator). The logic is ``gce_vm_backup.report.freshness`` (the freshness check DAG and the UI
page show the same).

A VM is its path (project, zone, name): two VMs named alike in two zones are listed apart, each with
its own sets. A VM that no longer exists is still listed with its sets, marked ``GONE`` (``"exists":
false`` in the JSON): a deleted VM's sets are what a restore needs.

Exit codes: 0 listed (stale VMs included: they are flagged, in the JSON as ``"stale": true``), 1 the config
is invalid, a connection's credentials cannot be read (its ``key_path`` names no file), or a listing failed
(one line each), 2 wrong usage (a missing config file, an unknown group).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from vm_backup_cli.demo import regular_file

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gce_vm_backup.report.freshness import VmBackups

DEFAULT_CONFIG = "dags/gce_vm_backup.yaml"
SETS_SHOWN = 10  # per VM in the table; --json has them all


def group_id(text: str) -> str:
    """argparse type: a group id as the config writes them."""
    from gce_vm_backup.config.models import GROUP_ID

    if not GROUP_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a group id (1-50 chars: lowercase letters, digits, _ and -, starting with a "
            "letter)"
        )
    return text


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "backups",
        help="list each VM's snapshot sets and flag stale backups",
        description="List each VM's snapshot sets, newest first, and flag VMs whose newest READY set is "
        "older than two schedule periods.",
    )
    parser.add_argument(
        "--config",
        type=regular_file,
        default=DEFAULT_CONFIG,
        help=f"backup config (default {DEFAULT_CONFIG})",
    )
    parser.add_argument("--group", type=group_id, help="only this group")
    parser.add_argument("--json", action="store_true", help="print JSON (every set of every VM)")
    parser.set_defaults(func=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    from google.auth.exceptions import GoogleAuthError

    from gce_vm_backup.config.models import read_config
    from gce_vm_backup.errors import BackupError
    from gce_vm_backup.report.freshness import collect_group

    parser: argparse.ArgumentParser = args.parser
    config, problems = read_config(args.config)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1
    if args.group is not None and args.group not in config.groups:
        parser.error(
            f"argument --group: no group {args.group!r} in {args.config} (groups: {', '.join(config.groups)})"
        )
    groups = {gid: g for gid, g in config.groups.items() if args.group in (None, gid)}
    now = datetime.now(UTC)
    found: dict[str, list[VmBackups]] = {}
    for gid, group in groups.items():
        try:
            hook = _hook(group.gcp_conn_id)
            unusable = credentials_problem(hook)
            if unusable is not None:
                print(f"backups: group {gid}: {unusable}", file=sys.stderr)
                return 1
            found[gid] = collect_group(hook, gid, group, deployment=config.deployment, now=now)
        except (BackupError, GoogleAuthError) as exc:  # no credentials, a bad endpoint, an API error
            print(f"backups: group {gid}: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1
        except OSError as exc:  # a credentials file that cannot be read
            print(
                f"backups: group {gid}: connection {group.gcp_conn_id!r}: cannot read its credentials: "
                f"{' '.join(str(exc).split())}",
                file=sys.stderr,
            )
            return 1
    if args.json:
        print(json.dumps(as_json(found, config.deployment, now), indent=2))
    else:
        print(format_table(found, {gid: g.schedule for gid, g in groups.items()}))
    return 0


def _hook(gcp_conn_id: str) -> Any:
    from gce_vm_backup.compute.hook import ComputeBackupHook

    return ComputeBackupHook(gcp_conn_id=gcp_conn_id)


def credentials_problem(hook: Any) -> str | None:
    """Why the hook's connection cannot give credentials, before any call: a ``key_path`` extra that names
    no readable file. None when nothing is wrong that can be seen without Google."""
    extras = getattr(hook, "extras", None) or {}
    key_path = extras.get("key_path") or extras.get("extra__google_cloud_platform__key_path")
    if not key_path:
        return None
    if not os.path.isfile(key_path):
        return f"connection {hook.gcp_conn_id!r}: key_path {key_path} does not exist or is not a file"
    if not os.access(key_path, os.R_OK):
        return f"connection {hook.gcp_conn_id!r}: key_path {key_path} cannot be read"
    return None


def as_json(found: dict[str, list[VmBackups]], deployment: str, now: datetime) -> dict[str, Any]:
    return {
        "deployment": deployment,
        "checked_at": now.isoformat(timespec="seconds"),
        "groups": {gid: [vm.as_json() for vm in vms] for gid, vms in found.items()},
    }


def _size(storage_bytes: int) -> str:
    return f"{storage_bytes / (1 << 30):.1f} GiB"


def format_table(found: dict[str, list[VmBackups]], schedules: dict[str, str | None]) -> str:
    """The human-readable listing: per group, per VM, a head line then its newest sets."""
    from gce_vm_backup.report.freshness import STALE_AFTER_PERIODS, format_age, set_status, set_time
    from gce_vm_backup.report.text import table_lines

    lines: list[Sequence[str] | str] = []  # a line, or a set's row of SET_COLUMNS
    for gid, vms in found.items():
        limit = vms[0].stale_before if vms else None
        when = (
            f"schedule {schedules[gid]}, stale without a READY set since {limit:%Y-%m-%d %H:%M} UTC "
            f"(the last {STALE_AFTER_PERIODS} runs)"
            if limit
            else f"schedule {schedules[gid] or 'manual only'}, never stale"
        )
        lines.append(f"group {gid} ({when}): {len(vms)} VM(s), {sum(vm.stale for vm in vms)} stale")
        for vm in vms:
            flag = "STALE  " if vm.stale else "       "
            if vm.newest is None:
                state = "no complete READY set"
            else:
                state = f"newest READY set {format_age(vm.age)} old"
            note = "" if vm.in_config else " (no longer a target of the group)"
            if not vm.exists:
                note += " GONE: no VM at this path now (restore it from a set)"
            lines.append(f"  {flag}{vm.vm}: {state}, {len(vm.sets)} set(s){note}")
            for snapshot_set in vm.sets[:SETS_SHOWN]:
                disks = ", ".join(f"{s.disk_name} {s.status}" for s in snapshot_set.snapshots)
                lines.append(
                    (
                        "",
                        f"{set_time(snapshot_set):%Y-%m-%d %H:%M:%S} UTC",
                        "",
                        snapshot_set.run,
                        set_status(snapshot_set),
                        _size(snapshot_set.storage_bytes),
                        "",
                        f"{len(snapshot_set.disks)} disk(s): {disks}",
                    )
                )
            if len(vm.sets) > SETS_SHOWN:
                lines.append(f"           ... {len(vm.sets) - SETS_SHOWN} older set(s) (--json lists all)")
    return "\n".join(table_lines(SET_COLUMNS, lines, header=False))


# A set's row under its VM (report.text.table_lines): indented under the VM, its time, run, status, size
# and disks; the empty columns are the wider gaps.
SET_COLUMNS = (
    ("", "left", 10),
    ("", "left", 0),
    ("", "left", 0),
    ("", "left", 16),
    ("", "left", 10),
    ("", "right", 10),
    ("", "left", 0),
    ("", "left", 0),
)
