"""The name the grid shows for a mapped task instance: its VM's, not its map index.

Airflow renders a task's ``map_index_template`` against the task's context after it ran (on Airflow 3.3
also once before, with its arguments rendered); ``task`` there is the task instance's own operator, its
mapped and templated arguments resolved. Each template reads the VM from an argument the task already has,
so naming costs no API call. The DAGs render templates as native objects: the fallback (``vm 3`` for a
task whose argument names no VM) is text that is no Python literal, so it stays a string.
"""

from __future__ import annotations


def vm_name_template(expression: str) -> str:
    """A ``map_index_template`` naming the task by the VM that ``expression`` gives (an instance name or a
    VM's path: its last part is shown). Never fails: an undefined, empty or odd value gives ``vm <index>``
    (with StrictUndefined, Airflow's default, a failing template would fail a task that succeeded)."""
    return (
        "{{ ((" + expression + ") | default('', true) | string).split('/') | last"
        " | default('vm ' ~ ti.map_index, true) }}"
    )
