"""The REST paths of restore's methods (imported by server.py, which routes by these registrations).

disks.get/list and regionDisks.get/list are server.py's own routes; the operations restore waits on
(zoneOperations, regionOperations) too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gce_emulator import instance_labels, restore, restore_guest, restore_vm
from gce_emulator.server import Emulator, R, Z, _route


def _instance_path(p: Mapping[str, str]) -> str:
    return f"projects/{p['project']}/zones/{p['zone']}/instances/{p['instance']}"


def _disk_routes(scope_re: str, scope_key: str, api: str) -> None:
    def scope(p: Mapping[str, str]) -> str:
        return f"{scope_key}/{p[scope_key[:-1]]}"

    @_route("POST", f"{scope_re}/disks", f"compute.{api}.insert")
    def _insert(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
        return restore.insert_disk(emu.world, p["project"], scope(p), body, q)

    @_route("DELETE", f"{scope_re}/disks/(?P<disk>[^/]+)", f"compute.{api}.delete")
    def _delete(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
        return restore.delete_disk(emu.world, p["project"], scope(p), p["disk"], q)

    @_route("POST", f"{scope_re}/disks/(?P<disk>[^/]+)/setLabels", f"compute.{api}.setLabels")
    def _set_labels(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
        return restore.set_disk_labels(emu.world, p["project"], scope(p), p["disk"], body, q)


@_route("POST", "global/snapshots/(?P<snapshot>[^/]+)/setLabels", "compute.snapshots.setLabels")
def _set_snapshot_labels(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
    return restore.set_snapshot_labels(emu.world, p["project"], p["snapshot"], body, q)


_disk_routes(Z, "zones", "disks")
_disk_routes(R, "regions", "regionDisks")


@_route("POST", f"{Z}/instances", "compute.instances.insert")
def _insert_instance(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
    return restore_vm.insert_instance(emu.world, p["project"], p["zone"], body, q)


@_route("DELETE", f"{Z}/instances/(?P<instance>[^/]+)", "compute.instances.delete")
def _delete_instance(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
    return restore_vm.delete_instance(emu.world, p["project"], p["zone"], p["instance"], q)


@_route("POST", f"{Z}/instances/(?P<instance>[^/]+)/attachDisk", "compute.instances.attachDisk")
def _attach_disk(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
    return restore_vm.attach_disk(emu.world, p["project"], p["zone"], p["instance"], body, q)


@_route("POST", f"{Z}/instances/(?P<instance>[^/]+)/detachDisk", "compute.instances.detachDisk")
def _detach_disk(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
    return restore_vm.detach_disk(emu.world, p["project"], p["zone"], p["instance"], q)


@_route(
    "GET", f"{Z}/instances/(?P<instance>[^/]+)/getGuestAttributes", "compute.instances.getGuestAttributes"
)
def _guest_attributes(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
    emu.world.check_location(p["project"], f"zones/{p['zone']}")
    return restore_guest.get_guest_attributes(emu.world, _instance_path(p), q)


@_route("GET", f"{Z}/instances/(?P<instance>[^/]+)/serialPort", "compute.instances.getSerialPortOutput")
def _serial_port(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
    emu.world.check_location(p["project"], f"zones/{p['zone']}")
    return restore_guest.get_serial_port_output(emu.world, _instance_path(p), q)


@_route("POST", f"{Z}/instances/(?P<instance>[^/]+)/setLabels", "compute.instances.setLabels")
def _set_instance_labels(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
    return instance_labels.set_instance_labels(emu.world, p["project"], p["zone"], p["instance"], body, q)
