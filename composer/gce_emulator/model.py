"""The emulator's world: projects, VMs, disks, snapshots and operations over simulated time.

State changes are scheduled as events on a simulated clock and applied lazily, under one lock, whenever
anything reads the state; nothing runs in the background. Every method here expects the caller to
hold ``World.lock``.
"""

from __future__ import annotations

import heapq
import itertools
import re
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
EPOCH = datetime(2026, 1, 1, tzinfo=UTC).timestamp()

DEFAULT_TIMINGS: dict[str, float] = {
    "stop": 30.0,  # RUNNING -> STOPPING -> TERMINATED
    "start": 20.0,  # TERMINATED -> STAGING -> RUNNING
    "resume": 20.0,
    "snapshot_creating": 15.0,  # CREATING -> UPLOADING
    "snapshot_uploading": 5.0,  # UPLOADING -> READY, plus per GB
    "snapshot_uploading_per_gb": 1.0,
    "snapshot_delete": 5.0,
    "snapshot_rate_limit": 600.0,  # one snapshot per disk per 10 minutes; 0 disables
    "failed_operation": 1.0,  # how long an operation that is going to fail runs
    # Instant snapshots (gce_emulator.instant): Google documents no creation time ("almost instant" is
    # third-party wording), so these are modelled figures, not measured ones.
    "instant_snapshot_create": 2.0,  # CREATING -> READY, whatever the disk size
    "instant_snapshot_delete": 1.0,
    "instant_snapshot_min_interval": 30.0,  # documented: at least 30 s between two of one disk; 0 disables
}


