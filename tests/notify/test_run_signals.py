"""The numbers an SRE alerts on, from real Airflow runs (dag.test on SQLite) against the Compute Engine
emulator: each VM's log line (parsed, every field), its Asset event (read back from Airflow's metadata
DB after the run) and its Stats metrics (a spy on the Stats object the module uses)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import create_autospec

import pytest

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED
from gce_vm_backup.backup import stages
from gce_vm_backup.config.labels import managed_snapshot_labels, run_label
from gce_vm_backup.report import signals as signals_module
from gce_vm_backup.report.signals import (
    LOG_FIELDS,
    LOG_PREFIX,
    LOGGER_NAME,
    METRIC_PREFIX,
    METRICS,
    alias_name,
    asset_uri,
    vm_signals,
)

from ..conftest import generated_dagbag

pytestmark = [pytest.mark.airflow, pytest.mark.emulator]

P, ZONE = "demo-project", "us-central1-a"
WEB = f"projects/{P}/zones/{ZONE}/instances/web-1"
BATCH = f"projects/{P}/zones/{ZONE}/instances/batch-1"
WEB_DISKS = (f"projects/{P}/zones/{ZONE}/disks/web-1", f"projects/{P}/zones/{ZONE}/disks/web-1-data")
BATCH_DISK = f"projects/{P}/zones/{ZONE}/disks/batch-1"
DAG_ID = "gce_vm_backup__web"
REPEATEDLY = 1000
CONFIG = """\
version: 1
deployment: test
defaults:
  start_date: "2026-01-01T00:00:00+00:00"
  poke_interval: 1
  retries: 0
groups:
  web:
    targets:
      - {project: demo-project, zone: us-central1-a, instance: web-1}
      - {project: demo-project, zones: [us-central1-a], labels: {tier: batch}}
"""


@pytest.fixture(scope="module")
def dagbag():
    return generated_dagbag("run_signals", CONFIG)


@pytest.fixture
def emulator(monkeypatch):
    with Emulator(DEMO_SEED, time_scale=60) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
        yield emulator


class StatsSpy:
    """Every call the module makes on Airflow's Stats object, as (kind, name, value, tags)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, dict[str, str]]] = []

    def gauge(self, stat: str, value: float, rate: int = 1, delta: bool = False, *, tags=None) -> None:
        self._record("gauge", stat, value, tags)

    def incr(self, stat: str, count: int = 1, rate: int = 1, *, tags=None) -> None:
        self._record("incr", stat, count, tags)

    def _record(self, kind: str, stat: str, value: Any, tags: Any) -> None:
        # Airflow's own metrics go through the same object (on Airflow 3.1, in the same process)
        if stat.startswith(METRIC_PREFIX):
            self.calls.append((kind, stat, value, dict(tags or {})))

    def of(self, vm: str) -> dict[str, tuple[str, Any, dict[str, str]]]:
        return {name: (kind, value, tags) for kind, name, value, tags in self.calls if tags["vm"] == vm}


@pytest.fixture
def stats(monkeypatch) -> StatsSpy:
    """The spy in place of the methods of the very Stats object ``stats_logger`` returns."""
    spy = StatsSpy()
    real = signals_module.stats_logger()
    monkeypatch.setattr(real, "gauge", spy.gauge)
    monkeypatch.setattr(real, "incr", spy.incr)
    return spy


def signal_lines(caplog) -> list[dict[str, Any]]:
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    for line in lines:
        assert "\n" not in line
        assert line.startswith(LOG_PREFIX + " ")
    return [json.loads(line.removeprefix(LOG_PREFIX + " ")) for line in lines]


