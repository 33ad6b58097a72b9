"""Every third-party module the package, the CLI, the DAG file and the benchmarks import (function-local
imports too) comes from a distribution pyproject.toml declares, not one that only arrives transitively, and
in the right place: what Composer runs (the package, the DAG file) from the runtime dependencies (or the
[slack] extra its Slack notices need), the CLI from those and its extras. Every runtime dependency is
imported by what Composer runs: nothing only the CLI or the local tools use is in the default install."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import sys
import tomllib
from functools import cache
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
# What users install, and the extras each part may import from (beside [project] dependencies).
RUNTIME_TREES: dict[str, tuple[str, ...]] = {
    "plugins": ("slack",),  # Composer: the package (Slack notices with [slack]) and the UI plugin
    "dags": (),
    "composer/vm_backup_cli": ("cli", "celery"),  # a workstation: `sync` ([cli]), local-env ([celery])
    "composer/gce_emulator": ("pytest",),  # its pytest fixtures
}
COMPOSER_TREES = ("plugins", "dags")
DEV_TREES = ("benchmarks",)  # run from the checkout: the dev group too
# Our packages, and the benchmarks' own helper modules (each script puts benchmarks/ on sys.path).
LOCAL = {"gce_vm_backup", "vm_backup_cli", "gce_emulator", "tests"} | {
    path.stem for path in (REPO / "benchmarks").glob("_*.py")
}
# The apache-airflow distribution is a meta package: its code is in these two, which it pins.
PARTS = {"apache-airflow": {"apache-airflow-core", "apache-airflow-task-sdk"}}


def imported_modules(tree: str) -> dict[str, list[str]]:
    """Absolute imported module -> the files (path:line) importing it, for every .py file under ``tree``."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / tree).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from google.cloud import compute_v1`: the name may be a module of a namespace package
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                found.setdefault(name, []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


@cache
def _module_owners() -> dict[str, str]:
    """Dotted module -> distribution, from every installed distribution's file list (nothing imported)."""
    owners: dict[str, str] = {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        for file in dist.files or ():
            if file.suffix == ".py" and ".." not in file.parts:
                parts = list(file.with_suffix("").parts)
                owners[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = name
    return owners


@cache
def _top_level_owners() -> dict[str, list[str]]:
    return metadata.packages_distributions()


@cache
def owning_distribution(module: str) -> str | None:
    """The installed distribution that provides ``module``. A top-level name several distributions share
    (namespace packages: google.*, airflow.providers.*) goes by which one holds the module's files."""
    candidates = set(_top_level_owners().get(module.split(".")[0], []))
    if len(candidates) == 1:
        return canonicalize_name(candidates.pop())
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        owner = _module_owners().get(".".join(parts[:end]))
        if owner:
            return owner
    return None


def declared(pyproject: dict, *, dev: bool, extras: tuple[str, ...] | None = None) -> set[str]:
    """The runtime dependencies, with ``extras`` (None: every extra) and, with ``dev``, the dev group."""
    requirements = list(pyproject["project"]["dependencies"])
    for name, extra in pyproject["project"].get("optional-dependencies", {}).items():
        if extras is None or name in extras:
            requirements += extra
    if dev:
        requirements += pyproject.get("dependency-groups", {}).get("dev", [])
    names = {canonicalize_name(Requirement(r).name) for r in requirements}
    return names | {part for name in names for part in PARTS.get(name, ())}


def undeclared(pyproject: dict) -> list[str]:
    """One line per imported third-party module whose distribution pyproject does not declare."""
    problems = []
    scopes = [(tree, declared(pyproject, dev=False, extras=extras)) for tree, extras in RUNTIME_TREES.items()]
    scopes += [(tree, declared(pyproject, dev=True)) for tree in DEV_TREES]
    for tree, allowed in scopes:
        for module, where in sorted(imported_modules(tree).items()):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in LOCAL or top == "__future__":
                continue
            owner = owning_distribution(module)
            if owner not in allowed:
                problems.append(f"{module} (from {owner or 'no installed distribution'}): {where[0]}")
    return problems


def third_party_owners(tree: str) -> set[str]:
    owners = set()
    for module in imported_modules(tree):
        top = module.split(".")[0]
        if top not in sys.stdlib_module_names and top not in LOCAL and top != "__future__":
            owners.add(owning_distribution(module) or module)
    return owners


def unused_at_runtime(pyproject: dict) -> list[str]:
    """The runtime dependencies nothing Composer runs imports (the apache-airflow meta package counts
    through its parts)."""
    used = set().union(*(third_party_owners(tree) for tree in COMPOSER_TREES))
    unused = []
    for requirement in pyproject["project"]["dependencies"]:
        name = canonicalize_name(Requirement(requirement).name)
        if name not in used and not (PARTS.get(name, set()) & used):
            unused.append(name)
    return unused


def pyproject_of_checkout() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_imported_third_party_module_is_declared():
    assert undeclared(pyproject_of_checkout()) == []


def test_the_check_sees_a_module_that_only_arrives_transitively():
    pyproject = pyproject_of_checkout()
    pyproject["project"]["dependencies"] = [
        r for r in pyproject["project"]["dependencies"] if canonicalize_name(Requirement(r).name) != "rich"
    ]
    found = [line.rsplit(":", 1)[0] for line in undeclared(pyproject) if line.startswith("rich")]
    # the line numbers move with the code; the modules and the file do not
    assert found == [
        "rich.console.Console (from rich): plugins/operators/gce_vm_backup/report/text.py",
        "rich.table.Table (from rich): plugins/operators/gce_vm_backup/report/text.py",
        "rich.text.Text (from rich): plugins/operators/gce_vm_backup/report/text.py",
        "rich.console.Console (from rich): composer/vm_backup_cli/sync.py",
        "rich.progress.BarColumn (from rich): composer/vm_backup_cli/sync.py",
        "rich.progress.DownloadColumn (from rich): composer/vm_backup_cli/sync.py",
        "rich.progress.Progress (from rich): composer/vm_backup_cli/sync.py",
        "rich.progress.TextColumn (from rich): composer/vm_backup_cli/sync.py",
    ]


def test_namespace_packages_resolve_to_their_own_distribution():
    assert owning_distribution("google.cloud.compute_v1") == "google-cloud-compute"
    assert owning_distribution("google.cloud.orchestration.airflow.service_v1") == (
        "google-cloud-orchestration-airflow"
    )
    assert owning_distribution("airflow.providers.smtp.notifications.smtp") == "apache-airflow-providers-smtp"
    assert owning_distribution("airflow.sdk") == "apache-airflow-task-sdk"


def test_every_runtime_dependency_is_imported_by_what_composer_runs():
    assert unused_at_runtime(pyproject_of_checkout()) == []


def test_a_cli_dependency_in_the_default_install_is_seen():
    pyproject = pyproject_of_checkout()
    pyproject["project"]["dependencies"].append("pathspec>=0.11")
    pyproject["project"]["optional-dependencies"]["cli"].remove("pathspec>=0.11")

    assert unused_at_runtime(pyproject) == ["pathspec"]
    assert undeclared(pyproject) == []  # still declared: the check above is what catches it


def test_a_package_import_declared_only_in_the_cli_extra_is_seen():
    pyproject = pyproject_of_checkout()
    croniter = next(r for r in pyproject["project"]["dependencies"] if r.startswith("croniter"))
    pyproject["project"]["dependencies"].remove(croniter)
    pyproject["project"]["optional-dependencies"]["cli"].append(croniter)

    found = [line.rsplit(":", 1)[0] for line in undeclared(pyproject)]
    assert found == ["croniter.croniter (from croniter): plugins/operators/gce_vm_backup/config/models.py"]
