"""The converging steps, against an autospec of the restore hook: adopt what this run made, refuse what it
did not, delete only what is labelled as this run's, never wait without a bound."""

from __future__ import annotations

from unittest.mock import create_autospec

import pytest
from google.cloud import compute_v1

from gce_vm_backup.compute.naming import NAME_RE
from gce_vm_backup.errors import BackupError, OperationTimeoutError
from gce_vm_backup.restore.steps import (
    DRILL_KEY,
    boot_check_passed,
    build_instance,
    delete_labelled,
    ensure_disk,
    ensure_instance,
    resource_name,
    wait_for_status,
)

from .hook_spec import RestoreHookSpec

P, Z = "scratch-project", "us-central1-f"
LABELS = {"managed-by": "gce-vm-backup", "gce-vm-backup-deployment": "test", DRILL_KEY: "abc"}
WHERE = f"projects/{P}/zones/{Z}"


@pytest.fixture
def hook():
    return create_autospec(RestoreHookSpec, instance=True)


def disk(name, labels, status="READY", snapshot="projects/p/global/snapshots/s1"):
    return compute_v1.Disk(name=name, labels=labels, status=status, source_snapshot=snapshot)


def test_resource_names_are_valid_deterministic_and_differ_per_key():
    one = resource_name("drill", "a-very-long-disk-name-" * 5, "run|vm|disk-1")

    assert NAME_RE.match(one)
    assert len(one) <= 63
    assert one == resource_name("drill", "a-very-long-disk-name-" * 5, "run|vm|disk-1")
    assert one != resource_name("drill", "a-very-long-disk-name-" * 5, "run|vm|disk-2")
    assert NAME_RE.match(resource_name("", "9-starts-with-a-digit", "k"))


def test_ensure_disk_inserts_with_the_labels_and_request_id_when_absent(hook):
    hook.get_disk.return_value = None

    assert (
        ensure_disk(
            hook,
            project=P,
            zone=Z,
            name="d1",
            source_snapshot="projects/p/global/snapshots/s1",
            labels=LABELS,
            request_id="rid",
            timeout=60,
        )
        == "created"
    )
    hook.insert_disk.assert_called_once_with(
        project_id=P,
        zone=Z,
        name="d1",
        source_snapshot="projects/p/global/snapshots/s1",
        labels=LABELS,
        replica_zones=None,
        request_id="rid",
    )
    hook.wait_operation.assert_called_once_with(hook.insert_disk.return_value, timeout=60)


def test_ensure_disk_adopts_this_runs_ready_disk_without_a_second_insert(hook):
    hook.get_disk.return_value = disk("d1", {**LABELS, "extra": "x"})

    result = ensure_disk(
        hook,
        project=P,
        zone=Z,
        name="d1",
        source_snapshot="projects/p/global/snapshots/s1",
        labels=LABELS,
        request_id="rid",
        timeout=60,
    )

    assert result == "adopted"
    hook.insert_disk.assert_not_called()


@pytest.mark.parametrize(
    ("existing", "message"),
    [
        (disk("d1", {DRILL_KEY: "another-run"}), "is not this run's"),
        (disk("d1", {}), "is not this run's"),
        (disk("d1", LABELS, snapshot="projects/p/global/snapshots/other"), "was made from"),
    ],
)
def test_ensure_disk_refuses_a_disk_of_that_name_that_is_not_this_runs(hook, existing, message):
    hook.get_disk.return_value = existing

    with pytest.raises(BackupError, match=message):
        ensure_disk(
            hook,
            project=P,
            zone=Z,
            name="d1",
            source_snapshot="projects/p/global/snapshots/s1",
            labels=LABELS,
            request_id="rid",
            timeout=60,
        )
    hook.insert_disk.assert_not_called()
    hook.delete_disk.assert_not_called()


def test_ensure_instance_refuses_a_vm_of_that_name_without_the_labels(hook):
    hook.get_instance.return_value = compute_v1.Instance(name="vm", labels={"owner": "someone"})
    wanted = compute_v1.Instance(name="vm", labels=LABELS)

    with pytest.raises(BackupError, match="is not this run's"):
        ensure_instance(hook, project=P, zone=Z, instance=wanted, request_id="r", timeout=60)
    hook.insert_instance.assert_not_called()


