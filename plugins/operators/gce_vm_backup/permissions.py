"""The IAM permissions the package needs, per API method it calls.

The keys are exactly the API methods the package's code calls: the emulator's call log over a full test
session must equal them (gce_emulator.pytest_plugin, at session end), and terraform/iam.tf grants exactly
``REQUIRED_PERMISSIONS`` (tests/deploy/test_terraform.py).
"""

from __future__ import annotations

API_METHOD_PERMISSIONS: dict[str, frozenset[str]] = {
    "compute.instances.get": frozenset({"compute.instances.get"}),
    "compute.instances.list": frozenset({"compute.instances.list"}),
    "compute.instances.aggregatedList": frozenset({"compute.instances.list"}),
    "compute.instances.stop": frozenset({"compute.instances.stop"}),
    "compute.instances.start": frozenset({"compute.instances.start"}),
    "compute.instances.resume": frozenset({"compute.instances.resume"}),
    # The VM's lease (lease.py): a label written with the VM's labelFingerprint before the backup changes
    # anything, removed at its end.
    "compute.instances.setLabels": frozenset({"compute.instances.setLabels"}),
    # snapshots.insert from a disk: create the snapshot, read the source disk, label the snapshot.
    # Zonal and regional disks alike; the operation is global either way. From an instant snapshot (instant
    # mode's conversion): the Snapshot reference's sourceInstantSnapshot needs "compute.instantSnapshots.
    # useReadOnly" on that instant snapshot, as the same field of disks.insert documents.
    "compute.snapshots.insert": frozenset(
        {
            "compute.snapshots.create",
            "compute.snapshots.setLabels",
            "compute.disks.createSnapshot",
            "compute.regionDisks.createSnapshot",
            "compute.instantSnapshots.useReadOnly",
        }
    ),
    "compute.snapshots.get": frozenset({"compute.snapshots.get"}),
    "compute.snapshots.list": frozenset({"compute.snapshots.list"}),
    "compute.snapshots.delete": frozenset({"compute.snapshots.delete"}),
    # Instant mode (instant_ops). IAM has one set of compute.instantSnapshots.* permissions (create, get,
    # list, delete, setLabels, useReadOnly, ...) for zonal and regional instant snapshots alike: no
    # compute.regionInstantSnapshots.* permission exists. insert labels the new resource (setLabels, as for
    # snapshots) and reads the source disk; which disk permission it checks is not in the stored
    # references: createSnapshot on the disk, which the role grants for standard snapshots already.
    "compute.instantSnapshots.insert": frozenset(
        {
            "compute.instantSnapshots.create",
            "compute.instantSnapshots.setLabels",
            "compute.disks.createSnapshot",
        }
    ),
    "compute.regionInstantSnapshots.insert": frozenset(
        {
            "compute.instantSnapshots.create",
            "compute.instantSnapshots.setLabels",
            "compute.disks.createSnapshot",
        }
    ),
    "compute.instantSnapshots.get": frozenset({"compute.instantSnapshots.get"}),
    "compute.regionInstantSnapshots.get": frozenset({"compute.instantSnapshots.get"}),
    "compute.instantSnapshots.list": frozenset({"compute.instantSnapshots.list"}),
    "compute.regionInstantSnapshots.list": frozenset({"compute.instantSnapshots.list"}),
    "compute.instantSnapshots.delete": frozenset({"compute.instantSnapshots.delete"}),
    "compute.regionInstantSnapshots.delete": frozenset({"compute.instantSnapshots.delete"}),
    # The precheck of an instant-mode group reads each disk's type (a VM's attached-disk entries lack it);
    # regional disks are read with compute.disks.get too (no compute.regionDisks.get permission is listed).
    "compute.disks.get": frozenset({"compute.disks.get"}),
    "compute.regionDisks.get": frozenset({"compute.disks.get"}),
    # operations.wait needs the operation's get permission. Instance operations and instant snapshots of
    # zonal disks are zonal, instant snapshots of regional disks regional, snapshot operations global; the
    # package never calls operations.get.
    "compute.zoneOperations.wait": frozenset({"compute.zoneOperations.get"}),
    "compute.regionOperations.wait": frozenset({"compute.regionOperations.get"}),
    "compute.globalOperations.wait": frozenset({"compute.globalOperations.get"}),
}

REQUIRED_PERMISSIONS: frozenset[str] = frozenset().union(*API_METHOD_PERMISSIONS.values())

