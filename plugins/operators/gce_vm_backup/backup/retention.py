"""After the backup: wait until this run's snapshots are READY, then delete the old ones the policy lets go.

``VerifySnapshotsOperator`` matters with the early-restart opt-in, where the snapshot task finishes at
UPLOADING; otherwise the downtime task has read READY already, and it returns at once, with no API call
(in ``snapshot_mode: instant`` the convert task, instant_ops.py, takes its place and returns the same
records). ``ApplyRetentionOperator``
lists only this deployment's and group's snapshots of each disk (server-side label filter, every
page), plans with ``retention.plan_deletions`` and deletes with deterministic request ids, waiting on
each delete.

Both run per VM, inside the VM's mapped task group, after the downtime task: their inputs are the
precheck's InstanceRecord and the downtime task's SnapshotRecords (XComArgs). Nothing Google is
imported here at module level; the hook is built inside execute()/poke().
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from gce_vm_backup.backup.plan import NO_VM_STATUS
from gce_vm_backup.compute.holds import hold_reason
from gce_vm_backup.compute.paths import DiskRef, SnapshotRef, VmRef
from gce_vm_backup.config.retention import READY, RetentionPlan, RetentionPolicy, SnapshotInfo, plan_deletions
from gce_vm_backup.errors import BackupError, ConfigError, OperationFailedError, ResourceNotFoundError
from gce_vm_backup.runtime.base import ComputeOperator, RunKey, as_bool
from gce_vm_backup.runtime.links import ConsoleLinks
from gce_vm_backup.runtime.waits import SlotFreeWait

DELETING = "DELETING"
DELETE_TIMEOUT = 600.0  # seconds to wait for one snapshot deletion


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 ``creationTimestamp`` ('2026-11-24T03:00:05.123-08:00' or '...Z') as an aware datetime."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def snapshot_records(value: Any, *, name: str = "snapshot_records") -> list[dict[str, Any]]:
    """The snapshot task's result, checked. Raises ConfigError naming ``name`` when it is not one."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(item, dict) and {"disk_source", "snapshot"} <= item.keys() for item in value
    ):
        raise ConfigError(
            f"The parameter {name!r} must be the snapshot task's list of records "
            f"(each with 'disk_source' and 'snapshot'), got {value!r}"
        )
    return value


def _snapshot_project(record: dict[str, Any]) -> str:
    """Snapshots are made in the VM's project; the record names the VM (or at least the disk)."""
    vm = record.get("vm")
    return VmRef.parse(vm).project if vm else DiskRef.parse(record["disk_source"]).project


def _snapshot_path(project: str, name: str) -> str:
    return SnapshotRef(project, name).path


class VerifySnapshotsOperator(ConsoleLinks, SlotFreeWait):
    """Wait until every snapshot of this run is READY (slot-free between looks: waits.SlotFreeWait).

    ``snapshot_records`` is the downtime task's result (its ``snapshots``) or a list of SnapshotRecords.
    Returns the records with their current status (READY) and size; when every record already says
    READY (the downtime task waited for it), they are returned as they are, with no API call. Raises
    OperationFailedError when a snapshot turned FAILED, ResourceNotFoundError when it no longer exists,
    and AirflowSensorTimeout, naming each disk and snapshot still not READY, when ``timeout`` seconds
    pass first.
    """

    template_fields: Sequence[str] = ("snapshot_records",)

    def __init__(
        self, *, snapshot_records: Any, timeout: float = 7200, poke_interval: float = 60, **kwargs: Any
    ):
        super().__init__(timeout=timeout, poke_interval=poke_interval, **kwargs)
        self.snapshot_records = snapshot_records
        self._pending: list[str] = []

    def timeout_message(self) -> str:
        pending = "; ".join(self._pending) or "unknown"
        return f"Snapshot(s) not READY within {self.timeout:.0f} seconds: {pending}"

    def poke(self, context: Any) -> Any:
        from airflow.sdk.bases.sensor import PokeReturnValue

        value = self.snapshot_records
        records = snapshot_records(
            value["snapshots"] if isinstance(value, dict) and "snapshots" in value else value
        )
        if records and all(record.get("status") == READY for record in records):
            # The downtime task waited for READY (no early restart) and read it from the API: no second
            # read, and no Google client is loaded. Retention checks READY again in its own listing
            # before it deletes anything.
            self.log.info("All %d snapshot(s) READY when the downtime task read them", len(records))
            return PokeReturnValue(True, records)
        verified, pending = [], []
        for record in records:
            project, name = _snapshot_project(record), record["snapshot"]
            snapshot = self.hook.get_snapshot(project_id=project, name=name)
            if snapshot is None:
                raise ResourceNotFoundError(
                    f"Snapshot {_snapshot_path(project, name)} of disk {record['disk_source']} no longer "
                    "exists; this run has no usable backup of that disk"
                )
            if snapshot.status == "FAILED":
                raise OperationFailedError(
                    f"Snapshot {_snapshot_path(project, name)} of disk {record['disk_source']} FAILED while "
                    "uploading; this run has no usable backup of that disk",
                    operation="",
                    resource=_snapshot_path(project, name),
                    codes=["SNAPSHOT_FAILED"],
                )
            if snapshot.status != READY:
                pending.append(f"{name} of disk {record['disk_source']} ({snapshot.status})")
            verified.append(
                {**record, "status": snapshot.status, "storage_bytes": int(snapshot.storage_bytes)}
            )
        self._pending = pending
        if pending:
            self.log.info("Waiting for snapshot(s) to be READY: %s", "; ".join(pending))
            return False
        self.log.info("All %d snapshot(s) READY", len(verified))
        return PokeReturnValue(True, verified)


