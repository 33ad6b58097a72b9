"""What the guest OS shows from outside: guest attributes and serial port output, configurable per VM.

A drill waits until "the OS came up": a guest attribute (``instances.getGuestAttributes``) or a serial
port line (``instances.getSerialPortOutput``). The emulator has no guest, so a *boot profile* says what
the guest writes ``guest_boot`` simulated seconds after the VM reaches RUNNING:

- ``serial_lines``: appended to serial port 1 at each boot (default: systemd's
  "[  OK  ] Reached target Multi-User System.");
- ``guest_attributes``: ``{"namespace/key": value}`` (default: ``guestInventory/ShortName`` = debian and
  ``guestInventory/Version`` = 12, what the OS Config agent writes);
- ``guest_attributes_enabled``: guest attributes are off unless enabled "in the instance or project
  metadata" with ``enable-guest-attributes=TRUE`` (https://cloud.google.com/compute/docs/metadata/
  manage-guest-attributes); None (default) reads the VM's metadata, True stands for project metadata;
- ``boot_delay``: seconds after RUNNING (default: the ``guest_boot`` timing); None of this happens when
  the profile's ``serial_lines`` / ``guest_attributes`` are empty (an OS that never comes up).

Profiles are layered: built-in default, then the project's, then the VM's (by path, so one can be set
before the VM exists). Seed keys: ``projects.P.boot: {...}`` and ``instances[].boot: {...}``; in tests,
``configure_boot(emu, ...)``. A VM is seen booting when it is found RUNNING after having been seen in
another state (or, for a VM the emulator created, at the moment it reached RUNNING); a seeded RUNNING VM
counts as booted long ago. Callers hold ``world.lock`` and have called ``tick()``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gce_emulator.model import ApiError, World

Json = dict[str, Any]
DEFAULT_PROFILE: Json = {
    "serial_lines": ["[  OK  ] Reached target Multi-User System."],
    "guest_attributes": {"guestInventory/ShortName": "debian", "guestInventory/Version": "12"},
    "guest_attributes_enabled": None,
    "boot_delay": None,
}
SERIAL_BUFFER = 1 << 20  # "If the serial console output exceeds the size of the buffer (1 MB) ..."
ENABLE_KEY = "enable-guest-attributes"


@dataclass
class _Boot:
    booted_at: float | None = None  # None: not running (as last seen)
    written: bool = False


@dataclass
class GuestState:
    profiles: dict[str, Json] = field(default_factory=dict)  # "P" or "projects/P/zones/Z/instances/I"
    boots: dict[str, _Boot] = field(default_factory=dict)
    serial: dict[str, tuple[int, str]] = field(default_factory=dict)  # path -> (offset of text, text)
    written: dict[str, dict[str, str]] = field(default_factory=dict)  # attributes a test wrote


def state(world: World) -> GuestState:
    """This world's guest state (kept beside the world, not in model.py, which is the backup path's)."""
    found = world.__dict__.get("_restore_guest")
    if found is None:
        found = world.__dict__["_restore_guest"] = GuestState()
    return found


def check_profile(profile: Mapping[str, Any], where: str) -> Json:
    unknown = set(profile) - set(DEFAULT_PROFILE)
    if unknown:
        raise ValueError(
            f"{where}: unknown boot profile keys {sorted(unknown)}; known: {sorted(DEFAULT_PROFILE)}"
        )
    lines, attributes = profile.get("serial_lines", []), profile.get("guest_attributes", {})
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise ValueError(f"{where}: serial_lines must be a list of strings")
    if not isinstance(attributes, dict) or not all(
        isinstance(k, str) and k.count("/") == 1 and all(k.split("/")) and isinstance(v, str)
        for k, v in attributes.items()
    ):
        raise ValueError(f"{where}: guest_attributes must map 'namespace/key' to a string")
    return dict(profile)


def load_seed(world: World, seed: Mapping[str, Any]) -> None:
    """The seed's boot profiles (``projects.P.boot``, ``projects.P.zones.Z.instances[].boot``)."""
    guest = state(world)
    for project, spec in (seed.get("projects") or {}).items():
        if (spec or {}).get("boot"):
            guest.profiles[project] = check_profile(spec["boot"], f"projects.{project}.boot")
        for zone, zone_spec in ((spec or {}).get("zones") or {}).items():
            for instance in (zone_spec or {}).get("instances") or []:
                if instance.get("boot"):
                    path = f"projects/{project}/zones/{zone}/instances/{instance['name']}"
                    guest.profiles[path] = check_profile(instance["boot"], path)


