"""``max_concurrent_vms`` bounds the VMs down at once across every tier of a run (dag.test on SQLite
against the Compute Engine emulator).

A tiered group keeps its outer tiers' VMs down while the inner tiers run. Tier 1's resolve checks the
whole run against the cap, but a later tier's label selector can match more VMs at its own run time. The
VMs down at once are read from the emulator's stop and start operations, not from the package's report.
``dag.test`` runs one task at a time, so the concurrent case (tier 2's tries at once, with tier 1 kept
down) is in tests/operators/test_downtime.py; this one checks the DAG's wiring end to end.
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED
from gce_vm_backup.backup.stages import START, resolve_task, tier_task

from ..conftest import generated_dagbag, most_down_at_once

pytestmark = [pytest.mark.airflow, pytest.mark.emulator, pytest.mark.slow]

P = "demo-project"
CONFIG = """\
version: 1
deployment: test
defaults:
  start_date: "2026-01-01T00:00:00+00:00"
  poke_interval: 1
  retries: 0
groups:
  stack:
    max_concurrent_vms: 2
    tiers:
      - - {project: demo-project, zone: us-central1-a, instance: web-1}
      - - {project: demo-project, zones: all, labels: {tier: db}}
"""
DB_2 = f"projects/{P}/zones/us-central1-b/instances/db-2"


def seed() -> dict:
    """The demo fleet plus db-2, RUNNING, which tier 2's selector does not match at first."""
    data = copy.deepcopy(yaml.safe_load(DEMO_SEED.read_text()))
    data["projects"][P]["zones"]["us-central1-b"]["instances"].append(
        {
            "name": "db-2",
            "status": "RUNNING",
            "labels": {"app": "shop", "tier": "spare"},
            "disks": [{"name": "db-2", "size_gb": 10, "boot": True}],
        }
    )
    return data


@pytest.fixture(scope="module")
def dagbag():
    return generated_dagbag("cap_across_tiers", CONFIG)


@pytest.fixture
def emulator(monkeypatch):
    with Emulator(seed(), time_scale=60) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
        yield emulator


def test_a_later_tier_matching_more_vms_at_run_time_never_takes_the_run_over_the_cap(dagbag, emulator):
    """Cap 2: tier 1 (web-1) and tier 2 (db-1) make 2 VMs at tier 1's check. Once web-1 is being stopped,
    db-2 gets the label tier 2 selects: tier 2 now matches 2 VMs, which alone fit the cap, but with web-1
    kept down that is 3 VMs down at once. Tier 2 is refused before any of its VMs is stopped, and web-1
    comes back."""

    def db_2_joins_tier_2() -> None:
        with emulator.world.lock:
            emulator.world.instances[DB_2]["labels"]["tier"] = "db"

    emulator.faults.on_call("compute.instances.stop", db_2_joins_tier_2)
    run = dagbag.get_dag("gce_vm_backup__stack").test(run_conf={"vms": [], "dry_run": False})

    count, down = most_down_at_once(emulator)
    assert count <= 2, f"{count} VMs down at once: {down}"
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert states[(resolve_task(2), -1)] == "failed", states
    assert states[(tier_task(1, START), 0)] == "success", states  # the outer tier's VM came back
    for zone, name in (("us-central1-a", "web-1"), ("us-central1-b", "db-1"), ("us-central1-b", "db-2")):
        assert emulator.instance(P, zone, name)["status"] == "RUNNING", name
    assert not [c for c in emulator.calls_for("compute.instances.stop") if "/db-" in c.resource]
    assert run.state == "failed"
