"""The IAM permissions the package needs, per API method it calls.

terraform/iam.tf grants exactly ``REQUIRED_PERMISSIONS`` (tests/deploy/test_terraform.py), and the
emulator tests check that every method the code calls is listed here (tests/operators).
"""

from __future__ import annotations

API_METHOD_PERMISSIONS: dict[str, frozenset[str]] = {
    "compute.instances.get": frozenset({"compute.instances.get"}),
    "compute.instances.list": frozenset({"compute.instances.list"}),
    "compute.instances.aggregatedList": frozenset({"compute.instances.list"}),
    "compute.instances.stop": frozenset({"compute.instances.stop"}),
    "compute.instances.start": frozenset({"compute.instances.start"}),
    "compute.instances.resume": frozenset({"compute.instances.resume"}),
    "compute.disks.get": frozenset({"compute.disks.get"}),
    "compute.regionDisks.get": frozenset({"compute.regionDisks.get"}),
    # snapshots.insert from a disk: create the snapshot, read the source disk, label the snapshot.
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
    "compute.zoneOperations.get": frozenset({"compute.zoneOperations.get"}),
    "compute.zoneOperations.wait": frozenset({"compute.zoneOperations.get"}),
    "compute.regionOperations.get": frozenset({"compute.regionOperations.get"}),
    "compute.regionOperations.wait": frozenset({"compute.regionOperations.get"}),
    "compute.globalOperations.get": frozenset({"compute.globalOperations.get"}),
    "compute.globalOperations.wait": frozenset({"compute.globalOperations.get"}),
}

REQUIRED_PERMISSIONS: frozenset[str] = frozenset().union(*API_METHOD_PERMISSIONS.values())
