"""The fault matrix as data: every case the pytest module asserts and the benchmark script tabulates.

Expected messages are regexes over the failed tasks' exception texts; each names the resource (VM, disk
or snapshot path) and the cause (HTTP status, operation error code, timeout, state).
"""

from __future__ import annotations

from gce_emulator import Emulator

from .harness import DISKS, WEB, ZONE, FaultCase, P
from .harness import TIME_SCALE as TIME_SCALE_OF_MATRIX

VM = f"projects/{P}/zones/{ZONE}/instances"
SNAP = f"projects/{P}/global/snapshots"
DISK = f"projects/{P}/zones/{ZONE}/disks"
REPEATEDLY = 1000  # more than every retry (5 hook attempts x task tries) can absorb
HOOK_ATTEMPTS = 5  # ComputeBackupHook's tenacity attempts: this many failures fail one task try
GET_503_STORM = 8  # more 503s than the hook's attempts (the direct retry-bound test below the DAG)
ONLY_BATCH_PRUNED = (DISKS[2],)  # web-1 failed: only batch-1's old snapshots may go


def _http(method: str, status: int, times: int):
    def inject(emu: Emulator) -> None:
        emu.faults.http_error(method, status, times=times)

    return inject


def _op(method: str, code: str, times: int, message: str = "Injected operation failure"):
    def inject(emu: Emulator) -> None:
        emu.faults.fail_operation(method, code, message, times=times)

    return inject


def _hang(method: str):
    def inject(emu: Emulator) -> None:
        emu.faults.hang_operation(method, times=REPEATEDLY)

    return inject


def _after_apply(method: str, times: int):
    def inject(emu: Emulator) -> None:
        emu.faults.http_error_after_apply(method, 503, times=times)

    return inject


# ---- 429 / 500 / 503 on every call the backup path makes -------------------------------------------
# method -> (wait mode, what "repeatedly" does): (state, message regex with {code}, deletions, vm_after)
_REPEATED: dict[str, tuple[str, str, str | None, str | tuple[str, ...], dict[str, str | None]]] = {
    "compute.instances.list": (
        "defer",
        "failed",
        rf"list VMs in projects/{P}/zones/{ZONE} failed: HTTP {{code}}",
        "none",
        {},
    ),
    "compute.instances.get": (
        "defer",
        "failed",
        rf"get VM {VM}/(web|batch)-1 failed: HTTP {{code}}",
        "none",
        {},
    ),
    "compute.instances.stop": (
        "defer",
        "failed",
        rf"stop VM {VM}/web-1 failed: HTTP {{code}}",
        ONLY_BATCH_PRUNED,
        {},
    ),
    "compute.instances.start": (
        "defer",
        "failed",
        rf"start VM {VM}/web-1 failed: HTTP {{code}}",
        ONLY_BATCH_PRUNED,
        {WEB: "TERMINATED"},  # every start refused: nothing can bring it back, the report must say so
    ),
    "compute.snapshots.insert": (
        "defer",
        "failed",
        rf"create snapshot \S+ of {DISK}/\S+ failed: HTTP {{code}}",
        "none",
        {},
    ),
    "compute.snapshots.get": (
        "defer",
        "failed",
        rf"get snapshot {SNAP}/\S+ failed: HTTP {{code}}",
        "none",
        {},
    ),
    "compute.snapshots.list": (
        "defer",
        "failed",
        rf"list snapshots of \S*{DISK}/\S+.* failed: HTTP {{code}}",
        "none",
        {},
    ),
    "compute.snapshots.delete": (
        "defer",
        "failed",
        rf"delete snapshot {SNAP}/old-\S+ failed: HTTP {{code}}",
        "none",
        {},
    ),
    # The deletes took effect, only their waits fail: the retry finds the snapshots gone and succeeds.
    "compute.globalOperations.wait": ("defer", "success", None, "all", {}),
    # Worker mode long-polls stop/start operations; both took effect, the retry observes and converges.
    "compute.zoneOperations.wait": ("worker", "success", None, "all", {}),
}


def _once_each(method: str):
    def inject(emu: Emulator) -> None:
        for code in (429, 500, 503):  # the first three calls of the method fail, one status each
            emu.faults.http_error(method, code, times=1)

    return inject


