"""Where every Compute Engine client of the package talks to.

Order: the Airflow connection's extra ``compute_endpoint``, else the environment variable
``GCE_VM_BACKUP_COMPUTE_ENDPOINT``, else Google's default endpoint.

An endpoint is exactly ``scheme://host[:port]`` (one trailing ``/`` is dropped); anything the HTTP client
could read differently from this check is refused: backslashes, user info (``@``), whitespace and control
characters, a path, a query or a fragment. The scheme and host are lower-cased before the client sees them
(the client library matches the scheme case-sensitively and would read ``HTTP://h`` as a host ``http``).

- ``https://`` is used with the connection's normal credentials, so it must be a Google API domain
  (``googleapis.com`` or a subdomain, e.g. the Private Service Connect name
  ``compute-xyz.p.googleapis.com``) or a host named in the connection extra
  ``compute_endpoint_allowed_hosts`` (a list, or a comma-separated string, of exact host names).
- ``http://`` only on a loopback host (``localhost``, ``127.0.0.0/8``, ``[::1]``): the local emulator, with
  anonymous credentials, so no Google credentials exist anywhere on that path. Credentials never travel
  in clear text.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gce_vm_backup.errors import ConfigError

ENV_VAR = "GCE_VM_BACKUP_COMPUTE_ENDPOINT"
EXTRA_KEY = "compute_endpoint"
ALLOWED_HOSTS_KEY = "compute_endpoint_allowed_hosts"
GOOGLE_API_DOMAIN = "googleapis.com"

_ENDPOINT = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?/?",
    re.IGNORECASE,
)
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_host_name(host: str) -> bool:
    labels = host.split(".")
    return len(host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def _is_google_api_host(host: str) -> bool:
    return host == GOOGLE_API_DOMAIN or host.endswith(f".{GOOGLE_API_DOMAIN}")


def _why_not_an_endpoint(value: str) -> str:
    """Why ``value`` is not ``scheme://host[:port]``, in the words of what it holds."""
    if "\\" in value:
        return "a backslash"
    if any(char.isspace() or not char.isprintable() for char in value):
        return "whitespace or a control character"
    if "@" in value:
        return "user info (@)"
    if "?" in value or "#" in value:
        return "a query or fragment"
    rest = value.split("://", 1)[-1]
    if "/" in rest.rstrip("/"):
        return "a path"
    return "something that is not scheme://host[:port]"


def allowed_hosts(connection_extra: Mapping[str, Any] | None) -> frozenset[str]:
    """The extra ``compute_endpoint_allowed_hosts``: exact host names that may receive credentials.

    Raises ConfigError naming the extra for anything that is not a host name."""
    raw = (connection_extra or {}).get(ALLOWED_HOSTS_KEY)
    if raw is None or raw == "":
        return frozenset()
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise ConfigError(
            f"connection extra {ALLOWED_HOSTS_KEY!r}: expected a list of host names (or one string with "
            f"host names separated by commas), not {raw!r}"
        )
    hosts = {item.strip().lower() for item in items if item.strip()}
    bad = sorted(host for host in hosts if not _is_host_name(host))
    if bad:
        raise ConfigError(
            f"connection extra {ALLOWED_HOSTS_KEY!r}: {', '.join(map(repr, bad))} "
            "is not a host name (exact names only: no scheme, port, path or wildcard)"
        )
    return frozenset(hosts)


@dataclass(frozen=True)
class ComputeEndpoint:
    api_endpoint: str | None = None
    anonymous: bool = False

    @classmethod
    def parse(
        cls, value: str | None, *, source: str, allowed: frozenset[str] = frozenset()
    ) -> ComputeEndpoint:
        """Raises ConfigError naming ``source`` for an endpoint that is not allowed."""
        if not value or not value.strip():
            return cls()
        value = value.strip()
        candidate = value if "://" in value else f"https://{value}"
        match = _ENDPOINT.fullmatch(candidate)
        if match is None:
            raise ConfigError(
                f"{source}: {value!r} is not an endpoint: it holds {_why_not_an_endpoint(candidate)}; "
                "expected scheme://host[:port] and nothing else"
            )
        scheme, host, port = match["scheme"].lower(), match["host"].lower(), match["port"]
        if scheme not in ("http", "https"):
            raise ConfigError(f"{source}: {value!r} is not an http(s) endpoint")
        if host.startswith("["):
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                raise ConfigError(f"{source}: {value!r}: {host} is not an IPv6 address") from None
        elif not _is_host_name(host):
            raise ConfigError(f"{source}: {value!r}: {host!r} is not a host name")
        if port is not None and not 0 < int(port) < 65536:
            raise ConfigError(f"{source}: {value!r}: port {port} is out of range (1-65535)")
        endpoint = f"{scheme}://{host}" + (f":{int(port)}" if port else "")
        if scheme == "http":
            if not _is_loopback(host):
                raise ConfigError(
                    f"{source}: plain http is only allowed on a loopback host (the local emulator), "
                    f"not {host!r}; use https"
                )
            return cls(endpoint, anonymous=True)
        if not (_is_google_api_host(host) or host in allowed):
            raise ConfigError(
                f"{source}: {host!r} is not a Google API host ({GOOGLE_API_DOMAIN} or a subdomain) and would "
                f"receive the service account's access token; name it in the connection extra "
                f"{ALLOWED_HOSTS_KEY!r} if it is meant to"
            )
        return cls(endpoint)

    @classmethod
    def resolve(
        cls, connection_extra: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> ComputeEndpoint:
        """Raises ConfigError naming the connection extra or the environment variable."""
        allowed = allowed_hosts(connection_extra)
        extra_value = (connection_extra or {}).get(EXTRA_KEY)
        if extra_value:
            if not isinstance(extra_value, str):
                raise ConfigError(f"connection extra {EXTRA_KEY!r}: expected a string, not {extra_value!r}")
            return cls.parse(extra_value, source=f"connection extra {EXTRA_KEY!r}", allowed=allowed)
        environ = os.environ if environ is None else environ
        return cls.parse(environ.get(ENV_VAR), source=f"environment variable {ENV_VAR}", allowed=allowed)

    def client_options(self) -> dict[str, str] | None:
        return {"api_endpoint": self.api_endpoint} if self.api_endpoint else None
