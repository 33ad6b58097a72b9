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