def _http_cases() -> list[FaultCase]:
    cases = []
    for method, (mode, state, message, deletions, vm_after) in _REPEATED.items():
        short = method.removeprefix("compute.")
        # "Once": 429, 500 and 503 once each, back to back on the same call (three failures, fewer than
        # the hook's five attempts), so one run per call covers the three statuses.
        cases.append(
            FaultCase(
                id=f"http-once-{short}",
                fault=f"HTTP 429, 500, 503 once each on {short}",
                inject=_once_each(method),
                expect_state="success",
                wait_mode=mode,
            )
        )
        for code in (429, 500, 503):
            cases.append(
                FaultCase(
                    id=f"http-{code}-repeatedly-{short}",
                    fault=f"HTTP {code} x{REPEATEDLY} on {short}",
                    inject=_http(method, code, REPEATEDLY),
                    expect_state=state,
                    expect_message=None if message is None else message.format(code=code),
                    wait_mode=mode,
                    deletions=deletions,
                    vm_after=vm_after,
                )
            )
    return cases


# ---- operations DONE with an error ------------------------------------------------------------------
def _operation_cases() -> list[FaultCase]:
    cases = []
    codes = ("QUOTA_EXCEEDED", "RATE_LIMIT_EXCEEDED", "INTERNAL_ERROR")
    for code in codes:
        for times, label in ((1, "once"), (REPEATEDLY, "repeatedly")):
            cases.append(
                FaultCase(
                    id=f"op-{code.lower()}-{label}-snapshot",
                    fault=f"snapshot insert operation DONE with {code} {label}",
                    inject=_op("compute.snapshots.insert", code, times),
                    expect_state="success" if times == 1 else "failed",
                    expect_message=None
                    if times == 1
                    else rf"The insert operation \S+ on {SNAP}/\S+ finished with an error: {code}",
                    deletions="all" if times == 1 else "none",
                )
            )
        cases.append(
            FaultCase(
                id=f"op-{code.lower()}-repeatedly-stop",
                fault=f"stop operation DONE with {code} repeatedly",
                inject=_op("compute.instances.stop", code, REPEATEDLY),
                expect_state="failed",
                expect_message=rf"The stop operation \S+ on {VM}/web-1 finished with an error: {code}",
                deletions=ONLY_BATCH_PRUNED,
            )
        )
    cases += [
        FaultCase(
            id="op-internal_error-once-stop",
            fault="stop operation DONE with INTERNAL_ERROR once",
            inject=_op("compute.instances.stop", "INTERNAL_ERROR", 1),
            expect_state="success",
        ),
        FaultCase(
            id="op-internal_error-once-stop-worker",
            fault="stop operation DONE with INTERNAL_ERROR once (worker mode)",
            inject=_op("compute.instances.stop", "INTERNAL_ERROR", 1),
            expect_state="success",
            wait_mode="worker",
        ),
        FaultCase(
            id="op-internal_error-once-start",
            fault="start operation DONE with INTERNAL_ERROR once",
            inject=_op("compute.instances.start", "INTERNAL_ERROR", 1),
            expect_state="success",
        ),
        FaultCase(
            id="op-internal_error-repeatedly-start",
            fault="start operation DONE with INTERNAL_ERROR repeatedly",
            inject=_op("compute.instances.start", "INTERNAL_ERROR", REPEATEDLY),
            expect_state="failed",
            expect_message=rf"The start operation \S+ on {VM}/web-1 finished with an error: INTERNAL_ERROR",
            deletions=ONLY_BATCH_PRUNED,
            vm_after={WEB: "TERMINATED"},  # every start fails: the report must flag it
        ),
        FaultCase(
            id="op-internal_error-once-delete",
            fault="retention delete operation DONE with INTERNAL_ERROR once",
            inject=_op("compute.snapshots.delete", "INTERNAL_ERROR", 1),
            expect_state="success",
        ),
        FaultCase(
            id="op-internal_error-repeatedly-delete",
            fault="retention delete operation DONE with INTERNAL_ERROR repeatedly",
            inject=_op("compute.snapshots.delete", "INTERNAL_ERROR", REPEATEDLY),
            expect_state="failed",
            expect_message=rf"The delete operation \S+ on {SNAP}/old-\S+ finished with an error: INTERNAL_ERROR",
            deletions="none",
        ),
    ]
    return cases


# ---- operations that never finish (sensor timeouts shortened on the in-memory DAG) ------------------
SHORT = 3.0