def load_policy(policy: Any) -> RetentionPolicy | None:
    """A RetentionPolicy from the config's dict (or None). Raises ConfigError naming each bad key."""
    if policy is None or isinstance(policy, RetentionPolicy):
        return policy
    try:
        return RetentionPolicy.model_validate(policy)
    except ValidationError as exc:
        problems = [
            f"The parameter 'policy', key {'.'.join(str(p) for p in error['loc']) or '(root)'}: "
            f"{error['msg']}"
            for error in exc.errors()
        ]
        raise ConfigError(problems) from None


def list_managed_snapshots(
    hook: Any,
    *,
    project_id: str,
    disk_source: str,
    deployment: str,
    group: str,
    max_results: int | None = None,
) -> list[SnapshotInfo]:
    """This deployment's and group's snapshots of one disk (server-side label filter, every page).

    ``managed`` is checked again client-side, labels AND ``sourceDisk``, so neither a filter the server
    ignored nor a stranger's snapshot with copied labels can make a snapshot a candidate. Raises ApiError
    when listing fails.
    """
    from gce_vm_backup.config.labels import disk_path, is_managed_snapshot_of, managed_disk_filter

    source = disk_path(disk_source)
    scope = {"deployment": deployment, "group": group}
    infos = []
    for snapshot in hook.list_snapshots(
        project_id=project_id,
        filter=managed_disk_filter(source, **scope),
        max_results=max_results,
        of=source,
    ):
        labels = dict(snapshot.labels)
        infos.append(
            SnapshotInfo(
                name=snapshot.name,
                disk_key=source,
                status=snapshot.status,
                created=parse_timestamp(snapshot.creation_timestamp),
                managed=is_managed_snapshot_of(labels, snapshot.source_disk, source, **scope),
                labels=labels,
                source_disk=snapshot.source_disk,
            )
        )
    return infos


def preview_retention(
    hook: Any,
    *,
    project_id: str,
    planned: dict[str, str],
    policy: RetentionPolicy,
    now: datetime,
    deployment: str,
    group: str,
) -> RetentionPlan:
    """What retention would delete if this run's planned snapshots (disk source -> name) became READY.

    The dry run's answer: the planned snapshots are added as READY at ``now`` and planned with the same
    listing and rules as a real run. Read-only. Raises ApiError when listing fails.
    """
    from gce_vm_backup.config.labels import disk_path

    infos: list[SnapshotInfo] = []
    for source, name in planned.items():
        infos += list_managed_snapshots(
            hook, project_id=project_id, disk_source=source, deployment=deployment, group=group
        )
        infos.append(
            SnapshotInfo(name=name, disk_key=disk_path(source), status=READY, created=now, managed=True)
        )
    return plan_deletions(infos, policy, now=now, disks_with_new_ready={disk_path(s) for s in planned})


