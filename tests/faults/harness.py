"""The fault matrix's machinery, shared by tests/faults/test_fault_matrix.py and benchmarks/fault_matrix.py.

One backup group per wait mode (web-1: RUNNING, two disks; batch-1: TERMINATED, found through a label selector, so
instances.list is on the path), retention keep_last 1 over seeded old snapshots, retries 1, poke every
second. Each case injects its fault into a fresh emulator, runs the DAG end to end with ``dag.test()``
and returns an ``Outcome``; ``violations(outcome)`` holds the assertions every case must pass.

Airflow must be configured (AIRFLOW_HOME set) before this module imports it: the pytest conftest does it
for the tests, the benchmark script for itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED
from gce_vm_backup.backup.stages import ENSURE_RUNNING, REPORT, STOP_SNAPSHOT_START, VERIFY, tier_task
from gce_vm_backup.config.labels import managed_snapshot_labels

REPO = Path(__file__).resolve().parents[2]
P, ZONE = "demo-project", "us-central1-a"
WEB, BATCH = f"projects/{P}/zones/{ZONE}/instances/web-1", f"projects/{P}/zones/{ZONE}/instances/batch-1"
WEB_DISK = f"projects/{P}/zones/{ZONE}/disks/web-1"
DATA_DISK = f"projects/{P}/zones/{ZONE}/disks/web-1-data"
BATCH_DISK = f"projects/{P}/zones/{ZONE}/disks/batch-1"
DISKS = (WEB_DISK, DATA_DISK, BATCH_DISK)
GROUP = "fault-matrix"
DAG_IDS = {
    "defer": f"gce_vm_backup__{GROUP}",  # the default wait mode
    "reschedule": f"gce_vm_backup__{GROUP}-reschedule",
    "worker": f"gce_vm_backup__{GROUP}-worker",
}
_GROUP_BODY = """\
    targets:
      - {project: demo-project, zone: us-central1-a, instance: web-1}
      - {project: demo-project, zones: [us-central1-a], labels: {tier: batch}}
    retention: {keep_last: 1}
    timeouts: {stop: 30, snapshot: 60, start: 30, verify: 60}
"""
CONFIG = f"""\
version: 1
deployment: test
defaults:
  start_date: "2026-01-01T00:00:00+00:00"
  poke_interval: 1
  retries: 1
  retry_delay: 0
