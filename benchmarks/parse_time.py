"""Parse time of the backup DAG file with a large config, against Airflow's floor for the same graph.

    uv run python benchmarks/parse_time.py [--vms 1000] [--groups 50] [--repeat 5]

Three DAG files are parsed, each alone in its folder:
- the trivial DAG file (one empty DAG): Airflow's fixed cost;
- the floor: the very graph the backup DAG file builds from the config, rebuilt with nothing but Airflow.
  Its shape (DAG ids, schedules and start dates; every task id; each VM task group as a mapped task group
  expanded with ``expand_kwargs`` over its resolve task's output; every dependency, setup/teardown pair and
  trigger rule) is read from the DAGs ``build_all_dags`` makes (backup, restore and freshness DAGs) and
  written into a generated DAG file as a literal, every task an ``EmptyOperator``. It has no params,
  default_args, doc, tags, callbacks or operator arguments, reads no config and imports nothing of ours:
  what any DAG file of that graph costs;
- the backup DAG file itself (``dags/gce_vm_backup_dags.py``) with the generated config.
Each measurement is a fresh process that imports Airflow first (not timed), imports the ``airflow.*``
modules the file names at top level as the DAG processor does before it forks the parser of a file
(``[dag_processor] parsing_pre_import_modules``, on by default: the floor names the same modules the
backup DAG file names, so neither pays them at its parse), and freezes the garbage collector's objects as
the DAG processor's manager does (``gc.freeze()`` in airflow/dag_processing/manager.py), then times a
DagBag load of
the folder, the way the DAG processor parses it; DAG files and plugins run from bytecode written by an
untimed first parse, as in a DAG processor that has parsed them once (``--cold``: no bytecode, every
parse compiles them). The three files are measured in turn, round after round (``--repeat``). Prints
wall-clock median and min and the CPU time's median and min (steadier on a shared machine: another
process's load only ever adds to a run), and backup / floor for each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRIVIAL = "from airflow.sdk import DAG\n\nwith DAG('trivial', schedule=None):\n    pass\n"
MEASURE = """
import gc, importlib, json, pathlib, sys, time
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.file import iter_airflow_imports
# as the DAG processor does before it forks the process that parses a file: import the airflow modules
# the file imports at top level (parsing_pre_import_modules, processor._pre_import_airflow_modules)
for dag_file in pathlib.Path(sys.argv[1]).glob("*.py"):
    for module in iter_airflow_imports(str(dag_file)):
        importlib.import_module(module)
gc.freeze()  # as the DAG processor does once Airflow is imported, before it forks a parsing process
start, cpu = time.perf_counter(), time.process_time()
bag = DagBag(sys.argv[1])
elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
assert not bag.import_errors, bag.import_errors
tasks = sum(len(d.tasks) for d in bag.dags.values())
print(json.dumps({"seconds": elapsed, "cpu": cpu, "dags": len(bag.dags), "tasks": tasks}))
"""
# Prints the shape of every DAG build_all_dags makes from the config argv[1] (run in its own process).
SHAPE = """
import json, sys
sys.path.insert(0, sys.argv[2])
from gce_vm_backup.config.models import load_config
from gce_vm_backup.dags.backup import build_all_dags
sys.path.insert(0, sys.argv[3])
from parse_time import dag_shape
print(json.dumps([dag_shape(dag) for dag in build_all_dags(load_config(sys.argv[1])).values()]))
"""
# The floor DAG file: SHAPES (inserted above this) rebuilt from EmptyOperators.
FLOOR = """
from datetime import datetime

import airflow.sdk.definitions.decorators.task_group  # named for the pre-import, as the DAG file does
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, task_group


def group_body(dag, tasks, upstream):
    def body():
        for task in tasks:
            EmptyOperator(task_id=task["id"], trigger_rule=task["rule"])
        # in-group edges before the group closes, as the real group function sets them: Airflow makes the
        # mapped input upstream of the group's tasks that have no upstream task inside it
        for task_id, ids in upstream:
            dag.get_task(task_id).set_upstream([dag.get_task(u) for u in ids])

    return body


