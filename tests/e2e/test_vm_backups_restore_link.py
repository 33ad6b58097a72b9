"""The "VM backups" page leads to a restore, in a real browser (Debian's headless Chromium driven by
Playwright), inside the Airflow UI that frames it: after a backup run of two VMs, the page shows each
set's id as text, and a set's "Restore..." link opens the group's restore form with the VM and that set
filled in; submitting it (as a dry run) starts a run of the restore DAG with exactly those values, and
the UI shows that run.
Screenshots: test-artifacts/e2e/vm-backups-set-ids.png, restore-link-form.png, restore-link-run.png.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from gce_vm_backup.config.labels import run_label
from vm_backup_cli.local_env import LocalAirflow

from .conftest import ARTIFACTS, PROJECT, ZONE, trigger_and_wait, wait_for
from .test_trigger_form import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BACKUP_DAG_ID = "gce_vm_backup__e2e-form"
RESTORE_DAG_ID = "gce_vm_backup_restore__e2e-form"
FORM_1 = f"projects/{PROJECT}/zones/{ZONE}/instances/form-1"
FORM_3 = f"projects/{PROJECT}/zones/{ZONE}/instances/form-3"
RUN_ID = "restore-link"


@pytest.fixture
def ui(airflow_env: LocalAirflow) -> Iterator[Any]:
    """A page signed in through the UI's own form, in a fresh headless Chromium."""
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(f"{airflow_env.url}/plugin/vm-backups")
            page.get_by_label("Username").fill(airflow_env.username)
            page.get_by_label("Password").fill(airflow_env.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/plugin/vm-backups")
            yield page
        finally:
            browser.close()


@pytest.fixture
def sets(airflow_env: LocalAirflow) -> str:
    """One backup run of form-1 and form-3: a set of each. Their set id (the run's label)."""
    result = trigger_and_wait(
        airflow_env,
        BACKUP_DAG_ID,
        {"vms": [f"{ZONE}/form-1", f"{ZONE}/form-3"], "dry_run": False},
        run_id=RUN_ID,
        timeout=600,  # the machine may be busy: a slow run is no failure of the page
    )
    assert result.run["state"] == "success", result.states()
    return run_label(BACKUP_DAG_ID, RUN_ID)


def test_a_sets_restore_link_opens_the_restore_form_filled_with_the_vm_and_the_set(
    airflow_env: LocalAirflow, sets: str, ui: Any
) -> None:
    # (the backup run first, the browser then: its first load of the page lists the snapshots)
    airflow_env.wait_for_dag(RESTORE_DAG_ID)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    frame = ui.frame_locator("iframe")
    row = frame.locator(f'tr.vm[data-vm="{FORM_3}"]')  # the group's last VM: not the form's default
    row.wait_for()
    for vm in (FORM_1, FORM_3):  # each VM's set id is text a user sees (and selects whole to copy)
        shown = frame.locator(f'tr.vm[data-vm="{vm}"] li[data-run="{sets}"] code.set-id')
        assert shown.is_visible()
        assert shown.inner_text() == sets
        assert shown.evaluate("e => getComputedStyle(e).userSelect") == "all"
    # the chart's axes: titled, with dates
    chart = row.locator("svg.chart")
    assert chart.locator("text.axis-title").all_text_contents() == [
        "downtime (s)",
        "snapshot size (GiB)",
        "run time (UTC)",
    ]
    assert chart.locator("text.tick-time").count() >= 3
    ui.screenshot(path=str(ARTIFACTS / "vm-backups-set-ids.png"), full_page=True)
    row.screenshot(path=str(ARTIFACTS / "vm-backups-restore-row.png"))

    runs_before = {run["dag_run_id"] for run in airflow_env.dag_runs(RESTORE_DAG_ID)}
    row.locator(f'li[data-run="{sets}"] a.restore').click()

    vm = frame.locator("#field-vm")
    vm.wait_for()
    assert vm.input_value() in (f"{ZONE}/form-3", FORM_3)
    assert frame.locator("#field-snapshot_set").input_value() == sets
    assert frame.locator("#field-mode").input_value() == "new-vm"
    frame.locator("#field-dry_run").check()
    ui.screenshot(path=str(ARTIFACTS / "restore-link-form.png"), full_page=True)

    filled_vm = vm.input_value()
    frame.get_by_role("button", name="Trigger").click()
    run_id = _new_run_id(airflow_env, runs_before)
    # the UI (whose frame may not navigate it) shows the new run's page
    ui.wait_for_url(f"**/dags/{RESTORE_DAG_ID}/runs/{quote(run_id, safe='')}**")
    ui.get_by_text(run_id).first.wait_for()
    ui.screenshot(path=str(ARTIFACTS / "restore-link-run.png"), full_page=True)
    result = wait_for(airflow_env, RESTORE_DAG_ID, run_id, timeout=600)

    assert result.run["triggered_by"] == "ui"  # a browser request (it has a Referer), as from its own form
    conf = result.run["conf"]
    assert {key: conf.get(key) for key in ("vm", "snapshot_set", "mode", "dry_run")} == {
        "vm": filled_vm,
        "snapshot_set": sets,
        "mode": "new-vm",
        "dry_run": True,
    }
    assert result.run["state"] == "success", result.states()
    plan = airflow_env.xcom(RESTORE_DAG_ID, run_id, "plan", key="restore_plan_text")
    assert sets in str(plan)


def _new_run_id(env: LocalAirflow, before: set[str], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [run["dag_run_id"] for run in env.dag_runs(RESTORE_DAG_ID) if run["dag_run_id"] not in before]
        if new:
            assert len(new) == 1, new
            return str(new[0])
        time.sleep(0.5)
    raise AssertionError(f"submitting the restore form created no run of {RESTORE_DAG_ID} in {timeout:.0f} s")
