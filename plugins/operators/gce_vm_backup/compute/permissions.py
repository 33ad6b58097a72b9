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

# ---- restores and drills: roles and accounts of their own, never the backup's ---------------------------
# The API methods the restore hook (restore_hook.RestoreHook, client product RESTORE_CLIENT_PRODUCT) calls,
# split by who calls them where, with the permissions each needs (each method's "IAM Permissions" in the v1
# API reference). terraform/iam.tf grants exactly RESTORE_REQUIRED_PERMISSIONS in the restore role (target
# projects), DRILL_REQUIRED_PERMISSIONS in the drill role (the scratch project only) and
# DRILL_READ_PERMISSIONS in the drill's read role (target projects); tests/deploy/test_terraform.py checks
# it. The test session's call log keeps the union of their methods (RESTORE_API_METHOD_PERMISSIONS) equal
# to what the restore hook calls (gce_emulator.pytest_plugin).

# The restore DAG, in the target projects. It deletes nothing: no instances.delete, no disks.delete.
RESTORE_ROLE_METHODS: dict[str, frozenset[str]] = {
    # Read the VM restored or replaced (its disks, machine type, network), stop and start it (replace-disks);
    # find the group's VMs by label (list covers aggregatedList).
    "compute.instances.get": frozenset({"compute.instances.get"}),
    "compute.instances.list": frozenset({"compute.instances.list"}),
    "compute.instances.aggregatedList": frozenset({"compute.instances.list"}),
    "compute.instances.stop": frozenset({"compute.instances.stop"}),
    "compute.instances.start": frozenset({"compute.instances.start"}),
    # The VM's lease (lease.py) around a replace-disks restore.
    "compute.instances.setLabels": frozenset({"compute.instances.setLabels"}),
    # Find the snapshot sets (by label); hold the chosen set from retention (holds.py: read each snapshot's
    # labelFingerprint, set the hold label; snapshots.setLabels is a global operation).
    "compute.snapshots.list": frozenset({"compute.snapshots.list"}),
    "compute.snapshots.get": frozenset({"compute.snapshots.get"}),
    "compute.snapshots.setLabels": frozenset({"compute.snapshots.setLabels"}),
    "compute.globalOperations.wait": frozenset({"compute.globalOperations.get"}),
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
    # Label the old disks replace-disks leaves detached, for a rollback.
    "compute.disks.setLabels": frozenset({"compute.disks.setLabels"}),
    "compute.regionDisks.setLabels": frozenset({"compute.disks.setLabels"}),
    # new-vm: a VM from existing disks, in a subnetwork, with labels, no metadata, no external IP and no
    # service account (so neither setMetadata, useExternalIp nor iam.serviceAccounts.actAs).
    "compute.instances.insert": frozenset(
        {
            "compute.instances.create",
            "compute.disks.use",
            "compute.subnetworks.use",
            "compute.instances.setLabels",
        }
    ),
    # replace-disks: swap the disks of the stopped VM.
    "compute.instances.attachDisk": frozenset({"compute.instances.attachDisk", "compute.disks.use"}),
    "compute.instances.detachDisk": frozenset({"compute.instances.detachDisk"}),
    # Wait on the operations: VMs and zonal disks are zonal, regional disks regional.
    "compute.zoneOperations.wait": frozenset({"compute.zoneOperations.get"}),
    "compute.regionOperations.wait": frozenset({"compute.regionOperations.get"}),
}

# The drill, in its scratch project (zonal disks and a VM in the scratch zone, deleted by its cleanup).
DRILL_ROLE_METHODS: dict[str, frozenset[str]] = {
    # Disks from the target projects' snapshots (compute.snapshots.useReadOnly is checked on the snapshot,
    # in its own project: DRILL_READ_METHODS), labelled at creation; found again and listed for the cleanup.
    "compute.disks.insert": frozenset({"compute.disks.create", "compute.disks.setLabels"}),
    "compute.disks.get": frozenset({"compute.disks.get"}),
    "compute.disks.list": frozenset({"compute.disks.list"}),
    "compute.disks.delete": frozenset({"compute.disks.delete"}),
    # A throwaway VM from them, labelled, with the metadata enable-guest-attributes when the boot check
    # reads a guest attribute; no external IP, no service account.
    "compute.instances.insert": frozenset(
        {
            "compute.instances.create",
            "compute.disks.use",
            "compute.subnetworks.use",
            "compute.instances.setLabels",
            "compute.instances.setMetadata",
        }
    ),
    "compute.instances.get": frozenset({"compute.instances.get"}),
    "compute.instances.list": frozenset({"compute.instances.list"}),
    "compute.instances.delete": frozenset({"compute.instances.delete"}),
    # "The OS came up": a guest attribute or a serial port line.
    "compute.instances.getGuestAttributes": frozenset({"compute.instances.getGuestAttributes"}),
    "compute.instances.getSerialPortOutput": frozenset({"compute.instances.getSerialPortOutput"}),
    "compute.zoneOperations.wait": frozenset({"compute.zoneOperations.get"}),
}

# The drill, in the target projects: reads only. Find the group's VMs and their boot disks (instances
# get/list, aggregatedList), their snapshot sets (snapshots.list), and read the snapshots into the scratch
# project's disks (snapshots.useReadOnly, checked here by the scratch project's disks.insert).
DRILL_READ_METHODS: dict[str, frozenset[str]] = {
    "compute.instances.get": frozenset({"compute.instances.get"}),
    "compute.instances.list": frozenset({"compute.instances.list"}),
    "compute.instances.aggregatedList": frozenset({"compute.instances.list"}),
    "compute.snapshots.list": frozenset({"compute.snapshots.list"}),
    "compute.disks.insert": frozenset({"compute.snapshots.useReadOnly"}),
}


def _merged(*tables: dict[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    merged: dict[str, frozenset[str]] = {}
    for table in tables:
        for method, permissions in table.items():
            merged[method] = merged.get(method, frozenset()) | permissions
    return merged


# Every method the restore hook calls, restores and drills alone: what the call log is checked against.
RESTORE_API_METHOD_PERMISSIONS: dict[str, frozenset[str]] = _merged(
    RESTORE_ROLE_METHODS, DRILL_ROLE_METHODS, DRILL_READ_METHODS
)

RESTORE_REQUIRED_PERMISSIONS: frozenset[str] = frozenset().union(*RESTORE_ROLE_METHODS.values())
# What instances.insert needs beyond RESTORE_ROLE_METHODS when a VM that no longer exists is rebuilt from its
# manifest with metadata values, network tags or a service account (the reference's instances.insert and
# "Create a VM" pages). Granted only on request (terraform's restore_rebuild_grants); the service account
# itself also needs iam.serviceAccounts.actAs on that one account, which terraform never grants.
RESTORE_REBUILD_PERMISSIONS: frozenset[str] = frozenset(
    {"compute.instances.setMetadata", "compute.instances.setTags", "compute.instances.setServiceAccount"}
)
DRILL_REQUIRED_PERMISSIONS: frozenset[str] = frozenset().union(*DRILL_ROLE_METHODS.values())
DRILL_READ_PERMISSIONS: frozenset[str] = frozenset().union(*DRILL_READ_METHODS.values())

# The product the restore hook's clients name (restore_hook.restore_client_info).
RESTORE_CLIENT_PRODUCT = "gce-vm-backup-restore"
