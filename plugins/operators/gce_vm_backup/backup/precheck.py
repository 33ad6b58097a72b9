"""Before and after the downtime: record a VM's state (setup), and make sure it is back (teardown)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from gce_vm_backup.backup.plan import (
    NO_VM_RECORD,
    STARTING_STATES,
    SUSPENDED_STATES,
    backed_up_disks,
    disk_details,
    now_iso,
    vm_manifest_of,
)
from gce_vm_backup.compute.paths import VmRef
from gce_vm_backup.errors import ConfigError, VmStateError
from gce_vm_backup.runtime.base import LOCAL_SSD_CHOICES, ComputeOperator, as_bool, check_choice
from gce_vm_backup.runtime.links import ConsoleLinks


class PrecheckInstanceOperator(ConsoleLinks, ComputeOperator):
    """Read a VM and record what the backup needs (read-only). The setup of the per-VM chain.

    Returns the InstanceRecord: project_id, zone, instance, the instance ``id``, prior_status,
    has_local_ssd, local_ssd, every attached persistent disk (or the chosen subset) with source path,
    boot flag, size, location, disk ``id`` and ``type`` (``plan.disk_details``: one disks.get each), and
    the VM's ``manifest`` (``plan.vm_manifest_of``: identity, every attached disk, rebuild spec,
    ``description`` as its note, metadata values only with ``metadata_values``), which every snapshot of
    the VM carries in its description. A disk that another
    VM's backup of this run snapshots (``carried_by``, from the resolve task: disk path -> that VM's path)
    carries ``"carried_by": <VM path>``, and snapshot, verify and retention of this VM leave it out.
    Raises VmStateError for a SUSPENDED VM (resuming and stopping it would lose its memory state, so we
    refuse), a VM in transition, local SSDs without an explicit choice, or a manifest too big for a
    snapshot description; ConfigError for a disk subset naming a disk that is not attached.
    """

    template_fields: Sequence[str] = ("project_id", "zone", "instance", "disks", "local_ssd", "carried_by")
    project_id: str
    zone: str
    instance: str
    disks: list[str] | None
    local_ssd: str
    carried_by: dict[str, str] | None
    snapshot_mode: str
    instant_fallback: str
    deployment: str | None
    group: str | None
    instant_timeout: float
    description: str | None
    metadata_values: bool

    def __init__(
        self,
        *,
        project_id: str,
        zone: str,
        instance: str,
        disks: list[str] | None = None,
        local_ssd: str = "refuse",
        carried_by: dict[str, str] | None = None,
        snapshot_mode: str = "standard",
        instant_fallback: str = "refuse",
        deployment: str | None = None,
        group: str | None = None,
        instant_timeout: float = 900,
        description: str | None = None,
        metadata_values: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.project_id = project_id
        self.zone = zone
        self.instance = instance
        self.disks = disks
        self.local_ssd = local_ssd
        self.carried_by = carried_by
        self.snapshot_mode = snapshot_mode
        self.instant_fallback = instant_fallback
        self.deployment = deployment
        self.group = group
        self.instant_timeout = instant_timeout
        self.description = description
        self.metadata_values = metadata_values

    def execute(self, context: Any) -> dict[str, Any]:
        if not (self.project_id or self.zone or self.instance):
            # Succeed rather than skip: Airflow skips everything in the scope of a skipped setup, which
            # would include the barrier that lets the next tier go.
            self.log.info("No VM in this tier for this run (a selector matched none, or a dry run)")
            return NO_VM_RECORD
        for name in ("project_id", "zone", "instance"):
            if not getattr(self, name):
                raise ConfigError(f"The required parameter {name!r} is missing")
        check_choice(self.local_ssd, LOCAL_SSD_CHOICES, name="local_ssd")
        vm = VmRef(self.project_id, self.zone, self.instance).path
        instance = self.hook.get_instance(project_id=self.project_id, zone=self.zone, name=self.instance)
        status = instance.status
        if status in SUSPENDED_STATES:
            raise VmStateError(
                f"VM {vm} is {status}. Backups refuse suspended VMs: stopping one discards its memory state. "
                "Resume it, or exclude it from the group."
            )
        if status not in STARTING_STATES:
            raise VmStateError(
                f"VM {vm} is {status} (in transition); try again when it is RUNNING or TERMINATED"
            )
        has_local_ssd = any(disk.type_ == "SCRATCH" for disk in instance.disks)
        if has_local_ssd and self.local_ssd == "refuse":
            raise VmStateError(
                f"VM {vm} has local SSDs, whose data is lost on stop unless preserved. "
                "Set local_ssd to 'discard' or 'preserve' in the config to back it up."
            )
        attached = backed_up_disks(instance, vm=vm, wanted=self.disks, carried_by=self.carried_by)
        details = disk_details(self.hook, instance)
        for entry in attached:  # the capture adopts only a snapshot of this disk id; instant mode's type
            entry.update(details.get(str(entry["source"]), {}))
        manifest = vm_manifest_of(
            instance,
            project=self.project_id,
            zone=self.zone,
            disks=attached,
            details=details,
            note=self.description,
            metadata_values=as_bool(self.metadata_values, name="metadata_values"),
        )
        record = {
            "project_id": self.project_id,
            "zone": self.zone,
            "instance": self.instance,
            "id": manifest["vm"]["id"],
            "prior_status": status,
            "has_local_ssd": has_local_ssd,
            "local_ssd": self.local_ssd,
            "disks": attached,
            "checked_at": now_iso(),
            "manifest": manifest,
        }
        if self.snapshot_mode == "instant":
            record["snapshot_mode"] = self._instant_mode(record, context)
        self.log.info(
            "VM %s is %s; disks to snapshot: %s%s",
            vm,
            status,
            ", ".join(d["source"] for d in attached if "carried_by" not in d) or "none",
            "".join(
                f"; {d['source']} is snapshotted by {d['carried_by']}'s backup"
                for d in attached
                if "carried_by" in d
            ),
        )
        return record

    def _instant_mode(self, record: dict[str, Any], context: Any) -> str:
        """Instant mode's checks, before any downtime: the disk types (refused, or the VM falls back to
        standard with ``instant_fallback: standard``), leftovers of earlier runs cleaned up, and no disk
        at the 32-instant-snapshot limit. Returns the VM's mode."""
        from gce_vm_backup.backup.instant import precheck_instant
        from gce_vm_backup.runtime.base import RunKey

        if not (self.deployment and self.group):
            raise ConfigError(
                "The parameters 'deployment' and 'group' are required with snapshot_mode 'instant'"
            )
        return precheck_instant(
            self.hook,
            record,
            RunKey.from_context(context, deployment=self.deployment),
            snapshot_mode=self.snapshot_mode,
            instant_fallback=self.instant_fallback,
            deployment=self.deployment,
            group=self.group,
            deadline=time.monotonic() + float(self.instant_timeout),
        )