def profile(world: World, path: str) -> Json:
    guest = state(world)
    return {**DEFAULT_PROFILE, **guest.profiles.get(path.split("/")[1], {}), **guest.profiles.get(path, {})}


def booted(world: World, path: str, *, at: float) -> None:
    """The VM reached RUNNING at simulated time ``at`` (called by the emulator's own state machine)."""
    state(world).boots[path] = _Boot(booted_at=at)


def forget(world: World, path: str) -> None:
    """A VM created or deleted: no boot seen, no serial output, no attributes written."""
    guest = state(world)
    for table in (guest.boots, guest.serial, guest.written):
        table.pop(path, None)


def _observe(world: World, path: str, instance: Json) -> _Boot:
    """Bring the VM's boot record up to date with what its status shows now (see the module docstring)."""
    guest = state(world)
    running = instance.get("status") == "RUNNING"
    boot = guest.boots.get(path)
    if boot is None:
        boot = guest.boots[path] = _Boot(booted_at=-math.inf if running else None)
    elif not running:
        boot.booted_at, boot.written = None, False
        guest.written.pop(path, None)
    elif boot.booted_at is None:
        boot.booted_at = world.clock.now()
    settings = profile(world, path)
    delay = settings["boot_delay"] if settings["boot_delay"] is not None else world.timings["guest_boot"]
    if boot.booted_at is not None and not boot.written and world.clock.now() >= boot.booted_at + delay:
        boot.written = True
        if settings["serial_lines"]:
            append_serial(world, path, "".join(f"{line}\n" for line in settings["serial_lines"]))
    return boot


def append_serial(world: World, path: str, text: str) -> None:
    """Append to serial port 1, keeping the last 1 MB (older output is overwritten)."""
    guest = state(world)
    offset, old = guest.serial.get(path, (0, ""))
    whole = old + text
    drop = max(0, len(whole.encode()) - SERIAL_BUFFER)
    kept = whole.encode()[drop:].decode(errors="ignore")
    guest.serial[path] = (offset + drop, kept)


def _enabled(world: World, path: str, instance: Json) -> bool:
    setting = profile(world, path)["guest_attributes_enabled"]
    if setting is not None:
        return bool(setting)
    items = (instance.get("metadata") or {}).get("items") or []
    return any(
        item.get("key") == ENABLE_KEY and str(item.get("value", "")).upper() == "TRUE" for item in items
    )


def get_guest_attributes(world: World, path: str, query: Mapping[str, str]) -> Json:
    """instances.getGuestAttributes (https://cloud.google.com/compute/docs/reference/rest/v1/instances/
    getGuestAttributes): ``queryPath`` "Specifies the guest attributes path to be queried" (a namespace
    ``ns/`` or a key ``ns/key``), answered in ``queryValue.items[]`` ({namespace, key, value}); or
    ``variableKey`` "Specifies the key for the guest attributes entry", answered in ``variableValue``.
    Exactly one of them (strict). Nothing written there, attributes disabled, or the VM not RUNNING:
    404 (unconfirmed what the API answers for a disabled VM; a 404 is what a caller must handle anyway).
    """
    instance = world.find(world.instances, path)
    query_path, variable_key = query.get("queryPath"), query.get("variableKey")
    if bool(query_path) == bool(variable_key):
        raise ApiError(400, "invalid", "Exactly one of 'queryPath' and 'variableKey' (emulator: strict)")
    boot = _observe(world, path, instance)
    values: dict[str, str] = {}
    if instance.get("status") == "RUNNING" and _enabled(world, path, instance):
        if boot.written:
            values.update(profile(world, path)["guest_attributes"])
        values.update(state(world).written.get(path, {}))
    wanted = query_path or variable_key or ""
    namespace, _, key = wanted.partition("/")
    matches = {k: v for k, v in values.items() if k == wanted or (not key and k.split("/")[0] == namespace)}
    if not matches:
        raise ApiError(404, "notFound", f"The resource '{path}/guestAttributes/{wanted}' was not found")
    body: Json = {
        "kind": "compute#guestAttributes",
        "selfLink": world.url(f"{path}/guestAttributes/{wanted}"),
    }
    if variable_key:
        body.update(variableKey=variable_key, variableValue=matches.get(variable_key, ""))
        if variable_key not in matches:
            raise ApiError(404, "notFound", f"The resource '{path}/guestAttributes/{wanted}' was not found")
        return body
    body["queryPath"] = query_path
    body["queryValue"] = {
        "items": [
            {"namespace": k.split("/")[0], "key": k.split("/")[1], "value": v}
            for k, v in sorted(matches.items())
        ]
    }
    return body


