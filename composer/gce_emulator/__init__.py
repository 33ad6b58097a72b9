"""A local Compute Engine API emulator for tests and the demo: the real client talks to it over loopback.

    from gce_emulator import Emulator
    with Emulator("seed.yaml", time_scale=60) as emu:
        client = compute_v1.InstancesClient(
            credentials=AnonymousCredentials(), client_options={"api_endpoint": emu.url})

Seed format (YAML or a dict)::

    projects:
      PROJECT:
        regions:
          REGION:
            disks: [{name, size_gb, replica_zones: [ZONE, ...]}]        # regional disks
        zones:
          ZONE:
            instances:
              - name: NAME
                status: RUNNING | TERMINATED | SUSPENDED | ...        (default RUNNING)
                labels: {KEY: VALUE}
                local_ssds: 0
                disks:                                                 (default: one boot disk NAME)
                  - {name, size_gb, boot, type}                         # a zonal disk in ZONE
                  - {region_disk: REGION/NAME}                          # attach a regional disk
            disks: [{name, size_gb}]                                    # unattached zonal disks
        snapshots: [{name, sourceDisk, sourceDiskId, status, labels, creationTimestamp}]

Behaviour (simulated time = real time x ``time_scale`` + ``clock.advance``): stop RUNNING -> STOPPING ->
TERMINATED; start TERMINATED -> STAGING -> RUNNING; resume SUSPENDED -> STAGING -> RUNNING; snapshot
CREATING -> UPLOADING -> READY, its insert operation DONE when READY. A stop of a TERMINATED VM or a start
of a RUNNING one returns an operation that is already DONE (the real API's behaviour here is
unconfirmed). A repeated ``requestId`` returns the original operation and does nothing. More than one
snapshot of a disk within 10 simulated minutes ends the operation DONE with RATE_LIMIT_EXCEEDED.
Snapshots have ``sourceDisk`` (a URL) and ``sourceDiskId``. Instant snapshots (zonal and regional, and
``snapshots.insert`` with ``sourceInstantSnapshot``): see ``gce_emulator.instant`` for what is documented
and what is modelled; ``emu.delete_disk(path)`` deletes a disk with its instant snapshots.
List ``filter``: the documented grammar only (see ``gce_emulator.filters``), anything else is a 400.
Faults: ``emu.faults``; call log: ``emu.calls`` (each call names the products of the calling client, so
the package's own calls, marked ``gce-vm-backup/<version>``, are told from a test's setup calls). With
``GCE_EMULATOR_CALL_LOG`` set to a folder, every process also appends the distinct methods it served there
(the pytest plugin compares them with the package's IAM list at the end of a full test session).
"""

from gce_emulator.server import CallRecord, Emulator

__all__ = ["CallRecord", "Emulator"]
