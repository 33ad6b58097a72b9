"""The benchmark scripts still run (``--quick``) and print tables that make sense. Not timed tests.

The fleet benchmark's measures (overlap, percentiles, floors, the ideal makespan, downtime from the
emulator's operations) are also checked on their own, without Airflow.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from gce_emulator import Emulator
from gce_emulator.model import DEFAULT_TIMINGS, Operation
from gce_vm_backup.config.models import Group, parse_config

from ..conftest import REPO


def run_script(name: str, *args: str, timeout: float = 120) -> dict[str, list[dict[str, str]]]:
    """Run benchmarks/<name> --quick; return its Markdown tables: {### title: [row as {header: cell}]}."""
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    tables: dict[str, list[dict[str, str]]] = {}
    title, headers = "", None
    for line in out.stdout.splitlines():
        if line.startswith("### "):
            title, headers = line[4:], None
            tables[title] = []
        elif line.startswith("|---"):
            continue
        elif line.startswith("| "):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if headers is None:
                headers = cells
            else:
                assert len(cells) == len(headers), line
                tables[title].append(dict(zip(headers, cells, strict=True)))
    return tables


def table(tables: dict[str, list[dict[str, str]]], prefix: str) -> list[dict[str, str]]:
    matches = [rows for title, rows in tables.items() if title.startswith(prefix)]
    assert len(matches) == 1, f"no single table titled {prefix!r} in {list(tables)}"
    return matches[0]


MODES = ("defer", "reschedule", "worker")


@pytest.mark.slow
@pytest.mark.emulator
def test_api_calls() -> None:
    tables = run_script("api_calls.py")
    rows = table(tables, "API calls per VM backup")
    assert {(r["wait_mode"], r["operation min"]) for r in rows} == {
        (mode, m) for mode in MODES for m in ("1", "5")
    }
    for row in rows:
        counted = sum(int(v) for k, v in row.items() if "." in k and k != "calls/poke")
        assert counted == int(row["API calls"])
        assert int(row["snapshots.insert"]) == 2  # one per disk, never repeated
        assert int(row["instances.stop"]) == 1
        assert int(row["instances.start"]) == 1  # by the downtime task; ensure_running takes its RUNNING read
        assert int(row["instances.setLabels"]) == 2  # the VM's lease, taken and given back (lease.py)
        assert (
            int(row["disks.get"]) == 2
        )  # the precheck reads each disk once (its id and type, for the manifest)
        # every mode: the downtime task long-polls its operations (zone: stop, start and the two lease
        # writes; global: the inserts)
        assert int(row["zoneOperations.wait"]) >= 4
        assert int(row["globalOperations.wait"]) >= 1
        # five tasks, one try each: verify's first poke sees READY (the capture waited for it)
        assert row["task tries"] == row["pokes"] == "5"
    for minutes in ("1", "5"):  # the wait mode changes verify only, which had nothing to wait for
        by_mode = [
            {k: v for k, v in r.items() if k != "wait_mode"} for r in rows if r["operation min"] == minutes
        ]
        assert all(r == by_mode[0] for r in by_mode)
    for mode in MODES:
        short, long = (r for r in rows if r["wait_mode"] == mode)
        assert int(long["zoneOperations.wait"]) > int(short["zoneOperations.wait"])  # 2-min holds
    per_stage = table(tables, "Tries, pokes and API calls per stage")
    for row in per_stage:
        assert row["stop_snapshot_start tries / pokes / calls"].startswith("1 / 1 / ")
        # the downtime task read RUNNING after its start: ensure_running takes it, no call of its own
        assert row["ensure_running tries / pokes / calls"] == "1 / 1 / 0"
        # the downtime task waited for READY: verify takes its read, no call of its own
        assert row["verify tries / pokes / calls"] == "1 / 1 / 0"


@pytest.mark.slow
@pytest.mark.emulator
def test_api_calls_with_early_restart_only_verify_follows_the_wait_mode() -> None:
    rows = table(run_script("api_calls.py", "--early-restart"), "API calls per VM backup")
    for row in rows:
        assert int(row["globalOperations.wait"]) == 0  # UPLOADING is read off the snapshots, not waited
        assert int(row["pokes"]) > 5  # verify waited for the upload
        if row["wait_mode"] == "worker":
            assert row["task tries"] == "5"
        else:  # each look of verify is a task process (a resume, or a new try)
            assert row["task tries"] == row["pokes"]


@pytest.mark.slow
@pytest.mark.emulator
def test_slot_seconds() -> None:
    rows = table(run_script("slot_seconds.py"), "Worker-slot seconds per VM backup")
    assert {(r["operation min"], r["wait_mode"]) for r in rows} == {
        (m, mode) for m in ("1", "5") for mode in MODES
    }
    for minutes in ("1", "5"):
        by_mode = {r["wait_mode"]: r for r in rows if r["operation min"] == minutes}
        operations = 3 * 60 * float(minutes)  # stop, snapshot and start each take that long
        downtime = [float(r["stop_snapshot_start slot s"]) for r in by_mode.values()]
        # the downtime task holds its slot for stop + capture + start in every wait mode (the cap)
        assert min(downtime) >= operations
        assert max(downtime) - min(downtime) <= 2
        for row in by_mode.values():
            assert float(row["VM backup elapsed s"]) >= operations
            stages = sum(float(v) for k, v in row.items() if k.endswith(" slot s"))
            assert stages == pytest.approx(float(row["slot s per VM"]), abs=4)


@pytest.mark.slow
@pytest.mark.emulator
def test_slot_seconds_with_early_restart_only_verify_is_slot_free() -> None:
    rows = table(run_script("slot_seconds.py", "--early-restart"), "Worker-slot seconds per VM backup")
    for minutes in ("1", "5"):
        by_mode = {r["wait_mode"]: r for r in rows if r["operation min"] == minutes}
        verify = {mode: float(r["verify slot s"]) for mode, r in by_mode.items()}
        # the upload outlasts the start by a minute per operation minute: the worker sleeps through it
        assert verify["worker"] >= 60 * float(minutes) - 30
        assert verify["defer"] < verify["worker"] / 2
        assert verify["reschedule"] < verify["worker"] / 2
        for row in by_mode.values():  # stop + CREATING (half the minutes) + start, on the slot
            assert float(row["stop_snapshot_start slot s"]) >= 2.5 * 60 * float(minutes)


# ---- the real-scheduler fleet benchmark ------------------------------------------------------------
def _fleet_real() -> ModuleType:
    """benchmarks/fleet_real.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("fleet_real", REPO / "benchmarks" / "fleet_real.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fleet_real", module)
    spec.loader.exec_module(module)
    return module


fleet_real = _fleet_real()
measures = importlib.import_module("_fleet_measures")  # on sys.path once fleet_real is loaded
Spec = measures.Spec


def test_peak_overlap_counts_intervals_open_at_once_and_an_end_before_a_start() -> None:
    assert measures.peak_overlap([]) == 0
    assert measures.peak_overlap([(0, 10), (10, 20)]) == 1  # back to back: one VM down at a time
    assert measures.peak_overlap([(0, 10), (5, 15), (6, 7), (14, 30)]) == 3
    assert measures.peak_overlap([(0, 100)] + [(i, i + 1) for i in range(10)]) == 2


def test_percentile_interpolates_between_ranks() -> None:
    assert measures.percentile([5.0], 0.95) == 5.0
    assert measures.percentile([4.0, 1.0, 3.0, 2.0], 0.95) == pytest.approx(3.85)
    assert measures.percentile([1.0, 2.0], 0.5) == pytest.approx(1.5)


def test_floors_and_paths_follow_the_emulator_timings_and_the_largest_disk() -> None:
    t = dict(DEFAULT_TIMINGS)  # stop 30, start 20, CREATING 15, UPLOADING 5 + 1 s per GB
    assert measures.vm_model(Spec(2, 1), 1, t) == (80.0, 80.0)  # 30 + 15 + (5 + 10) + 20
    # early restart: the upload (15 s) overlaps the start (20 s); the VM's path ends with the start
    assert measures.vm_model(Spec(2, 1, early_restart=True), 1, t) == (65.0, 65.0)
    big = Spec(2, 1, large_disk_gb=2048)
    assert measures.vm_model(big, 0, t) == (2118.0, 2118.0)  # waits for the 2 TB upload
    assert measures.vm_model(big, 1, t) == (80.0, 80.0)  # only the first VM has the data disk
    early_big = Spec(2, 1, early_restart=True, large_disk_gb=2048)
    assert measures.vm_model(early_big, 0, t) == (65.0, 30 + 15 + 2053)
    instant = Spec(2, 1, snapshot_mode="instant", large_disk_gb=2048)
    with_instant = {**t, measures.INSTANT_TIMING: 2.0}
    assert measures.vm_model(instant, 0, with_instant) == (52.0, 52 + 15 + 2053)  # conversion after
    assert measures.vm_model(instant, 1, with_instant) == (52.0, 52 + 15 + 15)


def test_ideal_makespan_is_the_floors_over_the_cap_or_the_longest_path() -> None:
    assert measures.ideal_makespan([80.0] * 8, [80.0] * 8, 4) == 160.0
    assert measures.ideal_makespan([80.0] * 8, [80.0] * 7 + [500.0], 4) == 500.0
    assert measures.ideal_makespan([80.0] * 3, [80.0] * 3, 10) == 80.0


def _op(target: str, kind: str, insert: float, end: float | None, error: bool = False) -> Operation:
    op = Operation(f"op-{kind}-{insert}", "p", "zones/z", kind, target, insert, "1", end_time=end)
    if error:
        op.error = {"code": "QUOTA_EXCEEDED", "message": "no"}
    return op


def test_downtime_runs_from_the_first_stop_to_the_last_successful_start() -> None:
    a, b, c = (f"projects/p/zones/z/instances/{n}" for n in "abc")
    operations = [
        _op(a, "stop", 10.0, 40.0),
        _op(a, "stop", 12.0, 12.0),  # a second stop request (another try): the VM was down since 10
        _op(a, "start", 60.0, 61.0, error=True),  # a failed start does not bring it back
        _op(a, "start", 70.0, 90.0),
        _op(b, "start", 1.0, 2.0),  # a start before the stop does not bring it back
        _op(b, "stop", 5.0, 35.0),  # stopped, never started again
        _op(f"{a}-other", "start", 0.0, 200.0),  # another VM whose name starts alike
        _op("projects/p/global/snapshots/a", "insert", 20.0, 50.0),
    ]
    intervals = measures.downtime_intervals(operations, [a, b, c])
    assert intervals == {a: (10.0, 90.0), b: (5.0, None), c: None}  # c: never stopped


def test_a_run_says_when_its_figures_do_not_mean_what_they_claim() -> None:
    instant = Spec(2, 1, snapshot_mode="instant", large_disk_gb=100)  # 3 disks
    assert measures.notes(measures.Result(instant, "success", 0, 0, instant_snapshots=3)) == []
    # instant mode accepted by the config but not acted on: standard captures against instant floors
    (note,) = measures.notes(measures.Result(instant, "success", 0, 0, instant_snapshots=0))
    assert "instant mode not in effect: 0 instant snapshots, 3 disks" in note
    assert measures.notes(measures.Result(Spec(2, 1), "success", 0, 0)) == []
    failed = measures.Result(Spec(2, 1), "failed", 0, 0, not_restored=["vm-1"])
    assert measures.notes(failed) == [" (1 VMs not restarted)"]


def test_generated_config_is_valid_and_has_the_spec_s_settings() -> None:
    spec = Spec(3, 2, wait_mode="worker", early_restart=True, poke_interval=6, retry_delay=2)
    groups, problems = parse_config(fleet_real.config_text([spec, Spec(2, 1)]), "<test>", environ={})
    assert problems == []
    group = groups[spec.group_id]
    assert (group.wait_mode, group.max_concurrent_vms, group.early_restart) == ("worker", 2, True)
    assert (group.poke_interval, group.retry_delay, group.retries) == (6, 2, 2)  # retries: the default
    assert [getattr(t, "instance", None) for t in group.all_targets()] == spec.vm_names()
    assert len(groups) == 2


def test_seed_gives_the_large_data_disk_to_the_first_vm_only() -> None:
    spec = Spec(3, 1, disk_gb=20, large_disk_gb=2048)
    with Emulator(fleet_real.seed([spec])) as emulator:
        names = spec.vm_names()
        sizes = {
            disk["source"].rsplit("/", 1)[-1]: int(disk["diskSizeGb"])
            for name in names
            for disk in emulator.instance(fleet_real.PROJECT, fleet_real.ZONE, name)["disks"]
        }
    assert sizes == {names[0]: 20, f"{names[0]}-data": 2048, names[1]: 20, names[2]: 20}


def test_runnable_skips_what_the_checkout_cannot_run_with_a_message() -> None:
    keep, skipped = fleet_real.runnable([Spec(2, 1), Spec(2, 0), Spec(2, 1, snapshot_mode="instant")])
    assert Spec(2, 1) in keep
    assert Spec(2, 0) not in keep  # max_concurrent_vms must be >= 1: the config model's own message
    assert any(m.startswith(Spec(2, 0).group_id) and "max_concurrent_vms" in m for m in skipped), skipped
    instant = Spec(2, 1, snapshot_mode="instant")
    if "snapshot_mode" not in Group.model_fields:
        assert instant not in keep
        assert any("snapshot_mode" in m for m in skipped), skipped
    else:  # the config and the emulator know instant mode: the benchmark runs it
        assert instant in keep, skipped


def test_bad_arguments_end_in_one_line_naming_the_argument() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fleet_real.py"), "--vms", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert out.returncode == 2
    assert "argument --vms: must be at least 1, got 0" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
@pytest.mark.emulator
def test_fleet_real_quick(tmp_path: Path) -> None:
    """Airflow (scheduler, triggerer, DAG processor, LocalExecutor) backs up 2 VMs with a cap of 1."""
    out_json = tmp_path / "fleet.json"
    tables = run_script("fleet_real.py", "--json", str(out_json), timeout=420)
    (row,) = table(tables, "Fleet run, real scheduler: 2 VMs, max_concurrent_vms 1")
    assert (row["snapshot mode"], row["wait_mode"], row["early restart"]) == ("standard", "defer", "no")
    assert row["run"] == "success"
    mean, p95, worst = (float(v) for v in row["downtime / floor (mean, p95, max)"].split(", "))
    assert 1.0 <= mean <= worst
    assert p95 <= worst
    peak = re.fullmatch(r"(\d+) of a cap of 1", row["VMs down at once"])
    assert peak is not None
    assert 1 <= int(peak.group(1)) <= 2
    assert float(row["makespan / ideal (run)"]) >= float(row["makespan / ideal (tasks)"]) > 0
    assert float(row["tries / VM"]) >= 2  # at least the precheck and the downtime task, once each
    assert float(row["slot s / VM"]) > 0
    assert float(row["API calls / VM"]) > 0
    (run,) = json.loads(out_json.read_text())["runs"]
    assert run["state"] == "success"
    assert run["not_restored"] == []
    assert run["floors_s"] == [80.0, 80.0]  # 30 + 15 + (5 + 10) + 20 simulated seconds
    assert len(run["downtimes_s"]) == 2
    # No VM can be back before its floor (the emulator's operations take that long): a measure or a
    # model that is off shows here. 0.1 s: the emulator's changes are applied every 50 ms.
    assert all(d >= f - 0.1 for d, f in zip(run["downtimes_s"], run["floors_s"], strict=True)), run
    assert run["peak_vms_down"] == int(peak.group(1))
    assert run["makespan_run_s"] >= max(run["downtimes_s"])
    assert sum(run["slot_s_per_vm_by_stage"].values()) == pytest.approx(run["slot_s_per_vm"])