class ApplyRetentionOperator(ConsoleLinks, ComputeOperator):
    """Delete this VM's old snapshots that ``policy`` lets go (see retention.py for the rules).

    Only this ``deployment``'s and ``group``'s snapshots of each disk are listed (server-side label filter
    on managed-by, deployment, group and disk key; checked again client-side, with the snapshot's
    ``sourceDisk``). Ages are measured from the newest of this run's snapshots (the Compute Engine clock,
    not the worker's), so a retry plans the same. With ``plan_only`` (the dry run) the plan is logged and
    nothing is deleted.

    The policy is applied to a disk only when this run's snapshot of it is READY in that listing; when it
    is not (missing, not READY, or not ours by labels or ``sourceDisk``), that disk is a failure of this
    task, never a silent "deleting nothing". A disk whose InstanceRecord entry has ``carried_by`` (a disk
    shared with another VM of the run, snapshotted by that VM's backup) is skipped, and said so in
    ``not_pruned``.

    Returns ``{"vm", "dry_run", "deleted": [{"disk_source", "snapshot", "created"}], "kept": [{"disk_source",
    "snapshot", "reasons"}], "not_pruned": [{"disk_source", "reason"}]}``, plus ``would_delete`` in a dry
    run. Raises ConfigError for a bad policy or input, ApiError when listing fails, and BackupError naming
    every disk the policy was not applied to and every snapshot whose deletion failed or timed out (the
    other disks are still pruned, the other snapshots still deleted).
    """

    template_fields: Sequence[str] = ("instance_record", "snapshot_records", "plan_only")

    def __init__(
        self,
        *,
        instance_record: Any,
        snapshot_records: Any,
        policy: dict[str, Any] | RetentionPolicy | None,
        deployment: str,
        group: str,
        plan_only: bool | str = False,
        delete_timeout: float = DELETE_TIMEOUT,
        max_results: int | None = None,
        **kwargs: Any,
    ) -> None:
        from gce_vm_backup.config.labels import check_deployment, check_group

        super().__init__(**kwargs)
        self.policy = load_policy(policy)
        self.deployment, self.group = check_deployment(deployment), check_group(group)
        self.instance_record, self.snapshot_records = instance_record, snapshot_records
        self.plan_only = plan_only  # the dry run (BaseOperator.dry_run is a method, hence the name)
        self.delete_timeout, self.max_results = delete_timeout, max_results

    def execute(self, context: Any) -> dict[str, Any]:
        record = self.instance_record
        if not isinstance(record, dict) or "instance" not in record:
            raise ConfigError(
                f"The parameter 'instance_record' must be the precheck's result, got {record!r}"
            )
        records = snapshot_records(self.snapshot_records)
        dry_run = as_bool(self.plan_only, name="plan_only")
        vm = VmRef(record["project_id"], record["zone"], record["instance"]).path
        result: dict[str, Any] = {"vm": vm, "dry_run": dry_run, "deleted": [], "kept": [], "not_pruned": []}
        if self.policy is None or record.get("prior_status") == NO_VM_STATUS or not record.get("disks"):
            self.log.info("Retention for %s: nothing to do (no policy, or no VM in this run)", vm)
            return result
        plan, now, listed, prunable, problems = self._plan(record, records, result)
        self.log.info(
            "Retention for %s (deployment %s, group %s, policy %s, ages from %s): delete %d, keep %d",
            vm,
            self.deployment,
            self.group,
            self.policy.model_dump(exclude_none=True),
            now.isoformat(),
            len(plan.to_delete),
            len(plan.kept),
        )
        for name, reasons in sorted(plan.kept.items()):
            self.log.info("  keep %s: %s", name, ", ".join(reasons))
        result["kept"] = [
            {"disk_source": listed[name].disk_key, "snapshot": name, "reasons": reasons}
            for name, reasons in sorted(plan.kept.items())
        ]
        if dry_run:
            for snapshot in plan.to_delete:
                self.log.info("  DRY RUN: would delete %s (created %s)", snapshot.name, snapshot.created)
            result["would_delete"] = [_deleted(s) for s in plan.to_delete]
            _raise_if(problems, [])
            return result
        # A snapshot of ours left DELETING by an earlier delete that failed (an earlier try or run) is
        # deleted again, for the disks this run may prune; otherwise the policy would silently not apply.
        stuck = [
            info
            for info in listed.values()
            if info.status == DELETING and info.managed and info.disk_key in prunable
        ]
        for snapshot in stuck:
            self.log.info(
                "Snapshot %s is still DELETING after an earlier delete: deleting it again", snapshot.name
            )
        failures = self._delete(
            record["project_id"],
            [*plan.to_delete, *stuck],
            RunKey.from_context(context, deployment=self.deployment),
            result,
            now,
        )
        _raise_if(problems, failures)
        return result

    def _plan(
        self, record: dict[str, Any], records: list[dict[str, Any]], result: dict[str, Any]
    ) -> tuple[RetentionPlan, datetime, dict[str, SnapshotInfo], set[str], list[str]]:
        """List each disk's snapshots and plan; also returns why the policy cannot apply to some disks."""
        from gce_vm_backup.config.labels import disk_path, managed_disk_filter, scope_mismatch

        if self.policy is None:
            raise ConfigError("The parameter 'policy' is required to plan retention")
        scope = {"deployment": self.deployment, "group": self.group}
        new_by_disk = {disk_path(item["disk_source"]): item for item in records}
        infos: list[SnapshotInfo] = []
        disks_with_new_ready: set[str] = set()
        new_ready_times: list[datetime] = []
        problems: list[str] = []
        for disk in record["disks"]:
            source = disk_path(disk["source"])
            if disk.get("carried_by"):
                reason = (
                    f"snapshotted in this run by the backup of VM {disk['carried_by']}, which shares the "
                    "disk; the policy is applied there"
                )
                self.log.info("Retention for disk %s: skipped, %s", source, reason)
                result["not_pruned"].append({"disk_source": source, "reason": reason})
                continue
            listed = list_managed_snapshots(
                self.hook,
                project_id=record["project_id"],
                disk_source=source,
                max_results=self.max_results,
                **scope,
            )
            infos += listed
            new = new_by_disk.get(source)
            mine = next((i for i in listed if new is not None and i.name == new["snapshot"]), None)
            if new is None:
                problem = "this run made no snapshot of it"
            elif mine is None:
                problem = (
                    f"this run's snapshot {new['snapshot']} is {new.get('status') or 'of unknown status'} "
                    f"but missing from the listing with filter {managed_disk_filter(source, **scope)}: "
                    "its labels changed or the filter was not applied"
                )
            elif not mine.managed:
                mismatch = scope_mismatch(mine.labels, mine.source_disk, source, **scope)
                problem = f"this run's snapshot {mine.name} is listed, but {mismatch}"
            elif mine.status != READY:
                problem = f"this run's snapshot {mine.name} is {mine.status}, not READY"
            else:
                disks_with_new_ready.add(source)
                new_ready_times.append(mine.created)
                continue
            self.log.error("Retention policy NOT applied to disk %s: %s", source, problem)
            result["not_pruned"].append({"disk_source": source, "reason": problem})
            problems.append(f"Retention policy not applied to disk {source}: {problem}")
        now = max(new_ready_times) if new_ready_times else datetime.now(UTC)
        plan = plan_deletions(infos, self.policy, now=now, disks_with_new_ready=disks_with_new_ready)
        return plan, now, {info.name: info for info in infos}, disks_with_new_ready, problems

    def _delete(
        self,
        project: str,
        snapshots: list[SnapshotInfo],
        run: RunKey,
        result: dict[str, Any],
        now: datetime,
    ) -> list[str]:
        """Delete each snapshot (going on after a failure); returns the failures.

        Each is read again first: a restore may have held it since the listing (holds.py), and a held
        snapshot is kept."""
        failures: list[str] = []
        for snapshot in snapshots:
            path = _snapshot_path(project, snapshot.name)
            try:
                current = self.hook.get_snapshot(project_id=project, name=snapshot.name)
                if current is None:
                    raise ResourceNotFoundError(path)
                held = hold_reason(dict(current.labels), now)
                if held:
                    self.log.info("  keep %s: %s (held since the listing)", snapshot.name, held)
                    result["kept"].append(
                        {"disk_source": snapshot.disk_key, "snapshot": snapshot.name, "reasons": [held]}
                    )
                    continue
                operation = self.hook.delete_snapshot(
                    project_id=project,
                    name=snapshot.name,
                    request_id=run.request_id(path, "retention-delete"),
                )
                self.log.info("Deleting %s (operation %s)", path, operation.name)
                self.hook.wait_operation(operation, timeout=self.delete_timeout)
            except ResourceNotFoundError:
                self.log.info("Snapshot %s is already gone", path)
            except BackupError as exc:
                failures.append(f"{path}: {exc}")
                continue
            result["deleted"].append(_deleted(snapshot))
        return failures


def _raise_if(problems: list[str], failures: list[str]) -> None:
    """One BackupError for the disks the policy was not applied to and the deletes that failed."""
    messages = list(problems)
    if failures:
        messages.append(
            f"Retention could not delete {len(failures)} snapshot(s) (the rest were deleted): "
            + "; ".join(failures)
        )
    if messages:
        raise BackupError("; ".join(messages))


def _deleted(snapshot: SnapshotInfo) -> dict[str, Any]:
    return {
        "disk_source": snapshot.disk_key,
        "snapshot": snapshot.name,
        "created": snapshot.created.isoformat(),
    }
