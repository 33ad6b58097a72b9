"""The restore form's values as the plan task receives them: a run without a VM is refused in one line
before any API call; the optional fields left empty (null) mean their documented defaults."""

from __future__ import annotations

from unittest.mock import create_autospec

import pytest

from gce_vm_backup.errors import ConfigError
from gce_vm_backup.restore.plan import NEWEST, RestorePlanOperator

from .hook_spec import RestoreHookSpec

TARGETS = [{"project_id": "demo-project", "zone": "us-central1-a", "instance": "web-1", "disks": None}]


def operator(**form):
    hook = create_autospec(RestoreHookSpec, instance=True)
    op = RestorePlanOperator(task_id="plan", targets=TARGETS, deployment="test", group="web", **form)
    op._hook = hook
    return op, hook


@pytest.mark.parametrize("vm", [None, ""])
@pytest.mark.parametrize("conf", [{}, {"vm": None}])
def test_a_run_without_a_vm_fails_before_any_api_call_with_one_line(vm, conf):
    op, hook = operator(vm=vm, conf=conf)
    with pytest.raises(ConfigError) as raised:
        op.execute({"ti": None, "run_id": "manual__1"})
    assert (
        str(raised.value) == "Restore form: vm: choose the VM to restore (zone/instance). Nothing was done."
    )
    assert hook.method_calls == []


def test_empty_optional_fields_mean_the_newest_set_the_originals_and_no_dry_run():
    op, _ = operator(
        vm="us-central1-a/web-1",
        snapshot_set=None,
        dry_run=None,
        conf={"vm": "us-central1-a/web-1", "snapshot_set": None, "dry_run": None, "network": None},
    )
    form = op._form()
    assert (form["snapshot_set"], form["dry_run"], form["network"]) == (NEWEST, False, None)


def test_a_null_dry_run_in_the_conf_does_not_hide_a_real_difference():
    op, _ = operator(
        vm="us-central1-a/web-1", dry_run=True, conf={"vm": "us-central1-a/web-1", "dry_run": None}
    )
    with pytest.raises(ConfigError, match="dry_run: the conf says None but the run would use True"):
        op._form()