groups:
  {GROUP}:
    wait_mode: defer
{_GROUP_BODY}
  {GROUP}-reschedule:
    wait_mode: reschedule
{_GROUP_BODY}
  {GROUP}-worker:
    wait_mode: worker
{_GROUP_BODY}"""
# Fast but ordered: simulated time runs 600x (a stop takes 33 ms, a snapshot of the 50 GB disk 40 ms,
# the per-disk snapshot rate limit of 10 simulated minutes 1 s of real time).
TIME_SCALE = 600.0
TIMINGS = {
    "stop": 20.0,
    "start": 20.0,
    "snapshot_creating": 10.0,
    "snapshot_uploading": 5.0,
    "snapshot_uploading_per_gb": 0.2,
    "snapshot_delete": 5.0,
}
# Seeded history: per disk two older snapshots of ours (keep_last 1 lets both go once this run's is
# READY) and, of web-1's boot disk, one made by hand (never ours to delete).
FOREIGN = "hand-made-web-1"


def seeded_snapshots(emulator: Emulator, group: str = GROUP) -> dict[str, dict[str, Any]]:
    """Old snapshots of ``group`` (the DAG's: retention prunes only its own group's) and a hand-made one."""
    now = datetime.fromisoformat(emulator.clock.timestamp())
    seeded: dict[str, dict[str, Any]] = {}
    for disk in DISKS:
        instance = "batch-1" if disk == BATCH_DISK else "web-1"
        for days in (1, 2):
            name = f"old-{disk.rsplit('/', 1)[-1]}-{days}d"
            labels = managed_snapshot_labels(
                deployment="test", group=group, instance=instance, disk_source=disk
            )
            seeded[name] = {"sourceDisk": disk, "labels": labels, "days": days}
    seeded[FOREIGN] = {"sourceDisk": WEB_DISK, "labels": {}, "days": 30}
    for name, spec in seeded.items():
        created = (now - timedelta(days=spec["days"])).astimezone(UTC)
        emulator.seed_snapshot(
            P,
            {
                "name": name,
                "sourceDisk": spec["sourceDisk"],
                "labels": spec["labels"],
                "creationTimestamp": created.isoformat().replace("+00:00", "Z"),
            },
        )
    return seeded


# ---- cases -------------------------------------------------------------------------------------------
Inject = Callable[[Emulator], None]


@dataclass(frozen=True)
class FaultCase:
    """One row of the matrix.

    ``expect_message``: a regex that the failing tasks' error messages must match (searched in the text
    of every failed task's exception); it should name the resource and the cause. ``deletions``:
    "all" (every seeded snapshot of ours is pruned), "none", or "some" (only the rule checks).
    ``vm_after`` overrides the VM states the universal check expects, for the cases where the fault itself
    leaves a VM in another state (a deleted VM, a stop that never finishes).
    """

    id: str
    fault: str  # what is injected, for the table
    inject: Inject
    expect_state: str  # "success" | "failed"
    expect_message: str | None = None
    wait_mode: str = "defer"  # defer (the default), reschedule or worker: one DAG each
    deletions: str | tuple[str, ...] = "all"  # "all", "none", "some" or the disks whose old ones go
    vm_after: dict[str, str | None] = field(default_factory=dict)
    max_stop_operations: int | None = None  # 1: a re-sent stop adopted the first operation
    max_insert_operations: int | None = None  # per disk; 1: a re-sent insert adopted the first one
    no_calls: tuple[str, ...] = ()  # API methods the run must not call at all
    sensor_timeouts: dict[str, float] = field(default_factory=dict)  # task -> seconds (in-memory DAG)
    timings: dict[str, float] = field(default_factory=dict)  # emulator timings over TIMINGS
    check_report: bool = False  # also assert that the run report tells the truth about web-1
    xfail: str | None = None  # a bug this case reveals; the test is xfail(strict=True)
    note: str = ""


@dataclass
class Outcome:
    case: FaultCase
    dag_id: str
    run_id: str
    state: str
    task_states: dict[tuple[str, int], str | None]
    vms_before: dict[str, str | None]
    vms_after: dict[str, str | None]
    seeded: dict[str, dict[str, Any]]
    snapshots_after: list[dict[str, Any]]
    deleted: list[str]  # snapshot names this run deleted
    new_snapshots: dict[str, list[str]]  # disk path -> names of snapshots made by this run (still there)
    insert_operations: dict[str, int]  # disk path -> snapshot insert operations created (by snapshot name)
    stop_operations: int
    messages: list[str]  # error text of every failed task attempt
    report: dict[str, Any] | None
    seconds: float
    calls: dict[str, int]  # API method -> calls (any status)

    def failure_messages(self) -> list[str]:
        """Distinct error texts, in order."""
        return list(dict.fromkeys(self.messages))


# ---- running ---------------------------------------------------------------------------------------
def write_dags(home: Path) -> Path:
    """The DAG file and this matrix's config in a dags subfolder of its own; returns the folder. Other
    subfolders go: dag.test() parses the whole dags folder before every run (see only_dags_folder)."""
    folder = home / "dags" / "faults"
    only_dags_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dags" / "gce_vm_backup_dags.py", folder)
    (folder / "gce_vm_backup.yaml").write_text(CONFIG)
    return folder


def only_dags_folder(folder: Path) -> None:
    """Remove the siblings of ``folder`` (another test module's DAG file and config) from the dags folder.

    dag.test() re-parses and re-serializes every DAG file of the dags folder before each run, so each
    test module's DAGs would slow down every later module's runs in the same process. A module's
    fixture rewrites its folder whenever pytest sets it up again.
    """
    if folder.parent.is_dir():
        for sibling in folder.parent.iterdir():
            if sibling != folder and sibling.is_dir():
                shutil.rmtree(sibling)


def migrate_db() -> None:
    """``airflow db migrate`` of the configured home's SQLite DB (a subprocess)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ
    )


def prepare_airflow(home: Path, migrate: Callable[[], None] = migrate_db) -> Any:
    """Write the DAGs, migrate the SQLite DB (``migrate``: the tests pass their once-per-process
    migration), return a DagBag of the folder."""
    folder = write_dags(home)
    migrate()
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag

    bag = DagBag(str(folder))
    if bag.import_errors:
        raise RuntimeError(f"the fault matrix's DAGs do not import: {bag.import_errors}")
    return bag


@contextmanager
def fast_hook_retries() -> Iterator[None]:
    """The hook's tenacity waits shrunk (attempts and the overall bound unchanged) for test speed."""
    from gce_vm_backup.compute.hook import ComputeBackupHook

    defaults = ComputeBackupHook.__init__.__kwdefaults__
    saved = dict(defaults)
    defaults.update(retry_initial=0.01, retry_max=0.05)
    try:
        yield
    finally:
        defaults.clear()
        defaults.update(saved)


