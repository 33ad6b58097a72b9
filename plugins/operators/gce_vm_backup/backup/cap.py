"""``max_concurrent_vms``: how many VMs of a run are down at once, counted before a try stops one.

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

The count covers every tier of the run: the downtime task of each tier (``cap_tasks``: the outer
tiers' ``stop_snapshot`` and the innermost tier's ``stop_snapshot_start``), since a tiered group keeps
its outer tiers' VMs down while the inner tiers run. An outer tier's try ends with its VM still down (its
marker says down), so it counts as a VM left down until its tier's ``ensure_running`` has returned. A
tier whose mapped task is not expanded yet has no task instance with a map index and no VM down.

The count, for a try about to stop its VM: itself, plus each other VM of the run whose try
- is running, unless its marker says ``down: false`` (a running try without a marker has just started
  and may be a retry of a try that left its VM down: counted);
- is not running and has a ``down: true`` marker, and its tier's ``ensure_running`` has not returned (a
  killed worker, a start that could not succeed, an outer tier's VM kept down for the inner tiers: the VM
  is or may still be down; these are ``left_down``).

No count is needed when the downtime tasks of the run (every tier expanded so far) have no more task
instances than the cap: then no more than the cap of VMs can be down, whatever each try does. Counting
only the try's own tier would not do: a tier no bigger than the cap may still push the run over it while
outer tiers keep their VMs down.

It reads the markers FIRST (one read per downtime task) and the states AFTER (one read): a VM down at
that moment either has a marker that was still there at the read (its next try had not started: the
marker was not yet cleared), or its next try started before the read, and is then running (or finished)
when the states are read after; either way it is counted. Reading the states first would miss a VM
whose retry started (clearing the marker) between the two reads.

Two tries claiming at once: a try pushes its claim (``down: true``) first and counts after
(``downtime_ops``); over the cap it withdraws (``down: false, waiting: true``) and waits again. Of two
claims, the later written is the one whose count reads the other, so no set of more than ``cap`` claims
can all stand: the try whose claim was written last counts every other standing claim. The count can
only over-estimate (a try just started, a claim about to be withdrawn), which costs a wait, never a VM
too many.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gce_vm_backup.backup.stages import DOWN_XCOM_KEY, ENSURE_RUNNING

RUNNING_STATES = frozenset({"running"})


@dataclass(frozen=True)
class DownCount:
    """The VMs of the run down (or about to be) if this try stops its VM now, itself included."""

    total: int
    left_down: list[tuple[str, int]]  # (task id, map index) of VMs left down by tries that are not running
    detail: str  # for the log


Slot = tuple[str, int]  # a downtime task instance of the run: (task id, map index)


def tier_indexes(ti: Any, task_id: str) -> list[int]:
    """The map indexes of ``task_id`` in this run (fixed once the tier is expanded)."""
    return sorted(task_states(ti, task_id))


def task_states(ti: Any, task_id: str) -> dict[int, str | None]:
    """map index -> state of every task instance of ``task_id`` in this run (Task SDK GetTaskStates)."""
    return {index: state for (_, index), state in run_states(ti, [task_id]).items()}


def run_states(ti: Any, task_ids: Sequence[str]) -> dict[Slot, str | None]:
    """(task id, map index) -> state of every mapped task instance of ``task_ids`` in this run, in ONE
    read (Task SDK GetTaskStates). The API keys a mapped instance ``<task id>_<map index>`` and an
    unmapped one (or a mapped task not expanded yet) by its task id alone: those are left out."""
    wanted = set(task_ids)
    found = ti.get_task_states(dag_id=ti.dag_id, task_ids=list(task_ids), run_ids=[ti.run_id])
    states: dict[Slot, str | None] = {}
    for key, state in (found.get(ti.run_id) or {}).items():
        name, _, index = str(key).rpartition("_")
        if name in wanted and index.lstrip("-").isdigit():
            states[(name, int(index))] = None if state is None else str(getattr(state, "value", state))
    return states


def _markers(ti: Any, task_id: str) -> tuple[dict[int, dict[str, Any]], int]:
    """Every try's marker of ``task_id``, by map index, in ONE read (the Task SDK pulls every map index
    of a mapped task at once when ``map_indexes`` is not given; given a list, it makes one request per
    index, which for 40 VMs took seconds, so that markers read at the start and at the end of one count
    were seconds apart). Each marker names its map index. Returns the markers and how many say down
    without one."""
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


def count_down(
    ti: Any, *, task_id: str, indexes: Sequence[int], others: Mapping[str, Sequence[int]] | None = None
) -> DownCount:
    """The count of the module docstring. ``task_id`` is this try's downtime task
    (``tier_N.stop_snapshot_start``) and ``indexes`` its map indexes (``tier_indexes``); ``others`` the
    downtime tasks of the run's other tiers, each with its map indexes (from ``run_states``). Reads, for
    T downtime tasks: the markers (one read per task), then the states (one read), then the
    ``ensure_running`` results of the VMs that look left down (one read per tier that has such VMs)."""
    slots: list[Slot] = [(task_id, index) for index in indexes]
    slots += [
        (other, index) for other, found in (others or {}).items() for index in found if other != task_id
    ]
    tasks = list(dict.fromkeys(task for task, _ in slots)) or [task_id]
    # Markers first, states after (see the module docstring for why the order matters).
    markers: dict[Slot, dict[str, Any]] = {}
    unnamed = 0
    for task in tasks:
        found_markers, found_unnamed = _markers(ti, task)
        markers.update({(task, index): marker for index, marker in found_markers.items()})
        unnamed += found_unnamed
    states = run_states(ti, tasks)
    running: list[Slot] = []
    maybe_left: list[Slot] = []
    waiting: list[Slot] = []
    for slot in slots:
        if slot == (task_id, ti.map_index):
            continue
        says = markers[slot].get("down") if slot in markers else None
        if states.get(slot) in RUNNING_STATES:
            (waiting if says is False else running).append(slot)
        elif says is True:
            maybe_left.append(slot)
    left_down: list[Slot] = []
    for task in tasks:
        candidates = [index for other, index in maybe_left if other == task]
        if not candidates:
            continue
        ensure_id = f"{task.rpartition('.')[0]}.{ENSURE_RUNNING}"
        back = ti.xcom_pull(task_ids=ensure_id, map_indexes=candidates)
        left_down += [
            (task, index) for index, result in zip(candidates, back or [], strict=True) if result is None
        ]
    detail = (
        f"{len(running)} other try(s) with a VM down or about to be ({_names(running, task_id)}), "
        f"{len(left_down)} VM(s) left down by an earlier try ({_names(left_down, task_id)}), "
        f"{len(waiting)} try(s) waiting or done ({_names(waiting, task_id)})"
        + (f", {unnamed} marker(s) without a map index" if unnamed else "")
    )
    return DownCount(1 + len(running) + len(left_down) + unnamed, left_down, detail)


def _names(slots: list[Slot], task_id: str) -> str:
    """Map indexes of this try's own task as numbers, the other tiers' as ``task[index]``."""
    return (
        "map indexes ["
        + ", ".join(str(index) if task == task_id else f"{task}[{index}]" for task, index in slots)
        + "]"
    )
