"""Numbers an SRE can alert on: per VM per backup run, a structured log line, Airflow ``Stats`` metrics
and, for a complete READY snapshot set, an Airflow Asset event (docs/metrics.md).

``RunSignalsOperator`` (task ``signals``) runs after every VM task of the run and before ``run_report``,
whatever happened (trigger rule all_done). It reads the run as the report does (``collect_vm_results``,
``build_run_report``; it does not read the VMs' status again), lists the group's snapshots once per project
of the run's VMs to find each VM's newest complete READY set (``report.freshness.VmBackups``, as the
freshness check counts it), then per VM:

- logs one line on the logger ``gce_vm_backup.signals``: ``gce-vm-backup-signal `` then one JSON object
  (``VmSignal.as_json``; fields in ``LOG_FIELDS``);
- sends ``Stats`` gauges and a counter under ``gce_vm_backup.`` (``METRICS``), tagged with the deployment,
  group and VM;
- for a VM whose run made a complete READY set, adds an event to the VM's Asset
  (``gce-vm-backup://<project>/<zone>/<instance>``) through the task's ``AssetAlias`` outlet
  (``context["outlet_events"][alias].add``): Airflow registers events only when the task succeeds, which
  is why this is a task of its own and not the report (that fails the run on any problem).

A dry run emits nothing. The task fails only on a bug: a listing that fails leaves the age unknown
(``null``) and is logged; the report then lists the task when it fails. Imports no Google library.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Asset, AssetAlias, TriggerRule

from gce_vm_backup.backup import stages
from gce_vm_backup.backup.resolve import DRY_RUN_PLAN_KEY
from gce_vm_backup.compute.paths import VmRef
from gce_vm_backup.config.labels import run_label
from gce_vm_backup.report.freshness import VmBackups, set_time
from gce_vm_backup.report.model import build_run_report
from gce_vm_backup.report.task import collect_vm_results, tier_numbers
from gce_vm_backup.restore.sets import SnapshotSet, group_filter, snapshot_sets
from gce_vm_backup.runtime.base import ComputeOperator

LOGGER_NAME = "gce_vm_backup.signals"
LOG_PREFIX = "gce-vm-backup-signal"
EVENT = "vm_backup"
METRIC_PREFIX = "gce_vm_backup."
ASSET_SCHEME = "gce-vm-backup"
SUCCESS, FAILED = "success", "failed"
READY = "READY"

# Each field of the log line, its JSON type and meaning, in the line's order (docs/metrics.md lists the same).
LOG_FIELDS: dict[str, tuple[str, str]] = {
    "event": ("string", f'always "{EVENT}"'),
    "deployment": ("string", "the config's deployment"),
    "group": ("string", "the config group (the backup DAG is gce_vm_backup__<group>)"),
    "dag_id": ("string", "the backup DAG"),
    "run_id": ("string", "the DAG run"),
    "vm": ("string", "the VM's path: projects/<project>/zones/<zone>/instances/<name>"),
    "project": ("string", "the VM's project"),
    "zone": ("string", "the VM's zone"),
    "instance": ("string", "the VM's name"),
    "result": ("string", f'"{SUCCESS}": no problem and a complete READY set; "{FAILED}" otherwise'),
    "downtime_seconds": (
        "integer or null",
        "stop request to RUNNING again; 0 when not stopped; null: unknown",
    ),
    "snapshot_bytes": ("integer", "storage bytes of this run's snapshots of the VM (Compute Engine's count)"),
    "set_id": ("string or null", "this run's snapshot set (the restore's set id); null: no snapshot made"),
    "set_ready": ("boolean", "this run made a complete READY set (the Asset event was added)"),
    "newest_good_set_id": ("string or null", "the VM's newest complete READY set, of any run; null: none"),
    "newest_good_age_seconds": (
        "integer or null",
        "age of that set at the end of the run; null: no such set, or the listing failed",
    ),
    "problems": ("array of strings", "the run report's problems of the VM (empty on success)"),
}

# Each metric, its Stats kind and meaning; every one is tagged deployment, group, vm (METRIC_TAGS).
METRICS: dict[str, tuple[str, str]] = {
    f"{METRIC_PREFIX}downtime_seconds": ("gauge", "the VM's downtime in this run (not sent when unknown)"),
    f"{METRIC_PREFIX}snapshot_bytes": ("gauge", "storage bytes of this run's snapshots of the VM"),
    f"{METRIC_PREFIX}backup_age_seconds": (
        "gauge",
        "age of the VM's newest complete READY set (not sent when there is none or it is unknown)",
    ),
    f"{METRIC_PREFIX}vm_backups": ("counter", "one per VM per run, tagged result=success|failed as well"),
}
METRIC_TAGS = ("deployment", "group", "vm")


def stats_logger() -> Any:
    """Airflow's ``Stats`` object: ``airflow.sdk.observability.stats`` from Airflow 3.2 on (where
    ``airflow.stats`` is a deprecated alias), ``airflow.stats`` on Airflow 3.1. Imported when used."""
    try:
        from airflow.sdk.observability.stats import Stats
    except ImportError:  # Airflow 3.1
        from airflow.stats import Stats
    return Stats


def alias_name(deployment: str, group: str) -> str:
    """The AssetAlias of a group's backup runs (the signals task's outlet)."""
    return f"gce-vm-backup:{deployment}:{group}"


def asset_uri(vm: str) -> str:
    """``gce-vm-backup://<project>/<zone>/<instance>`` of a VM path, each part percent-encoded (a name
    Compute Engine would refuse cannot add a path segment, a query or a fragment)."""
    project, zone, instance = (urllib.parse.quote(part, safe="") for part in vm_parts(vm))
    return f"{ASSET_SCHEME}://{project}/{zone}/{instance}"


def vm_parts(vm: str) -> tuple[str, str, str]:
    """(project, zone, name) of a VM path; a name with a ``/`` in it (no VM has one) stays whole."""
    try:
        ref = VmRef.parse(vm)
    except ValueError:
        _, project, _, zone, _, name = (vm.split("/", 5) + [""] * 6)[:6]
        return project, zone, name
    return ref.project, ref.zone, ref.name


def vm_asset(vm: str) -> Asset:
    """The VM's Asset (its name is its URI)."""
    uri = asset_uri(vm)
    return Asset(name=uri, uri=uri)


