"""The trigger form in a real browser (Debian's headless Chromium driven by Playwright).

The form is built by Airflow's UI from our Params, so it is part of what we ship: the group's VMs as a
multi-select, the dry-run toggle, and a submitted subset backs up only that subset.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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


def _new_run_id(env: LocalAirflow, before: set[str], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [run["dag_run_id"] for run in env.dag_runs(DAG_ID) if run["dag_run_id"] not in before]
        if new:
            assert len(new) == 1, new
            return str(new[0])
        time.sleep(0.5)
    raise AssertionError(f"submitting the form created no run of {DAG_ID} in {timeout:.0f} s")
