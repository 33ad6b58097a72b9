"""labels.py: the reserved labels, the documented filter form, and the scope check of a snapshot."""

from __future__ import annotations

import pytest

from gce_vm_backup.config.labels import (
    DEPLOYMENT_KEY,
    DISK_ID_KEY,
    GROUP_KEY,
    MANAGED_BY_KEY,
    RESERVED_KEYS,
    disk_key,
    is_managed_snapshot_of,
    label_filter,
    managed_disk_filter,
    managed_snapshot_labels,
    scope_mismatch,
)
from gce_vm_backup.errors import ConfigError

DISK = "projects/p/zones/us-central1-a/disks/web-1"
URL = f"https://compute.googleapis.com/compute/v1/{DISK}"
OTHER = "projects/p/zones/us-central1-a/disks/web-1-data"
SCOPE = {"deployment": "prod", "group": "nightly"}


def ours(**overrides):
    return {**managed_snapshot_labels(instance="web-1", disk_source=DISK, **SCOPE), **overrides}


def test_one_label_is_a_single_unparenthesized_expression():
    assert label_filter({"env": "prod"}) == 'labels.env = "prod"'


def test_several_labels_are_each_within_parentheses_sorted_by_key():
    assert label_filter({"tier": "web", "app": "shop"}) == '(labels.app = "shop") (labels.tier = "web")'


def test_no_label_is_no_filter():
    assert label_filter({}) == ""


@pytest.mark.parametrize(
    "value",
    ['x" OR labels.env != "x', "Prod", "with space", "a)", "x" * 64, 'q"', "back\\slash", 7],
)
def test_a_value_that_is_not_a_label_value_is_refused_naming_it(value):
    with pytest.raises(ConfigError, match=r"label env=.*not a Compute Engine label value"):
        label_filter({"env": value})


@pytest.mark.parametrize("key", ["Env", "1st", "a b", 'k"', ""])
def test_a_key_that_is_not_a_label_key_is_refused(key):
    with pytest.raises(ConfigError, match="not a Compute Engine label key"):
        label_filter({key: "x"})


def test_the_retention_filter_names_managed_by_deployment_group_and_disk_key():
    assert managed_disk_filter(URL, **SCOPE) == (
        f'(labels.{DEPLOYMENT_KEY} = "prod") (labels.{DISK_ID_KEY} = "{disk_key(DISK)}") '
        f'(labels.{GROUP_KEY} = "nightly") (labels.{MANAGED_BY_KEY} = "gce-vm-backup")'
    )


def test_snapshots_carry_the_deployment_label_and_it_is_reserved():
    labels = managed_snapshot_labels(instance="web-1", disk_source=DISK, extra={DEPLOYMENT_KEY: "x"}, **SCOPE)
    assert labels[DEPLOYMENT_KEY] == "prod"
    assert DEPLOYMENT_KEY in RESERVED_KEYS


@pytest.mark.parametrize("deployment", ["", "Prod", "-prod", "prod-", "a" * 41, None])
def test_a_bad_deployment_is_refused_naming_the_parameter(deployment):
    with pytest.raises(ConfigError, match="parameter 'deployment'"):
        managed_snapshot_labels(deployment=deployment, group="g", instance="i", disk_source=DISK)


def test_our_snapshot_of_the_disk_matches_whether_source_disk_is_a_url_or_a_path():
    assert is_managed_snapshot_of(ours(), URL, DISK, **SCOPE)
    assert is_managed_snapshot_of(ours(), DISK, URL, **SCOPE)


@pytest.mark.parametrize(
    ("labels", "source", "why"),
    [
        (ours(**{GROUP_KEY: "monthly"}), URL, "gce-vm-backup-group='monthly'"),
        (ours(**{DEPLOYMENT_KEY: "staging"}), URL, "gce-vm-backup-deployment='staging'"),
        ({k: v for k, v in ours().items() if k != DEPLOYMENT_KEY}, URL, "gce-vm-backup-deployment=None"),
        (ours(), f"https://compute.googleapis.com/compute/v1/{OTHER}", f"made from disk {OTHER}"),
        (ours(), "", "made from disk (none)"),
    ],
    ids=["other-group", "other-deployment", "made-before-deployments", "forged-labels", "no-source"],
)
def test_another_scope_or_another_source_disk_is_not_ours(labels, source, why):
    assert why in scope_mismatch(labels, source, DISK, **SCOPE)
    assert not is_managed_snapshot_of(labels, source, DISK, **SCOPE)
