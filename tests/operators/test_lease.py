"""The VM lease (lease.py) and the emulator's instances.setLabels, through the real client.

The lease is a label written with the VM's labelFingerprint: a compare-and-set that Compute Engine
enforces (a stale fingerprint is refused with HTTP 412). These pin the promises: other labels survive
exactly, a write that lost a race reads again instead of overwriting, a lease of another holder is waited
for and then refused with its holder named, an expired one is taken over, a release removes only this
holder's lease, and a setLabels operation DONE with an error is a failure.
"""

from __future__ import annotations

import time

import pytest

from gce_vm_backup.errors import BackupError, LeaseHeldError, OperationFailedError
from gce_vm_backup.runtime.lease import HOLDER_KEY, LEASE_KEY, Holder, acquire, lease_of, release

from .conftest import PROJECT, ZONE_A

pytestmark = pytest.mark.emulator

VM = {"project_id": PROJECT, "zone": ZONE_A, "name": "web-1"}
BACKUP = Holder.of_run("backup", deployment="prod", dag_id="gce_vm_backup__web", run_id="scheduled__1")
OTHER_BACKUP = Holder.of_run("backup", deployment="prod", dag_id="gce_vm_backup__db", run_id="scheduled__1")
RESTORE = Holder.of_run("restore", deployment="prod", dag_id="gce_vm_backup_restore__web", run_id="manual__1")


@pytest.fixture
def hook(emulator):
    from gce_vm_backup.compute.hook import ComputeBackupHook

    return ComputeBackupHook()


def labels_of(emulator) -> dict[str, str]:
    return dict(emulator.instance(PROJECT, ZONE_A, "web-1")["labels"])


def set_labels_by_hand(emulator, labels: dict[str, str]) -> None:
    """Someone else writes the VM's labels (as any setLabels would: a new fingerprint)."""
    from gce_emulator.restore import fingerprint

    with emulator.world.lock:
        instance = emulator.world.instances[f"projects/{PROJECT}/zones/{ZONE_A}/instances/web-1"]
        instance["labels"], instance["labelFingerprint"] = dict(labels), fingerprint(labels)


# ---- the emulator: instances.setLabels with its fingerprint -------------------------------------------
def test_the_emulator_refuses_a_stale_or_missing_fingerprint_with_412_and_changes_the_fingerprint(hook):
    from google.api_core import exceptions
    from google.cloud import compute_v1

    client = hook.instances
    first = client.get(project=PROJECT, zone=ZONE_A, instance="web-1")
    assert first.label_fingerprint

    def write(labels, fingerprint):
        request = compute_v1.InstancesSetLabelsRequest(labels=labels, label_fingerprint=fingerprint)
        return client.set_labels_unary(
            project=PROJECT, zone=ZONE_A, instance="web-1", instances_set_labels_request_resource=request
        )

    with pytest.raises(exceptions.PreconditionFailed, match="Labels fingerprint"):
        write({"a": "b"}, "")  # missing
    write({**first.labels, "a": "b"}, first.label_fingerprint)
    second = client.get(project=PROJECT, zone=ZONE_A, instance="web-1")
    assert second.label_fingerprint != first.label_fingerprint
    assert second.labels["a"] == "b"
    with pytest.raises(exceptions.PreconditionFailed, match="Labels fingerprint"):
        write({"a": "c"}, first.label_fingerprint)  # stale
    assert client.get(project=PROJECT, zone=ZONE_A, instance="web-1").labels["a"] == "b"


# ---- acquire and release --------------------------------------------------------------------------------
def test_other_labels_survive_a_lease_taken_and_given_back_exactly(emulator, hook):
    before = labels_of(emulator)
    assert before  # the demo VM has labels of its own
    taken = acquire(hook, VM, BACKUP, duration=600, wait=0)
    during = labels_of(emulator)
    assert {k: v for k, v in during.items() if k not in (LEASE_KEY, HOLDER_KEY)} == before
    lease = lease_of(during)
    assert lease is not None
    assert lease.held_by(BACKUP)
    assert lease.kind == "backup"
    assert during[HOLDER_KEY] == "gce_vm_backup__web"
    assert lease.expires is not None
    assert time.time() + 590 < lease.expires <= time.time() + 602
    assert taken.was_ours is False
    assert taken.instance.status == "RUNNING"
    assert release(hook, VM, BACKUP) is True
    assert labels_of(emulator) == before
    assert [c.status for c in emulator.calls_for("compute.instances.setLabels")] == [200, 200]


def test_a_label_changed_between_read_and_write_is_read_again_not_overwritten(emulator, hook):
    # Between the lease's read and its write, someone adds a label: the write's fingerprint is stale.
    emulator.faults.on_call(
        "compute.instances.setLabels",
        lambda: set_labels_by_hand(emulator, {**labels_of(emulator), "team": "x"}),
    )
    acquire(hook, VM, BACKUP, duration=600, wait=0)
    labels = labels_of(emulator)
    assert labels["team"] == "x"  # the other write survives
    assert lease_of(labels).held_by(BACKUP)
    assert [c.status for c in emulator.calls_for("compute.instances.setLabels")] == [412, 200]


