"""``max_concurrent_vms``: how many VMs of a tier are down at once, counted before a try stops one.

The scheduler runs up to ``2 x cap`` tries of the downtime task at once (``max_active_tis_per_dagrun``;
dag_factory): up to ``cap`` with a VM down, the others started ahead (DAG parsed, Google client loaded,
VM read), each waiting on its worker slot for a VM of the tier to come back, so that the next stop
follows a VM's return within seconds instead of a task's start-up. The cap itself is this count, made by
every try before its stop request. Each try says where it stands in its XCom marker
``stages.DOWN_XCOM_KEY``:
- ``{"down": true}``: its VM is down, or it has claimed the right to stop it (pushed BEFORE the stop);
- ``{"down": false}``: its VM is not down because of it: it waits for room (``"waiting": true``), or its
  VM is back, or it was never stopped (a VM that was not RUNNING before the backup).
Airflow clears a try's XComs when the next try (or run) of that task instance starts; a marker left by
an earlier run of the same try says ``down: false`` only if nothing of that task instance has stopped
the VM since.

The count, for a try about to stop its VM: itself, plus each other VM of the tier whose try
- is running, unless its marker says ``down: false`` (a running try without a marker has just started
  and may be a retry of a try that left its VM down: counted);
- is not running and has a ``down: true`` marker, and its ``ensure_running`` has not returned (a killed
  worker, a start that could not succeed: the VM is or may still be down; these are ``left_down``).

It reads the markers FIRST (all of them in one read) and the states AFTER: a VM down at that moment
either has a marker that was still there at the read (its next try had not started: the marker was not
yet cleared), or its next try started before the read, and is then running (or finished) when the states
are read after; either way it is counted. Reading the states first would miss a VM whose retry started
(clearing the marker) between the two reads.

Two tries claiming at once: a try pushes its claim (``down: true``) first and counts after
(``downtime_ops``); over the cap it withdraws (``down: false, waiting: true``) and waits again. Of two
claims, the later written is the one whose count reads the other, so no set of more than ``cap`` claims
can all stand: the try whose claim was written last counts every other standing claim. The count can
only over-estimate (a try just started, a claim about to be withdrawn), which costs a wait, never a VM
too many.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gce_vm_backup.stages import DOWN_XCOM_KEY, ENSURE_RUNNING

RUNNING_STATES = frozenset({"running"})


@dataclass(frozen=True)
class DownCount:
    """The VMs of a tier down (or about to be) if this try stops its VM now, itself included."""

    total: int
    left_down: list[int]  # map indexes of VMs left down by tries that are not running
    detail: str  # for the log


def tier_indexes(ti: Any, task_id: str) -> list[int]:
    """The map indexes of ``task_id`` in this run (fixed once the tier is expanded)."""
    return sorted(task_states(ti, task_id))


def task_states(ti: Any, task_id: str) -> dict[int, str | None]:
    """map index -> state of every task instance of ``task_id`` in this run (Task SDK GetTaskStates)."""
    found = ti.get_task_states(dag_id=ti.dag_id, task_ids=[task_id], run_ids=[ti.run_id])
    states: dict[int, str | None] = {}
    for key, state in (found.get(ti.run_id) or {}).items():
        name, _, index = str(key).rpartition("_")
        if name == task_id and index.lstrip("-").isdigit():
            states[int(index)] = None if state is None else str(getattr(state, "value", state))
    return states


def _markers(ti: Any, task_id: str) -> tuple[dict[int, dict[str, Any]], int]:
    """Every try's marker, by map index, in ONE read (the Task SDK pulls every map index of a mapped
    task at once when ``map_indexes`` is not given; given a list, it makes one request per index, which
    for 40 VMs took seconds, so that markers read at the start and at the end of one count were seconds
    apart). Each marker names its map index. Returns the markers and how many say down without one."""
    found = ti.xcom_pull(task_ids=task_id, key=DOWN_XCOM_KEY)
    values = [found] if isinstance(found, dict) else list(found or [])  # one value comes unwrapped
    markers: dict[int, dict[str, Any]] = {}
    unnamed = 0
    for value in values:
        if isinstance(value, dict) and isinstance(value.get("map_index"), int):
            markers[value["map_index"]] = value
        elif isinstance(value, dict) and value.get("down") is not False:
            unnamed += 1  # a marker without its index (none is pushed so): counted as a VM down
    return markers, unnamed


def count_down(ti: Any, *, task_id: str, indexes: list[int]) -> DownCount:
    """The count of the module docstring for the tier's map ``indexes`` (``tier_indexes``); ``task_id``
    is the downtime task's (``tier_N.stop_snapshot_start``). Three reads, whatever the tier's size: the
    markers, the states, and ``ensure_running``'s results of the VMs that look left down."""
    ensure_id = f"{task_id.rpartition('.')[0]}.{ENSURE_RUNNING}"
    # Markers first, states after (see the module docstring for why the order matters).
    markers, unnamed = _markers(ti, task_id)
    states = task_states(ti, task_id)
    running: list[int] = []
    maybe_left: list[int] = []
    waiting: list[int] = []
    for index in indexes:
        if index == ti.map_index:
            continue
        says = markers[index].get("down") if index in markers else None
        if states.get(index) in RUNNING_STATES:
            (waiting if says is False else running).append(index)
        elif says is True:
            maybe_left.append(index)
    back = ti.xcom_pull(task_ids=ensure_id, map_indexes=maybe_left) if maybe_left else []
    left_down = [index for index, result in zip(maybe_left, back or [], strict=True) if result is None]
    detail = (
        f"{len(running)} other try(s) with a VM down or about to be (map indexes {running}), "
        f"{len(left_down)} VM(s) left down by an earlier try ({left_down}), "
        f"{len(waiting)} try(s) waiting or done ({waiting})"
        + (f", {unnamed} marker(s) without a map index" if unnamed else "")
    )
    return DownCount(1 + len(running) + len(left_down) + unnamed, left_down, detail)