def _hang_cases() -> list[FaultCase]:
    return [
        FaultCase(
            id="hang-snapshot",
            fault="snapshot insert operations never finish",
            inject=_hang("compute.snapshots.insert"),
            expect_state="failed",
            expect_message=rf"Snapshot\(s\) of VM {VM}/(web|batch)-1 not READY within {SHORT:.0f} seconds",
            deletions="none",
            sensor_timeouts={"snapshot": SHORT},
        ),
        FaultCase(
            id="hang-stop",
            fault="stop operation never finishes (VM stays STOPPING)",
            inject=_hang("compute.instances.stop"),
            expect_state="failed",
            expect_message=rf"The stop of VM {VM}/web-1 did not finish within {SHORT:.0f} seconds",
            deletions=ONLY_BATCH_PRUNED,
            vm_after={WEB: "STOPPING"},  # the emulator keeps a hung stop STOPPING: no start is possible
            sensor_timeouts={"stop": SHORT, "start": SHORT},
        ),
        FaultCase(
            id="hang-stop-worker",
            fault="stop operation never finishes, worker mode (long-poll)",
            inject=_hang("compute.instances.stop"),
            expect_state="failed",
            expect_message=rf"The stop of VM {VM}/web-1 did not finish within {SHORT:.0f} seconds",
            wait_mode="worker",
            deletions=ONLY_BATCH_PRUNED,
            vm_after={WEB: "STOPPING"},
            sensor_timeouts={"stop": SHORT, "start": SHORT},
        ),
        FaultCase(
            id="hang-start",
            fault="start operation never finishes (VM stays STAGING)",
            inject=_hang("compute.instances.start"),
            expect_state="failed",
            expect_message=rf"The start of VM {VM}/web-1 did not finish within {SHORT:.0f} seconds",
            deletions=ONLY_BATCH_PRUNED,
            vm_after={WEB: "STAGING"},
            sensor_timeouts={"start": SHORT},
        ),
    ]


# ---- the VM changes between tasks -------------------------------------------------------------------
def _after_precheck(action):
    """Run ``action(emu)`` on the fourth instances.get: the resolve reads web-1 (the explicit target: are its
    disks shared with another VM of the run?), the two prechecks read the VMs, then web-1's stop."""

    def inject(emu: Emulator) -> None:
        emu.faults.on_call("compute.instances.get", lambda: action(emu), after=3)

    return inject


def _before_first_start(action):
    """Run ``action(emu)`` as the first start request arrives (web-1's: batch-1 is never started), in
    whatever order the two VMs' downtime tasks run: web-1 is stopped and captured by then."""

    def inject(emu: Emulator) -> None:
        emu.faults.on_call("compute.instances.start", lambda: action(emu))

    return inject


def _vm_cases() -> list[FaultCase]:
    return [
        FaultCase(
            id="vm-suspended-before-stop",
            fault="web-1 SUSPENDED between precheck and stop",
            inject=_after_precheck(lambda emu: emu.set_instance_status(P, ZONE, "web-1", "SUSPENDED")),
            expect_state="failed",
            expect_message=rf"VM {VM}/web-1 became SUSPENDED during the backup; refusing to stop it",
            deletions=ONLY_BATCH_PRUNED,
            vm_after={WEB: "SUSPENDED"},
            note="this run never stopped it, so nothing resumes it: ensure_running starts only a VM this "
            "run stopped; the report names it as down",
        ),
        FaultCase(
            id="vm-deleted-before-stop",
            fault="web-1 deleted between precheck and stop",
            inject=_after_precheck(lambda emu: emu.delete_instance(P, ZONE, "web-1")),
            expect_state="failed",
            expect_message=rf"get VM {VM}/web-1: not found",
            deletions=ONLY_BATCH_PRUNED,
            vm_after={WEB: None},
        ),
        FaultCase(
            id="vm-deleted-before-start",
            fault="web-1 deleted after it was stopped and snapshotted",
            inject=_before_first_start(lambda emu: emu.delete_instance(P, ZONE, "web-1")),
            expect_state="failed",
            expect_message=rf"(get|start) VM {VM}/web-1: not found",
            deletions=ONLY_BATCH_PRUNED,
            vm_after={WEB: None},
        ),
    ]


# ---- snapshots that turn FAILED ---------------------------------------------------------------------
def _fail_snapshots(name_prefix: str, times: int):
    def inject(emu: Emulator) -> None:
        emu.faults.fail_snapshot(P, name_prefix=name_prefix, times=times)

    return inject


