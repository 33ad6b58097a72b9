"""The package's one error hierarchy. Every message names the resource and says what went wrong."""

from __future__ import annotations

from collections.abc import Sequence


class BackupError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(BackupError, ValueError):
    """Invalid input: a config file, trigger-form values or operator arguments. Carries every problem."""

    def __init__(self, problems: Sequence[object] | str):
        self.problems: list[str] = [problems] if isinstance(problems, str) else [str(p) for p in problems]
        super().__init__("\n".join(self.problems))


class ApiError(BackupError):
    """A non-transient Compute Engine API error (or a transient one that outlived its retries)."""


class ResourceNotFoundError(ApiError):
    """The VM, disk, snapshot or operation does not exist (HTTP 404)."""


class OperationFailedError(BackupError):
    """A long-running operation finished DONE with an error."""

    def __init__(self, message: str, *, operation: str, resource: str, codes: Sequence[str]):
        super().__init__(message)
        self.operation, self.resource, self.codes = operation, resource, list(codes)


class RateLimitedError(OperationFailedError):
    """The API refused for rate reasons (a disk can be snapshotted about once per 10 minutes)."""


class OperationTimeoutError(BackupError):
    """An operation or a wait did not finish before its deadline."""


class VmStateError(BackupError):
    """The VM is in a state this package refuses to act on (SUSPENDED, local SSDs without a choice, ...)."""


class LabelsChangedError(ApiError):
    """A label write was refused because the resource's labels changed since they were read (HTTP 412,
    a stale ``labelFingerprint``): read again and retry."""


class LeaseHeldError(BackupError):
    """Another backup or restore holds the VM's lease (lease.py); its message names the holder and expiry."""