@dataclass(frozen=True)
class VmSignal:
    """One VM's numbers of one run (the log line's fields, LOG_FIELDS)."""

    deployment: str
    group: str
    dag_id: str
    run_id: str
    vm: str
    project: str
    zone: str
    instance: str
    result: str
    downtime_seconds: int | None
    snapshot_bytes: int
    set_id: str | None
    set_ready: bool
    newest_good_set_id: str | None
    newest_good_age_seconds: int | None
    problems: tuple[str, ...]
    snapshots: tuple[str, ...] = ()  # this run's snapshot names (the Asset event's extra)
    set_time: str | None = None  # when this run's set was made (the Asset event's extra)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("snapshots"), data.pop("set_time")
        data["problems"] = list(self.problems)
        return {"event": EVENT, **data}

    def line(self) -> str:
        """``gce-vm-backup-signal {...}``: one line (any newline in a value is escaped by JSON)."""
        return f"{LOG_PREFIX} {json.dumps(self.as_json(), ensure_ascii=True)}"

    @property
    def tags(self) -> dict[str, str]:
        return {"deployment": self.deployment, "group": self.group, "vm": self.vm}

    def asset_extra(self) -> dict[str, Any]:
        return {
            "set_id": self.set_id,
            "snapshots": list(self.snapshots),
            "time": self.set_time,
            "vm": self.vm,
            "deployment": self.deployment,
            "group": self.group,
            "run_id": self.run_id,
            "snapshot_bytes": self.snapshot_bytes,
        }