def _failed_snapshot_cases() -> list[FaultCase]:
    def fail(times: int):
        return _fail_snapshots("web-1-data-", times)

    return [
        FaultCase(
            id="snapshot-failed-once",
            fault="web-1-data's snapshot turns FAILED once (per-disk rate limit off)",
            inject=fail(1),
            expect_state="success",
            timings={"snapshot_rate_limit": 0.0},
            note="the FAILED snapshot is deleted and the retry makes it again; the default retry_delay "
            "(600 s) outlasts the rate limit, the test's retry_delay 0 would not",
        ),
        FaultCase(
            id="snapshot-failed-once-rate-limited",
            fault="web-1-data's snapshot turns FAILED once; the retry comes within 10 minutes",
            inject=fail(1),
            expect_state="failed",
            expect_message=rf"RateLimitedError: The insert operation \S+ on {SNAP}/web-1-data-\S+ finished with "
            r"an error: RATE_LIMIT_EXCEEDED.*10 minutes",
            deletions=ONLY_BATCH_PRUNED,
            timings={"snapshot_rate_limit": 36000.0},  # certainly still in the window at the retry
            note="a retry_delay under 10 minutes meets the per-disk snapshot rate limit",
        ),
        FaultCase(
            id="snapshot-failed-repeatedly",
            fault="web-1-data's snapshot turns FAILED every time",
            inject=fail(REPEATEDLY),
            expect_state="failed",
            expect_message=rf"Snapshot web-1-data-\S+ of disk {DISK}/web-1-data FAILED",
            deletions=ONLY_BATCH_PRUNED,
        ),
    ]


# ---- killed between "request sent" and "result seen" --------------------------------------------------
def _killed_cases() -> list[FaultCase]:
    cases = []
    for method, short in (
        ("compute.instances.stop", "stop"),
        ("compute.snapshots.insert", "snapshot insert"),
        ("compute.instances.start", "start"),
        ("compute.snapshots.delete", "retention delete"),
    ):
        name = method.removeprefix("compute.")
        # A try that fails after its stop request starts the VM again before failing, so its retry
        # stops it again (2 stops); what it never does twice is a snapshot.
        stops = 2 if short in ("stop", "snapshot insert") else 1
        cases += [
            FaultCase(
                id=f"lost-response-once-{name}",
                fault=f"{short} applied, response lost once (HTTP 503): the hook re-sends the same requestId",
                inject=_after_apply(method, 1),
                expect_state="success",
                max_stop_operations=1,
                max_insert_operations=1,
            ),
            FaultCase(
                id=f"killed-try-{name}",
                fault=f"{short} applied, every response of the try lost: the task's retry observes and adopts",
                inject=_after_apply(method, HOOK_ATTEMPTS),
                expect_state="success",
                max_stop_operations=stops,
                max_insert_operations=1,
            ),
        ]
    return cases


# ---- calls the backup path must never make -------------------------------------------------------------
NOT_ON_PATH = (
    "compute.zoneOperations.get",
    "compute.globalOperations.get",
    "compute.regionOperations.get",
    "compute.disks.createSnapshot",
)


def _not_on_path() -> list[FaultCase]:
    def inject(emu: Emulator) -> None:
        for method in NOT_ON_PATH:
            emu.faults.http_error(method, 500, times=REPEATEDLY)

    return [
        FaultCase(
            id="not-on-path",
            fault="HTTP 500 on operations.get (zone/region/global) and disks.createSnapshot",
            inject=inject,
            expect_state="success",
            no_calls=NOT_ON_PATH,
            note="operations are read with wait (worker mode) or by re-sending the request; snapshots are "
            "made with snapshots.insert",
        )
    ]


# ---- the run report after a failure ------------------------------------------------------------------


def _report_cases() -> list[FaultCase]:
    return [
        FaultCase(
            id="report-after-failed-snapshot",
            fault="snapshot insert DONE with QUOTA_EXCEEDED repeatedly, reschedule mode; starts take 5 s",
            inject=_op("compute.snapshots.insert", "QUOTA_EXCEEDED", REPEATEDLY),
            expect_state="failed",
            expect_message=rf"The insert operation \S+ on {SNAP}/\S+ finished with an error: QUOTA_EXCEEDED",
            wait_mode="reschedule",
            deletions="none",
            timings={"start": 3000.0},  # 5 s of real time: the report runs while web-1 is starting
            check_report=True,
        )
    ]


# ---- retention's listing misses this run's snapshot -------------------------------------------------------
def _relabel_new_boot_snapshot(emu: Emulator) -> None:
    """Before every snapshots.list: web-1's new boot-disk snapshot gets another group's label, as if
    someone edited it; the scoped listing then no longer contains it."""

    def relabel() -> None:
        for snapshot in emu.world.snapshots.values():
            if snapshot["name"].startswith(f"web-1-{ZONE}-"):
                snapshot["labels"]["gce-vm-backup-group"] = "someone-else"

    emu.faults.on_call("compute.snapshots.list", relabel, times=REPEATEDLY)


