"""snapshots.setLabels in the emulator, through the real google-cloud-compute client over loopback: the
labelFingerprint is checked (a stale or missing one is HTTP 412 conditionNotMet), the labels are replaced."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as api_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED

pytestmark = pytest.mark.emulator

P, ZA = "demo-project", "us-central1-a"


@pytest.fixture
def snapshots():
    with Emulator(DEMO_SEED) as emulator:
        emulator.seed_snapshot(
            P, {"name": "s", "sourceDisk": f"projects/{P}/zones/{ZA}/disks/web-1", "labels": {"a": "1"}}
        )
        client = compute_v1.SnapshotsClient(
            credentials=AnonymousCredentials(), client_options={"api_endpoint": emulator.url}
        )
        yield emulator, client


def set_labels(client, labels, fingerprint):
    request = compute_v1.GlobalSetLabelsRequest(labels=labels, label_fingerprint=fingerprint)
    return client.set_labels_unary(
        request={"project": P, "resource": "s", "global_set_labels_request_resource": request}
    )


def test_set_labels_with_the_current_fingerprint_replaces_the_labels_and_changes_the_fingerprint(snapshots):
    emulator, client = snapshots
    old = client.get(project=P, snapshot="s")
    assert old.label_fingerprint

    operation = set_labels(client, {"a": "1", "hold": "x"}, old.label_fingerprint)

    assert operation.operation_type == "setLabels"
    assert operation.target_link.endswith(f"projects/{P}/global/snapshots/s")
    assert "/global/operations/" in operation.self_link
    new = client.get(project=P, snapshot="s")
    assert dict(new.labels) == {"a": "1", "hold": "x"}
    assert new.label_fingerprint != old.label_fingerprint
    assert emulator.calls[-2].method == "compute.snapshots.setLabels"


@pytest.mark.parametrize("fingerprint", ["stale", ""], ids=["stale", "missing"])
def test_a_stale_or_missing_fingerprint_is_412_condition_not_met_and_changes_nothing(snapshots, fingerprint):
    _emulator, client = snapshots
    first = client.get(project=P, snapshot="s")
    if fingerprint == "stale":
        set_labels(client, {"b": "2"}, first.label_fingerprint)  # someone else wrote since the read
        fingerprint = first.label_fingerprint
    before = client.get(project=P, snapshot="s")

    with pytest.raises(api_exceptions.PreconditionFailed, match="fingerprint"):
        set_labels(client, {"mine": "1"}, fingerprint)

    after = client.get(project=P, snapshot="s")
    assert dict(after.labels) == dict(before.labels)
    assert after.label_fingerprint == before.label_fingerprint


def test_set_labels_of_a_missing_snapshot_is_404(snapshots):
    _, client = snapshots
    request = compute_v1.GlobalSetLabelsRequest(labels={}, label_fingerprint="x")
    with pytest.raises(api_exceptions.NotFound):
        client.set_labels_unary(
            request={"project": P, "resource": "nope", "global_set_labels_request_resource": request}
        )


def test_invalid_labels_are_refused(snapshots):
    _, client = snapshots
    fingerprint = client.get(project=P, snapshot="s").label_fingerprint
    with pytest.raises(api_exceptions.BadRequest):
        set_labels(client, {"Bad Key": "x"}, fingerprint)