def test_delete_labelled_deletes_only_what_carries_every_label_vm_first(hook):
    ours_vm = compute_v1.Instance(name="drill-vm", labels=LABELS)
    # the server's filter is not trusted: a listed resource is checked again before its delete
    foreign_vm = compute_v1.Instance(name="prod-vm", labels={"managed-by": "gce-vm-backup"})
    hook.list_instances.return_value = iter([(Z, ours_vm), (Z, foreign_vm)])
    hook.list_disks.return_value = iter([disk("drill-d", LABELS), disk("prod-d", {DRILL_KEY: "abc"})])
    order = []
    hook.delete_instance.side_effect = lambda **kw: order.append(kw["name"])
    hook.delete_disk.side_effect = lambda **kw: order.append(kw["name"])

    result = delete_labelled(
        hook,
        project=P,
        zone=Z,
        labels=LABELS,
        listed_by=LABELS,
        paths=[f"{WHERE}/instances/{n}" for n in ("drill-vm", "prod-vm")] + [f"{WHERE}/disks/drill-d"],
        request_id=lambda r, a: f"{a}:{r}",
        timeout=60,
    )

    assert order == ["drill-vm", "drill-d"]
    assert result["refused"] == [
        f"{WHERE}/instances/prod-vm: left alone, it does not carry this run's labels",
        f"{WHERE}/disks/prod-d: left alone, it does not carry this run's labels",
    ]
    filters = {
        call.kwargs["filter"] for call in hook.list_disks.call_args_list + hook.list_instances.call_args_list
    }
    assert filters == {
        '(labels.gce-vm-backup-deployment = "test") (labels.gce-vm-backup-drill = "abc") '
        '(labels.managed-by = "gce-vm-backup")'
    }


def test_one_failed_delete_does_not_stop_the_others(hook):
    hook.list_instances.return_value = iter([])
    hook.list_disks.return_value = iter([disk("a", LABELS), disk("b", LABELS)])
    hook.wait_operation.side_effect = [BackupError("DONE with an error"), None]

    result = delete_labelled(
        hook,
        project=P,
        zone=Z,
        labels=LABELS,
        listed_by=LABELS,
        paths=[f"{WHERE}/disks/a", f"{WHERE}/disks/b"],
        request_id=lambda r, a: "x",
        timeout=60,
    )

    assert [c.kwargs["name"] for c in hook.delete_disk.call_args_list] == ["a", "b"]
    assert result["failed"] == [f"{WHERE}/disks/a: DONE with an error"]


def test_delete_labelled_leaves_alone_what_carries_the_labels_but_is_not_in_its_paths(hook):
    nonce = {**LABELS, "gce-vm-backup-drill-nonce": "n1"}
    hook.list_instances.return_value = iter([(Z, compute_v1.Instance(name="someone-vm", labels=nonce))])
    hook.list_disks.return_value = iter(
        [disk("drill-d", nonce), disk("someone-d", nonce), disk("no-nonce", LABELS)]
    )

    result = delete_labelled(
        hook,
        project=P,
        zone=Z,
        labels=nonce,
        listed_by=LABELS,
        paths=[f"{WHERE}/disks/drill-d", f"{WHERE}/disks/no-nonce"],
        request_id=lambda r, a: "x",
        timeout=60,
    )

    assert [c.kwargs["name"] for c in hook.delete_disk.call_args_list] == ["drill-d"]
    hook.delete_instance.assert_not_called()
    assert result["deleted"] == [f"{WHERE}/disks/drill-d"]
    assert result["refused"] == [
        f"{WHERE}/instances/someone-vm: left alone, this run did not plan and record it",
        f"{WHERE}/disks/someone-d: left alone, this run did not plan and record it",
        f"{WHERE}/disks/no-nonce: left alone, it does not carry this run's labels",
    ]


def test_delete_labelled_never_deletes_a_path_outside_its_project_and_zone(hook):
    hook.list_instances.return_value = iter([])
    hook.list_disks.return_value = iter([])
    elsewhere = "projects/demo-project/zones/us-central1-a"

    result = delete_labelled(
        hook,
        project=P,
        zone=Z,
        labels=LABELS,
        listed_by=LABELS,
        paths=[f"{elsewhere}/instances/web-1", f"{elsewhere}/disks/web-1-data"],
        request_id=lambda r, a: "x",
        timeout=60,
    )

    assert result == {"deleted": [], "refused": [], "failed": []}
    assert {
        c.kwargs["project_id"] for c in hook.list_disks.call_args_list + hook.list_instances.call_args_list
    } == {P}
    hook.delete_instance.assert_not_called()
    hook.delete_disk.assert_not_called()


def test_wait_for_status_is_bounded(hook, monkeypatch):
    clock = iter(range(0, 10_000, 30))
    monkeypatch.setattr("gce_vm_backup.restore.steps.time.monotonic", lambda: next(clock))
    hook.get_instance.return_value = compute_v1.Instance(name="vm", status="STAGING")

    with pytest.raises(OperationTimeoutError, match="is STAGING, not RUNNING, after 100 seconds"):
        wait_for_status(
            hook, project=P, zone=Z, name="vm", wanted={"RUNNING"}, timeout=100, poll=5, sleep=lambda s: None
        )
    assert hook.get_instance.call_count <= 5