# Control flow, not errors: a sensor's reschedule, a deferral.
_NOT_ERRORS = frozenset({"AirflowRescheduleException", "TaskDeferred"})


@contextmanager
def _captured_errors() -> Iterator[list[str]]:
    """The exception of every failed task try while a DAG runs, as "task[map index]: Type: message".

    dag.test runs each task in this process through the task runner's ``_execute_task``; wrapping it sees
    the very exception the task failed with (the task log prints the same text through structlog).
    """
    from airflow.sdk.execution_time import task_runner

    original = task_runner._execute_task
    found: list[str] = []

    def execute_task(context: Any, ti: Any, log: Any) -> Any:
        try:
            return original(context=context, ti=ti, log=log)
        except BaseException as exc:
            if type(exc).__name__ not in _NOT_ERRORS:
                found.append(f"{ti.task_id}[{ti.map_index}]: {type(exc).__name__}: {exc}")
            raise

    task_runner._execute_task = execute_task
    try:
        yield found
    finally:
        task_runner._execute_task = original


@contextmanager
def quiet_output() -> Iterator[None]:
    """Swallow what the DAG runs print (fd level: Airflow's task logs go to stdout through structlog)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


# Where each bound of the config lives on the in-memory DAG: config key -> [(task stage, attribute)].
BOUNDS = {
    "stop": [(STOP_SNAPSHOT_START, "stop_timeout"), (ENSURE_RUNNING, "stop_timeout")],
    "snapshot": [(STOP_SNAPSHOT_START, "snapshot_timeout")],
    "start": [(STOP_SNAPSHOT_START, "start_timeout"), (ENSURE_RUNNING, "timeout")],
    "verify": [(VERIFY, "timeout")],
}
FAST_POLL = 0.02  # seconds between reads of a VM or snapshot with no operation to long-poll (1 s)
POKE_INTERVAL = 0.2  # seconds; the config's minimum is 1
LOOP_SLEEP = 0.1  # dag.test sleeps 1 s whenever every unfinished task waits for its reschedule
TRIGGER_STEP = 0.05  # the deferral's DateTimeTrigger sleeps 1 s at a time until its moment


class _FineAsyncio:
    """``asyncio`` as the temporal triggers' module sees it, with sleeps of at most TRIGGER_STEP: the
    trigger still fires at its moment (it re-checks the clock after each sleep), within 50 ms of it
    instead of up to a second after (a defer-mode poke waits POKE_INTERVAL, then slept a whole second)."""

    def __getattr__(self, name: str) -> Any:
        import asyncio

        return getattr(asyncio, name)

    @staticmethod
    async def sleep(delay: float, result: Any = None) -> Any:
        import asyncio

        return await asyncio.sleep(min(delay, TRIGGER_STEP), result)


@contextmanager
def fine_trigger_sleeps() -> Iterator[None]:
    """Test speed: the built-in temporal trigger (the deferral every defer-mode poke uses) checks its
    moment every TRIGGER_STEP seconds instead of every second. Its logic is unchanged."""
    from airflow.providers.standard.triggers import temporal

    saved = temporal.asyncio
    temporal.asyncio = _FineAsyncio()  # type: ignore[assignment]
    try:
        yield
    finally:
        temporal.asyncio = saved


@contextmanager
def _patched_dag(dag: Any, timeouts: dict[str, float]) -> Iterator[None]:
    """Test speed on the in-memory DAG that dag.test runs: verify pokes every POKE_INTERVAL seconds (the
    config allows >= 1), ``timeouts`` (config key of ``timeouts`` -> seconds, see BOUNDS) shorten the
    bounds (the config allows >= 30), reads with no operation to long-poll come every FAST_POLL seconds,
    and dag.test's idle loop sleeps LOOP_SLEEP instead of 1 s. The operators' logic is unchanged.
    """
    import airflow.sdk.definitions.dag as dag_module

    from gce_vm_backup.backup import capture as snapshot_ops
    from gce_vm_backup.backup import instance as instance_ops

    saved: dict[tuple[str, str], Any] = {}

    def patch(stage: str, attribute: str, value: Any) -> None:
        task = dag.task_dict[tier_task(1, stage)]
        saved.setdefault((stage, attribute), getattr(task, attribute))
        setattr(task, attribute, value)

    patch(VERIFY, "poke_interval", POKE_INTERVAL)
    patch(STOP_SNAPSHOT_START, "cap_poll", POKE_INTERVAL)
    for key, seconds in timeouts.items():
        for stage, attribute in BOUNDS[key]:
            patch(stage, attribute, seconds)
    polls = instance_ops.POLL, snapshot_ops.POLL
    instance_ops.POLL = snapshot_ops.POLL = FAST_POLL
    real_sleep = time.sleep  # dag.test does `import time` inside the function: patch the module

    def sleep(seconds: float) -> None:
        caller = sys._getframe(1)
        if caller.f_code.co_name == "test" and caller.f_globals.get("__name__") == dag_module.__name__:
            seconds = min(seconds, LOOP_SLEEP)
        real_sleep(seconds)

    time.sleep = sleep  # type: ignore[assignment]
    try:
        yield
    finally:
        time.sleep = real_sleep  # type: ignore[assignment]
        instance_ops.POLL, snapshot_ops.POLL = polls
        for (stage, attribute), value in saved.items():
            setattr(dag.task_dict[tier_task(1, stage)], attribute, value)


def run_case(dagbag: Any, case: FaultCase) -> Outcome:
    """Run one case end to end in a fresh emulator and collect what happened."""
    dag = dagbag.get_dag(DAG_IDS[case.wait_mode])
    with Emulator(DEMO_SEED, time_scale=TIME_SCALE, timings={**TIMINGS, **case.timings}) as emu:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emu.url}}
        os.environ["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"] = json.dumps(connection)
        seeded = seeded_snapshots(emu, group=dag.dag_id.removeprefix("gce_vm_backup__"))
        vms_before = {vm: _status(emu, vm) for vm in (WEB, BATCH)}
        case.inject(emu)
        started = time.monotonic()
        try:
            with (
                fast_hook_retries(),
                _patched_dag(dag, case.sensor_timeouts),
                fine_trigger_sleeps(),
                _captured_errors() as messages,
            ):
                run = dag.test(run_conf={"vms": [], "dry_run": False})
        finally:
            os.environ.pop("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", None)
        seconds = time.monotonic() - started
        emu.faults.clear()
        vms_after = {vm: _status(emu, vm) for vm in (WEB, BATCH)}
        snapshots = emu.snapshots(P)
        names = {s["name"] for s in snapshots}
        new: dict[str, list[str]] = {disk: [] for disk in DISKS}
        for snapshot in snapshots:
            if snapshot["name"] not in seeded:
                new.setdefault(_path(snapshot.get("sourceDisk", "")), []).append(snapshot["name"])
        inserts: dict[str, set[str]] = {disk: set() for disk in DISKS}
        stop_ops = 0
        with emu.world.lock:
            operations = list(emu.world.operations.values())
        for op in operations:
            if op.operation_type in ("insert", "createSnapshot"):
                disk = _disk_of_snapshot_name(op.target.rsplit("/", 1)[-1])
                inserts.setdefault(disk, set()).add(op.name)
            if op.operation_type == "stop" and op.target == WEB:
                stop_ops += 1
        calls: dict[str, int] = {}
        for call in emu.calls:
            calls[call.method] = calls.get(call.method, 0) + 1
        return Outcome(
            case=case,
            dag_id=dag.dag_id,
            run_id=run.run_id,
            state=str(run.state),
            task_states={(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()},
            vms_before=vms_before,
            vms_after=vms_after,
            seeded=seeded,
            snapshots_after=snapshots,
            deleted=sorted(set(seeded) - names),
            new_snapshots=new,
            insert_operations={disk: len(ops) for disk, ops in inserts.items()},
            stop_operations=stop_ops,
            messages=messages,
            report=_xcom(run, REPORT, key="run_report"),
            seconds=seconds,
            calls=calls,
        )


def _path(url: str) -> str:
    index = url.find("projects/")
    return url[index:] if index >= 0 else url


def _disk_of_snapshot_name(name: str) -> str:
    """This run's snapshot names start with <instance>-<disk part>-us-central1-a-<timestamp>."""
    for disk in (DATA_DISK, WEB_DISK, BATCH_DISK):  # longest prefix first: web-1-data before web-1
        if name.startswith(f"{disk.rsplit('/', 1)[-1]}-{ZONE}-"):
            return disk
    return name


