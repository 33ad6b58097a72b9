"""`make dist`'s wheel: built from this checkout with uv, it carries the three packages and its runtime
dependencies fit a Composer image (Airflow and providers as ranges, never pins)."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.packaging.wheel_metadata import problems, runtime_requirements

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    uv = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(out), str(REPO)], check=True, capture_output=True
    )
    (built,) = out.glob("gce_vm_backup-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_pins_no_airflow_and_carries_the_packages(wheel):
    requirements = {r.name: r for r in runtime_requirements(wheel)}
    assert problems(list(requirements.values())) == []
    assert str(requirements["apache-airflow"].specifier) == "<4,>=3.1.7"
    assert "apache-airflow-providers-slack" not in requirements  # only with the extra [slack]
    names = zipfile.ZipFile(wheel).namelist()
    for package in ("gce_vm_backup/report/model.py", "vm_backup_cli/__main__.py", "gce_emulator/__init__.py"):
        assert package in names


def test_a_pinned_airflow_or_provider_is_refused():
    found = problems(
        [
            Requirement("apache-airflow==3.3.2"),
            Requirement("apache-airflow-providers-google==22.8.0"),
            Requirement("PyYAML==6.0.3"),
        ]
    )
    assert found == [
        "apache-airflow==3.3.2: pins apache-airflow; Composer's image brings its own",
        "apache-airflow==3.3.2: no floor for Airflow",
        "apache-airflow-providers-google==22.8.0: pins apache-airflow-providers-google; Composer's image brings "
        "its own",
    ]