def build(shape, dag_id):
    start = datetime.fromisoformat(shape["start_date"])
    with DAG(dag_id=dag_id, schedule=shape["schedule"], start_date=start) as dag:
        for item in shape["items"]:
            if item["group"] is None:
                task = item["tasks"][0]
                EmptyOperator(task_id=task["id"], trigger_rule=task["rule"])
                continue
            prefix = item["group"] + "."
            inside = [
                (task_id, [u for u in ids if u.startswith(prefix)])
                for task_id, ids in shape["upstream"]
                if task_id.startswith(prefix)
            ]
            task_group(group_id=item["group"])(group_body(dag, item["tasks"], inside)).expand_kwargs(
                dag.get_task(item["source"]).output
            )
        for teardown, setups in shape["teardowns"]:
            dag.get_task(teardown).as_teardown(setups=[dag.get_task(setup) for setup in setups])
        for task_id, upstream in shape["upstream"]:
            dag.get_task(task_id).set_upstream([dag.get_task(u) for u in upstream])
    return dag


for shape in SHAPES:
    for dag_id in shape["dag_ids"]:
        globals()[dag_id] = build(shape, dag_id)
"""


def dag_shape(dag: Any) -> dict[str, Any]:
    """The graph of ``dag`` as plain data (see the module docstring); the inverse of the floor's build()."""
    from airflow.sdk.definitions.taskgroup import MappedTaskGroup

    items: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}
    for task in dag.tasks:
        name = task.task_id.rsplit(".", 1)[-1]
        entry = {"id": name, "rule": str(getattr(task.trigger_rule, "value", task.trigger_rule))}
        group: Any = task.task_group
        if group is None or group.group_id is None:
            items.append({"group": None, "tasks": [entry]})
            continue
        if not isinstance(group, MappedTaskGroup) or group.parent_group.group_id is not None:
            raise ValueError(f"{task.task_id}: the floor models root tasks and top-level mapped groups only")
        if group.group_id not in groups:
            source = next(group.iter_mapped_dependencies()).task_id  # the task whose XCom it expands
            groups[group.group_id] = {"group": group.group_id, "source": source, "tasks": []}
            items.append(groups[group.group_id])
        groups[group.group_id]["tasks"].append(entry)
    teardowns = [
        [t.task_id, sorted(u for u in t.upstream_task_ids if dag.get_task(u).is_setup)]
        for t in dag.tasks
        if t.is_teardown
    ]
    return {
        "dag_ids": [dag.dag_id],
        "schedule": dag.schedule if isinstance(dag.schedule, str) else None,
        "start_date": dag.start_date.isoformat() if dag.start_date else None,
        "items": items,
        "teardowns": teardowns,
        "upstream": [[t.task_id, sorted(t.upstream_task_ids)] for t in dag.tasks if t.upstream_task_ids],
    }


def floor_file(shapes: list[dict[str, Any]]) -> str:
    """The floor DAG file's text for these DAG shapes (DAGs of one shape share its literal)."""
    merged: dict[str, dict[str, Any]] = {}
    for shape in shapes:
        key = json.dumps({k: v for k, v in shape.items() if k != "dag_ids"}, sort_keys=True)
        merged.setdefault(key, {**shape, "dag_ids": []})["dag_ids"] += shape["dag_ids"]
    return f"SHAPES = {list(merged.values())!r}\n{FLOOR}"


