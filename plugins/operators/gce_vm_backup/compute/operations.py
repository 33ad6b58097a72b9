"""Reading long-running operations: which client waits on them, and whether DONE means success."""

from __future__ import annotations

from typing import Any

from gce_vm_backup.errors import OperationFailedError, RateLimitedError

RATE_LIMIT_CODES = frozenset({"RATE_LIMIT_EXCEEDED", "OPERATION_RATE_EXCEEDED"})
DONE = "DONE"


def status_name(operation: Any) -> str:
    """'PENDING', 'RUNNING' or 'DONE' (the proto enum or a plain string)."""
    status = operation.status
    return str(getattr(status, "name", status))


def is_done(operation: Any) -> bool:
    return status_name(operation) == DONE


def scope_of(operation: Any) -> tuple[str, str | None]:
    """('zone', Z), ('region', R) or ('global', None), read from the operation itself."""
    if operation.zone:
        return "zone", operation.zone.rsplit("/", 1)[-1]
    if operation.region:
        return "region", operation.region.rsplit("/", 1)[-1]
    return "global", None


def project_of(operation: Any) -> str:
    link = operation.self_link or operation.target_link
    parts = link[link.find("projects/") :].split("/")
    return parts[1]


def target_of(operation: Any) -> str:
    link = operation.target_link or ""
    index = link.find("projects/")
    return link[index:] if index >= 0 else link


def raise_if_failed(operation: Any) -> None:
    """Raise OperationFailedError (RateLimitedError for rate limits) if a DONE operation carries errors.

    The client library's own check misses operations that carry ``error.errors`` without the HTTP
    error fields, so this reads ``error.errors`` directly.
    """
    errors = list(operation.error.errors) if operation.error else []
    if not errors:
        return
    codes = [e.code for e in errors]
    details = "; ".join(f"{e.code}: {e.message}" for e in errors)
    target = target_of(operation)
    kind = operation.operation_type or "operation"
    message = f"The {kind} operation {operation.name} on {target} finished with an error: {details}"
    if RATE_LIMIT_CODES & set(codes):
        raise RateLimitedError(
            f"{message}. Compute Engine allows about one snapshot per disk every 10 minutes; "
            "the task's retry (retry_delay >= 10 minutes) will try again.",
            operation=operation.name,
            resource=target,
            codes=codes,
        )
    raise OperationFailedError(message, operation=operation.name, resource=target, codes=codes)
