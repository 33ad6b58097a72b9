"""Links from a task to the Cloud Console: the VM it acts on and the snapshots it made or checked.

An operator with ``ConsoleLinks`` among its bases gets two extra links on its task page, "Compute Engine
VM" and "Snapshots". In Airflow 3 the worker computes each link when the task ends (whatever its state,
from the operator as it ran: rendered arguments and what it set) and keeps the URL in the task's XCom under
the link's ``xcom_key``; the API server reads it back from there, so it needs no plugin and no class of
this package. A link with nothing to point at (a tier without VMs, a dry run, a failed capture) is empty,
and the UI shows it disabled.

What a task points at (duck-typed, first found): ``project_id``/``zone``/``instance`` arguments, else its
``instance_record`` (the precheck's record), else the ``vm`` of its first snapshot record; the snapshots
are ``console_snapshots`` (what the task made) else its ``snapshot_records`` argument (a list of records,
or the downtime task's result with its ``snapshots``). Every part of a URL
is percent-encoded, so no name can change the URL's path or query.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

from gce_vm_backup.compute.paths import DiskRef, InvalidPathError, VmRef

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator

CONSOLE = "https://console.cloud.google.com"
VM_LINK_KEY = "gce_vm_backup_vm_link"
SNAPSHOTS_LINK_KEY = "gce_vm_backup_snapshots_link"


def _part(text: str) -> str:
    """One path segment, percent-encoded; "." and ".." (which a browser would resolve) are refused."""
    if text in ("", ".", ".."):
        raise ValueError(f"not a resource name: {text!r}")
    return quote(str(text), safe="")


def _project(project: str) -> str:
    """The ``project=`` query, percent-encoded (an ``&`` or ``#`` in it cannot add to the query)."""
    if not project:
        raise ValueError("no project")
    return f"project={quote(str(project), safe='')}"


def vm_console_url(project: str, zone: str, name: str) -> str:
    """The VM's page: ``.../compute/instancesDetail/zones/Z/instances/N?project=P``."""
    return (
        f"{CONSOLE}/compute/instancesDetail/zones/{_part(zone)}/instances/{_part(name)}?{_project(project)}"
    )


def snapshot_console_url(project: str, name: str) -> str:
    """One snapshot's page: ``.../compute/snapshotsDetail/projects/P/global/snapshots/N?project=P``."""
    path = f"projects/{_part(project)}/global/snapshots/{_part(name)}"
    return f"{CONSOLE}/compute/snapshotsDetail/{path}?{_project(project)}"


def snapshots_console_url(project: str) -> str:
    """The project's snapshot list (the console's filters are not part of a documented URL)."""
    return f"{CONSOLE}/compute/snapshots?{_project(project)}"


def linked_vm(operator: Any) -> VmRef | None:
    """The VM a task acts on, from its arguments (see the module's docstring); None when it has none."""
    project, zone, name = (getattr(operator, key, None) for key in ("project_id", "zone", "instance"))
    if (
        isinstance(project, str)
        and isinstance(zone, str)
        and isinstance(name, str)
        and project
        and zone
        and name
    ):
        return VmRef(project, zone, name)
    record = getattr(operator, "instance_record", None)
    if isinstance(record, Mapping) and all(record.get(k) for k in ("project_id", "zone", "instance")):
        return VmRef(str(record["project_id"]), str(record["zone"]), str(record["instance"]))
    for item in _records(operator):
        if item.get("vm"):
            try:
                return VmRef.parse(str(item["vm"]))
            except InvalidPathError:
                return None
    return None


def linked_snapshots(operator: Any) -> list[tuple[str, str]]:
    """``(project, name)`` of each snapshot the task made or checked (standard snapshots only)."""
    found = []
    for item in _records(operator):
        name = item.get("snapshot")
        if not name:
            continue
        try:
            if item.get("vm"):
                project = VmRef.parse(str(item["vm"])).project
            else:
                project = DiskRef.parse(str(item.get("disk_source", ""))).project
        except InvalidPathError:
            continue
        found.append((project, str(name)))
    return found


def _records(operator: Any) -> list[Mapping[str, Any]]:
    for name in ("console_snapshots", "snapshot_records"):
        value = getattr(operator, name, None)
        if isinstance(value, Mapping):  # a downtime task's whole result: its snapshots
            value = value.get("snapshots")
        if isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
            items = [item for item in value if isinstance(item, Mapping)]
            if items:
                return items
    return []


class VmConsoleLink(BaseOperatorLink):
    """The task's VM in the Cloud Console (empty when the task has no VM)."""

    name: ClassVar[str] = "Compute Engine VM"
    xcom_key: ClassVar[str] = VM_LINK_KEY

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        vm = linked_vm(operator)
        try:
            return vm_console_url(vm.project, vm.zone, vm.name) if vm is not None else ""
        except ValueError:
            return ""


class SnapshotsConsoleLink(BaseOperatorLink):
    """The task's snapshot in the Cloud Console, or its VM's project's snapshot list when there are several
    (a VM's snapshots are all made in its project)."""

    name: ClassVar[str] = "Snapshots"
    xcom_key: ClassVar[str] = SNAPSHOTS_LINK_KEY

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        snapshots = linked_snapshots(operator)
        try:
            if len(snapshots) == 1:
                return snapshot_console_url(*snapshots[0])
            return snapshots_console_url(snapshots[0][0]) if snapshots else ""
        except ValueError:
            return ""


class ConsoleLinks:
    """A base for the operators that act on a VM or its snapshots: their two Cloud Console links.

    ``console_snapshots``: set it to the snapshot records a task made, so the link points at them.
    """

    operator_extra_links: Collection[BaseOperatorLink] = (VmConsoleLink(), SnapshotsConsoleLink())
    console_snapshots: list[dict[str, Any]] | None = None