def big_config(vms: int, groups: int) -> str:
    lines = [
        "version: 1",
        "deployment: bench",
        "defaults:",
        '  start_date: "2026-01-01T00:00:00+00:00"',
        "groups:",
    ]
    per_group = vms // groups
    for g in range(groups):
        lines += [f"  group-{g:03d}:", '    schedule: "0 3 * * *"', "    tiers:"]
        for tier in range(2):
            lines.append("      -")
            for v in range(per_group // 2):
                zone = ["us-central1-a", "us-central1-b", "europe-west1-b"][v % 3]
                lines.append(
                    f"        - {{project: fleet-project, zone: {zone}, instance: vm-{g:03d}-{tier}-{v:03d}}}"
                )
    return "\n".join(lines) + "\n"


def shapes_of(config: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            SHAPE,
            str(config),
            str(REPO / "plugins" / "operators"),
            str(Path(__file__).parent),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"building the DAGs' shape failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(folder: Path, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(folder)], env=env, capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(f"parsing {folder} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--cold",
        action="store_true",
        help="no bytecode cache for the DAG files and the plugins (each parse compiles them again)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="parse-bench-"))
    backup, floor, trivial = work / "backup", work / "floor", work / "trivial"
    for folder in (backup, floor, trivial):
        folder.mkdir()
    shutil.copy(REPO / "dags" / "gce_vm_backup_dags.py", backup)
    (backup / "gce_vm_backup.yaml").write_text(big_config(args.vms, args.groups))
    (trivial / "trivial_dag.py").write_text(TRIVIAL)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(work / "home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "GCE_VM_BACKUP_STRICT": "1",
        # this checkout's package first, whatever the environment has installed (an editable install of
        # another worktree, say)
        "PYTHONPATH": os.pathsep.join(
            [str(REPO / "plugins" / "operators"), str(REPO / "composer"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    # A DAG processor that has parsed the file once runs from bytecode (the package in site-packages is
    # compiled at install): so are the timed parses, after an untimed one, unless --cold.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    if args.cold:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    (floor / "floor_dags.py").write_text(floor_file(shapes_of(backup / "gce_vm_backup.yaml", env)))
    names = {
        "trivial": ("trivial DAG file", trivial),
        "floor": ("floor: same graph, EmptyOperators only", floor),
        "backup": (f"backup DAG file ({args.vms} VMs, {args.groups} groups)", backup),
    }
    for _, folder in names.values():
        measure(folder, env)  # writes the bytecode (unless --cold), not timed
    # Round robin (trivial, floor, backup, trivial, ...): a change in the machine's load between the rounds
    # then weighs on all three alike, not on whichever file was being measured at the time.
    runs: dict[str, list[dict[str, float]]] = {key: [] for key in names}
    for _ in range(args.repeat):
        for key, (_, folder) in names.items():
            runs[key].append(measure(folder, env))
    print(
        f"{'file':<48} {'DAGs':>5} {'tasks':>6} {'median s':>9} {'min s':>7} {'CPU median s':>13} "
        f"{'CPU min s':>10}"
    )
    for key, (name, _) in names.items():
        first = runs[key][0]
        wall, cpu = [r["seconds"] for r in runs[key]], [r["cpu"] for r in runs[key]]
        print(
            f"{name:<48} {first['dags']:>5} {first['tasks']:>6} {statistics.median(wall):>9.3f} "
            f"{min(wall):>7.3f} {statistics.median(cpu):>13.3f} {min(cpu):>10.3f}"
        )
    shape = {key: (runs[key][0]["dags"], runs[key][0]["tasks"]) for key in ("floor", "backup")}
    if shape["floor"] != shape["backup"]:
        raise SystemExit(
            f"the floor's (DAGs, tasks) {shape['floor']} differ from the backup file's {shape['backup']}"
        )

    def ratio(field: str, pick: Any) -> float:
        return float(pick([r[field] for r in runs["backup"]]) / pick([r[field] for r in runs["floor"]]))

    print(
        f"backup / floor: {ratio('seconds', statistics.median):.2f}x (median), {ratio('seconds', min):.2f}x "
        f"(min), {ratio('cpu', statistics.median):.2f}x (CPU, median), {ratio('cpu', min):.2f}x (CPU, min)"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
