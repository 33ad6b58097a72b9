"""The restore DAG's tasks (trigger form): plan -> choose -> new-vm: new_vm_disks -> create_vm, or
replace-disks: approve -> create_disks -> stop -> swap_disks -> start; ensure_vm (teardown of the plan)
and restore_report (all done) whatever happened.

Every step converges (observe, act with a request id, observe): a retry or a worker killed mid-step
continues where the last try stopped. The old disks of a replace-disks run are detached, labelled
``gce-vm-backup-replaced-by=<run hash>`` and never deleted. ``ensure_vm`` makes sure the VM is never
left without a boot disk, nor stopped by this run: with no boot disk it re-attaches the old one, and a
VM this run stopped is started again. ``restore_report``'s first line says the VM's exact state.
The restore report and the plan's checks live in restore_plan.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gce_vm_backup.compute.paths import DiskRef, VmRef
from gce_vm_backup.errors import BackupError, ResourceNotFoundError
from gce_vm_backup.restore.base import RestoreTask, iso, now
from gce_vm_backup.restore.steps import (
    REPLACED_BY_KEY,
    RESTORE_KEY,
    build_instance,
    ensure_disk,
    ensure_instance,
    wait_for_status,
)

STOPPED = frozenset({"TERMINATED"})
# How long a replace-disks restore's lease on the VM lasts from its stop (lease.py): the stop, then the
# swap, the start and ensure_vm (each bounded by at most the restore's step timeout), with their retries.
RESTORE_LEASE_STEPS = 4 * 1800.0
LEASE_WAIT = 1800.0  # seconds the stop waits for another operation's lease on the VM (a backup's downtime)
PLAN_TASK_ID = "plan"
STOP_TASK_ID = "stop"
SWAP_TASK_ID = "swap_disks"


def attached_by_device(instance: Any) -> dict[str, Any]:
    return {disk.device_name: disk for disk in instance.disks}


def source_path(source: str) -> str:
    return source[source.find("projects/") :]


class _PlannedStep(RestoreTask):
    """A step of a restore run: takes the plan (the plan task's XCom) and a step timeout."""

    template_fields = ("plan",)
    plan: Any
    timeout: float
    poll_interval: float

    def __init__(self, *, plan: Any, timeout: float = 1800, poll_interval: float = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.timeout = float(timeout)
        self.poll_interval = float(poll_interval)

    def labels(self) -> dict[str, str]:
        return self.scope_labels(RESTORE_KEY, self.plan["run_hash"])

    def vm_args(self) -> dict[str, str]:
        return {"project_id": self.plan["project"], "zone": self.plan["zone"]}

    def wait_status(
        self, *, name: str, wanted: frozenset[str] | set[str], timeout: float, poll: float
    ) -> Any:
        """The VM once its status is one of ``wanted``; OperationTimeoutError after ``timeout``."""
        return wait_for_status(
            self.hook,
            project=self.plan["project"],
            zone=self.plan["zone"],
            name=name,
            wanted=wanted,
            timeout=timeout,
            poll=poll,
        )


class CreateRestoreDisksOperator(_PlannedStep):
    """Make every disk of the plan from its snapshot (zonal in the VM's zone, regional in its region with
    the same replica zones; of the disk type the plan gives, if any), or adopt it. Returns the new disks'
    paths."""

    def execute(self, context: Any) -> list[str]:
        run_key = self.run_key(context)
        made = []
        for disk in self.plan["disks"]:
            self.failure_subject = f"create disk {disk['new_source']} from {disk['source_snapshot']}"
            location = {"region": disk["location"]} if disk["regional"] else {"zone": disk["location"]}
            ensure_disk(
                self.hook,
                project=self.plan["project"],
                name=disk["new_name"],
                source_snapshot=disk["source_snapshot"],
                labels=self.labels(),
                request_id=run_key.request_id(disk["new_source"], "insert"),
                timeout=self.timeout,
                replica_zones=disk.get("replica_zones"),
                disk_type=disk.get("disk_type"),
                **location,
            )
            made.append(disk["new_source"])
        return made


class CreateRestoredVmOperator(_PlannedStep):
    """new-vm: a VM beside the original, named ``plan["new_vm"]["name"]``, with the restored disks, the
    original's (or the form's) machine type and network, no external IP; waits until it is RUNNING.

    A VM that no longer exists is rebuilt (``new_vm["rebuilt"]``) with everything the plan took from its
    manifest: network interfaces (no external IP), service accounts, scheduling, network tags, metadata
    (the keys with a value) and labels, beside this run's own labels."""

    def execute(self, context: Any) -> dict[str, Any]:
        new_vm = self.plan["new_vm"]
        project, zone = self.plan["project"], self.plan["zone"]
        rebuilt: dict[str, Any] = {}
        if new_vm.get("rebuilt"):
            rebuilt = {
                key: new_vm[key]
                for key in ("network_interfaces", "service_accounts", "scheduling", "tags", "metadata")
            }
        instance = build_instance(
            project=project,
            zone=zone,
            name=new_vm["name"],
            machine_type=new_vm["machine_type"],
            disks=[
                {
                    "source": d["new_source"],
                    "device_name": d["device_name"],
                    "boot": d["boot"],
                    "mode": d["mode"],
                }
                for d in self.plan["disks"]
            ],
            labels={**(new_vm.get("labels") or {}), **self.labels()},
            network=new_vm.get("network"),
            subnetwork=new_vm.get("subnetwork"),
            **rebuilt,
        )
        path = VmRef(project, zone, new_vm["name"]).path
        self.failure_subject = f"create VM {path}"
        ensure_instance(
            self.hook,
            project=project,
            zone=zone,
            instance=instance,
            request_id=self.run_key(context).request_id(path, "insert"),
            timeout=self.timeout,
            owner_labels=self.labels(),
        )
        wait_for_status(
            self.hook,
            project=project,
            zone=zone,
            name=new_vm["name"],
            wanted={"RUNNING"},
            timeout=self.timeout,
            poll=self.poll_interval,
        )
        return {"vm": path, "running_at": iso(now())}


def lease_vm(plan: Mapping[str, Any]) -> dict[str, str]:
    return {"project_id": plan["project"], "zone": plan["zone"], "name": plan["instance"]}


class _LeasedStep(_PlannedStep):
    """A replace-disks step that acts on the VM under the restore run's lease (lease.py)."""

    lease_wait: float

    def __init__(self, *, lease_wait: float = LEASE_WAIT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lease_wait = float(lease_wait)

    def holder(self, context: Any) -> Any:
        from gce_vm_backup.runtime.lease import Holder

        return Holder.of_context("restore", deployment=self.deployment, context=context)

    def take_lease(self, context: Any) -> Any:
        """Take (or extend) the run's lease on the VM; waits up to ``lease_wait`` seconds for another
        operation's. Returns lease.Taken (the VM as read); raises LeaseHeldError naming the holder."""
        from gce_vm_backup.runtime.lease import LEASE_MARGIN, acquire

        self.failure_subject = f"lease on VM {self.plan['vm']}"
        taken = acquire(
            self.hook,
            lease_vm(self.plan),
            self.holder(context),
            duration=self.timeout + RESTORE_LEASE_STEPS + LEASE_MARGIN,
            wait=self.lease_wait,
            poll=max(self.poll_interval, 1.0),
        )
        self.failure_subject = None
        return taken


class StopForRestoreOperator(_LeasedStep):
    """replace-disks: take the VM's lease (waiting up to ``lease_wait`` seconds for a backup's), then stop
    the VM (observe first: a stopped VM is left as it is). Returns ``{"stopped": bool, "at"}``: whether
    this run stopped it. The lease stays until ensure_vm."""

    def execute(self, context: Any) -> dict[str, Any]:
        name = self.plan["instance"]
        instance = self.take_lease(context).instance
        stopped = False
        if instance.status == "RUNNING":
            operation = self.hook.stop_instance(
                **self.vm_args(),
                name=name,
                request_id=self.run_key(context).request_id(self.plan["vm"], "stop"),
            )
            self.hook.wait_operation(operation, timeout=self.timeout)
            stopped = True
        elif instance.status not in STOPPED | {"STOPPING", "PENDING_STOP"}:
            raise BackupError(
                f"VM {self.plan['vm']} is {instance.status}: the restore stops only a RUNNING VM"
            )
        else:
            stopped = instance.status != "TERMINATED" or self.plan["prior_status"] == "RUNNING"
        self.wait_status(
            name=name,
            wanted=STOPPED,
            timeout=self.timeout,
            poll=self.poll_interval,
        )
        return {"stopped": stopped, "at": iso(now())}


class SwapDisksOperator(_PlannedStep):
    """replace-disks: per disk of the plan, label the old disk ``gce-vm-backup-replaced-by=<run hash>``,
    detach it, attach the new one under the same device name, boot flag and mode. Each disk is observed
    first (new one attached: done; old one attached: swap; neither: attach the new one), so a retry after a
    killed worker finishes the swap. The VM must be TERMINATED (it is checked). Returns the swapped
    device names."""

    def execute(self, context: Any) -> dict[str, Any]:
        name, run_key = self.plan["instance"], self.run_key(context)
        instance = self.hook.get_instance(**self.vm_args(), name=name)
        if instance.status not in STOPPED:
            raise BackupError(
                f"VM {self.plan['vm']} is {instance.status}; disks are swapped only when it is stopped"
            )
        swapped = []
        # The boot disk last: a VM is without its boot disk for as short a time as possible.
        for disk in sorted(self.plan["disks"], key=lambda d: d["boot"]):
            device = disk["device_name"]
            self.failure_subject = f"swap disk {device} of {self.plan['vm']}"
            current = attached_by_device(self.hook.get_instance(**self.vm_args(), name=name)).get(device)
            if current is not None and source_path(current.source) == disk["new_source"]:
                continue
            if current is not None:
                if source_path(current.source) != disk["old_source"]:
                    raise BackupError(
                        f"Device {device} of {self.plan['vm']} holds {source_path(current.source)}, not the "
                        f"planned {disk['old_source']}: the VM changed since the plan; "
                        "nothing more was swapped"
                    )
                self._label_old(disk, run_key)
                operation = self.hook.detach_disk(
                    **self.vm_args(),
                    instance=name,
                    device_name=device,
                    request_id=run_key.request_id(disk["old_source"], "detach"),
                )
                self.hook.wait_operation(operation, timeout=self.timeout)
                self.detached(disk)
            self._attach(disk, run_key)
            swapped.append(device)
        return {"swapped": swapped, "old_disks": [d["old_source"] for d in self.plan["disks"]]}

    def detached(self, disk: Mapping[str, Any]) -> None:
        """Called right after an old disk is detached (a seam for the killed-worker tests)."""
        self.log.info("Detached %s (device %s)", disk["old_source"], disk["device_name"])

    def _label_old(self, disk: Mapping[str, Any], run_key: Any) -> None:
        project = self.plan["project"]
        old_disk = DiskRef.parse(disk["old_source"])
        where = old_disk.where
        old = self.hook.get_disk(project_id=project, name=old_disk.name, **where)
        if old is None or dict(old.labels or {}).get(REPLACED_BY_KEY) == self.plan["run_hash"]:
            return
        operation = self.hook.set_disk_labels(
            project_id=project,
            name=old.name,
            labels={**dict(old.labels or {}), REPLACED_BY_KEY: self.plan["run_hash"]},
            label_fingerprint=old.label_fingerprint,
            request_id=run_key.request_id(disk["old_source"], "setLabels"),
            **where,
        )
        self.hook.wait_operation(operation, timeout=self.timeout)

    def _attach(self, disk: Mapping[str, Any], run_key: Any, *, source: str | None = None) -> None:
        attach(self.hook, self.plan, disk, source or disk["new_source"], run_key, self.timeout)


def attach(
    hook: Any, plan: Mapping[str, Any], disk: Mapping[str, Any], source: str, run_key: Any, timeout: float
) -> None:
    """Attach ``source`` to the plan's VM as ``disk``'s device (same name, boot flag and mode)."""
    from google.cloud import compute_v1

    attached = compute_v1.AttachedDisk(
        source=source,
        device_name=disk["device_name"],
        boot=bool(disk["boot"]),
        mode=disk["mode"],
        auto_delete=False,
        type_="PERSISTENT",
    )
    operation = hook.attach_disk(
        project_id=plan["project"],
        zone=plan["zone"],
        instance=plan["instance"],
        attached_disk=attached,
        request_id=run_key.request_id(source, f"attach-{disk['device_name']}"),
    )
    hook.wait_operation(operation, timeout=timeout)


class StartAfterRestoreOperator(_LeasedStep):
    """replace-disks: start the VM when it was RUNNING before the restore, wait until RUNNING. The run's
    lease is extended first: a VM whose lease another operation took over (this run's ran out) is not
    started (LeaseHeldError after ``lease_wait`` seconds)."""

    def execute(self, context: Any) -> dict[str, Any]:
        name = self.plan["instance"]
        if self.plan["prior_status"] != "RUNNING":
            return {"started": False, "running_at": None}
        instance = self.take_lease(context).instance
        if instance.status == "TERMINATED":
            operation = self.hook.start_instance(
                **self.vm_args(),
                name=name,
                request_id=self.run_key(context).request_id(self.plan["vm"], "start"),
            )
            self.hook.wait_operation(operation, timeout=self.timeout)
        self.wait_status(
            name=name,
            wanted={"RUNNING"},
            timeout=self.timeout,
            poll=self.poll_interval,
        )
        return {"started": True, "running_at": iso(now())}


class EnsureVmOperator(_LeasedStep):
    """Teardown of the plan (runs whatever failed): for a replace-disks run that stopped the VM, a VM with
    no boot disk gets its old boot disk back, and a VM this run stopped is started again and waited for;
    then the run's lease on the VM is given back. The stop task "ran" when it left a result or a recorded
    failure (other than a refusal for another operation's lease), or when the VM carries this run's lease
    (the stop takes it before its stop request: a stop task killed, or failed without a record, may have
    stopped the VM). A VM whose lease another operation holds now is not touched (LeaseHeldError after
    ``lease_wait`` seconds, retried). Returns ``{"actions": [...], "status"}``; does nothing for other
    runs."""

    def execute(self, context: Any) -> dict[str, Any]:
        plan = self.plan
        if plan.get("dry_run") or plan.get("mode") != "replace-disks":
            return {"actions": [], "status": None}
        ti = context["ti"]
        from gce_vm_backup.runtime.base import ERROR_XCOM_KEY

        stop = ti.xcom_pull(task_ids=STOP_TASK_ID)
        stop_error = ti.xcom_pull(task_ids=STOP_TASK_ID, key=ERROR_XCOM_KEY)
        # A stop refused for another operation's lease changed nothing: nothing to undo.
        refused = isinstance(stop_error, dict) and stop_error.get("error") == "LeaseHeldError"
        stop_ran = stop is not None or (stop_error is not None and not refused)
        name, actions = plan["instance"], []
        try:
            instance = self.hook.get_instance(**self.vm_args(), name=name)
        except ResourceNotFoundError:
            return {"actions": [], "status": "NOT_FOUND"}
        from gce_vm_backup.runtime.lease import lease_of, release_quietly

        holder, lease = self.holder(context), lease_of(instance.labels)
        leased = lease is not None and lease.held_by(holder)
        if not (stop_ran or leased):
            return {"actions": [], "status": instance.status}
        if not leased:
            self.take_lease(context)  # a stop that failed before its lease, or a lease that ran out
        if instance.status in STOPPED:
            # A swap cut short leaves a device empty: its old disk goes back (the boot disk first), so the
            # VM never stays without a boot disk and every device holds its old or its new disk.
            by_device = attached_by_device(instance)
            for disk in sorted(plan["disks"], key=lambda d: not d["boot"]):
                if disk["device_name"] in by_device or (disk["boot"] and any(d.boot for d in instance.disks)):
                    continue
                self.failure_subject = f"re-attach the old disk {disk['old_source']}"
                attach(self.hook, plan, disk, disk["old_source"], self.run_key(context), self.timeout)
                actions.append(f"re-attached the old disk {disk['old_source']} as {disk['device_name']}")
        if plan["prior_status"] == "RUNNING":
            instance = self.hook.get_instance(**self.vm_args(), name=name)
            if instance.status in STOPPED | {"STOPPING", "PENDING_STOP"}:
                self.wait_status(
                    name=name,
                    wanted=STOPPED,
                    timeout=self.timeout,
                    poll=self.poll_interval,
                )
                self.failure_subject = f"start VM {plan['vm']}"
                operation = self.hook.start_instance(
                    **self.vm_args(),
                    name=name,
                    request_id=self.run_key(context).request_id(plan["vm"], "ensure-start"),
                )
                self.hook.wait_operation(operation, timeout=self.timeout)
                actions.append("started the VM")
            instance = self.wait_status(
                name=name,
                wanted={"RUNNING"},
                timeout=self.timeout,
                poll=self.poll_interval,
            )
        if release_quietly(self.hook, lease_vm(plan), holder):
            actions.append("gave back the lease on the VM")
        for action in actions:
            self.log.info("ensure_vm: %s", action)
        return {"actions": actions, "status": instance.status}
