"""What the trigger forms mark and what the grid names, in a real browser (Debian's headless Chromium
driven by Playwright, as test_trigger_form.py).

The backup form's optional fields carry no required marker and may stay empty; the restore form's VM
carries one, opens empty, and the form will not submit without it; after a backup run the task instances
of each VM are named by the VM, not by their map index. Screenshots go to the test's artifacts folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from vm_backup_cli.local_env import LocalAirflow

from .conftest import ARTIFACTS, trigger_and_wait
from .test_trigger_form import CHROMIUM, CHROMIUM_ARGS, DAG_ID, GROUP_VMS, RESTORE_DAG_ID

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAMES_DAG_ID = "gce_vm_backup__e2e-names"


def _marked(field: Any) -> int:
    """How many required markers (the "*" of Chakra's Field.RequiredIndicator) the field's label has."""
    return int(field.locator("label").get_by_text("*", exact=True).count())


@pytest.fixture
def browser(airflow_env: LocalAirflow) -> Iterator[Any]:
    """A page signed in to the UI (its own sign-in form) in a fresh headless Chromium."""
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = chromium.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(90_000)  # a loaded machine: the UI can take long to answer
            page.goto(f"{airflow_env.url}/dags/{DAG_ID}")
            page.get_by_label("Username").fill(airflow_env.username)
            page.get_by_label("Password").fill(airflow_env.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"**/dags/{DAG_ID}**")
            yield page
        finally:
            chromium.close()


def _open_form(page: Any, url: str) -> Any:
    page.goto(url)
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.locator("[role=dialog][data-state=open]")
    dialog.get_by_text("Run Parameters").wait_for()
    return dialog


def _field(dialog: Any, title: str) -> Any:
    """The form row (Chakra Field.Root) whose label is ``title``."""
    label = dialog.page.locator("label", has_text=title)
    field = dialog.locator("[data-scope=field][data-part=root]").filter(has=label)
    field.wait_for()  # the params render after the dialog: count() alone would not wait for them
    return field


def test_the_backup_forms_optional_fields_are_not_marked_required_and_may_stay_empty(
    browser: Any, airflow_env: LocalAirflow
) -> None:
    dialog = _open_form(browser, f"{airflow_env.url}/dags/{DAG_ID}")
    for title in ("VMs to back up", "Dry run"):
        field = _field(dialog, title)
        assert field.count() == 1, title
        assert _marked(field) == 0, f"{title} is marked required"
    # Dry run on, off and on again: a required boolean would count "off" as empty and refuse the form.
    dry_run = _field(dialog, "Dry run")
    for _ in range(3):
        dry_run.locator("[data-part=control]").click()
    assert dry_run.get_by_role("checkbox").is_checked()
    assert dialog.locator("[data-part=error-text]").count() == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.screenshot(path=str(ARTIFACTS / "backup-form-optional-fields.png"))

    # With no VM chosen (the whole group) the form is valid: it can be submitted. (What such a run does,
    # a real backup of the whole group, is tests/dags/test_dag_runs.py's to check.)
    assert dialog.get_by_role("button", name="Trigger").is_enabled()


def test_the_restore_forms_vm_is_marked_required_opens_empty_and_is_needed_to_submit(
    browser: Any, airflow_env: LocalAirflow
) -> None:
    airflow_env.wait_for_dag(RESTORE_DAG_ID)
    runs_before = {run["dag_run_id"] for run in airflow_env.dag_runs(RESTORE_DAG_ID)}
    dialog = _open_form(browser, f"{airflow_env.url}/dags/{RESTORE_DAG_ID}")
    assert _marked(_field(dialog, "Mode")) == 1  # a choice, opened at new-vm
    vm = _field(dialog, "VM to restore")
    assert _marked(vm) == 1
    shown = vm.locator("#element_vm").inner_text()
    assert not [name for name in GROUP_VMS if name in shown], shown  # no VM chosen for the user
    assert vm.locator("[data-part=error-text]").count() == 1  # the form says it is needed
    for title in ("Snapshot set", "New VM name", "Machine type", "Network", "Dry run"):
        assert _marked(_field(dialog, title)) == 0, f"{title} is marked required"
    assert _marked(_field(dialog, "Mode")) == 1  # a choice, opened at new-vm
    trigger = dialog.get_by_role("button", name="Trigger")
    assert trigger.is_disabled()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.screenshot(path=str(ARTIFACTS / "restore-form-vm-required.png"))
    assert {run["dag_run_id"] for run in airflow_env.dag_runs(RESTORE_DAG_ID)} == runs_before

    # Through the REST API, too, a run without a VM is refused before it exists.
    response = airflow_env.trigger(RESTORE_DAG_ID, {"dry_run": True})
    assert response.status_code == 400, response.text
    assert "vm" in response.text
    assert {run["dag_run_id"] for run in airflow_env.dag_runs(RESTORE_DAG_ID)} == runs_before


def test_the_grid_names_each_vms_tasks_by_the_vm(browser: Any, airflow_env: LocalAirflow) -> None:
    run_id = "names-1"
    result = trigger_and_wait(airflow_env, NAMES_DAG_ID, {"vms": None, "dry_run": False}, run_id=run_id)
    assert result.run["state"] == "success", result.states()
    mapped = [t for t in result.task_instances if t["map_index"] >= 0]
    assert {t["rendered_map_index"] for t in mapped} == {"names-web", "names-db"}

    browser.goto(f"{airflow_env.url}/dags/{NAMES_DAG_ID}/runs/{run_id}/tasks/tier_1.precheck/mapped")
    table = browser.locator("table")
    table.get_by_text("names-web", exact=True).wait_for()
    assert table.get_by_text("names-db", exact=True).count() == 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.screenshot(path=str(ARTIFACTS / "grid-vm-names.png"), full_page=True)
    browser.goto(f"{airflow_env.url}/dags/{NAMES_DAG_ID}/runs/{run_id}")
    browser.get_by_text("tier_1").first.wait_for()
    browser.screenshot(path=str(ARTIFACTS / "grid-run.png"), full_page=True)
