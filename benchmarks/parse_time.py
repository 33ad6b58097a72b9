"""Parse time of the backup DAG file with a large config, against a trivial DAG file.

    uv run python benchmarks/parse_time.py [--vms 1000] [--groups 50] [--repeat 5]

Each measurement is a fresh process that imports Airflow first (not timed), then times a DagBag load of
a folder holding only the file under test, the way the DAG processor parses it. Prints median and min.
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

REPO = Path(__file__).resolve().parents[1]
TRIVIAL = "from airflow.sdk import DAG\n\nwith DAG('trivial', schedule=None):\n    pass\n"
MEASURE = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
start = time.perf_counter()
bag = DagBag(sys.argv[1])
elapsed = time.perf_counter() - start
assert not bag.import_errors, bag.import_errors
print(json.dumps({"seconds": elapsed, "dags": len(bag.dags)}))
"""


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


def measure(folder: Path, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(folder)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="parse-bench-"))
    backup, trivial = work / "backup", work / "trivial"
    backup.mkdir()
    trivial.mkdir()
    shutil.copy(REPO / "dags" / "gce_vm_backup_dags.py", backup)
    (backup / "gce_vm_backup.yaml").write_text(big_config(args.vms, args.groups))
    (trivial / "trivial_dag.py").write_text(TRIVIAL)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(work / "home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "GCE_VM_BACKUP_STRICT": "1",
    }
    results = {}
    for name, folder in (
        ("trivial DAG file", trivial),
        (f"backup DAG file ({args.vms} VMs, {args.groups} groups)", backup),
    ):
        runs = [measure(folder, env) for _ in range(args.repeat)]
        seconds = [r["seconds"] for r in runs]
        results[name] = (statistics.median(seconds), min(seconds), runs[0]["dags"])
    print(f"{'file':<48} {'DAGs':>5} {'median s':>9} {'min s':>7}")
    for name, (median, minimum, dags) in results.items():
        print(f"{name:<48} {dags:>5} {median:>9.3f} {minimum:>7.3f}")
    (trivial_median, _, _), (backup_median, _, dags) = results.values()
    print(
        f"ratio backup/trivial (median): {backup_median / trivial_median:.1f}x; "
        f"per DAG: {1000 * (backup_median - trivial_median) / dags:.1f} ms"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