def get_serial_port_output(world: World, path: str, query: Mapping[str, str]) -> Json:
    """instances.getSerialPortOutput (.../v1/instances/getSerialPortOutput): ``port`` 1-4 (default 1;
    only port 1 carries output here), ``start`` a byte offset (default 0; an offset older than the
    retained 1 MB is moved to the oldest byte kept and returned as ``start``; a negative one means "the
    most recent N bytes"). Answers ``contents``, ``start`` and ``next`` ("Use this value in the next
    request as the start parameter"). A VM that is not RUNNING is refused 400 ``resourceNotReady``
    (strict: the reference does not say what a stopped VM returns)."""
    instance = world.find(world.instances, path)
    try:
        port = int(query.get("port") or 1)
        start = int(query.get("start") or 0)
    except ValueError:
        raise ApiError(400, "invalid", "Invalid value for field 'port' or 'start'") from None
    if not 1 <= port <= 4:
        raise ApiError(400, "invalid", f"Invalid value for field 'port': '{port}'. Must be 1-4")
    if instance.get("status") != "RUNNING":
        raise ApiError(
            400, "resourceNotReady", f"The resource '{path}' is not ready ({instance.get('status')})"
        )
    _observe(world, path, instance)
    offset, text = state(world).serial.get(path, (0, "")) if port == 1 else (0, "")
    data = text.encode()
    end = offset + len(data)
    begin = max(end + start, offset) if start < 0 else max(min(start, end), offset)
    contents = data[begin - offset :].decode(errors="ignore")
    return {
        "kind": "compute#serialPortOutput",
        "contents": contents,
        "start": str(begin),
        "next": str(end),
        "selfLink": world.url(f"{path}/serialPort?port={port}"),
    }


# ---- for tests ----------------------------------------------------------------------------------
def configure_boot(
    emulator: Any, project: str, zone: str | None = None, instance: str | None = None, **settings: Any
) -> None:
    """Set the boot profile of a project (``zone``/``instance`` None) or of one VM (existing or not yet),
    e.g. ``configure_boot(emu, P, Z, "drill-vm", serial_lines=[], guest_attributes={"app/ready": "1"})``."""
    key = project if instance is None else f"projects/{project}/zones/{zone}/instances/{instance}"
    checked = check_profile(settings, f"configure_boot({key})")
    with emulator.world.lock:
        emulator.world.tick()
        guest = state(emulator.world)
        guest.profiles[key] = {**guest.profiles.get(key, {}), **checked}


def write_guest_attribute(
    emulator: Any, project: str, zone: str, instance: str, key: str, value: str
) -> None:
    """Act as the guest: write ``namespace/key`` now (visible while the VM runs and attributes are on)."""
    check_profile({"guest_attributes": {key: value}}, "write_guest_attribute")
    path = f"projects/{project}/zones/{zone}/instances/{instance}"
    with emulator.world.lock:
        emulator.world.tick()
        guest = state(emulator.world)
        _observe(emulator.world, path, emulator.world.find(emulator.world.instances, path))
        guest.written.setdefault(path, {})[key] = value
