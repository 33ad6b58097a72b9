"""Parse time of each DAG file of dags/ with a large config, against Airflow's floor for the same DAGs.

    uv run python benchmarks/parse_time.py [--vms 1000] [--groups 50] [--repeat 5] [--yaml] [--cold]
    uv run python benchmarks/parse_time.py --vms 10000 --groups 500 --repeat 3

For each DAG file of dags/ (``gce_vm_backup_dags.py``), and a trivial one, each alone in its folder:
- the trivial DAG file (one empty DAG): Airflow's fixed cost;
- the DAG file itself with the generated config beside it, and the config's compiled form as
  ``vm-backup sync`` writes it (``--yaml``: without it, the DAG file reads the YAML);
- its floor: the very DAGs that file builds, rebuilt with nothing but Airflow. Their shape (DAG ids,
  schedules and start dates; every task id; each VM task group as a mapped task group expanded with
  ``expand_kwargs`` over its resolve task's output; every dependency, setup/teardown pair and trigger rule)
  is read from the DAGs a DagBag of the DAG file's folder holds and written into a generated DAG file as a
  literal, every task an ``EmptyOperator``. It has no params, default_args, doc, tags, callbacks or
  operator arguments, reads no config and imports nothing of ours: what any DAG file of those DAGs costs.
Each measurement is a fresh process that imports Airflow first (not timed), imports the ``airflow.*``
modules the file names at top level as the DAG processor does before it forks the parser of a file
(``[dag_processor] parsing_pre_import_modules``, on by default: the floor names the same modules as the
DAG file, so neither pays them at its parse), and freezes the garbage collector's objects as the DAG
processor's manager does (``gc.freeze()`` in airflow/dag_processing/manager.py), then times a DagBag load
of the folder, the way the DAG processor parses it; DAG files and plugins run from bytecode written by an
untimed first parse, as in a DAG processor that has parsed them once (``--cold``: no bytecode, every
parse compiles them). The files are measured in turn, round after round (``--repeat``). Prints wall-clock
median and min and the CPU time's median and min (steadier on a shared machine: another process's load
only ever adds to a run), each DAG file / its floor, and where the DAG file's time goes (the same kind of
fresh process, timing each step the DAG file takes in turn: importing the package, reading the config,
building each kind of DAG; the rest of the DagBag load is Airflow's own, as for the floor).
"""

from __future__ import annotations