def asset_events(run) -> list[tuple[str, dict[str, Any]]]:
    """(asset URI, extra) of every Asset event the run's tasks made, from Airflow's metadata DB."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.uri, AssetEvent.extra, AssetEvent.source_task_id)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetEvent.source_dag_id == run.dag_id, AssetEvent.source_run_id == run.run_id)
        ).all()
    assert {task for _, _, task in rows} <= {stages.SIGNALS}
    return sorted((uri, dict(extra)) for uri, extra, _ in rows)


def age_of(emulator, run: str, instance: str) -> float:
    """Seconds from the VM's set's newest snapshot (the emulator's clock) to now (the task's clock)."""
    made = [
        datetime.fromisoformat(s["creationTimestamp"].replace("Z", "+00:00"))
        for s in emulator.snapshots(P)
        if s["labels"].get("gce-vm-backup-run") == run and s["labels"]["gce-vm-backup-instance"] == instance
    ]
    return (datetime.now(UTC) - max(made)).total_seconds()


def run_dag(dagbag, **conf):
    return dagbag.get_dag(DAG_ID).test(run_conf={"vms": [], "dry_run": False, **conf})


def seed_good_set(emulator, *, days_before: int) -> str:
    """A complete READY set of batch-1 from an earlier run (labels as a run leaves them); its run label."""
    created = datetime.fromisoformat(emulator.clock.timestamp()) - timedelta(days=days_before)
    run = run_label(DAG_ID, f"scheduled__earlier-{days_before}")
    labels = managed_snapshot_labels(
        deployment="test", group="web", instance="batch-1", disk_source=BATCH_DISK, run=run
    )
    emulator.seed_snapshot(
        P,
        {
            "name": f"batch-1-earlier-{days_before}",
            "sourceDisk": BATCH_DISK,
            "labels": labels,
            "creationTimestamp": created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        },
    )
    return run


def test_a_good_run_logs_counts_and_publishes_each_vm(dagbag, emulator, stats, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    run = run_dag(dagbag)
    assert run.state == "success"
    this_run = run_label(DAG_ID, run.run_id)

    lines = {line["vm"]: line for line in signal_lines(caplog)}
    assert set(lines) == {WEB, BATCH}
    for vm, line in lines.items():
        assert list(line) == list(LOG_FIELDS)  # every documented field, in the documented order
        names = {s["name"]: s for s in emulator.snapshots(P) if s["labels"].get("gce-vm-backup-run")}
        made = [s for s in names.values() if s["labels"]["gce-vm-backup-instance"] == line["instance"]]
        assert line == {
            "event": "vm_backup",
            "deployment": "test",
            "group": "web",
            "dag_id": DAG_ID,
            "run_id": run.run_id,
            "vm": vm,
            "project": P,
            "zone": ZONE,
            "instance": vm.rsplit("/", 1)[-1],
            "result": "success",
            "downtime_seconds": line["downtime_seconds"],
            "snapshot_bytes": sum(int(s["storageBytes"]) for s in made),
            "set_id": this_run,
            "set_ready": True,
            "newest_good_set_id": this_run,
            "newest_good_age_seconds": line["newest_good_age_seconds"],
            "problems": [],
        }
        assert line["snapshot_bytes"] > 0
        assert 0 <= age_of(emulator, this_run, line["instance"]) - line["newest_good_age_seconds"] < 120
    assert lines[WEB]["downtime_seconds"] > 0  # web-1 was RUNNING: stopped and started
    assert lines[BATCH]["downtime_seconds"] == 0  # batch-1 was TERMINATED: never stopped

    events = asset_events(run)
    assert [uri for uri, _ in events] == [
        "gce-vm-backup://demo-project/us-central1-a/batch-1",
        "gce-vm-backup://demo-project/us-central1-a/web-1",
    ]
    for uri, extra in events:
        vm = BATCH if uri.endswith("batch-1") else WEB
        made = sorted(
            s["name"]
            for s in emulator.snapshots(P)
            if s["labels"].get("gce-vm-backup-run") == this_run
            and s["labels"]["gce-vm-backup-instance"] == vm.rsplit("/", 1)[-1]
        )
        assert extra["set_id"] == this_run
        assert sorted(extra["snapshots"]) == made
        assert len(made) == (2 if vm == WEB else 1)
        assert datetime.fromisoformat(extra["time"]).tzinfo is not None
        assert extra["vm"] == vm
        assert extra["deployment"] == "test"
        assert extra["group"] == "web"
        assert extra["run_id"] == run.run_id
        assert extra["snapshot_bytes"] == lines[vm]["snapshot_bytes"]

    for vm in (WEB, BATCH):
        tags = {"deployment": "test", "group": "web", "vm": vm}
        assert stats.of(vm) == {
            "gce_vm_backup.downtime_seconds": ("gauge", lines[vm]["downtime_seconds"], tags),
            "gce_vm_backup.snapshot_bytes": ("gauge", lines[vm]["snapshot_bytes"], tags),
            "gce_vm_backup.backup_age_seconds": ("gauge", lines[vm]["newest_good_age_seconds"], tags),
            "gce_vm_backup.vm_backups": ("incr", 1, {**tags, "result": "success"}),
        }
    assert {name for _, name, _, _ in stats.calls} == set(METRICS)


def test_a_failed_vm_says_failed_keeps_its_older_age_and_gets_no_asset_event(dagbag, emulator, stats, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    earlier = seed_good_set(emulator, days_before=3)
    emulator.faults.fail_snapshot(P, name_prefix="batch-1", times=REPEATEDLY)
    run = run_dag(dagbag)
    assert run.state == "failed"
    this_run = run_label(DAG_ID, run.run_id)

    lines = {line["vm"]: line for line in signal_lines(caplog)}
    batch, web = lines[BATCH], lines[WEB]
    assert batch["result"] == "failed"
    assert batch["set_ready"] is False
    assert batch["problems"]
    assert all(isinstance(p, str) for p in batch["problems"])
    # Its newest good set is the earlier run's, three days older than this run's.
    assert batch["newest_good_set_id"] == earlier
    assert 0 <= age_of(emulator, earlier, "batch-1") - batch["newest_good_age_seconds"] < 120
    assert batch["newest_good_age_seconds"] - web["newest_good_age_seconds"] > 3 * 86400 - 3600
    assert web["result"] == "success"
    assert web["newest_good_set_id"] == this_run

    # Only web-1's set is published; batch-1's failed one is not, though the run failed as a whole.
    assert [uri for uri, _ in asset_events(run)] == ["gce-vm-backup://demo-project/us-central1-a/web-1"]
    assert stats.of(BATCH)["gce_vm_backup.vm_backups"] == (
        "incr",
        1,
        {"deployment": "test", "group": "web", "vm": BATCH, "result": "failed"},
    )
    assert stats.of(BATCH)["gce_vm_backup.backup_age_seconds"][1] == batch["newest_good_age_seconds"]
    # The report ran after the signals and saw them succeed.
    (signals_ti,) = [ti for ti in run.get_task_instances() if ti.task_id == stages.SIGNALS]
    assert signals_ti.state == "success"


def test_a_dry_run_emits_nothing(dagbag, emulator, stats, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    run = run_dag(dagbag, dry_run=True)
    assert run.state == "success"
    assert signal_lines(caplog) == []
    assert asset_events(run) == []
    assert stats.calls == []


def test_a_listing_that_fails_leaves_the_age_unknown_and_the_rest_goes_out(monkeypatch, stats):
    from gce_vm_backup.compute.hook import ComputeBackupHook
    from gce_vm_backup.errors import ApiError
    from gce_vm_backup.report.signals import RunSignalsOperator, send_metrics

    hook = create_autospec(ComputeBackupHook, instance=True)
    hook.list_snapshots.side_effect = ApiError("list snapshots of group web failed: HTTP 403 Required")
    operator = RunSignalsOperator(task_id="signals", vm_groups=["tier_1"], deployment="test", group="web")
    monkeypatch.setattr(RunSignalsOperator, "hook", hook)
    report = report_of(WEB)
    assert operator._sets(report) is None
    (signal,) = vm_signals(report, deployment="test", group="web", sets=operator._sets(report))
    assert signal.newest_good_age_seconds is None
    assert signal.newest_good_set_id is None
    assert signal.result == "success"
    assert signal.set_ready
    send_metrics(signals_module.stats_logger(), [signal])
    assert [name for _, name, _, _ in stats.calls] == [
        "gce_vm_backup.downtime_seconds",
        "gce_vm_backup.snapshot_bytes",
        "gce_vm_backup.vm_backups",
    ]  # no age gauge for an unknown age


# ---- hostile names (no real VM has them: the pure parts) -------------------------------------------------
HOSTILE = 'web"1\\n}{ "result": "success"/../?x=1#frag %2F é'


def report_of(vm: str, **row: Any) -> dict[str, Any]:
    base = {
        "group": "tier_1",
        "map_index": 0,
        "vm": vm,
        "ok": True,
        "downtime_seconds": 3,
        "tasks": {stages.VERIFY: "success"},
        "snapshots": [{"snapshot": "s-1", "status": "READY", "kind": "standard", "storage_bytes": 7}],
        "problems": [],
    }
    return {
        "dag_id": DAG_ID,
        "run_id": "manual__1",
        "generated_at": "2026-12-01T00:00:00+00:00",
        "dry_run": False,
        "vms": [{**base, **row}],
    }


def test_a_hostile_vm_name_stays_one_json_line_and_one_uri_segment():
    vm = f"projects/{P}/zones/{ZONE}/instances/{HOSTILE}"
    (signal,) = vm_signals(report_of(vm), deployment="test", group="web", sets={})
    line = signal.line()
    assert "\n" not in line
    assert line.isascii()
    parsed = json.loads(line.removeprefix(LOG_PREFIX + " "))
    assert parsed["vm"] == vm
    assert parsed["result"] == "success"
    uri = asset_uri(vm)
    assert uri.startswith("gce-vm-backup://demo-project/us-central1-a/")
    last = uri.removeprefix("gce-vm-backup://demo-project/us-central1-a/")
    assert "/" not in last
    assert "?" not in last
    assert "#" not in last
    assert '"' not in last
    from urllib.parse import unquote, urlsplit

    assert unquote(last) == HOSTILE
    parts = urlsplit(uri)
    assert (parts.query, parts.fragment) == ("", "")
    # Airflow accepts the URI as it is (a custom scheme: no normalizer; nothing dropped).
    from airflow.sdk import Asset

    assert Asset(name=uri, uri=uri).uri == uri


def test_an_incomplete_or_failed_set_is_not_ready():
    vm = WEB
    for row in (
        {"tasks": {stages.VERIFY: "failed"}},
        {"tasks": {stages.VERIFY: "upstream_failed"}},
        {"snapshots": []},
        {"snapshots": [{"snapshot": "s-1", "status": "FAILED", "kind": "standard", "storage_bytes": 0}]},
        {"snapshots": [{"snapshot": "i-1", "status": "READY", "kind": "instant", "storage_bytes": 0}]},
    ):
        (signal,) = vm_signals(report_of(vm, **row), deployment="test", group="web", sets={})
        assert (signal.set_ready, signal.result) == (False, "failed"), row
    (good,) = vm_signals(report_of(vm), deployment="test", group="web", sets={})
    assert good.set_ready
    assert good.result == "success"
    (problem,) = vm_signals(report_of(vm, ok=False), deployment="test", group="web", sets={})
    assert problem.set_ready
    assert problem.result == "failed"


def test_the_alias_is_the_signals_tasks_outlet_and_the_report_still_the_only_leaf(dagbag):
    from airflow.sdk import AssetAlias

    dag = dagbag.get_dag(DAG_ID)
    task = dag.get_task(stages.SIGNALS)
    assert task.outlets == [AssetAlias(name=alias_name("test", "web"))]
    assert [t.task_id for t in dag.tasks if not t.downstream_list] == [stages.REPORT]
    assert stages.SIGNALS in dag.get_task(stages.REPORT).upstream_task_ids
    assert task.upstream_task_ids == {
        t.task_id for t in dag.tasks if not t.is_setup and t.task_id not in (stages.SIGNALS, stages.REPORT)
    }


def test_a_dry_run_report_gives_no_signal_even_with_rows():
    report = {**report_of(WEB), "dry_run": True}
    assert vm_signals(report, deployment="test", group="web", sets={}) == []
