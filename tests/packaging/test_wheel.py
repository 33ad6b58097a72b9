"""`make dist`'s wheel (built from this checkout with uv, conftest.py): it carries the three packages, the DAG
file and the page's entry point, and its runtime dependencies fit a Composer image (Airflow and providers as
ranges, never pins; nothing only the CLI or the local tools use)."""

from __future__ import annotations

import re
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tests.packaging.wheel_metadata import problems, runtime_requirements

REPO = Path(__file__).resolve().parents[2]
# What only the CLI (`vm-backup sync`), the local tools or the tests import: never in Composer's install.
NOT_RUNTIME = {
    "google-cloud-storage",
    "google-cloud-orchestration-airflow",
    "pathspec",
    "pytest",
    "apache-airflow-providers-celery",
    "celery",
    "psycopg2-binary",
    "asyncpg",
    "redis",
}


def metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(name).decode())


def entry_points(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        return archive.read(name).decode()


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


@pytest.mark.slow
def test_the_wheel_carries_the_dag_file_and_the_plugin_entry_point(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = zipfile.ZipFile(wheel).read("vm_backup_cli/data/gce_vm_backup_dags.py")
    assert shipped == (REPO / "dags" / "gce_vm_backup_dags.py").read_bytes()
    assert "gce_vm_backup/ui/plugin.py" in names
    assert "gce_vm_backup/.airflowignore" in names  # a synced copy of the wheel's files stays out of plugins
    assert "vm_backup_cli/demo_config.yaml" in names
    assert "gce_emulator/seeds/demo.yaml" in names
    assert re.search(
        r"^\[airflow\.plugins\]\ngce_vm_backup_ui = gce_vm_backup\.ui\.plugin:entry_point_plugin$",
        entry_points(wheel),
        re.MULTILINE,
    )


@pytest.mark.slow
def test_the_default_install_is_the_runtime_dependencies_only(wheel):
    runtime = {r.name for r in runtime_requirements(wheel)}
    assert runtime & NOT_RUNTIME == set()
    extras = {}
    for line in metadata(wheel).get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        for extra in re.findall(r'extra == "([^"]+)"', str(requirement.marker or "")):
            extras.setdefault(extra, set()).add(requirement.name)
    assert extras["cli"] == {"google-cloud-storage", "google-cloud-orchestration-airflow", "pathspec"}
    assert {"slack", "celery", "pytest"} <= set(extras)


@pytest.mark.slow
def test_the_wheel_takes_composers_python_and_any_newer_one(wheel):
    requires = SpecifierSet(metadata(wheel)["Requires-Python"])
    assert [v in requires for v in ("3.11.7", "3.12.0", "3.14.0")] == [True, True, True]
    assert "3.10.12" not in requires
    version = metadata(wheel)["Version"]
    assert version == re.search(
        r'__version__ = "([^"]+)"', (REPO / "plugins/operators/gce_vm_backup/__init__.py").read_text()
    ).group(1)
    assert "version" not in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]  # one source
