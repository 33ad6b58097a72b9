"""Where every Compute Engine client of the package talks to.

Order: the Airflow connection's extra ``compute_endpoint``, else the environment variable
``GCE_VM_BACKUP_COMPUTE_ENDPOINT``, else Google's default endpoint. An ``https://`` endpoint (Private
Service Connect, a regional endpoint) is used with the connection's normal credentials. A plain
``http://`` endpoint is accepted only on a loopback host (the local emulator) and then uses anonymous
credentials, so no Google credentials exist anywhere on that path; any other ``http://`` endpoint is
refused, because credentials must never travel in clear text.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gce_vm_backup.errors import ConfigError

ENV_VAR = "GCE_VM_BACKUP_COMPUTE_ENDPOINT"
EXTRA_KEY = "compute_endpoint"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ComputeEndpoint:
    api_endpoint: str | None = None
    anonymous: bool = False

    @classmethod
    def parse(cls, value: str | None, *, source: str) -> ComputeEndpoint:
        """Raises ConfigError naming ``source`` for an endpoint that is not allowed."""
        if not value or not value.strip():
            return cls()
        value = value.strip().rstrip("/")
        parts = urlsplit(value if "://" in value else f"https://{value}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{source}: {value!r} is not an http(s) endpoint")
        if parts.scheme == "http":
            if not _is_loopback(parts.hostname):
                raise ConfigError(
                    f"{source}: plain http is only allowed on a loopback host (the local emulator), "
                    f"not {parts.hostname!r}; use https"
                )
            return cls(value, anonymous=True)
        return cls(f"https://{parts.netloc}{parts.path}")

    @classmethod
    def resolve(
        cls, connection_extra: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> ComputeEndpoint:
        extra_value = (connection_extra or {}).get(EXTRA_KEY)
        if extra_value:
            return cls.parse(str(extra_value), source=f"connection extra {EXTRA_KEY!r}")
        environ = os.environ if environ is None else environ
        return cls.parse(environ.get(ENV_VAR), source=f"environment variable {ENV_VAR}")

    def client_options(self) -> dict[str, str] | None:
        return {"api_endpoint": self.api_endpoint} if self.api_endpoint else None