def test_built_instance_has_no_external_ip_and_keeps_device_names_and_boot():
    instance = build_instance(
        project=P,
        zone=Z,
        name="vm",
        machine_type="e2-small",
        disks=[
            {
                "source": "projects/p/zones/z/disks/data",
                "device_name": "data",
                "boot": False,
                "mode": "READ_ONLY",
            },
            {"source": "projects/p/zones/z/disks/boot", "device_name": "root", "boot": True},
        ],
        labels=LABELS,
        network="default",
        guest_attributes=True,
    )

    assert [(d.device_name, d.boot, d.mode, d.auto_delete) for d in instance.disks] == [
        ("root", True, "READ_WRITE", False),
        ("data", False, "READ_ONLY", False),
    ]
    assert len(instance.network_interfaces) == 1
    assert list(instance.network_interfaces[0].access_configs) == []
    assert instance.network_interfaces[0].network == f"projects/{P}/global/networks/default"
    assert instance.machine_type == f"zones/{Z}/machineTypes/e2-small"
    assert [(i.key, i.value) for i in instance.metadata.items] == [("enable-guest-attributes", "TRUE")]


def test_boot_checks(hook):
    hook.get_serial_port_output.return_value = compute_v1.SerialPortOutput(contents="a\n[ OK ] booted\n")
    assert boot_check_passed(
        hook, project=P, zone=Z, name="vm", check={"kind": "serial_port", "text": "booted"}
    )
    assert not boot_check_passed(
        hook, project=P, zone=Z, name="vm", check={"kind": "serial_port", "text": "x"}
    )
    hook.get_guest_attributes.return_value = None
    check = {"kind": "guest_attribute", "key": "drill/boot", "value": "ok"}
    assert not boot_check_passed(hook, project=P, zone=Z, name="vm", check=check)
    hook.get_guest_attributes.return_value = compute_v1.GuestAttributes(variable_value="ok")
    assert boot_check_passed(hook, project=P, zone=Z, name="vm", check=check)
    hook.get_guest_attributes.return_value = compute_v1.GuestAttributes(variable_value="starting")
    assert not boot_check_passed(hook, project=P, zone=Z, name="vm", check=check)


def test_a_rebuilt_instance_takes_every_interface_without_external_ip_and_the_manifests_settings():
    instance = build_instance(
        project=P,
        zone=Z,
        name="web-1",
        machine_type="n2-standard-2",
        disks=[{"source": "projects/p/zones/z/disks/boot", "device_name": "root", "boot": True}],
        labels={"app": "shop", **LABELS},
        network=None,
        network_interfaces=[
            {
                "network": "projects/p/global/networks/prod",
                "subnetwork": "projects/p/regions/us-central1/subnetworks/a",
            },
            {"network": "backend", "subnetwork": None},
        ],
        service_accounts=[{"email": "web@p.iam.gserviceaccount.com", "scopes": ["https://x/y"]}],
        scheduling={"automaticRestart": False, "onHostMaintenance": "TERMINATE", "preemptible": True},
        tags=["http-server"],
        metadata={"startup-script": "echo up"},
    )

    assert [(n.network, n.subnetwork, list(n.access_configs)) for n in instance.network_interfaces] == [
        ("projects/p/global/networks/prod", "projects/p/regions/us-central1/subnetworks/a", []),
        (f"projects/{P}/global/networks/backend", "", []),
    ]
    assert [(a.email, list(a.scopes)) for a in instance.service_accounts] == [
        ("web@p.iam.gserviceaccount.com", ["https://x/y"])
    ]
    scheduling = compute_v1.Scheduling.to_dict(instance.scheduling)
    assert (
        scheduling["automatic_restart"],
        scheduling["on_host_maintenance"],
        scheduling["preemptible"],
    ) == (
        False,
        "TERMINATE",
        True,
    )
    assert list(instance.tags.items) == ["http-server"]
    assert [(i.key, i.value) for i in instance.metadata.items] == [("startup-script", "echo up")]
    assert instance.labels["app"] == "shop"


def test_ensure_disk_gives_the_disk_type_when_the_plan_has_one(hook):
    hook.get_disk.return_value = None

    ensure_disk(
        hook,
        project=P,
        zone=Z,
        name="d1",
        source_snapshot="projects/p/global/snapshots/s1",
        labels=LABELS,
        request_id="rid",
        timeout=60,
        disk_type="pd-ssd",
    )

    assert hook.insert_disk.call_args.kwargs["disk_type"] == "pd-ssd"


def test_ensure_instance_adopts_by_the_runs_labels_only_when_told_which_they_are(hook):
    instance = compute_v1.Instance(name="web-1", labels={"app": "shop", **LABELS})
    hook.get_instance.return_value = compute_v1.Instance(name="web-1", labels={"app": "changed", **LABELS})
    kwargs = {"project": P, "zone": Z, "instance": instance, "request_id": "r", "timeout": 60}

    assert ensure_instance(hook, **kwargs, owner_labels=LABELS) == "adopted"
    with pytest.raises(BackupError, match="is not this run's"):
        ensure_instance(hook, **kwargs, owner_labels={**LABELS, DRILL_KEY: "another-run"})
    hook.insert_instance.assert_not_called()