class ApiError(Exception):
    """An HTTP error in Google's JSON envelope."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message

    def body(self) -> dict[str, Any]:
        status_names = {
            400: "INVALID_ARGUMENT",
            404: "NOT_FOUND",
            409: "ALREADY_EXISTS",
            429: "RESOURCE_EXHAUSTED",
        }
        return {
            "error": {
                "code": self.status,
                "message": self.message,
                "errors": [{"reason": self.reason, "message": self.message, "domain": "global"}],
                "status": status_names.get(self.status, "UNAVAILABLE" if self.status == 503 else "INTERNAL"),
            }
        }


class SimClock:
    """Simulated seconds: real elapsed time times ``time_scale``, plus manual advances."""

    def __init__(self, time_scale: float = 1.0):
        self.time_scale = time_scale
        self._start = time.monotonic()
        self._offset = 0.0

    def now(self) -> float:
        return (time.monotonic() - self._start) * self.time_scale + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += seconds

    def timestamp(self, sim_seconds: float | None = None) -> str:
        moment = EPOCH + (self.now() if sim_seconds is None else sim_seconds)
        return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Fault:
    method: str
    kind: str  # "http", "fail", "hang", "fail_snapshot"
    remaining: int
    status: int = 0
    code: str = ""
    message: str = ""
    project: str = ""
    name_prefix: str = ""


@dataclass
class Operation:
    name: str
    project: str
    scope: str  # "zones/Z", "regions/R" or "global"
    operation_type: str
    target: str  # resource path
    insert_time: float
    id: str
    status: str = "RUNNING"
    end_time: float | None = None
    error: dict[str, str] | None = None
    http_status: int = 400

    def view(self, world: World) -> dict[str, Any]:
        base = f"{world.base_url}/compute/v1/projects/{self.project}"
        scope_url = f"{base}/{self.scope}" if self.scope != "global" else f"{base}/global"
        body: dict[str, Any] = {
            "kind": "compute#operation",
            "id": self.id,
            "name": self.name,
            "operationType": self.operation_type,
            "targetLink": f"{world.base_url}/compute/v1/{self.target}",
            "selfLink": f"{scope_url}/operations/{self.name}",
            "status": self.status,
            "progress": 100 if self.status == "DONE" else 50,
            "insertTime": world.clock.timestamp(self.insert_time),
            "startTime": world.clock.timestamp(self.insert_time),
        }
        if self.scope != "global":
            body[self.scope.split("/")[0][:-1]] = f"{base}/{self.scope}"  # "zone" or "region"
        if self.end_time is not None:
            body["endTime"] = world.clock.timestamp(self.end_time)
        if self.error:
            body["error"] = {"errors": [self.error]}
            body["httpErrorStatusCode"] = self.http_status
            body["httpErrorMessage"] = "BAD REQUEST" if self.http_status == 400 else "FORBIDDEN"
        return body


@dataclass
class World:
    clock: SimClock
    timings: dict[str, float]
    base_url: str = ""
    lock: threading.RLock = field(default_factory=threading.RLock)
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> resource
    disks: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> resource (zonal and regional)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> resource
    operations: dict[str, Operation] = field(default_factory=dict)  # "project/scope/name" -> op
    request_ids: dict[tuple[str, str], Operation] = field(default_factory=dict)
    last_snapshot_of_disk: dict[str, float] = field(default_factory=dict)
    instant_snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> resource
    last_instant_of_disk: dict[str, float] = field(default_factory=dict)  # the 30 s rule counts deleted ones
    instant_disk_types: frozenset[str] | None = None  # None: gce_emulator.instant.SUPPORTED_DISK_TYPES
    faults: list[Fault] = field(default_factory=list)
    projects: set[str] = field(default_factory=set)
    zones: dict[str, set[str]] = field(default_factory=dict)  # project -> zones
    regions: dict[str, set[str]] = field(default_factory=dict)
    _events: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
    _seq: itertools.count = field(default_factory=itertools.count)

    # ---- time ----------------------------------------------------------------------------------
    def schedule(self, delay: float, action: Callable[[], None]) -> float:
        when = self.clock.now() + max(delay, 0.0)
        heapq.heappush(self._events, (when, next(self._seq), action))
        return when

    def tick(self) -> None:
        """Apply every scheduled change whose simulated time has come."""
        while self._events and self._events[0][0] <= self.clock.now():
            _, _, action = heapq.heappop(self._events)
            action()

    def new_id(self, text: str) -> str:
        return str(zlib.crc32(text.encode()) * 1000 + len(self.instances) + len(self.snapshots))

    # ---- faults --------------------------------------------------------------------------------
    def take_fault(self, method: str, kinds: tuple[str, ...], **match: str) -> Fault | None:
        for fault in self.faults:
            if fault.method != method or fault.kind not in kinds or fault.remaining <= 0:
                continue
            if any(
                getattr(fault, key) and not value.startswith(getattr(fault, key))
                for key, value in match.items()
            ):
                continue
            fault.remaining -= 1
            return fault
        return None

    # ---- operations ----------------------------------------------------------------------------
    def start_operation(
        self,
        *,
        method: str,
        project: str,
        scope: str,
        operation_type: str,
        target: str,
        request_id: str | None,
        duration: float,
        on_done: Callable[[], dict[str, str] | None] | None,
        on_fail: Callable[[], None] | None = None,
    ) -> tuple[Operation, bool]:
        """Create (or, for a repeated requestId, return) an operation. Returns (operation, created).

        ``on_done`` runs when the operation's time is up and may return an error to finish it with.
        """
        if request_id:
            existing = self.request_ids.get((project, request_id))
            if existing is not None:
                return existing, False
        now = self.clock.now()
        name = f"operation-{int(EPOCH * 1000 + now * 1000)}-{next(self._seq):06d}"
        op = Operation(name, project, scope, operation_type, target, now, self.new_id(name))
        self.operations[f"{project}/{scope}/{name}"] = op
        if request_id:
            self.request_ids[(project, request_id)] = op
        fault = self.take_fault(method, ("fail", "hang"))
        if fault and fault.kind == "hang":
            return op, True  # never reaches DONE
        if fault and fault.kind == "fail":

            def fail() -> None:
                if on_fail:
                    on_fail()
                self.finish(op, {"code": fault.code, "message": fault.message})

            self.schedule(self.timings["failed_operation"], fail)
            return op, True

        def done() -> None:
            self.finish(op, on_done() if on_done else None)

        if duration <= 0:
            done()
        else:
            self.schedule(duration, done)
        return op, True

    def finish(self, op: Operation, error: dict[str, str] | None = None) -> None:
        op.status, op.end_time, op.error = "DONE", self.clock.now(), error

    def get_operation(self, project: str, scope: str, name: str) -> Operation:
        op = self.operations.get(f"{project}/{scope}/{name}")
        if op is None:
            raise ApiError(
                404, "notFound", f"The resource 'projects/{project}/{scope}/operations/{name}' was not found"
            )
        return op

    # ---- lookups -------------------------------------------------------------------------------
    def check_location(self, project: str, scope: str) -> None:
        if project not in self.projects:
            raise ApiError(404, "notFound", f"The resource 'projects/{project}' was not found")
        kind, _, name = scope.partition("/")
        known = self.zones.get(project, set()) if kind == "zones" else self.regions.get(project, set())
        if kind in ("zones", "regions") and name not in known:
            raise ApiError(404, "notFound", f"The resource 'projects/{project}/{scope}' was not found")

    def find(self, table: dict[str, dict[str, Any]], path: str) -> dict[str, Any]:
        resource = table.get(path)
        if resource is None:
            raise ApiError(404, "notFound", f"The resource '{path}' was not found")
        return resource

    def url(self, path: str) -> str:
        return f"{self.base_url}/compute/v1/{path}"


def validate_name(name: str, what: str = "name") -> None:
    if not NAME_RE.match(name or ""):
        raise ApiError(
            400,
            "invalid",
            f"Invalid value for field 'resource.{what}': '{name}'. "
            "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'",
        )


def resource_path(url_or_path: str) -> str:
    """'https://host/compute/v1/projects/p/zones/z/disks/d' or 'projects/p/...' -> 'projects/p/...'."""
    index = url_or_path.find("projects/")
    if index < 0:
        raise ApiError(400, "invalid", f"Invalid resource reference: '{url_or_path}'")
    return url_or_path[index:]
