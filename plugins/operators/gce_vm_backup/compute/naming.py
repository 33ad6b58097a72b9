"""Snapshot names and request ids: valid, deterministic for a DAG run, unique per disk.

A snapshot name is ``<instance>-<disk>-<location>-<yyyymmddhhmmss>-<hash8>`` (the disk part alone
when the disk is named after the instance, as boot disks usually are). The timestamp is the DAG run's
logical date (or run_after), never "now", so a retried task computes the same name and adopts its own
snapshot. ``hash8`` is taken over the scope (deployment and group), the run id, the location, the
instance and the disk: two groups backing up one VM at the same moment (their scheduled run ids are the
same), two runs in the same second, or two disks whose long names shorten alike, still get different
names. A part that does
not fit is shortened to a prefix plus a hash of the whole part, never merely cut.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime

MAX_NAME = 63
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_REQUEST_NAMESPACE = uuid.UUID("5b7d8f3e-2f1c-4e0a-9d51-6a4c1b0e7f21")


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _clean(part: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", part.lower())
    return re.sub(r"-{2,}", "-", cleaned).strip("-")


def _shorten(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit``, else a prefix of it plus ``-`` and a 6-char hash of all of it."""
    if len(text) <= limit:
        return text
    prefix = text[: max(limit - 7, 1)].rstrip("-")
    return f"{prefix}-{_digest(text, 6)}"


def snapshot_name(
    *, instance: str, disk: str, zone_or_region: str, run_time: datetime, run_id: str, scope: str
) -> str:
    """The snapshot name for one disk in one DAG run of one group (``scope``: ``<deployment>/<group>``).
    Raises ValueError for a naive ``run_time``."""
    if run_time.tzinfo is None:
        raise ValueError("run_time must be timezone-aware")
    stamp = run_time.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    suffix = f"-{stamp}-{_digest(f'{scope}|{run_id}|{zone_or_region}|{instance}|{disk}', 8)}"
    instance_part, disk_part, location_part = _clean(instance), _clean(disk), _clean(zone_or_region)
    parts = (
        [disk_part]
        if disk_part == instance_part or disk_part.startswith(f"{instance_part}-")
        else [
            instance_part,
            disk_part,
        ]
    )
    stem = "-".join(p for p in [*parts, location_part] if p)
    stem = _shorten(stem, MAX_NAME - len(suffix))
    if not stem or not stem[0].isalpha():
        stem = f"s{stem}"[: MAX_NAME - len(suffix)].rstrip("-")
    return f"{stem}{suffix}"


def request_id(
    *,
    dag_id: str,
    run_id: str,
    map_index: int,
    resource: str,
    action: str,
    try_number: int,
    deployment: str = "",
) -> str:
    """A deterministic requestId (UUID5) for one mutating call in one task try.

    Stable across reschedules of the same try, so a re-sent request returns the original operation.
    ``try_number`` is part of it because Compute Engine returns the ORIGINAL operation for a repeated
    requestId: an operation that ended DONE-with-error could otherwise never be retried by a later
    Airflow try. Duplicates across tries are prevented by observing before acting (stop/start) and by
    the deterministic snapshot name (adopt when it exists). ``deployment`` keeps two deployments'
    groups of the same name (the same DAG id and run id) apart.
    """
    parts = [dag_id, run_id, str(map_index), resource, action, str(try_number)]
    key = "|".join([deployment, *parts] if deployment else parts)
    return str(uuid.uuid5(_REQUEST_NAMESPACE, key))
