"""``max_concurrent_vms``: how many VMs of a tier are down at once, counted before a try stops one.

The downtime task runs with ``max_active_tis_per_dagrun = cap``, so the scheduler never runs more than
``cap`` tries at once (atomically). A VM is down from the stop request until it is RUNNING again, and
a try that is not running can leave one down only after its worker was killed, or when it could not
bring the VM back; such a try's ``stages.DOWN_XCOM_KEY`` marker still says ``down`` (Airflow clears a
try's XComs only when the next try of that task instance starts), until the VM's ``ensure_running``
teardown has brought it back (its return value then exists).

So before its stop request a try counts: every running try of the task (itself included; a running try
may stop its VM at any moment) + every VM whose marker says down, whose try is not running and whose
``ensure_running`` has not returned. It reads the markers and results FIRST and the states AFTER: a
VM down at that moment either has a marker that was still there at the read (its next try had not
started: the marker was not yet cleared), or its next try started before the read, and is then
running (or finished) when the states are read after. Either way it is counted; reading the states
first would miss a VM whose retry started (clearing the marker) between the two reads. Two tries
counting at once both count each other as running, so the last of them to decide sees every VM down.
"""

from __future__ import annotations

from typing import Any

from gce_vm_backup.stages import DOWN_XCOM_KEY, ENSURE_RUNNING

RUNNING_STATES = frozenset({"running"})


def _states(ti: Any, task_id: str) -> dict[int, str | None]:
    """map index -> state of every task instance of ``task_id`` in this run (Task SDK GetTaskStates)."""
    found = ti.get_task_states(dag_id=ti.dag_id, task_ids=[task_id], run_ids=[ti.run_id])
    states: dict[int, str | None] = {}
    for key, state in (found.get(ti.run_id) or {}).items():
        name, _, index = str(key).rpartition("_")
        if name == task_id and index.lstrip("-").isdigit():
            states[int(index)] = None if state is None else str(getattr(state, "value", state))
    return states


def vms_down(ti: Any, *, task_id: str, cap: int) -> tuple[int, str]:
    """How many VMs of this tier are (or may be) down if this try stops its VM now, and why (for the log).

    ``task_id`` is the downtime task's (``tier_N.stop_snapshot_start``). Returns ``(0, ...)`` at once when
    the tier has no more VMs than ``cap``: nothing can exceed it.
    """
    indexes = sorted(_states(ti, task_id))
    if len(indexes) <= cap:
        return 0, f"{len(indexes)} VM(s) in the tier, cap {cap}"
    others = [index for index in indexes if index != ti.map_index]
    ensure_id = f"{task_id.rpartition('.')[0]}.{ENSURE_RUNNING}"
    # Markers and results first, states after (see the module docstring for why the order matters).
    markers = ti.xcom_pull(task_ids=task_id, key=DOWN_XCOM_KEY, map_indexes=others)
    back = ti.xcom_pull(task_ids=ensure_id, map_indexes=others)
    states = _states(ti, task_id)
    running = {index for index, state in states.items() if state in RUNNING_STATES} | {ti.map_index}
    left_down = [
        index
        for index, marker, result in zip(
            others, markers or [None] * len(others), back or [None] * len(others), strict=True
        )
        if isinstance(marker, dict) and marker.get("down") and index not in running and result is None
    ]
    detail = (
        f"{len(running)} try(s) running (map indexes {sorted(running)}), "
        f"{len(left_down)} VM(s) left down by an earlier try ({left_down}), cap {cap}"
    )
    return len(running) + len(left_down), detail
