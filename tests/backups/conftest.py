"""A fleet whose snapshots tell every freshness story, seeded relative to the real clock.

Group ``web`` (daily at 03:00, deployment ``test``):
- ``web-1`` (boot + data disk): READY sets 1 and 3 days old, and between them a run whose data-disk
  snapshot FAILED (an incomplete set); snapshots of it by another deployment and another group, 1 hour old,
  which must not make it fresher; one old set made before the run label (grouped by its name stamp).
- ``web-2``: a set 6 hours old whose data disk is still CREATING (incomplete), and a READY one 5 days old:
  STALE (two periods are 2 days).
- ``web-3``: a target that never had a snapshot: STALE.
Group ``batch`` (no schedule): ``batch-1`` with one READY set 40 days old: never stale.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gce_emulator import Emulator
from gce_vm_backup.compute.naming import snapshot_name
from gce_vm_backup.config.labels import managed_snapshot_labels, run_label

PROJECT, ZONE = "backup-project", "us-central1-a"
GIB = 1 << 30
NOW = datetime.now(UTC).replace(microsecond=0)

SEED: dict[str, Any] = {
    "projects": {
        PROJECT: {
            "zones": {
                ZONE: {
                    "instances": [
                        {
                            "name": "web-1",
                            "disks": [
                                {"name": "web-1", "size_gb": 10, "boot": True},
                                {"name": "web-1-data", "size_gb": 100},
                            ],
                        },
                        {
                            "name": "web-2",
                            "disks": [
                                {"name": "web-2", "size_gb": 10, "boot": True},
                                {"name": "web-2-data", "size_gb": 50},
                            ],
                        },
                        {"name": "web-3", "labels": {"app": "shop"}},
                        {"name": "batch-1"},
                    ]
                }
            }
        }
    }
}

CONFIG = f"""\
version: 1
deployment: test
defaults:
  start_date: "2026-01-01T00:00:00+00:00"
groups:
  web:
    schedule: "0 3 * * *"
    targets:
      - {{project: {PROJECT}, zone: {ZONE}, instance: web-1}}
      - {{project: {PROJECT}, zone: {ZONE}, instance: web-2}}
      - {{project: {PROJECT}, zone: {ZONE}, instance: web-3}}
  batch:
    schedule: null
    targets:
      - {{project: {PROJECT}, zone: {ZONE}, instance: batch-1}}
"""


def vm_path(instance: str) -> str:
    return f"projects/{PROJECT}/zones/{ZONE}/instances/{instance}"


@dataclass(frozen=True)
class Run:
    """One seeded backup run of one VM: its age and each disk's snapshot status and size (GiB)."""

    instance: str
    age: timedelta
    disks: dict[str, tuple[str, int]]
    group: str = "web"
    deployment: str = "test"
    labelled: bool = True  # False: made before the run label existed

    @property
    def run_id(self) -> str:
        return f"scheduled__{(NOW - self.age).isoformat()}"

    @property
    def dag_id(self) -> str:
        return f"gce_vm_backup__{self.group}"

    def label(self) -> str:
        return run_label(self.dag_id, self.run_id)

    def snapshot_names(self) -> dict[str, str]:
        return {
            disk: snapshot_name(
                instance=self.instance,
                disk=disk,
                zone_or_region=ZONE,
                run_time=NOW - self.age,
                run_id=self.run_id,
                scope=f"{self.deployment}/{self.group}",
            )
            for disk in self.disks
        }

    def seed(self, emulator: Emulator) -> None:
        for disk, name in self.snapshot_names().items():
            status, size_gib = self.disks[disk]
            source = f"projects/{PROJECT}/zones/{ZONE}/disks/{disk}"
            labels = managed_snapshot_labels(
                deployment=self.deployment,
                group=self.group,
                instance=self.instance,
                disk_source=source,
                run=self.label() if self.labelled else None,
            )
            created = NOW - self.age + timedelta(minutes=5)  # 5 min of slack for a slow test
            emulator.seed_snapshot(
                PROJECT,
                {
                    "name": name,
                    "sourceDisk": source,
                    "status": status,
                    "labels": labels,
                    "storageBytes": size_gib * GIB,
                    "creationTimestamp": created.isoformat().replace("+00:00", "Z"),
                },
            )


DAY, HOUR = timedelta(days=1), timedelta(hours=1)
RUNS = [
    Run("web-1", 1 * DAY, {"web-1": ("READY", 3), "web-1-data": ("READY", 20)}),
    Run("web-1", 2 * DAY, {"web-1": ("READY", 3), "web-1-data": ("FAILED", 0)}),
    Run("web-1", 3 * DAY, {"web-1": ("READY", 2), "web-1-data": ("READY", 18)}),
    Run("web-1", 30 * DAY, {"web-1": ("READY", 2), "web-1-data": ("READY", 10)}, labelled=False),
    # not this scope's: another deployment, and another group, on the same VM
    Run("web-1", HOUR, {"web-1": ("READY", 1), "web-1-data": ("READY", 1)}, deployment="staging"),
    Run("web-2", HOUR, {"web-2": ("READY", 1), "web-2-data": ("READY", 1)}, group="db"),
    Run("web-2", 6 * HOUR, {"web-2": ("READY", 1), "web-2-data": ("CREATING", 0)}),
    Run("web-2", 5 * DAY, {"web-2": ("READY", 1), "web-2-data": ("READY", 7)}),
    Run("batch-1", 40 * DAY, {"batch-1": ("READY", 4)}, group="batch"),
    # group shop (a label selector): batch-1 was backed up by it before it lost the label
    Run("batch-1", DAY, {"batch-1": ("READY", 4)}, group="shop"),
]


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """The emulator with RUNS seeded, aged from now; the package's clients pointed at it (anonymous,
    loopback)."""
    global NOW
    NOW = datetime.now(UTC).replace(microsecond=0)
    with Emulator(SEED) as emulator:
        for run in RUNS:
            run.seed(emulator)
        monkeypatch.setenv("GCE_VM_BACKUP_COMPUTE_ENDPOINT", emulator.url)
        monkeypatch.delenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", raising=False)
        yield emulator


@pytest.fixture
def config_file(tmp_path: Any) -> Any:
    path = tmp_path / "gce_vm_backup.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """The JSON bodies POSTed to a loopback stand-in for a Slack incoming webhook (answers 200 "ok"), and
    the connection ``slack_loopback`` pointing at it."""
    posts: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            posts.append(json.loads(self.rfile.read(length) or b"{}"))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/services/T0/B0/secret"
    monkeypatch.setenv(
        "AIRFLOW_CONN_SLACK_LOOPBACK", json.dumps({"conn_type": "slackwebhook", "password": url})
    )
    try:
        yield posts
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def dagbag_of(folder: str, config: str) -> Any:
    """A DagBag of the thin DAG file with ``config`` beside it, alone in the dags folder (as
    tests/conftest.generated_dagbag does, without importing the fault harness)."""
    import shutil

    from ..conftest import AIRFLOW_HOME, REPO, migrate_airflow_db

    dags = AIRFLOW_HOME / "dags" / folder
    if dags.parent.is_dir():
        for sibling in dags.parent.iterdir():
            if sibling != dags and sibling.is_dir():
                shutil.rmtree(sibling)
    dags.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dags" / "gce_vm_backup_dags.py", dags)
    (dags / "gce_vm_backup.yaml").write_text(config)
    migrate_airflow_db()
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag

    bag = DagBag(str(dags))
    assert bag.import_errors == {}
    return bag
