"""The benchmark scripts still run (``--quick``) and print tables that make sense. Not timed tests."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ..conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.emulator]


def run_script(name: str, *args: str) -> dict[str, list[dict[str, str]]]:
    """Run benchmarks/<name> --quick; return its Markdown tables: {### title: [row as {header: cell}]}."""
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=120,
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


def test_api_calls() -> None:
    rows = table(run_script("api_calls.py"), "API calls per VM backup")
    assert {(r["wait_mode"], r["operation min"]) for r in rows} == {
        (mode, m) for mode in ("reschedule", "worker") for m in ("1", "2")
    }
    for row in rows:
        counted = sum(int(v) for k, v in row.items() if "." in k and k != "calls/poke")
        assert counted == int(row["API calls"])
        assert int(row["snapshots.insert"]) == 2  # one per disk, never repeated
        assert int(row["instances.start"]) == 1
        if row["wait_mode"] == "reschedule":
            assert row["task tries"] == row["pokes"]
            assert row["zoneOperations.wait"] == "0"
        else:
            assert row["task tries"] == "6"
            assert int(row["zoneOperations.wait"]) > 0
    for mode in ("reschedule", "worker"):
        short, long = (r for r in rows if r["wait_mode"] == mode)
        assert int(long["API calls"]) >= int(short["API calls"])


def test_slot_seconds() -> None:
    rows = table(run_script("slot_seconds.py"), "Worker-slot seconds per VM backup")
    assert len(rows) == 4
    for minutes in ("1", "2"):
        by_mode = {r["wait_mode"]: r for r in rows if r["operation min"] == minutes}
        operations = 3 * 60 * float(minutes)  # stop, snapshot and start each take that long
        assert float(by_mode["worker"]["slot s per VM"]) >= operations
        assert float(by_mode["reschedule"]["slot s per VM"]) < float(by_mode["worker"]["slot s per VM"])
        for row in by_mode.values():
            assert float(row["VM backup elapsed s"]) >= operations
            stages = sum(float(v) for k, v in row.items() if k.endswith(" slot s"))
            assert stages == pytest.approx(float(row["slot s per VM"]), abs=4)


def test_fleet() -> None:
    rows = table(run_script("fleet.py"), "Fleet run")
    assert [r["early restart"] for r in rows] == ["no", "yes"]
    for row in rows:
        assert row["VMs"] == "20"
        assert row["failed tasks"] == "0"
        assert float(row["downtime mean s"]) >= float(row["floor s"])
        assert float(row["max s"]) >= float(row["p95 s"]) >= float(row["floor s"])
        assert float(row["makespan min"]) >= float(row["longest VM path min"]) > 0
        assert int(row["peak running tries"]) <= 16  # max_active_tasks
    no, yes = rows
    assert float(yes["downtime mean s"]) < float(no["downtime mean s"])
