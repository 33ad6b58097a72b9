"""Run the operators' execute()/poke() directly, against the emulator, with a minimal task context."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from gce_emulator import Emulator

PROJECT, ZONE_A, ZONE_B = "demo-project", "us-central1-a", "us-central1-b"
RUN_TIME = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


@dataclass
class FakeTI:
    dag_id: str = "gce_vm_backup__test"
    map_index: int = -1
    try_number: int = 1
    pushed: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@dataclass
class FakeDagRun:
    run_after: datetime = RUN_TIME


@dataclass
class Context:
    ti: FakeTI = field(default_factory=FakeTI)
    run_id: str = "scheduled__2026-11-24T03:00:00+00:00"

    def as_dict(self) -> dict[str, Any]:
        return {"ti": self.ti, "dag_run": FakeDagRun(), "run_id": self.run_id, "logical_date": RUN_TIME}


@pytest.fixture
def context() -> Context:
    return Context()


@pytest.fixture
def emulator(gce_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The demo emulator, with the Airflow connection pointing the operators at it (anonymous)."""
    connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": gce_emulator.url}}
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
    return gce_emulator


def converge(
    sensor: Any, context: Context, emulator: Emulator, *, step: float = 60, max_pokes: int = 50
) -> Any:
    """Poke until done, advancing simulated time between pokes; returns the poke's XCom value."""
    for _ in range(max_pokes):
        result = sensor.poke(context.as_dict())
        if result:
            return getattr(result, "xcom_value", result)
        emulator.clock.advance(step)
    raise AssertionError(f"{sensor.task_id} did not converge in {max_pokes} pokes")


FAST = 600.0  # simulated seconds per real second: a 30 s stop takes 50 ms


@pytest.fixture
def fast_emulator(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The demo emulator at 600x (the downtime task waits in real time, on operations.wait), with the
    Airflow connection pointing the operators at it, and reads with nothing to long-poll every 20 ms."""
    from gce_emulator.__main__ import DEMO_SEED
    from gce_vm_backup.backup import capture as snapshot_ops
    from gce_vm_backup.backup import instance as instance_ops

    monkeypatch.setattr(instance_ops, "POLL", 0.02)
    monkeypatch.setattr(snapshot_ops, "POLL", 0.02)
    with Emulator(DEMO_SEED, time_scale=FAST, timings={"snapshot_rate_limit": 0.0}) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
        yield emulator
