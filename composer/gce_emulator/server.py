"""The HTTP face of the emulator: Compute Engine v1 REST paths on a loopback port."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

from gce_emulator import compute, instance_labels, instant, restore, restore_guest
from gce_emulator.model import DEFAULT_TIMINGS, ApiError, Fault, Operation, SimClock, World

P = r"(?P<project>[^/]+)"
Z = r"zones/(?P<zone>[^/]+)"
R = r"regions/(?P<region>[^/]+)"


# A folder: when set, every process appends to ``calls-<pid>.log`` in it one line per distinct
# (API method, calling client products), e.g. "compute.instances.stop\tgce-vm-backup gl-python ...".
# The pytest plugin sets it to collect what the package calls over a whole session (all emulators, all
# xdist workers and subprocesses).
CALL_LOG_ENV = "GCE_EMULATOR_CALL_LOG"
_call_log_lock = threading.Lock()
_call_log_seen: set[str] = set()


def client_products(headers: Mapping[str, str]) -> tuple[str, ...]:
    """The products a client names in ``x-goog-api-client`` and ``User-Agent``: "gce-vm-backup/0.1.0
    gl-python/3.11.7" -> ("gce-vm-backup", "gl-python"). Google's REST clients put a ``ClientInfo``'s
    ``user_agent`` first in ``x-goog-api-client``."""
    found: list[str] = []
    for header in ("x-goog-api-client", "User-Agent"):
        for token in (headers.get(header) or "").split():
            product = token.split("/", 1)[0]
            if product and product not in found:
                found.append(product)
    return tuple(found)


def _append_call_log(method: str, products: tuple[str, ...]) -> None:
    folder = os.environ.get(CALL_LOG_ENV)
    if not folder:
        return
    line = f"{method}\t{' '.join(products)}\n"
    with _call_log_lock:
        if line in _call_log_seen:
            return
        _call_log_seen.add(line)
        with open(os.path.join(folder, f"calls-{os.getpid()}.log"), "a", encoding="utf-8") as handle:
            handle.write(line)


@dataclass(frozen=True)
class CallRecord:
    method: str  # API discovery id, e.g. "compute.instances.stop"
    resource: str  # path of the resource acted on
    request_id: str | None
    http_method: str
    path: str
    status: int
    time: float  # simulated seconds
    client: tuple[
        str, ...
    ] = ()  # products named by the caller (client_products), e.g. ("gce-vm-backup", ...)


@dataclass(frozen=True)
class Route:
    http_method: str
    pattern: re.Pattern[str]
    method: str
    handler: Callable[[Emulator, dict[str, str], Mapping[str, str], Any], Any]


def _route(http_method: str, path: str, method: str) -> Callable[[Any], Any]:
    def register(handler: Any) -> Any:
        ROUTES.append(Route(http_method, re.compile(f"^/compute/v1/projects/{P}/{path}$"), method, handler))
        return handler

    return register


ROUTES: list[Route] = []


class Faults:
    """Scripted failures: each applies to the next ``times`` calls or operations of a method."""

    def __init__(self, world: World):
        self._world = world
        self._triggers: list[list[Any]] = []  # [method, calls to let pass first, times left, action]
        self._after_apply: list[list[Any]] = []  # [method, times left, status, message]

    def _add(self, fault: Fault) -> None:
        with self._world.lock:
            self._world.faults.append(fault)

    def http_error(self, method: str, status: int, times: int = 1, message: str | None = None) -> None:
        self._add(Fault(method, "http", times, status=status, message=message or f"Injected HTTP {status}"))

    def fail_operation(
        self, method: str, code: str, message: str = "Injected operation failure", times: int = 1
    ) -> None:
        self._add(Fault(method, "fail", times, code=code, message=message))

    def hang_operation(self, method: str, times: int = 1) -> None:
        self._add(Fault(method, "hang", times))

    def fail_snapshot(self, project: str, name_prefix: str = "", times: int = 1) -> None:
        self._add(
            Fault(
                "compute.snapshots.insert", "fail_snapshot", times, project=project, name_prefix=name_prefix
            )
        )

    def fail_instant_snapshot(
        self, project: str, name_prefix: str = "", times: int = 1, *, regional: bool = False
    ) -> None:
        """The next ``times`` instant snapshots (of that project and name prefix) end FAILED, their insert
        operation DONE with an error (gce_emulator.instant)."""
        method = "compute.regionInstantSnapshots.insert" if regional else "compute.instantSnapshots.insert"
        self._add(Fault(method, "fail_snapshot", times, project=project, name_prefix=name_prefix))

    def on_call(self, method: str, action: Callable[[], None], *, after: int = 0, times: int = 1) -> None:
        """Run ``action()`` just before the emulator handles a call of ``method``: the calls numbered
        ``after + 1`` to ``after + times`` (from now). For changes "between tasks", e.g.
        ``on_call("compute.snapshots.insert", lambda: emu.set_instance_status(...))``."""
        with self._world.lock:
            self._triggers.append([method, after, times, action])

    def http_error_after_apply(
        self, method: str, status: int, times: int = 1, message: str | None = None
    ) -> None:
        """The next ``times`` calls of ``method`` are carried out, then answered with HTTP ``status``:
        the caller never sees the result of a request that took effect (a worker killed between
        "request sent" and "result seen", or a connection dropped on the way back)."""
        with self._world.lock:
            self._after_apply.append(
                [method, times, status, message or f"Injected HTTP {status} after the call took effect"]
            )

    def _before_call(self, method: str) -> None:
        actions = []
        with self._world.lock:
            for trigger in self._triggers:
                if trigger[0] != method or trigger[2] <= 0:
                    continue
                if trigger[1] > 0:
                    trigger[1] -= 1
                    continue
                trigger[2] -= 1
                actions.append(trigger[3])
        for action in actions:
            action()

    def _after_call(self, method: str, status: int, payload: Any) -> tuple[int, Any]:
        with self._world.lock:
            for fault in self._after_apply:
                if fault[0] == method and fault[1] > 0:
                    fault[1] -= 1
                    return fault[2], ApiError(fault[2], "injected", fault[3]).body()
        return status, payload

    def clear(self) -> None:
        with self._world.lock:
            self._world.faults.clear()
            self._triggers.clear()
            self._after_apply.clear()


class Emulator:
    """A Compute Engine REST emulator on a loopback port, for the real google-cloud-compute client.

    Use as ``with Emulator(seed) as emu:`` and pass ``client_options={"api_endpoint": emu.url}`` with
    anonymous credentials. Simulated time runs ``time_scale`` times faster than real time.
    """

    def __init__(
        self,
        seed: Mapping[str, Any] | str | Path | None = None,
        *,
        time_scale: float = 1.0,
        timings: Mapping[str, float] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        wait_timeout: float = 2.0,
    ):
        unknown = set(timings or {}) - set(DEFAULT_TIMINGS)
        if unknown:
            raise ValueError(f"unknown timings: {sorted(unknown)}; known: {sorted(DEFAULT_TIMINGS)}")
        self.clock = SimClock(time_scale)
        self.world = World(self.clock, {**DEFAULT_TIMINGS, **(timings or {})})
        self.faults = Faults(self.world)
        self.wait_timeout = wait_timeout
        self._calls: list[CallRecord] = []
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.emulator = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self.world.base_url = self.url
        data = yaml.safe_load(Path(seed).read_text()) if isinstance(seed, str | Path) else seed
        if data:
            compute.load_seed(self.world, data)
            restore_guest.load_seed(self.world, data)
        restore.add_fingerprints(self.world)
        instance_labels.add_instance_fingerprints(self.world)

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Emulator:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="gce-emulator", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- inspection and direct manipulation for tests ------------------------------------------
    @property
    def calls(self) -> list[CallRecord]:
        with self.world.lock:
            return list(self._calls)

    def calls_for(self, method: str) -> list[CallRecord]:
        return [call for call in self.calls if call.method == method]

    def clear_calls(self) -> None:
        with self.world.lock:
            self._calls.clear()

    @contextmanager
    def _state(self) -> Iterator[World]:
        with self.world.lock:
            self.world.tick()
            yield self.world

    def instance(self, project: str, zone: str, name: str) -> dict[str, Any]:
        with self._state() as world:
            path = f"projects/{project}/zones/{zone}/instances/{name}"
            return json.loads(json.dumps(world.find(world.instances, path)))

    def snapshots(self, project: str) -> list[dict[str, Any]]:
        with self._state() as world:
            prefix = f"projects/{project}/global/snapshots/"
            return [
                json.loads(json.dumps(s))
                for path, s in sorted(world.snapshots.items())
                if path.startswith(prefix)
            ]

    def set_instance_status(self, project: str, zone: str, name: str, status: str) -> None:
        with self._state() as world:
            world.find(world.instances, f"projects/{project}/zones/{zone}/instances/{name}")["status"] = (
                status
            )

    def set_instance_labels(self, project: str, zone: str, name: str, labels: Mapping[str, str]) -> None:
        """Replace a VM's labels as another writer would (a new labelFingerprint)."""
        with self._state() as world:
            instance = world.find(world.instances, f"projects/{project}/zones/{zone}/instances/{name}")
            instance["labels"] = dict(labels)
            instance["labelFingerprint"] = restore.fingerprint(instance["labels"])

    def delete_instance(self, project: str, zone: str, name: str) -> None:
        with self._state() as world:
            path = f"projects/{project}/zones/{zone}/instances/{name}"
            world.find(world.instances, path)
            del world.instances[path]

    def delete_disk(self, disk_path: str) -> list[str]:
        """Delete a disk (detached first) and its instant snapshots; the paths of those deleted."""
        with self._state() as world:
            return instant.delete_disk(world, disk_path)

    def instant_snapshots(self, project: str) -> list[dict[str, Any]]:
        """Every instant snapshot of the project (zonal and regional), in path order."""
        with self._state() as world:
            prefix = f"projects/{project}/"
            return [
                json.loads(json.dumps(s))
                for path, s in sorted(world.instant_snapshots.items())
                if path.startswith(prefix)
            ]

    def seed_snapshot(self, project: str, snapshot: Mapping[str, Any]) -> dict[str, Any]:
        with self._state() as world:
            return compute.seed_snapshot(world, project, snapshot)

    # ---- request handling ----------------------------------------------------------------------
    def handle(
        self, http_method: str, raw_path: str, body: Any, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        parts = urlsplit(raw_path)
        query = dict(parse_qsl(parts.query))
        for route in ROUTES:
            match = route.pattern.match(parts.path)
            if match and route.http_method == http_method:
                break
        else:
            return 404, ApiError(404, "notFound", f"Unknown path {http_method} {parts.path}").body()
        params = match.groupdict()
        resource = parts.path.removeprefix("/compute/v1/")
        resource = re.sub(
            r"/(stop|start|resume|createSnapshot|wait|attachDisk|detachDisk|setLabels|getGuestAttributes|serialPort)$",
            "",
            resource,
        )
        products = client_products(headers or {})
        status, payload = self._dispatch(route, params, query, body)
        with self.world.lock:
            self._calls.append(
                CallRecord(
                    route.method,
                    resource,
                    query.get("requestId"),
                    http_method,
                    parts.path,
                    status,
                    self.clock.now(),
                    products,
                )
            )
        _append_call_log(route.method, products)
        return status, payload

    def _dispatch(
        self, route: Route, params: dict[str, str], query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        self.faults._before_call(route.method)
        with self.world.lock:
            fault = self.world.take_fault(route.method, ("http",))
        if fault is not None:
            return fault.status, ApiError(fault.status, "injected", fault.message).body()
        try:
            if route.method.endswith("Operations.wait"):
                return self.faults._after_call(route.method, 200, self._wait(params, query))
            with self.world.lock:
                self.world.tick()
                result = route.handler(self, params, query, body)
                if isinstance(result, Operation):
                    result = result.view(self.world)
            return self.faults._after_call(route.method, 200, result)
        except ApiError as exc:
            return exc.status, exc.body()

    def _wait(self, params: dict[str, str], query: dict[str, str]) -> Any:
        """Long-poll: return when the operation is DONE or after ``wait_timeout`` real seconds."""
        scope = operation_scope(params)
        deadline = time.monotonic() + self.wait_timeout
        while True:
            with self.world.lock:
                self.world.tick()
                op = self.world.get_operation(params["project"], scope, params["operation"])
                if op.status == "DONE" or time.monotonic() >= deadline:
                    return op.view(self.world)
            time.sleep(0.01)


def operation_scope(params: Mapping[str, str]) -> str:
    """'zones/Z', 'regions/R' or 'global': where an operation path's parameters put the operation."""
    if "zone" in params:
        return f"zones/{params['zone']}"
    if "region" in params:
        return f"regions/{params['region']}"
    return "global"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two sends; with Nagle's algorithm and the client's delayed ACK every
    # call would stall about 40 ms on loopback (found by the fleet benchmark).
    disable_nagle_algorithm = True

    def _serve(self, http_method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            status, payload = 400, ApiError(400, "parseError", "Invalid JSON payload received.").body()
        else:
            try:
                status, payload = self.server.emulator.handle(  # type: ignore[attr-defined]
                    http_method, self.path, body, self.headers
                )
            except ApiError as exc:
                status, payload = exc.status, exc.body()
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # quiet by default
        pass


# ---- routes --------------------------------------------------------------------------------------
def _instance_path(p: Mapping[str, str]) -> str:
    return f"projects/{p['project']}/zones/{p['zone']}/instances/{p['instance']}"


@_route("GET", f"{Z}/instances/(?P<instance>[^/]+)", "compute.instances.get")
def _get_instance(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
    emu.world.check_location(p["project"], f"zones/{p['zone']}")
    return emu.world.find(emu.world.instances, _instance_path(p))


@_route("GET", f"{Z}/instances", "compute.instances.list")
def _list_instances(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
    emu.world.check_location(p["project"], f"zones/{p['zone']}")
    prefix = f"projects/{p['project']}/zones/{p['zone']}/instances/"
    items = [item for path, item in sorted(emu.world.instances.items()) if path.startswith(prefix)]
    return compute.list_response("compute#instanceList", items, q, emu.world.url(prefix.rstrip("/")))


@_route("GET", "aggregated/instances", "compute.instances.aggregatedList")
def _aggregated_instances(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
    return compute.aggregated_instances(emu.world, p["project"], q)


@_route("POST", f"{Z}/instances/(?P<instance>[^/]+)/stop", "compute.instances.stop")
def _stop(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
    emu.world.check_location(p["project"], f"zones/{p['zone']}")
    return compute.stop_instance(emu.world, _instance_path(p), q)


@_route("POST", f"{Z}/instances/(?P<instance>[^/]+)/start", "compute.instances.start")
def _start(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
    emu.world.check_location(p["project"], f"zones/{p['zone']}")
    return compute.start_instance(emu.world, _instance_path(p), q)


@_route("POST", f"{Z}/instances/(?P<instance>[^/]+)/resume", "compute.instances.resume")
def _resume(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
    emu.world.check_location(p["project"], f"zones/{p['zone']}")
    return compute.start_instance(emu.world, _instance_path(p), q, resume=True)


def _disk_routes(scope_re: str, scope_key: str, api: str) -> None:
    def scope(p: Mapping[str, str]) -> str:
        return f"{scope_key}/{p[scope_key[:-1]]}"

    @_route("GET", f"{scope_re}/disks/(?P<disk>[^/]+)", f"compute.{api}.get")
    def _get(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
        emu.world.check_location(p["project"], scope(p))
        return emu.world.find(emu.world.disks, f"projects/{p['project']}/{scope(p)}/disks/{p['disk']}")

    @_route("GET", f"{scope_re}/disks", f"compute.{api}.list")
    def _list(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
        emu.world.check_location(p["project"], scope(p))
        prefix = f"projects/{p['project']}/{scope(p)}/disks/"
        items = [item for path, item in sorted(emu.world.disks.items()) if path.startswith(prefix)]
        return compute.list_response("compute#diskList", items, q, emu.world.url(prefix.rstrip("/")))

    @_route("POST", f"{scope_re}/disks/(?P<disk>[^/]+)/createSnapshot", f"compute.{api}.createSnapshot")
    def _create_snapshot(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
        emu.world.check_location(p["project"], scope(p))
        disk_path = f"projects/{p['project']}/{scope(p)}/disks/{p['disk']}"
        emu.world.find(emu.world.disks, disk_path)
        snapshot = {**body, "sourceDisk": disk_path}
        if "guestFlush" in q:
            snapshot["guestFlush"] = q["guestFlush"] == "true"
        return compute.insert_snapshot(
            emu.world, p["project"], snapshot, q, method=f"compute.{api}.createSnapshot", scope=scope(p)
        )


_disk_routes(Z, "zones", "disks")
_disk_routes(R, "regions", "regionDisks")


@_route("POST", "global/snapshots", "compute.snapshots.insert")
def _insert_snapshot(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
    return compute.insert_snapshot(
        emu.world, p["project"], body, q, method="compute.snapshots.insert", scope="global"
    )


@_route("GET", "global/snapshots/(?P<snapshot>[^/]+)", "compute.snapshots.get")
def _get_snapshot(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
    emu.world.check_location(p["project"], "global")
    return emu.world.find(emu.world.snapshots, f"projects/{p['project']}/global/snapshots/{p['snapshot']}")


@_route("GET", "global/snapshots", "compute.snapshots.list")
def _list_snapshots(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
    emu.world.check_location(p["project"], "global")
    prefix = f"projects/{p['project']}/global/snapshots/"
    items = [item for path, item in sorted(emu.world.snapshots.items()) if path.startswith(prefix)]
    return compute.list_response("compute#snapshotList", items, q, emu.world.url(prefix.rstrip("/")))


@_route("DELETE", "global/snapshots/(?P<snapshot>[^/]+)", "compute.snapshots.delete")
def _delete_snapshot(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
    emu.world.check_location(p["project"], "global")
    return compute.delete_snapshot(emu.world, p["project"], p["snapshot"], q)


def _operation_routes(scope_re: str, api: str) -> None:
    @_route("GET", f"{scope_re}/operations/(?P<operation>[^/]+)", f"compute.{api}.get")
    def _get(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
        scope = (
            f"zones/{p['zone']}" if "zone" in p else f"regions/{p['region']}" if "region" in p else "global"
        )
        return emu.world.get_operation(p["project"], scope, p["operation"])

    @_route("POST", f"{scope_re}/operations/(?P<operation>[^/]+)/wait", f"compute.{api}.wait")
    def _wait(emu: Emulator, p: dict[str, str], q: Mapping[str, str], body: Any) -> Any:
        raise AssertionError("handled by Emulator._wait")


instant.register_routes(_route)
_operation_routes(Z, "zoneOperations")
_operation_routes(R, "regionOperations")
_operation_routes("global", "globalOperations")


# Restore's methods (disks from snapshots, VMs from disks, attach/detach, guest state) register here.
from gce_emulator import restore_routes  # noqa: E402,F401