def test_a_second_writer_that_read_the_same_fingerprint_loses_and_then_sees_the_lease(emulator, hook):
    # The other backup's write lands between this one's read and write: this one's is refused (412),
    # it reads again, finds the lease held, and gives up after its wait, naming the holder.
    emulator.faults.on_call(
        "compute.instances.setLabels", lambda: _take_directly(emulator, OTHER_BACKUP), times=1
    )
    with pytest.raises(LeaseHeldError, match="held by the backup gce_vm_backup__db"):
        acquire(hook, VM, BACKUP, duration=600, wait=0)
    assert lease_of(labels_of(emulator)).held_by(OTHER_BACKUP)


def _take_directly(emulator, holder: Holder) -> None:
    set_labels_by_hand(
        emulator,
        {**labels_of(emulator), LEASE_KEY: holder.value(int(time.time()) + 600), HOLDER_KEY: holder.name},
    )


def test_a_lease_of_another_holder_is_waited_for_then_refused_naming_it_and_nothing_changes(emulator, hook):
    acquire(hook, VM, RESTORE, duration=600, wait=0)
    before = labels_of(emulator)
    started = time.monotonic()
    with pytest.raises(LeaseHeldError) as raised:
        acquire(hook, VM, BACKUP, duration=600, wait=0.3, poll=0.05)
    assert time.monotonic() - started >= 0.3
    message = str(raised.value)
    assert "held by the restore gce_vm_backup_restore__web (lease until 20" in message
    assert "\n" not in message
    assert labels_of(emulator) == before
    assert len(emulator.calls_for("compute.instances.get")) > 2  # it looked again while it waited


def test_a_lease_given_back_while_waiting_is_taken(emulator, hook):
    acquire(hook, VM, RESTORE, duration=600, wait=0)
    emulator.faults.on_call("compute.instances.get", lambda: _drop_lease(emulator), after=2)
    taken = acquire(hook, VM, BACKUP, duration=600, wait=30, poll=0.05)
    assert taken.was_ours is False
    assert lease_of(labels_of(emulator)).held_by(BACKUP)


def _drop_lease(emulator) -> None:
    set_labels_by_hand(
        emulator, {k: v for k, v in labels_of(emulator).items() if k not in (LEASE_KEY, HOLDER_KEY)}
    )


def test_an_expired_lease_of_a_killed_run_is_taken_over(emulator, hook):
    killed = Holder.of_run("backup", deployment="prod", dag_id="gce_vm_backup__db", run_id="scheduled__0")
    set_labels_by_hand(
        emulator,
        {**labels_of(emulator), LEASE_KEY: killed.value(int(time.time()) - 1), HOLDER_KEY: killed.name},
    )
    taken = acquire(hook, VM, BACKUP, duration=600, wait=0)
    assert taken.was_ours is False
    labels = labels_of(emulator)
    assert lease_of(labels).held_by(BACKUP)
    assert labels[HOLDER_KEY] == BACKUP.name


def test_the_same_run_extends_its_own_lease_and_knows_it_held_it(emulator, hook):
    first = acquire(hook, VM, BACKUP, duration=60, wait=0)
    again = acquire(hook, VM, BACKUP, duration=600, wait=0)
    assert (first.was_ours, again.was_ours) == (False, True)
    assert again.expires > first.expires


@pytest.mark.parametrize("value", ["backup-oops", "Restore-1-x", "backup-99999999999-0123456789abcdef0"])
def test_a_lease_value_this_package_did_not_write_is_taken_for_held(emulator, hook, value):
    set_labels_by_hand(emulator, {**labels_of(emulator), LEASE_KEY: value.lower()})
    with pytest.raises(LeaseHeldError, match="unreadable lease label"):
        acquire(hook, VM, BACKUP, duration=600, wait=0)


def test_release_removes_only_this_holders_lease(emulator, hook):
    acquire(hook, VM, RESTORE, duration=600, wait=0)
    held = labels_of(emulator)
    assert release(hook, VM, BACKUP) is False
    assert labels_of(emulator) == held
    assert release(hook, VM, RESTORE) is True
    assert release(hook, VM, RESTORE) is False  # given back already: nothing written
    assert len(emulator.calls_for("compute.instances.setLabels")) == 2


def test_a_set_labels_operation_done_with_an_error_is_a_failure_and_changes_nothing(emulator, hook):
    before = labels_of(emulator)
    emulator.faults.fail_operation("compute.instances.setLabels", "INTERNAL_ERROR", "backend failed")
    with pytest.raises(OperationFailedError, match="INTERNAL_ERROR"):
        acquire(hook, VM, BACKUP, duration=600, wait=0)
    emulator.clock.advance(5)
    assert labels_of(emulator) == before


def test_labels_that_keep_changing_end_in_a_bounded_failure(emulator, hook):
    counter = iter(range(100))
    emulator.faults.on_call(
        "compute.instances.setLabels",
        lambda: set_labels_by_hand(emulator, {**labels_of(emulator), "n": str(next(counter))}),
        times=100,
    )
    with pytest.raises(BackupError, match="labels changed 8 times"):
        acquire(hook, VM, BACKUP, duration=600, wait=0)
    assert LEASE_KEY not in labels_of(emulator)


def test_a_failed_wait_on_the_label_write_falls_back_to_reading_the_vm(emulator):
    from gce_vm_backup.compute.hook import ComputeBackupHook

    hook = ComputeBackupHook(retry_initial=0.01, retry_max=0.02)
    emulator.faults.http_error("compute.zoneOperations.wait", 503, times=1000)
    acquire(hook, VM, BACKUP, duration=600, wait=0)
    assert lease_of(labels_of(emulator)).held_by(BACKUP)
    assert release(hook, VM, BACKUP) is True
    assert lease_of(labels_of(emulator)) is None
