"""The trigger form in a real browser (Debian's headless Chromium driven by Playwright).

The form is built by Airflow's UI from our Params, so it is part of what we ship: the group's VMs as a
multi-select, the dry-run toggle, and a submitted subset backs up only that subset. The same goes for the
restore DAG's form (a VM, the mode, the dry run), and for the "VM backups" page the UI plugin adds (a VM's
row and the chart of its runs, framed in the UI).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gce_emulator import Emulator
from vm_backup_cli.local_env import LocalAirflow

from .conftest import ARTIFACTS, PROJECT, ZONE, vm_snapshots, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DAG_ID = "gce_vm_backup__e2e-form"
GROUP_VMS = [f"{ZONE}/form-1", f"{ZONE}/form-2", f"{ZONE}/form-3"]


@pytest.fixture
def page(airflow_env: LocalAirflow) -> Iterator[Any]:
    """A logged-in page (through the UI's own sign-in form) in a fresh headless Chromium."""
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(f"{airflow_env.url}/dags/{DAG_ID}")
            page.get_by_label("Username").fill(airflow_env.username)
            page.get_by_label("Password").fill(airflow_env.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"**/dags/{DAG_ID}**")
            yield page
        finally:
            browser.close()


def test_trigger_form_backs_up_only_the_chosen_vms(
    page: Any, airflow_env: LocalAirflow, e2e_emulator: Emulator
) -> None:
    runs_before = {run["dag_run_id"] for run in airflow_env.dag_runs(DAG_ID)}
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.locator("[role=dialog][data-state=open]")
    dialog.get_by_text("Run Parameters").wait_for()

    # The VMs field is a multi-select offering exactly the group's VMs.
    vms = dialog.locator("#element_vms")
    vms.get_by_role("combobox").click()
    assert page.get_by_role("option").all_inner_texts() == GROUP_VMS
    page.get_by_role("option", name=f"{ZONE}/form-1").click()
    vms.get_by_role("combobox").click()
    page.get_by_role("option", name=f"{ZONE}/form-3").click()
    # The dry-run toggle, off by default.
    dry_run = dialog.get_by_role("group").filter(has_text="Dry run").get_by_role("checkbox")
    assert dry_run.count() == 1
    assert not dry_run.is_checked()

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "trigger-form.png"
    page.screenshot(path=str(screenshot))
    print(f"\ntrigger form screenshot: {screenshot}")

    dialog.get_by_role("button", name="Trigger").click()
    run_id = _new_run_id(airflow_env, runs_before)
    result = wait_for(airflow_env, DAG_ID, run_id)

    assert result.run["conf"] == {"vms": [f"{ZONE}/form-1", f"{ZONE}/form-3"], "dry_run": False}
    assert result.run["triggered_by"] == "ui"
    assert result.run["state"] == "success", result.states()
    for chosen in ("form-1", "form-3"):
        assert e2e_emulator.instance(PROJECT, ZONE, chosen)["status"] == "RUNNING"
        assert [s["status"] for s in vm_snapshots(e2e_emulator, chosen)[chosen]] == ["READY"]
    # The VM left out of the subset was not touched: no snapshot, no stop.
    assert vm_snapshots(e2e_emulator, "form-2") == {}
    form_2 = f"projects/{PROJECT}/zones/{ZONE}/instances/form-2"
    assert [c.method for c in e2e_emulator.calls if c.resource == form_2 and c.http_method == "POST"] == []
    report = airflow_env.xcom(DAG_ID, run_id, "run_report")
    assert sorted(row["vm"] for row in report["vms"]) == [
        f"projects/{PROJECT}/zones/{ZONE}/instances/form-1",
        f"projects/{PROJECT}/zones/{ZONE}/instances/form-3",
    ]


def _new_run_id(env: LocalAirflow, before: set[str], timeout: float = 30.0, dag_id: str = DAG_ID) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [run["dag_run_id"] for run in env.dag_runs(dag_id) if run["dag_run_id"] not in before]
        if new:
            assert len(new) == 1, new
            return str(new[0])
        time.sleep(0.5)
    raise AssertionError(f"submitting the form created no run of {dag_id} in {timeout:.0f} s")


# ---- the VM backups page and the restore form --------------------------------------------
RESTORE_DAG_ID = "gce_vm_backup_restore__e2e-form"
FORM_2 = f"projects/{PROJECT}/zones/{ZONE}/instances/form-2"


@pytest.fixture(scope="module")
def form_2_backed_up(airflow_env: LocalAirflow, e2e_emulator: Emulator) -> dict[str, Any]:
    """One backup run of form-2 (the VM the form test leaves alone, so this runs after it): a snapshot set
    and a run report with its downtime. Its run report."""
    from .conftest import trigger_and_wait

    result = trigger_and_wait(
        airflow_env, DAG_ID, {"vms": [f"{ZONE}/form-2"], "dry_run": False}, run_id="backups-page-form-2"
    )
    assert result.run["state"] == "success", result.states()
    report: dict[str, Any] = airflow_env.xcom(DAG_ID, "backups-page-form-2", "run_report")
    return report


def test_the_vm_backups_page_shows_each_vm_and_a_chart_of_its_runs(
    page: Any, airflow_env: LocalAirflow, form_2_backed_up: dict[str, Any]
) -> None:
    # In the UI's navigation, the page is framed under /plugin/vm-backups (the plugin's external view).
    page.goto(f"{airflow_env.url}/plugin/vm-backups")
    frame = page.frame_locator("iframe")
    row = frame.locator(f'tr.vm[data-vm="{FORM_2}"]')
    row.wait_for()
    print(f"\nthe UI frames the page from {page.locator('iframe').get_attribute('src')}")
    assert row.get_attribute("data-stale") == "false"  # a manual group is never stale
    assert "READY" in row.inner_text()
    chart = row.locator("svg.chart")
    assert chart.count() == 1
    assert chart.locator("rect.size").count() == 1  # this run's snapshot size
    assert chart.locator("rect.downtime").count() == 1  # and its downtime, from the run report
    (vm_row,) = [r for r in form_2_backed_up["vms"] if r["vm"] == FORM_2]
    downtime = vm_row.get("downtime_s", vm_row.get("downtime_seconds"))
    assert f"downtime {downtime:.0f} s" in (chart.locator("rect.downtime title").text_content() or "")
    for vm in ("form-1", "form-3"):
        assert frame.locator(f'tr.vm[data-vm="projects/{PROJECT}/zones/{ZONE}/instances/{vm}"]').count() == 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "vm-backups-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    row.screenshot(path=str(ARTIFACTS / "vm-backups-row.png"))
    print(f"\nVM backups page screenshot: {screenshot}")

    # Outside the UI session the page is not served.
    assert requests.get(f"{airflow_env.url}/gce-vm-backup/backups", timeout=30).status_code == 401


def test_the_restore_form_creates_a_dry_run_of_the_chosen_vm_in_new_vm_mode(
    page: Any, airflow_env: LocalAirflow, e2e_emulator: Emulator, form_2_backed_up: dict[str, Any]
) -> None:
    airflow_env.wait_for_dag(RESTORE_DAG_ID)
    runs_before = {run["dag_run_id"] for run in airflow_env.dag_runs(RESTORE_DAG_ID)}
    instances_before = _instances(e2e_emulator)
    page.goto(f"{airflow_env.url}/dags/{RESTORE_DAG_ID}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.locator("[role=dialog][data-state=open]")
    dialog.get_by_text("Run Parameters").wait_for()

    vm = dialog.locator("#element_vm")
    vm.get_by_role("combobox").click()
    assert page.get_by_role("option").all_inner_texts() == GROUP_VMS
    page.get_by_role("option", name=f"{ZONE}/form-2").click()
    mode = dialog.locator("#element_mode")
    mode.get_by_role("combobox").click()
    assert page.get_by_role("option").all_inner_texts() == ["new-vm", "replace-disks"]
    page.get_by_role("option", name="new-vm").click()
    dry_run_field = dialog.get_by_role("group").filter(has_text="Dry run")
    dry_run = dry_run_field.get_by_role("checkbox")
    assert not dry_run.is_checked()
    dry_run_field.locator("[data-part=control]").click()  # the switch a user clicks (the input is hidden)
    assert dry_run.is_checked()
    page.screenshot(path=str(ARTIFACTS / "restore-form.png"))

    dialog.get_by_role("button", name="Trigger").click()
    run_id = _new_run_id(airflow_env, runs_before, dag_id=RESTORE_DAG_ID)
    result = wait_for(airflow_env, RESTORE_DAG_ID, run_id)

    assert result.run["triggered_by"] == "ui"
    conf = result.run["conf"]
    assert {key: conf.get(key) for key in ("vm", "mode", "dry_run", "snapshot_set")} == {
        "vm": f"{ZONE}/form-2",
        "mode": "new-vm",
        "dry_run": True,
        "snapshot_set": "newest",
    }
    assert result.run["state"] == "success", result.states()
    # A dry run creates nothing.
    assert _instances(e2e_emulator) == instances_before


def _instances(emulator: Emulator) -> list[str]:
    with emulator._state() as world:
        return sorted(world.instances)