def _retention_cases() -> list[FaultCase]:
    return [
        FaultCase(
            id="retention-listing-misses-new-snapshot",
            fault="this run's READY snapshot of web-1's boot disk relabelled before retention lists",
            inject=_relabel_new_boot_snapshot,
            expect_state="failed",
            expect_message=rf"Retention policy not applied to disk {DISK}/web-1: this run's snapshot "
            r"web-1-\S+ is READY but missing from the listing with filter \(labels\.",
            deletions=(DISKS[1], DISKS[2]),  # web-1-data and batch-1 are still pruned
            note="never a silent 'deleting nothing': the run fails and says which disk and why",
        )
    ]


# ---- the same faults in the other slot-free wait mode --------------------------------------------------
RESCHEDULE_TWINS = (
    "slow-stop-finishes-later",
    "op-internal_error-once-stop",
    "hang-stop",
    "snapshot-failed-once",
    "killed-try-instances.stop",
    "killed-try-snapshots.insert",
    "vm-suspended-before-stop",
)


def _reschedule_twins(cases: list[FaultCase]) -> list[FaultCase]:
    from dataclasses import replace

    return [
        replace(
            case, id=f"{case.id}-reschedule", fault=f"{case.fault} (reschedule mode)", wait_mode="reschedule"
        )
        for case in cases
        if case.id in RESCHEDULE_TWINS
    ]


# ---- a slow shutdown must not leave a VM stopped ------------------------------------------
# Simulated seconds: 10 s of real time, well past the stop's and the start's bounds (SHORT each).
SLOW_STOP = 6000.0


def _slow_shutdown_cases() -> list[FaultCase]:
    stop_timed_out = rf"The stop of VM {VM}/web-1 did not finish within {SHORT:.0f} seconds"
    return [
        FaultCase(
            id="slow-stop-finishes-later",
            fault=f"web-1's shutdown takes {SLOW_STOP / TIME_SCALE_OF_MATRIX:.1f} s, more than stop + start bounds",
            inject=lambda emu: None,
            expect_state="failed",
            expect_message=stop_timed_out,
            deletions=ONLY_BATCH_PRUNED,
            timings={"stop": SLOW_STOP},
            sensor_timeouts={"stop": SHORT, "start": SHORT},
            check_report=True,
            note="the start's timeout is retried (a sensor timeout is not): it waits out STOPPING, then starts",
        ),
        FaultCase(
            id="stop-never-finishes-report",
            fault="web-1's stop never finishes: the report's first line names it as down",
            inject=_hang("compute.instances.stop"),
            expect_state="failed",
            expect_message=stop_timed_out,
            deletions=ONLY_BATCH_PRUNED,
            vm_after={WEB: "STOPPING"},
            sensor_timeouts={"stop": SHORT, "start": SHORT},
            check_report=True,
        ),
    ]


# ---- the downtime in one task --------------------------------------------------------------
def _fail_second_insert(emu: Emulator) -> None:
    """web-1's second disk's insert (the third insert: batch-1's, then web-1's two) ends with QUOTA_EXCEEDED,
    once: its first disk's snapshot is already being made when the capture fails."""
    emu.faults.on_call(
        "compute.snapshots.insert",
        lambda: emu.faults.fail_operation("compute.snapshots.insert", "QUOTA_EXCEEDED", "Injected", times=1),
        after=2,
    )


def _downtime_cases() -> list[FaultCase]:
    return [
        FaultCase(
            id="capture-fails-after-the-first-disk",
            fault="the second disk's snapshot fails (QUOTA_EXCEEDED) while the first is being made",
            inject=_fail_second_insert,
            expect_state="success",
            expect_message=rf"The insert operation \S+ on {SNAP}/\S+ finished with an error: QUOTA_EXCEEDED",
            note="the try settles the first snapshot (READY) and starts the VM again; the retry adopts it",
        ),
        FaultCase(
            id="stopped-vm-capture-fails-never-started",
            fault="batch-1 (TERMINATED before the backup) fails its capture every time",
            inject=_fail_snapshots("batch-1-", REPEATEDLY),
            expect_state="failed",
            expect_message=rf"Snapshot batch-1-\S+ of disk {DISK}/batch-1 FAILED",
            deletions=(DISKS[0], DISKS[1]),  # web-1's old ones go; batch-1 has no new READY snapshot
            note="ensure_running never starts a VM that was stopped before the backup",
        ),
    ]