def _own_snapshots(row: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [s for s in row.get("snapshots") or [] if not s.get("carried_by")]


def set_ready(row: Mapping[str, Any]) -> bool:
    """The VM's run made a complete READY set: its snapshot stage (verify, or convert in instant mode)
    succeeded and every snapshot it returned is a READY standard snapshot."""
    tasks = row.get("tasks") or {}
    own = _own_snapshots(row)
    return (
        any(tasks.get(stage) == "success" for stage in stages.SNAPSHOT_STAGES)
        and bool(own)
        and all(s.get("status") == READY and s.get("kind") == "standard" for s in own)
    )


def vm_signals(
    report: Mapping[str, Any],
    *,
    deployment: str,
    group: str,
    sets: Mapping[str, Sequence[SnapshotSet]] | None,
    vm_ids: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> list[VmSignal]:
    """Each VM row of the run report as its signal. ``sets``: the group's snapshot sets by VM path (None:
    the listing failed, ages unknown); ``vm_ids``: each VM's instance id, so that a VM deleted and made
    again under its name is not credited with its predecessor's sets. A dry run has none."""
    if report.get("dry_run"):
        return []
    now = now or datetime.now(UTC)
    this_run = run_label(str(report["dag_id"]), str(report["run_id"]))
    signals = []
    for row in report.get("vms") or []:
        if not row.get("vm"):
            continue
        vm = str(row["vm"])
        project, zone, instance = vm_parts(vm)
        own = _own_snapshots(row)
        ready = set_ready(row)
        made = [str(s["snapshot"]) for s in own if s.get("snapshot")]
        newest_id: str | None = None
        age: int | None = None
        listed_time: str | None = None
        if sets is not None:
            backups = VmBackups(
                group=group,
                vm=vm,
                in_config=True,
                sets=tuple(sets.get(vm, ())),
                checked_at=now,
                period=None,
                stale_before=None,
                vm_id=(vm_ids or {}).get(vm),
            )
            if backups.newest is not None and backups.age is not None:
                newest_id, age = backups.newest.run, max(int(backups.age.total_seconds()), 0)
            listed_time = next((set_time(s).isoformat() for s in backups.own_sets if s.run == this_run), None)
        signals.append(
            VmSignal(
                deployment=deployment,
                group=group,
                dag_id=str(report["dag_id"]),
                run_id=str(report["run_id"]),
                vm=vm,
                project=project,
                zone=zone,
                instance=instance,
                result=SUCCESS if row.get("ok") and ready else FAILED,
                downtime_seconds=row.get("downtime_seconds"),
                snapshot_bytes=sum(int(s.get("storage_bytes") or 0) for s in own),
                set_id=this_run if made else None,
                set_ready=ready,
                newest_good_set_id=newest_id,
                newest_good_age_seconds=age,
                problems=tuple(str(p) for p in row.get("problems") or []),
                snapshots=tuple(made),
                set_time=listed_time or (str(report.get("generated_at")) if ready else None),
            )
        )
    return signals


def send_metrics(stats: Any, signals: Iterable[VmSignal]) -> None:
    """Each VM's gauges and its counter (METRICS), through Airflow's Stats object."""
    for signal in signals:
        tags = signal.tags
        if signal.downtime_seconds is not None:
            stats.gauge(f"{METRIC_PREFIX}downtime_seconds", signal.downtime_seconds, tags=tags)
        stats.gauge(f"{METRIC_PREFIX}snapshot_bytes", signal.snapshot_bytes, tags=tags)
        if signal.newest_good_age_seconds is not None:
            stats.gauge(f"{METRIC_PREFIX}backup_age_seconds", signal.newest_good_age_seconds, tags=tags)
        stats.incr(f"{METRIC_PREFIX}vm_backups", tags={**tags, "result": signal.result})


def add_asset_events(outlet_events: Any, alias: AssetAlias, signals: Iterable[VmSignal]) -> list[str]:
    """An event on each VM's Asset whose run made a complete READY set, through the alias; their URIs."""
    added = []
    for signal in signals:
        if not signal.set_ready:
            continue
        asset = vm_asset(signal.vm)
        outlet_events[alias].add(asset, extra=signal.asset_extra())
        added.append(asset.uri)
    return added


class RunSignalsOperator(ComputeOperator):
    """Log, count and publish each VM's backup of the run (module docstring); returns the log lines'
    objects (XCom).

    :param vm_groups: the ids of the mapped per-VM task groups (tier_1, ...), as the report's.
    :param deployment: the config's deployment; ``group``: the config group.
    Raises ConfigError for bad ``vm_groups`` (at DAG build).
    """

    def __init__(self, *, vm_groups: Sequence[str], deployment: str, group: str, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        kwargs.setdefault("retries", 0)
        self.alias = AssetAlias(name=alias_name(deployment, group))
        kwargs.setdefault("outlets", [self.alias])
        super().__init__(**kwargs)
        self.tiers = tier_numbers(vm_groups)
        self.vm_groups, self.deployment, self.group = list(vm_groups), deployment, group

    def execute(self, context: Any) -> list[dict[str, Any]]:
        ti = context["ti"]
        plan = [
            planned
            for tier in self.tiers.values()
            for planned in ti.xcom_pull(
                task_ids=stages.resolve_task(tier), key=DRY_RUN_PLAN_KEY, default=None
            )
            or []
        ]
        if plan:
            self.log.info("A dry run: no log line, metric or Asset event")
            return []
        vms, other = collect_vm_results(
            ti, dag_id=ti.dag_id, run_id=context["run_id"], vm_groups=self.vm_groups
        )
        report = build_run_report(dag_id=ti.dag_id, run_id=context["run_id"], vms=vms, other_tasks=other)
        records = {
            str(row["vm"]): record
            for vm, row in zip(vms, _rows_by_vm(report, vms), strict=True)
            if row is not None and isinstance(record := vm.values.get(stages.PRECHECK), Mapping)
        }
        vm_ids = {vm: str(record["id"]) for vm, record in records.items() if record.get("id")}
        # The disks attached at backup time: what a set without a manifest (an older backup's) is matched on
        attached = {
            vm: [
                str(d["source"])
                for d in record.get("disks") or []
                if isinstance(d, Mapping) and d.get("source")
            ]
            for vm, record in records.items()
        }
        now = datetime.now(UTC)
        signals = vm_signals(
            report,
            deployment=self.deployment,
            group=self.group,
            sets=self._sets(report, attached),
            vm_ids=vm_ids,
            now=now,
        )
        logger = logging.getLogger(LOGGER_NAME)
        for signal in signals:
            logger.info("%s", signal.line())
        send_metrics(stats_logger(), signals)
        added = add_asset_events(context["outlet_events"], self.alias, signals)
        self.log.info("%d VM(s) signalled; Asset events: %s", len(signals), ", ".join(added) or "none")
        return [signal.as_json() for signal in signals]

    def _sets(
        self, report: Mapping[str, Any], attached: Mapping[str, Sequence[str]] | None = None
    ) -> dict[str, list[SnapshotSet]] | None:
        """The group's snapshot sets by VM path (one listing per project of the run's VMs); None, logged,
        when a listing fails."""
        projects = sorted({vm_parts(str(row["vm"]))[0] for row in report["vms"] if row.get("vm")})
        if not projects:
            return {}
        expression = group_filter(deployment=self.deployment, group=self.group)
        try:
            snapshots = [
                snapshot
                for project in projects
                for snapshot in self.hook.list_snapshots(
                    project_id=project, filter=expression, of=f"group {self.group}"
                )
            ]
        except Exception as exc:  # the numbers of this run still go out, the ages as unknown
            self.log.warning("Backup ages unknown: %s", (str(exc).strip().splitlines() or [repr(exc)])[0])
            return None
        return snapshot_sets(snapshots, group=self.group, deployment=self.deployment, attached=attached)


def _rows_by_vm(report: Mapping[str, Any], vms: Sequence[Any]) -> list[Mapping[str, Any] | None]:
    """The report row of each of ``vms`` (None for a tier's no-VM placeholder, which has none)."""
    rows = {(row["group"], row["map_index"]): row for row in report["vms"]}
    return [rows.get((vm.group, vm.map_index)) for vm in vms]
