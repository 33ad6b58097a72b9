"""The wheel `make dist` builds, built once per test session from this checkout with uv, and unpacked as
pip would install it (a folder to put first on PYTHONPATH: its packages and its dist-info)."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def uv() -> str:
    return shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [uv(), "build", "--wheel", "--out-dir", str(out), str(REPO)], check=True, capture_output=True
    )
    (built,) = out.glob("gce_vm_backup-*.whl")
    return built


@pytest.fixture
def installed_wheel(wheel, tmp_path) -> Path:
    """The wheel's files in a fresh folder (a test may change them): a site-packages of its own."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site
