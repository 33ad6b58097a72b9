"""The session-end IAM check of gce_emulator.pytest_plugin, run in an inner pytest session (a subprocess).

The inner tests call emulator routes over HTTP naming a client product the way the hook does
(``x-goog-api-client: gce-vm-backup/...``), so each scenario controls exactly which methods "the package"
called. The outer session's call log is kept out of the inner one (its variable is removed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gce_emulator.server import CALL_LOG_ENV
from gce_vm_backup.compute.permissions import API_METHOD_PERMISSIONS, RESTORE_API_METHOD_PERMISSIONS

pytestmark = pytest.mark.slow  # each case is a pytest session of its own (about 3 s, 10 s with xdist)
ALL = sorted(API_METHOD_PERMISSIONS)
ALL_RESTORE = sorted(RESTORE_API_METHOD_PERMISSIONS)

INNER_TEST = """
import os, re

import pytest
import requests

from gce_emulator import Emulator
from gce_emulator.server import ROUTES

CALLS = [m for m in os.environ["INNER_CALLS"].split(",") if m]
UNMARKED = [m for m in os.environ.get("INNER_UNMARKED", "").split(",") if m]
RESTORE = [m for m in os.environ.get("INNER_RESTORE", "").split(",") if m]


@pytest.fixture(scope="module")
def emulator():
    with Emulator({"projects": {"x": {"zones": {"x": {"instances": [{"name": "x"}]}}}}}) as emulator:
        yield emulator


def call(emulator, method, client):
    route = next(r for r in ROUTES if r.method == method)
    path = re.sub(r"\\(\\?P<\\w+>\\[\\^/\\]\\+\\)", "x", route.pattern.pattern).strip("^$")
    headers = {"x-goog-api-client": client} if client else {}
    requests.request(route.http_method, emulator.url + path, headers=headers, json={}, timeout=30)
    assert emulator.calls[-1].method == method


@pytest.mark.parametrize("method", CALLS)
def test_package_call(emulator, method):
    call(emulator, method, "gce-vm-backup/0.0.0 gl-python/3.11.7 gax/2.44.0")


@pytest.mark.parametrize("method", RESTORE)
def test_restore_call(emulator, method):
    call(emulator, method, "gce-vm-backup-restore/0.0.0 gl-python/3.11.7 gax/2.44.0")


@pytest.mark.parametrize("method", UNMARKED)
def test_setup_call_through_a_plain_client(emulator, method):
    call(emulator, method, "gl-python/3.11.7 gax/2.44.0 gapic/1.57.0")


def test_other():
    pass
"""


def run_inner(
    tmp_path: Path, calls: list[str], *args: str, unmarked: list[str] = (), restore: list[str] = ()
) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["gce_emulator.pytest_plugin"]\n')
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    env = {key: value for key, value in os.environ.items() if key != CALL_LOG_ENV}
    env.update(
        INNER_CALLS=",".join(calls), INNER_UNMARKED=",".join(unmarked), INNER_RESTORE=",".join(restore)
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_full_run_that_calls_exactly_the_listed_methods_passes(tmp_path):
    result = run_inner(tmp_path, ALL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"IAM check: the package called exactly the {len(ALL)} API methods its IAM role grants" in (
        result.stdout
    )


def test_a_full_run_that_never_calls_a_listed_method_fails_naming_it(tmp_path):
    result = run_inner(tmp_path, [m for m in ALL if m != "compute.instances.resume"])
    assert result.returncode == 1, result.stdout
    assert "lists API methods the package never called in the whole test suite" in result.stdout
    assert "(IAM grants them for nothing): compute.instances.resume" in result.stdout


def test_a_call_of_an_unlisted_method_fails_even_a_partial_run(tmp_path):
    result = run_inner(tmp_path, ["compute.disks.list", "compute.instances.get"], "-k", "package_call")
    assert result.returncode == 1, result.stdout
    assert "(IAM would refuse them): compute.disks.list" in result.stdout
    assert "never called" not in result.stdout


@pytest.mark.parametrize(
    "selection", [["-k", "package_call"], ["-m", "not slow"], ["test_inner.py::test_other"]]
)
def test_a_partial_run_checks_only_that_every_call_is_listed(tmp_path, selection):
    result = run_inner(tmp_path, ["compute.instances.get"], *selection)
    assert result.returncode == 0, result.stdout
    if "test_other" not in selection[0]:
        assert "IAM check: every API method the package called is listed" in result.stdout


def test_calls_through_a_plain_client_are_not_the_packages(tmp_path):
    result = run_inner(tmp_path, ALL, unmarked=["compute.disks.list", "compute.regionOperations.get"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_failed_test_session_does_not_also_claim_unused_grants(tmp_path):
    result = run_inner(tmp_path, ["compute.instances.get", "compute.nope.get"])
    assert result.returncode == 1
    assert "never called" not in result.stdout


@pytest.mark.parametrize(("calls", "code"), [(ALL, 0), (ALL[1:], 1)], ids=["exact", "one-unused"])
def test_the_check_collects_every_xdist_worker(tmp_path, calls, code):
    result = run_inner(tmp_path, calls, "-n", "2", "--dist", "load")
    assert result.returncode == code, result.stdout + result.stderr
    if code:
        assert f"(IAM grants them for nothing): {ALL[0]}" in result.stdout


# ---- the restore hook's calls against the restore role (a role and an account of their own) ----------
def test_a_full_run_checks_each_hook_against_its_own_role(tmp_path):
    result = run_inner(tmp_path, ALL, restore=ALL_RESTORE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"the restore hook called exactly the {len(ALL_RESTORE)} API methods its IAM role grants" in (
        result.stdout
    )


def test_a_restore_method_never_called_in_a_full_run_fails_naming_the_restore_list(tmp_path):
    result = run_inner(tmp_path, ALL, restore=[m for m in ALL_RESTORE if m != "compute.instances.detachDisk"])
    assert result.returncode == 1, result.stdout
    assert "RESTORE_API_METHOD_PERMISSIONS lists API methods the restore hook never called" in result.stdout
    assert "(IAM grants them for nothing): compute.instances.detachDisk" in result.stdout


def test_the_backup_hook_creating_a_disk_fails_even_when_the_restore_role_grants_it(tmp_path):
    """The backup account never creates or deletes a VM or a disk: the restore role's grants do not cover
    a call made under the backup's product."""
    result = run_inner(tmp_path, [*ALL, "compute.disks.insert"], restore=ALL_RESTORE)
    assert result.returncode == 1, result.stdout
    assert (
        "the package called API methods that gce_vm_backup.compute.permissions.API_METHOD_PERMISSIONS"
        in result.stdout
    )
    assert "(IAM would refuse them): compute.disks.insert" in result.stdout


def test_the_restore_hook_calling_a_backup_only_method_fails_a_partial_run(tmp_path):
    result = run_inner(tmp_path, [], "-k", "restore_call", restore=["compute.snapshots.delete"])
    assert result.returncode == 1, result.stdout
    assert (
        "RESTORE_API_METHOD_PERMISSIONS does not list (IAM would refuse them): compute.snapshots.delete"
        in (result.stdout)
    )
