"""pytest fixtures: a fresh emulator per test, seeded with the demo fleet, and client settings for it.

It also checks, over a whole test session, that the API methods the package's code calls are exactly the
keys of ``gce_vm_backup.compute.permissions.API_METHOD_PERMISSIONS`` (IAM grants what the code calls,
no more), and
those the restore hook calls (product ``gce-vm-backup-restore``) exactly the keys of
``RESTORE_API_METHOD_PERMISSIONS`` (its own role and account):

- the controller (the only process, or xdist's controller) sets ``GCE_EMULATOR_CALL_LOG`` to a fresh
  folder before any worker starts; every emulator in every process (xdist workers, subprocesses) appends
  there the distinct methods it served and which client called them (server.CALL_LOG_ENV);
- only calls whose client names the package (``gce-vm-backup/<version>``, the hook's client_info; or
  ``gce-vm-backup-restore/<version>``, the restore hook's) count, each against its own list, not a test's
  own calls through a client;
- at session end the controller reads the folder: a method the package called that is not listed fails
  the session on any run; a listed method never called fails it only when the whole suite ran and passed
  (no ``-k``, ``-m``, ``--deselect``, ``--lf``, node ids or file selection), since a partial run calls less.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED
from gce_emulator.server import CALL_LOG_ENV

_STATE = pytest.StashKey[dict[str, Any]]()


@pytest.fixture
def gce_emulator() -> Iterator[Emulator]:
    """A started emulator (demo seed, real time) on a free loopback port; stopped afterwards."""
    emulator = Emulator(DEMO_SEED)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def anonymous_credentials() -> Any:
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()


@pytest.fixture
def compute_client_options(gce_emulator: Emulator) -> dict[str, str]:
    return {"api_endpoint": gce_emulator.url}


# ---- the session's call log against the package's IAM list ------------------------------------------
def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if not _is_controller(config):
        return  # a worker inherits the controller's folder through the environment
    state: dict[str, Any] = {"owned": False, "deselected": 0}
    config.stash[_STATE] = state
    if not os.environ.get(CALL_LOG_ENV):  # an outer session collects already: leave it to that one
        state["folder"] = tempfile.mkdtemp(prefix="gce-emulator-calls-")
        state["owned"] = True
        os.environ[CALL_LOG_ENV] = state["folder"]


def pytest_deselected(items: list[pytest.Item]) -> None:
    # Only seen where collection happens (a run without xdist); the options cover xdist's controller.
    if items:
        config = items[0].config
        if _STATE in config.stash:
            config.stash[_STATE]["deselected"] += len(items)


def package_calls(folder: str | Path, product: str) -> set[str]:
    """The API methods a client naming ``product`` called, from every process's log in ``folder``."""
    methods: set[str] = set()
    for log in Path(folder).glob("calls-*.log"):
        for line in log.read_text(encoding="utf-8").splitlines():
            method, _, products = line.partition("\t")
            if product in products.split():
                methods.add(method)
    return methods


def why_partial(config: pytest.Config, deselected: int) -> str | None:
    """Why this session is not the whole suite, or None when it is."""
    option = config.option
    if getattr(option, "keyword", ""):
        return "-k"
    if getattr(option, "markexpr", ""):
        return "-m"
    if getattr(option, "deselect", None):
        return "--deselect"
    if getattr(option, "lf", False) or getattr(option, "stepwise", False):
        return "--lf/--sw"
    if getattr(option, "collectonly", False):
        return "--collect-only"
    if deselected:
        return f"{deselected} test(s) deselected"
    whole = {config.rootpath, *(config.rootpath / path for path in config.getini("testpaths"))}
    whole = {path.resolve() for path in whole}
    for arg in config.args:
        if "::" in arg or (config.invocation_params.dir / arg).resolve() not in whole:
            return f"only {arg}"
    return None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = config.stash.get(_STATE, None)
    if state is None or not state["owned"]:
        return
    folder = state["folder"]
    try:
        from gce_vm_backup.compute import permissions

        # Two accounts, two roles: the backup hook's calls (product gce-vm-backup) against the backup
        # role, the restore hook's (gce-vm-backup-restore) against the restore role. Products are whole
        # tokens, so neither set leaks into the other.
        checks = [
            (
                "the package",
                "API_METHOD_PERMISSIONS",
                permissions.API_METHOD_PERMISSIONS,
                permissions.CLIENT_PRODUCT,
            ),
            (
                "the restore hook",
                "RESTORE_API_METHOD_PERMISSIONS",
                permissions.RESTORE_API_METHOD_PERMISSIONS,
                permissions.RESTORE_CLIENT_PRODUCT,
            ),
        ]
        called = {name: package_calls(folder, product) for _, name, _, product in checks}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(CALL_LOG_ENV, None)
    partial = why_partial(config, state["deselected"]) or (None if exitstatus == 0 else "tests failed")
    problems, exact, listed_only = [], [], []
    for who, name, mapping, _ in checks:
        listed, used = set(mapping), called[name]
        if used - listed:
            problems.append(
                f"{who} called API methods that gce_vm_backup.compute.permissions.{name} does not list "
                f"(IAM would refuse them): {', '.join(sorted(used - listed))}"
            )
        # The restore role is held to equality only in a session where restore ran at all (a whole
        # suite always does; an inner session of the plugin's own tests may be about the backup only).
        complete = partial is None and (used or name == "API_METHOD_PERMISSIONS")
        if complete and listed - used:
            problems.append(
                f"gce_vm_backup.compute.permissions.{name} lists API methods {who} never called in the whole "
                f"test suite (IAM grants them for nothing): {', '.join(sorted(listed - used))}"
            )
        if complete:
            exact.append(f"{who} called exactly the {len(listed)} API methods its IAM role grants")
        elif used:
            listed_only.append(f"every API method {who} called is listed")
    if problems:
        state["problems"] = problems
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif exact:
        state["note"] = "IAM check: " + "; ".join(exact + listed_only)
    elif listed_only:
        state["note"] = (
            f"IAM check: {'; '.join(listed_only)}; not whether every listed one is called ({partial}: that "
            "needs the whole suite)"
        )


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None:
        return
    if state.get("problems"):
        terminalreporter.section("IAM permissions vs the package's API calls", sep="=", red=True)
        for line in state["problems"]:
            terminalreporter.write_line(line, red=True)
    elif state.get("note"):
        terminalreporter.write_line(state["note"])
