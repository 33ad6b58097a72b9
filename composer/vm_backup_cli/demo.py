"""`vm-backup demo`: a real backup DAG run, locally, against the Compute Engine emulator.

Starts the emulator with the demo fleet (two zones; a VM with two disks, one already stopped, one with a
regional disk) and three older snapshots of web-1's boot disk, as earlier runs would have left them (the
demo group keeps the newest two per disk), prepares an Airflow home with the default SQLite database,
runs the demo group's DAG with `airflow dags test`, and prints what happened: VMs stopped and started,
downtime, snapshots made and the old ones retention deleted. Then it runs the group's restore drill
(every VM's newest snapshot set restored into a scratch zone, booted, deleted) and prints its report:
per VM the set, its age (RPO) and the time to a running VM (RTO).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gce_emulator.__main__ import time_scale
from vm_backup_cli.sources import MissingSource, Sources, find_sources

HERE = Path(__file__).resolve().parent
DEMO_CONFIG = HERE / "demo_config.yaml"
DAG_ID = "gce_vm_backup__demo"
DRILL_DAG_ID = "gce_vm_backup_drill__demo"
PROJECT = "demo-project"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="run a backup DAG locally against the emulator")
    parser.add_argument(
        "--airflow-home", type=directory, help="Airflow home to use (default: a new temp folder)"
    )
    parser.add_argument("--time-scale", type=time_scale, default=60.0, help="emulator speed-up (default 60)")
    parser.set_defaults(func=run)


def directory(text: str) -> Path:
    """argparse type: a folder, existing or to be created (not a file, nor under one)."""
    path = Path(text)
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise argparse.ArgumentTypeError(f"{candidate} exists and is not a directory")
            break
    return path


def regular_file(text: str) -> Path:
    """argparse type: an existing regular file (not a folder, a FIFO or a device)."""
    path = Path(text)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise argparse.ArgumentTypeError(f"{text} is not a regular file")
    return path


def prepare_airflow_home(home: Path, emulator_url: str, sources: Sources | None = None) -> dict[str, str]:
    """An Airflow home with the thin DAG file and the demo config; returns the environment to run in.

    The plugins folder is the clone's ``plugins/``; from an installed wheel, an empty ``<home>/plugins`` (the
    package is imported from site-packages and its entry point registers the page).
    Raises MissingSource when there is neither a clone nor the wheel's DAG file.
    """
    sources = sources or find_sources()
    plugins = sources.plugins
    if plugins is None:
        plugins = home / "plugins"
        plugins.mkdir(parents=True, exist_ok=True)
    dags = home / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    shutil.copy(sources.dag_file, dags / sources.dag_file.name)
    shutil.copy(DEMO_CONFIG, dags / "gce_vm_backup.yaml")
    connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator_url}}
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(connection),
        "GCE_VM_BACKUP_STRICT": "1",
    }


def run(args: argparse.Namespace) -> int:
    from gce_emulator import Emulator
    from gce_emulator.__main__ import DEMO_SEED

    try:
        sources = find_sources()
    except MissingSource as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    home = args.airflow_home or Path(tempfile.mkdtemp(prefix="gce-vm-backup-demo-"))
    log_file = home / "demo-run.log"
    with Emulator(DEMO_SEED, time_scale=args.time_scale) as emulator:
        before = {name: emulator.instance(PROJECT, zone, name)["status"] for zone, name in _vms()}
        seed_history(emulator)
        snapshots_before = {s["name"] for s in emulator.snapshots(PROJECT)}
        print(f"Compute Engine emulator on {emulator.url} (time x{args.time_scale:g}); Airflow home {home}")
        env = prepare_airflow_home(home, emulator.url, sources)
        started = time.monotonic()
        print("Migrating Airflow's SQLite database ...", flush=True)
        migrate = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if migrate.returncode != 0:
            print(migrate.stdout[-2000:], migrate.stderr[-2000:], file=sys.stderr)
            print("demo: `airflow db migrate` failed (output above)", file=sys.stderr)
            return 1
        print(f"Running DAG {DAG_ID} with `airflow dags test` (log: {log_file}) ...", flush=True)
        with log_file.open("w") as log:
            result = subprocess.run(
                [sys.executable, "-m", "airflow", "dags", "test", DAG_ID],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        elapsed = time.monotonic() - started
        print_summary(emulator, before, snapshots_before)
        state = "success" if result.returncode == 0 else "FAILED"
        print(f"\nDAG run: {state} in {elapsed:.0f} s (real time). Full log: {log_file}")
        if result.returncode != 0:
            return 1
        drill_log = home / "demo-drill.log"
        print(f"\nRunning the restore drill {DRILL_DAG_ID} (log: {drill_log}) ...", flush=True)
        with drill_log.open("w") as log:
            drill = subprocess.run(
                [sys.executable, "-m", "airflow", "dags", "test", DRILL_DAG_ID],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        print_drill(home / "airflow.db", emulator)
        print(f"\nDrill run: {'success' if drill.returncode == 0 else 'FAILED'}. Full log: {drill_log}")
        return 0 if drill.returncode == 0 else 1


def _vms() -> list[tuple[str, str]]:
    return [("us-central1-a", "web-1"), ("us-central1-a", "batch-1"), ("us-central1-b", "db-1")]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


HISTORY_DISK = f"projects/{PROJECT}/zones/us-central1-a/disks/web-1"


def seed_history(emulator: Any) -> None:
    """Three READY snapshots of web-1's boot disk, 1 to 3 days old, labelled as this project's."""
    from datetime import datetime, timedelta

    from gce_vm_backup.config.labels import managed_snapshot_labels

    now = datetime.fromisoformat(emulator.clock.timestamp())
    labels = managed_snapshot_labels(
        deployment="demo", group="demo", instance="web-1", disk_source=HISTORY_DISK
    )
    for days in (1, 2, 3):
        created = (now - timedelta(days=days)).strftime("%Y%m%d%H%M%S")
        emulator.seed_snapshot(
            PROJECT,
            {
                "name": f"web-1-us-central1-a-{created}-earlier{days}",
                "sourceDisk": HISTORY_DISK,
                "labels": labels,
                "creationTimestamp": (now - timedelta(days=days)).isoformat().replace("+00:00", "Z"),
            },
        )


def print_summary(emulator: Any, before: dict[str, str], snapshots_before: set[str]) -> None:
    """VMs (state before/after, stopped/started, simulated downtime), the snapshots that exist now and the
    ones retention deleted."""
    from gce_vm_backup.report.text import table_lines

    operations = list(emulator.world.operations.values())
    print("\nVMs")
    rows = []
    for zone, name in _vms():
        path = f"projects/{PROJECT}/zones/{zone}/instances/{name}"
        stops = [op for op in operations if op.target == path and op.operation_type == "stop"]
        starts = [op for op in operations if op.target == path and op.operation_type in ("start", "resume")]
        downtime = "-"
        if stops and starts and starts[-1].end_time is not None:
            downtime = _duration(starts[-1].end_time - stops[0].insert_time)
        after = emulator.instance(PROJECT, zone, name)["status"]
        stopped, started = "yes" if stops else "no", "yes" if starts else "no"
        rows.append(("", f"{zone}/{name}", before[name], after, stopped, started, downtime))
    columns = [("", "left", 1), ("VM", "left", 22), ("before", "left", 11), ("after", "left", 11)]
    columns += [("stopped", "left", 8), ("started", "left", 8), ("downtime (simulated)", "left", 0)]
    print("\n".join(table_lines(columns, rows)))
    print("\nSnapshots")
    snapshots = [
        (
            "",
            snapshot["name"],
            snapshot["status"],
            f"{int(snapshot.get('storageBytes', 0)) / (1 << 30):.1f} GiB",
            "",
            snapshot.get("sourceDisk", "").split("/compute/v1/")[-1],
        )
        for snapshot in emulator.snapshots(PROJECT)
    ]
    columns = [("", "left", 1), ("", "left", 56), ("", "left", 9), ("", "right", 10), ("", "left", 0)]
    for line in table_lines([*columns, ("", "left", 0)], snapshots, header=False):
        print(line)
    deleted = sorted(snapshots_before - {s["name"] for s in emulator.snapshots(PROJECT)})
    print("\nDeleted by retention (keep_last 2 per disk)")
    for name in deleted or ["(none)"]:
        print(f"  {name}")


def print_drill(database: Path, emulator: Any) -> None:
    """The drill report (the drill_report task's XCom, read from the demo's SQLite DB) and what is left
    in the scratch zone."""
    import sqlite3

    from gce_vm_backup.restore.drill import DRILL_REPORT_KEY, format_row

    with contextlib.closing(sqlite3.connect(database)) as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND key = ? ORDER BY timestamp DESC LIMIT 1",
            (DRILL_DAG_ID, DRILL_REPORT_KEY),
        ).fetchone()
    report = json.loads(row[0]) if row else None
    if isinstance(report, str):  # stored as a JSON string of the JSON value
        report = json.loads(report)
    print("\nRestore drill (RPO: the set's age at restore, simulated time; RTO: to a RUNNING VM, real time)")
    for vm in (report or {}).get("vms", []) or [{"vm": None, "result": "no report", "cause": "see the log"}]:
        print(f"  {format_row(vm)}")
    with emulator.world.lock:
        left = [p for p, d in emulator.world.disks.items() if "gce-vm-backup-drill" in d.get("labels", {})]
        left += [
            p for p, i in emulator.world.instances.items() if "gce-vm-backup-drill" in i.get("labels", {})
        ]
    print(f"  left behind in the scratch zone: {', '.join(left) or 'nothing'}")
