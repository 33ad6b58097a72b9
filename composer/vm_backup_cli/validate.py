"""`vm-backup validate [CONFIG ...]`: check backup configs the way the DAG processor will read them.

Prints every problem on its own line (file, group, key) and exits 1; otherwise builds every DAG in
strict mode (no API call) and prints a short summary with each group's plan: per tier, the VMs it
targets and the chain of tasks each VM runs, read from the built DAG by the task names of
``gce_vm_backup.backup.stages`` (so the plan shown is the DAG's, whatever its stages are). A valid config
is compiled beside it (``gce_vm_backup.compiled.json``, see gce_vm_backup/config/compiled.py): the DAG
file reads that instead of the YAML while it matches the YAML. Default config: dags/gce_vm_backup.yaml.
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


def tier_chain(dag: Any, tier: int) -> str:
    """The tasks each VM of tier ``tier`` runs, in dependency order (ties in creation order):
    ``precheck -> stop_snapshot_start -> ensure_running (teardown) -> verify -> retention``."""
    from gce_vm_backup.backup import stages

    prefix = stages.tier_task(tier, "")
    tasks = [task for task in dag.tasks if task.task_id.startswith(prefix)]
    pending = {task.task_id: set(task.upstream_task_ids) for task in tasks}
    placed: list[str] = []
    while pending:
        ready = [t for t, upstream in pending.items() if upstream & set(pending) == set()] or list(pending)
        placed.append(ready[0])
        del pending[ready[0]]
    by_id = {task.task_id: task for task in tasks}
    return " -> ".join(
        task_id.removeprefix(prefix) + (" (teardown)" if by_id[task_id].is_teardown else "")
        for task_id in placed
    )


def _targets(tier: list[Any]) -> str:
    names = [f"{t.zone}/{t.instance}" for t in tier if getattr(t, "instance", None)]
    selectors = len(tier) - len(names)
    parts = [f"{len(names)} VM(s)"] if names else []
    parts += [f"{selectors} label selector(s)"] if selectors else []
    return " and ".join(parts) or "no target"


def plan_lines(dag: Any, group: Any) -> list[str]:
    """One line per tier: what it targets and the per-VM chain, then the report task."""
    from gce_vm_backup.backup import stages

    lines = [
        f"    {stages.tier_group(n)} ({_targets(tier)}): {stages.resolve_task(n)}, "
        f"then per VM: {tier_chain(dag, n)}"
        for n, tier in enumerate(group.tier_list, start=1)
    ]
    if len(group.tier_list) > 1:
        lines.append("    tiers stop in order and start in reverse order")
    lines.append(
        f"    {stages.REPORT} (last, whatever happened); "
        f"at most {group.max_concurrent_vms} VM(s) down at once"
    )
    return lines


def compile_line(path: Path) -> str:
    """Write the compiled form of the valid config ``path``; the line that says what became of it."""
    from gce_vm_backup.config.compiled import write_compiled
    from gce_vm_backup.config.loading import ConfigFileError

    try:
        written = write_compiled(path)
    except (OSError, ConfigFileError) as exc:
        return f"  not compiled ({exc}): the DAG file reads the YAML"
    if written is None:
        return "  not compiled (a value JSON cannot hold exactly): the DAG file reads the YAML"
    return f"  compiled to {written}: the DAG file reads it while it matches {path.name}"


def run(args: argparse.Namespace) -> int:
    from gce_vm_backup.config.models import read_config
    from gce_vm_backup.dags.backup import build_dags, dag_id_for

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
        for group_id, group in config.groups.items():
            dag = dags[dag_id_for(group_id)]
            print(f"  {dag.dag_id}: {group.schedule or 'manual only'}, {len(dag.tasks)} tasks")
            for line in plan_lines(dag, group):
                print(line)
        print(compile_line(path))
    return 1 if failed else 0
