"""Under pytest-xdist the e2e tests share one worker (one Airflow environment), the others spread out.

Runs pytest with two workers on a small tree that has this repository's tests/conftest.py, and records
which worker ran each test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

RECORDING_TEST = """\
import os, time
import pytest

@pytest.mark.parametrize("n", range({count}))
def test_records_its_worker(n):
    time.sleep(0.3)
    with open(os.environ["RECORD"], "a") as out:
        out.write(f"{{__name__.rsplit('.', 1)[-1]}} {{os.environ['PYTEST_XDIST_WORKER']}}\\n")
"""


def test_the_e2e_tests_run_on_one_worker_and_the_others_on_both(tmp_path: Path) -> None:
    (tmp_path / "tests" / "e2e").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "e2e" / "test_in_e2e.py").write_text(RECORDING_TEST.format(count=6))
    # twice as many elsewhere: the e2e worker, done with its group, still finds some of them queued
    (tmp_path / "tests" / "test_elsewhere.py").write_text(RECORDING_TEST.format(count=12))
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --import-mode=importlib --dist loadgroup\n")
    record = tmp_path / "record.txt"
    env = {**os.environ, "RECORD": str(record)}
    env.pop("GCE_VM_BACKUP_TESTS_SHARED", None)

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "-q", "tests"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    workers: dict[str, set[str]] = {}
    for line in record.read_text().splitlines():
        module, worker = line.split()
        workers.setdefault(module, set()).add(worker)
    assert len(workers["test_in_e2e"]) == 1, workers  # one group: one worker ran all six
    assert workers["test_elsewhere"] == {"gw0", "gw1"}, workers  # the rest is spread over both