import argparse
import ast
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
# Prints the shape of every DAG of a DagBag of the folder argv[1] (run in its own process).
SHAPE = """
import json, sys
sys.path.insert(0, sys.argv[2])
from parse_time import dag_shape
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
assert not bag.import_errors, bag.import_errors
print(json.dumps([dag_shape(dag) for dag in bag.dags.values()]))
"""
# Where a parse of the whole config goes, step by step, in a fresh process as MEASURE's (argv: the config,
# the package's folder, "compiled" or "yaml").
BREAKDOWN = """
import gc, importlib, json, sys, time
import airflow.providers.standard.operators.empty, airflow.providers.standard.operators.hitl
import airflow.providers.standard.operators.python
gc.freeze()
sys.path.insert(0, sys.argv[2])
steps = {}
def step(name, work):
    start = time.process_time()
    result = work()
    steps[name] = time.process_time() - start
    return result
step("import the package", lambda: [
    importlib.import_module(m)
    for m in ("gce_vm_backup.dags.backup", "gce_vm_backup.dags.restore", "gce_vm_backup.report.freshness")
])
from gce_vm_backup.config.models import read_config
from gce_vm_backup.dags.backup import build_dags
from gce_vm_backup.dags.restore import build_restore_dags
from gce_vm_backup.report.freshness import build_freshness_dag
compiled = sys.argv[3] == "compiled"
read = lambda: read_config(sys.argv[1], compiled=compiled)
config, problems = step(f"read the config ({sys.argv[3]})", read)
assert not problems, problems
backup = step("build the backup DAGs", lambda: build_dags(config))
restore = step("build the restore and drill DAGs", lambda: build_restore_dags(config))
step("build the freshness DAG", lambda: build_freshness_dag(config))
print(json.dumps(steps))
"""
# The floor DAG file: SHAPES and the DAG file's own top-level airflow imports (inserted above this) rebuilt
# from EmptyOperators.
FLOOR = """
from datetime import datetime

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


def floor_file(shapes: list[dict[str, Any]], pre_imports: str = "") -> str:
    """The floor DAG file's text for these DAG shapes (DAGs of one shape share its literal), naming the
    same modules for the DAG processor to import before the parse as the DAG file does."""
    merged: dict[str, dict[str, Any]] = {}
    for shape in shapes:
        key = json.dumps({k: v for k, v in shape.items() if k != "dag_ids"}, sort_keys=True)
        merged.setdefault(key, {**shape, "dag_ids": []})["dag_ids"] += shape["dag_ids"]
    return f"{pre_imports}SHAPES = {list(merged.values())!r}\n{FLOOR}"


def airflow_imports(dag_file: Path) -> str:
    """The ``import airflow...`` statements at the top level of ``dag_file``: the modules the DAG
    processor imports before it parses the file."""
    tree = ast.parse(dag_file.read_text())
    names = [alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names]
    return "".join(f"import {name}  # noqa: F401\n" for name in names if name.startswith("airflow."))


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


def shapes_of(folder: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-c", SHAPE, str(folder), str(Path(__file__).parent)],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"building the DAGs' shape failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run(script: str, args: list[str], env: dict[str, str]) -> Any:
    out = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(folder: Path, env: dict[str, str]) -> dict[str, float]:
    return _run(MEASURE, [str(folder)], env)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--yaml",
        action="store_true",
        help="no compiled form beside the config: the DAG files read the YAML",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="no bytecode cache for the DAG files and the plugins (each parse compiles them again)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="parse-bench-"))
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
    sys.path.insert(0, str(REPO / "plugins" / "operators"))
    from gce_vm_backup.config.compiled import write_compiled

    config_text = big_config(args.vms, args.groups)
    (work / "trivial").mkdir()
    (work / "trivial" / "trivial_dag.py").write_text(TRIVIAL)
    names: dict[str, tuple[str, Path]] = {"trivial": ("trivial DAG file", work / "trivial")}
    pairs: list[tuple[str, str]] = []  # (DAG file key, its floor's key)
    config_path = None
    for dag_file in sorted((REPO / "dags").glob("*.py")):
        folder = work / dag_file.stem
        folder.mkdir()
        shutil.copy(dag_file, folder)
        config_path = folder / "gce_vm_backup.yaml"
        config_path.write_text(config_text)
        if not args.yaml:
            write_compiled(config_path)  # as vm-backup sync does
        floor = work / f"{dag_file.stem}_floor"
        floor.mkdir()
        (floor / "floor_dags.py").write_text(floor_file(shapes_of(folder, env), airflow_imports(dag_file)))
        names[dag_file.stem] = (dag_file.name, folder)
        names[f"{dag_file.stem}_floor"] = ("  its floor: same DAGs, EmptyOperators only", floor)
        pairs.append((dag_file.stem, f"{dag_file.stem}_floor"))
    for _, folder in names.values():
        measure(folder, env)  # writes the bytecode (unless --cold), not timed
    # Round robin (trivial, DAG file, floor, ...): a change in the machine's load between the rounds then
    # weighs on every file alike, not on whichever file was being measured at the time.
    runs: dict[str, list[dict[str, float]]] = {key: [] for key in names}
    steps: list[dict[str, float]] = []
    source = "yaml" if args.yaml else "compiled"
    for _ in range(args.repeat):
        for key, (_, folder) in names.items():
            runs[key].append(measure(folder, env))
        steps.append(_run(BREAKDOWN, [str(config_path), str(REPO / "plugins" / "operators"), source], env))
    print(
        f"{args.vms} VMs in {args.groups} groups; the config read from its "
        f"{'YAML' if args.yaml else 'compiled form'}"
    )
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

    def ratio(key: str, floor: str, field: str, pick: Any) -> float:
        return float(pick([r[field] for r in runs[key]]) / pick([r[field] for r in runs[floor]]))

    for key, floor in pairs:
        shape = {k: (runs[k][0]["dags"], runs[k][0]["tasks"]) for k in (key, floor)}
        if shape[key] != shape[floor]:
            raise SystemExit(
                f"{key}: the floor's (DAGs, tasks) {shape[floor]} differ from the file's {shape[key]}"
            )
        print(
            f"{names[key][0]} / floor: {ratio(key, floor, 'cpu', statistics.median):.2f}x (CPU, median), "
            f"{ratio(key, floor, 'cpu', min):.2f}x (CPU, min), "
            f"{ratio(key, floor, 'seconds', statistics.median):.2f}x (median), "
            f"{ratio(key, floor, 'seconds', min):.2f}x (min)"
        )
    print("where the parse of the whole config goes (CPU s, median):")
    for name in steps[0]:
        print(f"  {name:<44} {statistics.median(s[name] for s in steps):>7.3f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