def _status(emu: Emulator, vm: str) -> str | None:
    parts = vm.split("/")
    try:
        return str(emu.instance(parts[1], parts[3], parts[5])["status"])
    except Exception:  # the emulator raises ApiError(404) for a deleted VM
        return None


def _xcom(run: Any, task_id: str, key: str = "return_value") -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=run.run_id, key=key, dag_ids=run.dag_id, task_ids=task_id)
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


# ---- the universal assertions --------------------------------------------------------------------
def violations(outcome: Outcome) -> list[str]:
    """Everything wrong with an outcome; [] when the case behaved. The assertions of every case."""
    case, problems = outcome.case, []
    if outcome.state != case.expect_state:
        problems.append(f"run state {outcome.state}, expected {case.expect_state}")
    expected_vms = {**outcome.vms_before, **case.vm_after}
    for vm, before in outcome.vms_before.items():
        after, want = outcome.vms_after[vm], expected_vms[vm]
        if after != want:
            problems.append(
                f"{vm.rsplit('/', 1)[-1]} was {before}, is {after} after the run (expected {want})"
            )
    for disk, names in outcome.new_snapshots.items():
        if len(names) > 1:
            problems.append(f"duplicate snapshots of {disk}: {sorted(names)}")
    ready_new = {
        _path(s.get("sourceDisk", ""))
        for s in outcome.snapshots_after
        if s["name"] not in outcome.seeded and s["status"] == "READY"
    }
    for name in outcome.deleted:
        spec = outcome.seeded[name]
        if not spec["labels"]:
            problems.append(f"deleted {name}, a snapshot gce-vm-backup did not make")
        elif spec["sourceDisk"] not in ready_new:
            problems.append(f"deleted {name} although this run has no READY snapshot of {spec['sourceDisk']}")
    if case.deletions != "some":
        disks = DISKS if case.deletions == "all" else () if case.deletions == "none" else case.deletions
        expected = sorted(
            name for name, spec in outcome.seeded.items() if spec["labels"] and spec["sourceDisk"] in disks
        )
        if outcome.deleted != expected:
            problems.append(
                f"retention deleted {outcome.deleted or 'nothing'}, expected {expected or 'nothing'}"
            )
    if case.max_stop_operations is not None and outcome.stop_operations > case.max_stop_operations:
        problems.append(f"{outcome.stop_operations} stop operations of web-1 (the retry did not adopt)")
    if case.max_insert_operations is not None:
        for disk, count in outcome.insert_operations.items():
            if count > case.max_insert_operations:
                problems.append(f"{count} snapshot insert operations for {disk} (the retry did not adopt)")
    if outcome.vms_before[WEB] == "RUNNING" and outcome.vms_after[WEB] != "RUNNING":
        check = report_check(outcome)  # the fault left web-1 down: the run report must say so
        if check in ("no report", "web-1 missing", "misses that web-1 is not RUNNING", FIRST_LINE):
            problems.append(f"web-1 is {outcome.vms_after[WEB]} but the run report {check}")
    if case.check_report and report_check(outcome) != "ok":
        problems.append(f"run report: {report_check(outcome)}")
    for method in case.no_calls:
        if outcome.calls.get(method):
            problems.append(f"{method} was called {outcome.calls[method]} time(s)")
    if case.expect_state == "success" and outcome.state == "success":
        for disk in DISKS:
            if disk not in ready_new:
                problems.append(f"no READY snapshot of {disk} after a successful run")
    if case.expect_message is not None:
        pattern = re.compile(case.expect_message, re.S)
        if not any(pattern.search(text) for text in outcome.messages):
            problems.append(
                f"no failed task's error matches /{case.expect_message}/; errors: "
                + (" || ".join(excerpt(t, 300) for t in outcome.failure_messages()) or "none")
            )
    return problems


