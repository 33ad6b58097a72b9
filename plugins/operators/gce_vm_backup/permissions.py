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
    # Zonal and regional disks alike; the operation is global either way.
    "compute.snapshots.insert": frozenset(
        {
            "compute.snapshots.create",
            "compute.snapshots.setLabels",
            "compute.disks.createSnapshot",
            "compute.regionDisks.createSnapshot",
        }
    ),
    "compute.snapshots.get": frozenset({"compute.snapshots.get"}),
    "compute.snapshots.list": frozenset({"compute.snapshots.list"}),
    "compute.snapshots.delete": frozenset({"compute.snapshots.delete"}),
    # operations.wait needs the operation's get permission. Instance operations are zonal, snapshot
    # operations global; the package never waits on a regional operation nor calls operations.get.
    "compute.zoneOperations.wait": frozenset({"compute.zoneOperations.get"}),
    "compute.globalOperations.wait": frozenset({"compute.globalOperations.get"}),
}

REQUIRED_PERMISSIONS: frozenset[str] = frozenset().union(*API_METHOD_PERMISSIONS.values())

# The product the package's clients name in the x-goog-api-client header (hook.client_info), by which the
# emulator's call log tells the package's calls from a test's own.
CLIENT_PRODUCT = "gce-vm-backup"
