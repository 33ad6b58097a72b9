"""Static tests of terraform/: parsed with python-hcl2, no provider download needed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions

from gce_vm_backup.compute.permissions import (
    DRILL_READ_PERMISSIONS,
    DRILL_REQUIRED_PERMISSIONS,
    REQUIRED_PERMISSIONS,
    RESTORE_API_METHOD_PERMISSIONS,
    RESTORE_REBUILD_PERMISSIONS,
    RESTORE_REQUIRED_PERMISSIONS,
)

TERRAFORM_DIR = Path(__file__).resolve().parents[2] / "terraform"
PRIMITIVE_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}


def _load(name: str) -> dict[str, Any]:
    options = SerializationOptions(strip_string_quotes=True, with_comments=False)
    with (TERRAFORM_DIR / name).open() as handle:
        return hcl2.load(handle, serialization_options=options)


def _all_tf() -> dict[str, dict[str, Any]]:
    return {path.name: _load(path.name) for path in sorted(TERRAFORM_DIR.glob("*.tf"))}


def _resources(kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for parsed in _all_tf().values():
        for block in parsed.get("resource", []):
            found.update(block.get(kind, {}))
    return found


def _variables() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for block in _load("variables.tf")["variable"]:
        found.update(block)
    return found


def test_the_file_split_of_terraform_google_modules_is_kept():
    names = {path.name for path in TERRAFORM_DIR.iterdir()}
    assert {"versions.tf", "main.tf", "variables.tf", "outputs.tf", "iam.tf", "README.md"} <= names
    assert "terraform.tfvars.example" in names


def test_custom_role_holds_exactly_the_permissions_the_code_uses():
    locals_block = _load("iam.tf")["locals"][0]
    role_permissions = locals_block["backup_permissions"]
    assert len(role_permissions) == len(set(role_permissions)), "duplicate permission in the role"
    assert set(role_permissions) == set(REQUIRED_PERMISSIONS)
    role = _resources("google_project_iam_custom_role")["backup"]
    assert role["permissions"] == "${local.backup_permissions}"


def test_image_version_defaults_to_composer_3_on_airflow_3_and_rejects_others():
    variable = _variables()["image_version"]
    assert variable["default"].startswith("composer-3-airflow-3")
    condition = variable["validation"][0]["condition"]
    pattern = re.search(r'regex\("(.+?)", var\.image_version\)', condition)
    assert pattern, condition
    regex = pattern.group(1).replace("\\\\", "\\")
    assert re.fullmatch(regex, "composer-3-airflow-3.3.1")
    assert re.fullmatch(regex, "composer-3-airflow-3.3.1-build.10")
    assert re.fullmatch(regex, "composer-3-airflow-3.1.7-build.0")
    assert not re.fullmatch(regex, "composer-3-airflow-2.10.5")
    assert not re.fullmatch(regex, "composer-2.9.7-airflow-2.9.3")


def test_the_environment_runs_as_the_dedicated_service_account_on_the_configured_image():
    environment = _resources("google_composer_environment")["this"]
    config = environment["config"][0]
    assert config["node_config"][0]["service_account"] == "${google_service_account.composer.email}"
    assert config["software_config"][0]["image_version"] == "${var.image_version}"
    assert config["software_config"][0]["env_variables"] == "${local.backup_env}"


def test_the_environment_runs_a_triggerer_because_the_default_wait_mode_defers():
    from gce_vm_backup.config.models import Group

    triggerer = _resources("google_composer_environment")["this"]["config"][0]["workloads_config"][0]
    assert triggerer["triggerer"][0]["count"] == "${var.triggerer_count}"
    assert _variables()["triggerer_count"]["default"] >= 1
    assert Group.model_fields["wait_mode"].default == "defer"


def test_no_service_account_keys_and_no_primitive_roles():
    text = "\n".join(path.read_text() for path in TERRAFORM_DIR.glob("*.tf"))
    assert "google_service_account_key" not in text
    for role in PRIMITIVE_ROLES:
        assert f'"{role}"' not in text


@pytest.mark.parametrize(
    "kind", ["google_project_iam_binding", "google_project_iam_policy", "google_service_account_iam_binding"]
)
def test_iam_is_additive_only(kind):
    assert _resources(kind) == {}


def test_composer_worker_is_granted_to_the_environment_service_account():
    grant = _resources("google_project_iam_member")["composer_worker"]
    assert grant["role"] == "roles/composer.worker"
    assert grant["member"] == "serviceAccount:${google_service_account.composer.email}"


def test_backup_role_is_granted_in_every_target_project():
    grant = _resources("google_project_iam_member")["backup"]
    assert grant["for_each"] == "${local.target_projects}"
    assert grant["role"] == "${google_project_iam_custom_role.backup[each.value].id}"


def test_every_variable_is_typed_and_described():
    for name, variable in _variables().items():
        assert variable.get("type"), f"variable {name} has no type"
        assert variable.get("description"), f"variable {name} has no description"


@pytest.mark.parametrize(
    "name",
    [
        "project_id",
        "region",
        "environment_name",
        "image_version",
        "environment_size",
        "triggerer_count",
        "restore_role_id",
        "restore_service_account_id",
        "restore_rebuild_role_id",
        "drill_scratch_project",
        "drill_service_account_id",
        "drill_role_id",
        "drill_read_role_id",
    ],
)
def test_name_and_enum_variables_are_validated(name):
    assert _variables()[name].get("validation"), f"variable {name} has no validation block"


def test_outputs_needed_for_deploy_exist():
    outputs: dict[str, Any] = {}
    for block in _load("outputs.tf")["output"]:
        outputs.update(block)
    assert set(outputs) == {
        "bucket_name",
        "dags_prefix",
        "airflow_uri",
        "service_account_email",
        "restore_service_account_email",
        "drill_service_account_email",
    }
    assert "dag_gcs_prefix" in outputs["dags_prefix"]["value"]
    assert "airflow_uri" in outputs["airflow_uri"]["value"]


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("", True),
        ("https://compute.googleapis.com", True),
        ("https://compute-xyz.p.googleapis.com/", True),
        ("https://europe-west1-compute.googleapis.com:443", True),
        ("https://evil.com", False),
        ("https://googleapis.com.evil.com", False),
        ("https://compute.googleapis.com@evil.com", False),
        ("https://compute.googleapis.com\\@evil.com", False),
        ("https://compute.googleapis.com/path", False),
        ("http://compute.googleapis.com", False),
    ],
)
def test_compute_endpoint_variable_accepts_only_what_the_package_accepts_from_the_env(value, accepted):
    from gce_vm_backup.compute.endpoint import ENV_VAR, ComputeEndpoint
    from gce_vm_backup.errors import ConfigError

    condition = _variables()["compute_endpoint"]["validation"][0]["condition"]
    pattern = re.search(r'regex\("(.+?)", var\.compute_endpoint\)', condition)
    assert pattern, condition
    regex = pattern.group(1).replace("\\\\", "\\")
    assert (value == "" or re.fullmatch(regex, value) is not None) is accepted
    try:
        ComputeEndpoint.resolve({}, environ={ENV_VAR: value})
    except ConfigError:
        assert not accepted
    else:
        assert accepted


# ---- restores and drills: roles and accounts of their own, off by default ---------------------------
def _locals(name: str) -> Any:
    for block in _load("iam.tf")["locals"]:
        if name in block:
            return block[name]
    raise AssertionError(f"no local {name} in iam.tf")


def test_restore_role_holds_exactly_the_permissions_the_restore_hook_uses():
    permissions = _locals("restore_permissions")
    assert len(permissions) == len(set(permissions)), "duplicate permission in the restore role"
    assert set(permissions) == set(RESTORE_REQUIRED_PERMISSIONS)
    every_role = RESTORE_REQUIRED_PERMISSIONS | DRILL_REQUIRED_PERMISSIONS | DRILL_READ_PERMISSIONS
    assert frozenset().union(*RESTORE_API_METHOD_PERMISSIONS.values()) == every_role
    role = _resources("google_project_iam_custom_role")["restore"]
    assert role["permissions"] == "${local.restore_permissions}"
    assert role["role_id"] == "${var.restore_role_id}"
    assert _variables()["restore_role_id"]["default"] == "gceVmBackupRestore"


def test_restore_is_off_by_default_and_every_restore_resource_hangs_on_enable_restore():
    variable = _variables()["enable_restore"]
    assert variable["type"] in ("bool", "${bool}")
    assert variable["default"] is False
    assert _locals("restore_projects") == "${var.enable_restore ? local.target_projects : toset([])}"
    assert _locals("drill_enabled") == '${var.enable_restore && var.drill_scratch_project != ""}'
    assert _locals("drill_projects") == "${local.drill_enabled ? local.target_projects : toset([])}"
    assert _resources("google_service_account")["restore"]["count"] == "${var.enable_restore ? 1 : 0}"
    for kind in ("google_project_iam_custom_role", "google_project_iam_member"):
        assert _resources(kind)["restore"]["for_each"] == "${local.restore_projects}", kind
    impersonation = _resources("google_service_account_iam_member")["composer_impersonates_restore"]
    assert impersonation["count"] == "${var.enable_restore ? 1 : 0}"


def test_the_restore_role_goes_to_the_restore_account_and_the_environment_may_only_impersonate_it():
    grant = _resources("google_project_iam_member")["restore"]
    assert grant["member"] == "serviceAccount:${google_service_account.restore[0].email}"
    assert grant["role"] == "${google_project_iam_custom_role.restore[each.value].id}"
    impersonation = _resources("google_service_account_iam_member")["composer_impersonates_restore"]
    assert impersonation["service_account_id"] == "${google_service_account.restore[0].name}"
    assert impersonation["role"] == "roles/iam.serviceAccountTokenCreator"
    assert impersonation["member"] == "serviceAccount:${google_service_account.composer.email}"
    for name, member in _resources("google_project_iam_member").items():  # never project-wide
        assert "serviceAccountTokenCreator" not in member["role"], name


def test_the_backup_role_can_never_create_or_delete_a_vm_or_a_disk():
    forbidden = {
        "compute.instances.create",
        "compute.instances.delete",
        "compute.disks.create",
        "compute.disks.delete",
        "compute.instances.attachDisk",
        "compute.instances.detachDisk",
    }
    assert not forbidden & set(_locals("backup_permissions"))
    assert not forbidden & set(REQUIRED_PERMISSIONS)
    assert forbidden <= set(_locals("restore_permissions")) | set(_locals("drill_permissions"))


def test_the_backup_role_may_label_a_vm_for_its_lease():
    assert "compute.instances.setLabels" in _locals("backup_permissions")
    assert "compute.instances.setLabels" in REQUIRED_PERMISSIONS


def test_the_restore_role_deletes_nothing_and_sets_no_metadata():
    never = {
        "compute.instances.setMetadata",
        "compute.instances.delete",
        "compute.disks.delete",
        "compute.snapshots.delete",
        "compute.instances.setServiceAccount",
        "compute.subnetworks.useExternalIp",
        "iam.serviceAccounts.actAs",
    }
    assert not never & set(_locals("restore_permissions"))
    assert not never & RESTORE_REQUIRED_PERMISSIONS
    # what a hold needs: the snapshot's fingerprint, and its labels written
    assert {"compute.snapshots.get", "compute.snapshots.setLabels"} <= set(_locals("restore_permissions"))


def test_the_drill_creates_and_deletes_only_in_the_scratch_project():
    permissions = _locals("drill_permissions")
    assert len(permissions) == len(set(permissions)), "duplicate permission in the drill role"
    assert set(permissions) == set(DRILL_REQUIRED_PERMISSIONS)
    role = _resources("google_project_iam_custom_role")["drill"]
    assert role["project"] == "${var.drill_scratch_project}"
    assert role["count"] == "${local.drill_enabled ? 1 : 0}"
    assert role["permissions"] == "${local.drill_permissions}"
    grant = _resources("google_project_iam_member")["drill"]
    assert grant["project"] == "${var.drill_scratch_project}"
    assert grant["role"] == "${google_project_iam_custom_role.drill[0].id}"
    assert grant["member"] == "serviceAccount:${google_service_account.drill[0].email}"
    # a scratch project that is a target project is refused at plan time
    precondition = role["lifecycle"][0]["precondition"][0]
    assert precondition["condition"] == (
        "${!contains(tolist(local.target_projects), var.drill_scratch_project)}"
    )


def test_in_the_target_projects_the_drill_account_only_reads():
    permissions = _locals("drill_read_permissions")
    assert set(permissions) == set(DRILL_READ_PERMISSIONS)
    for permission in permissions:
        assert permission.rsplit(".", 1)[-1] in {"get", "list", "useReadOnly"}, permission
    role = _resources("google_project_iam_custom_role")["drill_read"]
    assert role["for_each"] == "${local.drill_projects}"
    assert role["permissions"] == "${local.drill_read_permissions}"
    grant = _resources("google_project_iam_member")["drill_read"]
    assert grant["member"] == "serviceAccount:${google_service_account.drill[0].email}"
    assert grant["role"] == "${google_project_iam_custom_role.drill_read[each.value].id}"


def test_only_the_drill_account_can_delete_a_vm_or_a_disk_and_only_in_the_scratch_project():
    """Every role holding a delete of a VM or a disk is bound in the scratch project, to the drill account."""
    deleting = {"compute.instances.delete", "compute.disks.delete"}
    roles_with_delete = {
        name
        for name, role in _resources("google_project_iam_custom_role").items()
        if deleting & set(_locals(role["permissions"].removeprefix("${local.").removesuffix("}")))
    }
    assert roles_with_delete == {"drill"}
    for name, grant in _resources("google_project_iam_member").items():
        if "custom_role.drill[" in grant["role"]:
            assert grant["project"] == "${var.drill_scratch_project}", name


def test_rebuild_settings_are_a_role_of_their_own_off_by_default_and_never_act_as():
    assert set(_locals("restore_rebuild_permissions")) == set(RESTORE_REBUILD_PERMISSIONS)
    assert _variables()["restore_rebuild_grants"]["default"] is False
    assert _locals("rebuild_projects") == (
        "${var.enable_restore && var.restore_rebuild_grants ? local.target_projects : toset([])}"
    )
    role = _resources("google_project_iam_custom_role")["restore_rebuild"]
    assert role["for_each"] == "${local.rebuild_projects}"
    assert role["permissions"] == "${local.restore_rebuild_permissions}"
    grant = _resources("google_project_iam_member")["restore_rebuild"]
    assert grant["member"] == "serviceAccount:${google_service_account.restore[0].email}"
    for name in ("backup", "restore", "restore_rebuild", "drill", "drill_read"):
        assert "iam.serviceAccounts.actAs" not in _locals(f"{name}_permissions"), name
    for kind in ("google_project_iam_member", "google_service_account_iam_member"):
        for name, grant in _resources(kind).items():
            assert grant["role"] != "roles/iam.serviceAccountUser", name


def test_the_environment_may_impersonate_the_drill_account_and_nothing_else_new():
    grants = _resources("google_service_account_iam_member")
    assert set(grants) == {
        "composer_service_agent",
        "composer_impersonates_restore",
        "composer_impersonates_drill",
    }
    drill = grants["composer_impersonates_drill"]
    assert drill["service_account_id"] == "${google_service_account.drill[0].name}"
    assert drill["role"] == "roles/iam.serviceAccountTokenCreator"
    assert drill["member"] == "serviceAccount:${google_service_account.composer.email}"
    assert drill["count"] == "${local.drill_enabled ? 1 : 0}"