# The product the package's clients name in the x-goog-api-client header (hook.client_info), by which the
# emulator's call log tells the package's calls from a test's own.
CLIENT_PRODUCT = "gce-vm-backup"

# ---- restore (issue 14): a role and a service account of its own, never the backup's -------------------
# The API methods the restore hook (restore_hook.RestoreHook, client product RESTORE_CLIENT_PRODUCT) calls,
# and the permissions each needs (each method's "IAM Permissions" in the v1 API reference). terraform/iam.tf
# grants exactly RESTORE_REQUIRED_PERMISSIONS in the restore role (tests/deploy/test_terraform.py), and the
# test session's call log keeps these keys equal to what the restore hook calls (gce_emulator.pytest_plugin).
RESTORE_API_METHOD_PERMISSIONS: dict[str, frozenset[str]] = {
    # Read the VM restored or replaced (its disks, machine type, network), stop and start it (replace-disks);
    # find the group's VMs and a drill's leftovers by label (list covers aggregatedList).
    "compute.instances.get": frozenset({"compute.instances.get"}),
    "compute.instances.list": frozenset({"compute.instances.list"}),
    "compute.instances.aggregatedList": frozenset({"compute.instances.list"}),
    "compute.instances.stop": frozenset({"compute.instances.stop"}),
    "compute.instances.start": frozenset({"compute.instances.start"}),
    # The VM's lease (lease.py) around a replace-disks restore.
    "compute.instances.setLabels": frozenset({"compute.instances.setLabels"}),
    # Find the snapshot sets to restore (by label; the listing carries every field needed).
    "compute.snapshots.list": frozenset({"compute.snapshots.list"}),
    # A disk from a snapshot, labelled at creation: create the disk, read the snapshot, set its labels.
    # Regional disks use the same compute.disks.* permissions.
    "compute.disks.insert": frozenset(
        {"compute.disks.create", "compute.snapshots.useReadOnly", "compute.disks.setLabels"}
    ),
    "compute.regionDisks.insert": frozenset(
        {"compute.disks.create", "compute.snapshots.useReadOnly", "compute.disks.setLabels"}
    ),
    "compute.disks.get": frozenset({"compute.disks.get"}),
    "compute.regionDisks.get": frozenset({"compute.disks.get"}),
    "compute.disks.list": frozenset({"compute.disks.list"}),
    "compute.regionDisks.list": frozenset({"compute.disks.list"}),
    # Drill cleanup (only disks labelled as the drill run's).
    "compute.disks.delete": frozenset({"compute.disks.delete"}),
    "compute.regionDisks.delete": frozenset({"compute.disks.delete"}),
    # Label the old disks replace-disks leaves detached, for a rollback.
    "compute.disks.setLabels": frozenset({"compute.disks.setLabels"}),
    "compute.regionDisks.setLabels": frozenset({"compute.disks.setLabels"}),
    # A VM from existing disks, in a subnetwork, with labels and metadata (enable-guest-attributes), no
    # external IP and no service account (so neither useExternalIp nor iam.serviceAccounts.actAs).
    "compute.instances.insert": frozenset(
        {
            "compute.instances.create",
            "compute.disks.use",
            "compute.subnetworks.use",
            "compute.instances.setLabels",
            "compute.instances.setMetadata",
        }
    ),
    # Drill cleanup: the throwaway VM (its autoDelete disks go with it).
    "compute.instances.delete": frozenset({"compute.instances.delete"}),
    # replace-disks: swap the disks of the stopped VM.
    "compute.instances.attachDisk": frozenset({"compute.instances.attachDisk", "compute.disks.use"}),
    "compute.instances.detachDisk": frozenset({"compute.instances.detachDisk"}),
    # "The OS came up": a guest attribute or a serial port line.
    "compute.instances.getGuestAttributes": frozenset({"compute.instances.getGuestAttributes"}),
    "compute.instances.getSerialPortOutput": frozenset({"compute.instances.getSerialPortOutput"}),
    # Wait on the operations: VMs and zonal disks are zonal, regional disks regional.
    "compute.zoneOperations.wait": frozenset({"compute.zoneOperations.get"}),
    "compute.regionOperations.wait": frozenset({"compute.regionOperations.get"}),
}

RESTORE_REQUIRED_PERMISSIONS: frozenset[str] = frozenset().union(*RESTORE_API_METHOD_PERMISSIONS.values())

# The product the restore hook's clients name (restore_hook.restore_client_info).
RESTORE_CLIENT_PRODUCT = "gce-vm-backup-restore"