def confirmed_running(marker: Any, outcome: Any) -> bool:
    """Whether the downtime task's last try brought the VM back and read it RUNNING: it succeeded (its
    result exists, so Airflow kept it: a new try clears a task's XComs), says ``started`` with a
    ``running_at`` time, and its down marker says up. Anything else (a failed or killed try, the outer
    tiers' ``stop_snapshot``, which never starts the VM) needs a fresh read."""
    return (
        isinstance(outcome, dict)
        and outcome.get("started") is True
        and bool(outcome.get("running_at"))
        and isinstance(marker, dict)
        and marker.get("down") is False
    )


class EnsureRunningOperator(ConsoleLinks, ComputeOperator):
    """Bring the VM back if this run stopped it and it is still down (a teardown: it runs whatever failed).

    One instances.get, none when the downtime task succeeded and read the VM RUNNING after its start
    (``confirmed_running``). Starts (or resumes) the VM only when its ``prior_status`` was RUNNING, this run
    stopped it (the ``downtime_task``'s ``stages.DOWN_XCOM_KEY`` marker says down, or its result says
    stopped and not started again) and it is not RUNNING now; a VM that was stopped before the backup,
    or that this run never stopped, is left as it is. The start waits out a stop still shutting down, on
    the worker (long-polls), for at most ``timeout`` + ``stop_timeout`` seconds. Used as ``ensure_running``
    in every tier and as ``start`` in the outer tiers of a tiered group.

    With ``deployment`` (the run's lease holder, lease.py): the run's lease on the VM is given back once the
    VM is RUNNING, or left as it is; a VM this run stopped whose lease another operation holds now is not
    started (LeaseHeldError, retried).

    Returns ``{"vm", "status", "started", "running_at"}`` (``status``: what the VM is at the end).
    Raises OperationTimeoutError (retried: Airflow never retries a sensor timeout, and a VM must not be
    left down by a shutdown slower than the bounds), OperationFailedError when the start failed,
    ResourceNotFoundError when the VM is gone.
    """

    template_fields: Sequence[str] = ("instance_record",)
    instance_record: Any
    downtime_task: str
    timeout: float
    stop_timeout: float
    deployment: str | None

    def __init__(
        self,
        *,
        instance_record: Any,
        downtime_task: str,
        timeout: float = 600,
        stop_timeout: float = 0,
        deployment: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.instance_record = instance_record
        self.downtime_task = downtime_task
        self.timeout = float(timeout)
        self.stop_timeout = float(stop_timeout)
        self.deployment = deployment

    def execute(self, context: Any) -> dict[str, Any]:
        import time

        from gce_vm_backup.backup.downtime import checked_record
        from gce_vm_backup.backup.instance import instance_args, start_vm
        from gce_vm_backup.backup.plan import NO_VM_STATUS, RESTARTABLE, vm_path
        from gce_vm_backup.backup.stages import DOWN_XCOM_KEY
        from gce_vm_backup.runtime.base import RunKey

        record = checked_record(self.instance_record)
        if record["prior_status"] == NO_VM_STATUS:
            return {"vm": "", "status": NO_VM_STATUS, "started": False, "running_at": None}
        vm = vm_path(record)
        result: dict[str, Any] = {"vm": vm, "status": None, "started": False, "running_at": None}
        if record["prior_status"] != RESTARTABLE:
            self.log.info("VM %s was %s before the backup: leaving it as it is", vm, record["prior_status"])
            result["status"] = record["prior_status"]
            return result
        ti = context["ti"]
        marker = ti.xcom_pull(task_ids=self.downtime_task, key=DOWN_XCOM_KEY, map_indexes=ti.map_index)
        outcome = ti.xcom_pull(task_ids=self.downtime_task, map_indexes=ti.map_index)
        stopped_here = (isinstance(marker, dict) and bool(marker.get("down"))) or (
            isinstance(outcome, dict) and bool(outcome.get("stopped")) and not outcome.get("started")
        )
        if confirmed_running(marker, outcome):
            # The downtime try succeeded, and its start ended with a read of RUNNING: no second read, and
            # no Google client loaded on the run's critical path.
            self.log.info("VM %s is RUNNING (read by the downtime task at %s)", vm, outcome["running_at"])
            result["status"] = RESTARTABLE
            return result
        instance = self.hook.get_instance(**instance_args(record))
        result["status"] = status = instance.status
        if status == RESTARTABLE:
            self.log.info("VM %s is RUNNING", vm)
            self._give_back_lease(record, context, instance)
            return result
        if not stopped_here:
            self.log.warning("VM %s is %s, but this run did not stop it: leaving it as it is", vm, status)
            self._give_back_lease(record, context, instance)
            result["not_stopped_by_run"] = True  # the report must not tell on-call to start it blindly
            return result
        self._check_lease(vm, instance, context)
        timeout = self.timeout + self.stop_timeout  # a stop that timed out may still be shutting down
        start_vm(
            self.hook,
            record,
            RunKey.from_context(context, deployment=self.deployment),
            deadline=time.monotonic() + timeout,
            timeout=timeout,
            caller=f"{self.task_id.rsplit('.', 1)[-1]}-",
        )
        result.update(status=RESTARTABLE, started=True, running_at=now_iso())
        self._give_back_lease(record, context)
        return result

    def _holder(self, context: Any) -> Any:
        from gce_vm_backup.runtime.lease import Holder

        if not self.deployment:
            return None
        return Holder.of_context("backup", deployment=self.deployment, context=context)

    def _give_back_lease(self, record: dict[str, Any], context: Any, instance: Any = None) -> None:
        """Remove this run's lease from the VM (lease.release; nothing when it is not this run's)."""
        from gce_vm_backup.backup.instance import instance_args
        from gce_vm_backup.runtime.lease import release_quietly

        holder = self._holder(context)
        if holder is not None:
            release_quietly(self.hook, instance_args(record), holder, instance=instance)

    def _check_lease(self, vm: str, instance: Any, context: Any) -> None:
        """Refuse to start a VM whose lease another operation holds now (it took over after this run's
        lease ran out: the VM is that operation's to bring back). Raises LeaseHeldError (retried)."""
        import time

        from gce_vm_backup.errors import LeaseHeldError
        from gce_vm_backup.runtime.lease import lease_of

        holder, current = self._holder(context), lease_of(instance.labels)
        if holder is None or current is None or current.held_by(holder) or current.expired(time.time()):
            return
        raise LeaseHeldError(
            f"VM {vm} was stopped by this run and is {instance.status}, but {current.describe()} holds it "
            "now: not starting it while that operation runs (a retry looks again)"
        )
