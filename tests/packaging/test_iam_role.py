"""`vm-backup iam-role`: the gcloud commands granting an existing service account exactly the permissions
terraform's backup role holds."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gce_vm_backup.compute.permissions import REQUIRED_PERMISSIONS
from vm_backup_cli.__main__ import main

REPO = Path(__file__).resolve().parents[2]


def terraform_backup_permissions() -> set[str]:
    iam = (REPO / "terraform" / "iam.tf").read_text()
    block = iam[iam.index("backup_permissions = [") : iam.index("]", iam.index("backup_permissions = ["))]
    return set(re.findall(r'"(compute\.[A-Za-z.]+)"', block))


def test_it_prints_the_role_with_terraforms_permissions_and_the_binding(capsys):
    code = main(["iam-role", "--project", "p-1", "--service-account", "env@p-0.iam.gserviceaccount.com"])

    assert code == 0
    create, bind = (shlex.split(line) for line in capsys.readouterr().out.splitlines())
    assert create[:5] == ["gcloud", "iam", "roles", "create", "gceVmBackupOperator"]
    assert "--project=p-1" in create
    (permissions,) = [a.removeprefix("--permissions=") for a in create if a.startswith("--permissions=")]
    assert set(permissions.split(",")) == set(REQUIRED_PERMISSIONS) == terraform_backup_permissions()
    assert bind == [
        "gcloud",
        "projects",
        "add-iam-policy-binding",
        "p-1",
        "--member=serviceAccount:env@p-0.iam.gserviceaccount.com",
        "--role=projects/p-1/roles/gceVmBackupOperator",
    ]


def test_a_hostile_argument_stays_one_shell_word(capsys):
    main(["iam-role", "--project", "p; rm -rf ~", "--service-account", "a@b", "--role-id", "myRole"])
    create, bind = (shlex.split(line) for line in capsys.readouterr().out.splitlines())
    assert "--project=p; rm -rf ~" in create
    assert bind[3] == "p; rm -rf ~"


def test_a_bad_role_id_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["iam-role", "--project", "p", "--service-account", "a@b", "--role-id", "no spaces"])
    assert exit_info.value.code == 2
    assert "is not a role id" in capsys.readouterr().err
