"""After verify: each snapshot this run made is found by retention's own listing (opt-in ``check_listed``).

Retention lists a disk's snapshots with a server-side label filter (this deployment's and group's snapshots
of that disk, ``labels.managed_disk_filter``) and then checks each one's labels and ``sourceDisk`` again
(``labels.is_managed_snapshot_of``). A snapshot that listing misses (its labels were changed or dropped,
by a person, an org policy or a tool) is never counted among a disk's backups and never pruned; nor is one
listed but not ours by its ``sourceDisk``. Retention reports that for the disks it prunes; this stage finds
it in the run that made the snapshot, in groups with no policy yet too, so retention will see every
snapshot when it is turned on. It runs with the VM back, reads only (one ``snapshots.list`` per disk) and
keeps no VM down.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gce_vm_backup.backup.plan import NO_VM_STATUS
from gce_vm_backup.backup.retention import list_managed_snapshots, snapshot_records
from gce_vm_backup.errors import BackupError, ConfigError
from gce_vm_backup.runtime.base import ComputeOperator
from gce_vm_backup.runtime.links import ConsoleLinks


class CheckListedOperator(ConsoleLinks, ComputeOperator):
    """Check that retention's listing of each disk finds this run's snapshot of it, as this deployment's and
    group's.

    :param instance_record: the precheck's InstanceRecord (the VM's project; the disks another VM's backup
        snapshots, ``carried_by``, are checked in that VM's chain).
    :param snapshot_records: this run's standard snapshots of the VM (verify's or convert's records).
    :param deployment: this deployment's id and ``group`` the group's, as retention lists them.
    Returns ``{"vm", "listed": [snapshot names]}``. Raises ConfigError for a bad input, ApiError when a
    listing fails, and BackupError naming every snapshot the listing missed or found to be someone else's
    (with the filter used), after checking them all.
    """

    template_fields: Sequence[str] = ("instance_record", "snapshot_records")

    def __init__(
        self,
        *,
        instance_record: Any,
        snapshot_records: Any,
        deployment: str,
        group: str,
        **kwargs: Any,
    ) -> None:
        from gce_vm_backup.config.labels import check_deployment, check_group

        super().__init__(**kwargs)
        self.deployment, self.group = check_deployment(deployment), check_group(group)
        self.instance_record, self.snapshot_records = instance_record, snapshot_records

    def execute(self, context: Any) -> dict[str, Any]:
        from gce_vm_backup.config.labels import disk_path, managed_disk_filter, scope_mismatch

        record = self.instance_record
        if not isinstance(record, dict) or "instance" not in record:
            raise ConfigError(
                f"The parameter 'instance_record' must be the precheck's result, got {record!r}"
            )
        vm = f"projects/{record['project_id']}/zones/{record['zone']}/instances/{record['instance']}"
        result: dict[str, Any] = {"vm": vm, "listed": []}
        if record.get("prior_status") == NO_VM_STATUS:
            return result
        scope = {"deployment": self.deployment, "group": self.group}
        problems = []
        for new in snapshot_records(self.snapshot_records):
            source = disk_path(new["disk_source"])
            listed = list_managed_snapshots(
                self.hook,
                project_id=record["project_id"],
                disk_source=source,
                deployment=self.deployment,
                group=self.group,
            )
            mine = next((info for info in listed if info.name == new["snapshot"]), None)
            if mine is None:
                problems.append(
                    f"snapshot {new['snapshot']} of disk {source} is missing from retention's listing "
                    f"(filter {managed_disk_filter(source, **scope)}): its labels were changed or dropped"
                )
            elif not mine.managed:
                mismatch = scope_mismatch(mine.labels, mine.source_disk, source, **scope)
                problems.append(f"snapshot {mine.name} of disk {source} is listed, but {mismatch}")
            else:
                self.log.info("Snapshot %s of disk %s: listed by retention's filter", mine.name, source)
                result["listed"].append(mine.name)
        if problems:
            raise BackupError("retention would not see this run's snapshot(s): " + "; ".join(problems))
        return result