def excerpt(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def report_check(outcome: Outcome) -> str:
    """Does the run report tell the truth about web-1? 'ok', or what it gets wrong (for the table)."""
    report = outcome.report
    if report is None:
        return "no report"
    rows = {str(row.get("vm")): row for row in report.get("vms", [])}
    web = rows.get(WEB)
    if web is None:
        return "web-1 missing"
    flagged = bool(web.get("down"))  # the report read web-1's status after its start did not succeed
    running = outcome.vms_after[WEB] == "RUNNING"
    if flagged and running:
        return f"stale: flags web-1 as maybe down, but it is RUNNING (start {web['tasks'].get('start')})"
    if not flagged and not running and outcome.vms_before[WEB] == "RUNNING":
        return "misses that web-1 is not RUNNING"
    if flagged and not _first_line(report).startswith((f"VM DOWN: {WEB} ", f"VM MAY BE DOWN: {WEB}: ")):
        return FIRST_LINE
    unexplained = [problem for problem in web["problems"] if "no error was recorded" in problem]
    if unexplained:
        return f"gives no cause for: {'; '.join(unexplained)}"
    if report["status"] != outcome.state:
        return f"report status {report['status']}, run {outcome.state}"
    return "ok"


FIRST_LINE = "does not name web-1 as down in its first line"


def _first_line(report: dict[str, Any]) -> str:
    """The first line of the report as the report task logs it (and the notification leads with)."""
    from gce_vm_backup.report.text import format_report

    return format_report(report).splitlines()[0]