CASES: list[FaultCase] = [
    FaultCase(id="baseline", fault="none", inject=lambda emu: None, expect_state="success"),
    *_http_cases(),
    *_operation_cases(),
    *_hang_cases(),
    *_vm_cases(),
    *_failed_snapshot_cases(),
    *_killed_cases(),
    *_not_on_path(),
    *_report_cases(),
    *_retention_cases(),
    *_slow_shutdown_cases(),
    *_downtime_cases(),
]
CASES += _reschedule_twins(CASES)
assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"


# ---- one operation per VM at a time: the VM's lease ----------------------------------------------------
def _restore_holds_web_1(emu: Emulator) -> None:
    """A replace-disks restore took web-1's lease (for an hour) and stopped it, after the backup's precheck."""
    import time

    from gce_vm_backup.runtime.lease import HOLDER_KEY, LEASE_KEY, Holder

    restore = Holder.of_run(
        "restore", deployment="test", dag_id="gce_vm_backup_restore__web", run_id="manual__1"
    )
    labels = {**emu.instance(P, ZONE, "web-1")["labels"], HOLDER_KEY: restore.name}
    emu.set_instance_labels(P, ZONE, "web-1", {**labels, LEASE_KEY: restore.value(int(time.time()) + 3600)})
    emu.set_instance_status(P, ZONE, "web-1", "TERMINATED")


def _relabel_both_vms_once(emu: Emulator) -> None:
    """Someone writes a label on both VMs just before the first lease write: its fingerprint is stale."""

    def relabel() -> None:
        for name in ("web-1", "batch-1"):
            emu.set_instance_labels(P, ZONE, name, {**emu.instance(P, ZONE, name)["labels"], "owner": "ops"})

    emu.faults.on_call("compute.instances.setLabels", relabel)


def _lease_cases() -> list[FaultCase]:
    return [
        FaultCase(
            id="lease-held-by-a-restore",
            fault="a replace-disks restore holds web-1's lease and has stopped it (after the precheck)",
            inject=_after_precheck(_restore_holds_web_1),
            expect_state="failed",
            expect_message=rf"VM {VM}/web-1 is held by the restore gce_vm_backup_restore__web \(lease until",
            deletions=ONLY_BATCH_PRUNED,
            vm_after={WEB: "TERMINATED"},
            no_calls=("compute.instances.start", "compute.instances.stop"),
            # The wait for the lease is one downtime's bounds: 3 s here, per try.
            sensor_timeouts={"stop": 1.0, "snapshot": 1.0, "start": 1.0},
            note="the backup waits for the lease, then fails naming the restore; it neither snapshots nor "
            "starts web-1, which stays as the restore left it",
        ),
        FaultCase(
            id="vm-stopped-by-someone-else-after-precheck",
            fault="web-1 TERMINATED (by an admin) between its precheck and its downtime task",
            inject=_after_precheck(lambda emu: emu.set_instance_status(P, ZONE, "web-1", "TERMINATED")),
            expect_state="failed",
            expect_message=rf"VM {VM}/web-1 is TERMINATED, but the precheck saw it RUNNING .* this run did not "
            r"stop it",
            deletions=ONLY_BATCH_PRUNED,
            vm_after={WEB: "TERMINATED"},
            no_calls=("compute.instances.start", "compute.instances.stop"),
            note="a backup starts only a VM that this run stopped: web-1 is neither snapshotted nor started, "
            "and the run says it was not backed up",
        ),
        FaultCase(
            id="http-503-repeatedly-instances.setLabels",
            fault=f"HTTP 503 x{REPEATEDLY} on instances.setLabels: no lease can be taken",
            inject=_http("compute.instances.setLabels", 503, REPEATEDLY),
            expect_state="failed",
            expect_message=rf"set labels of VM {VM}/(web|batch)-1 failed: HTTP 503",
            deletions="none",
            no_calls=("compute.instances.start", "compute.instances.stop", "compute.snapshots.insert"),
            note="a backup that cannot take the VM's lease changes nothing",
        ),
        FaultCase(
            id="lease-stale-fingerprint",
            fault="the VMs' labels change between the lease's read and its write (HTTP 412 on setLabels)",
            inject=_relabel_both_vms_once,
            expect_state="success",
            note="the refused write reads the labels again and writes the lease over the new ones",
        ),
    ]


CASES += _lease_cases()
assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"
