"""The labels that mark a snapshot as made by this project, and the filter that finds only those.

Retention relies on these: a snapshot is a candidate for deletion only if it carries
``managed-by=gce-vm-backup`` and the ``gce-vm-backup-disk-key`` of the disk in question.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

MANAGED_BY_KEY = "managed-by"
MANAGED_BY_VALUE = "gce-vm-backup"
GROUP_KEY = "gce-vm-backup-group"
INSTANCE_KEY = "gce-vm-backup-instance"
DISK_KEY = "gce-vm-backup-disk"
LOCATION_KEY = "gce-vm-backup-location"
DISK_ID_KEY = "gce-vm-backup-disk-key"
RESERVED_KEYS = frozenset({MANAGED_BY_KEY, GROUP_KEY, INSTANCE_KEY, DISK_KEY, LOCATION_KEY, DISK_ID_KEY})


def disk_path(disk_source: str) -> str:
    """'https://.../compute/v1/projects/p/zones/z/disks/d' -> 'projects/p/zones/z/disks/d'."""
    index = disk_source.find("projects/")
    if index < 0:
        raise ValueError(f"not a disk URL or path: {disk_source!r}")
    return disk_source[index:]


def disk_key(disk_source: str) -> str:
    """A stable 16-hex-char key of a disk (project, location and name)."""
    return hashlib.sha256(disk_path(disk_source).encode()).hexdigest()[:16]


def label_value(value: str) -> str:
    """A valid label value (<= 63 chars of [a-z0-9_-]); long values end in a short hash."""
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", value.lower())
    if len(cleaned) <= 63:
        return cleaned
    return f"{cleaned[:56]}-{hashlib.sha256(value.encode()).hexdigest()[:6]}"


def managed_snapshot_labels(
    *, group: str, instance: str, disk_source: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The labels of a snapshot this project makes. User labels cannot override the reserved ones."""
    path = disk_path(disk_source)
    parts = path.split("/")  # projects/P/(zones|regions)/L/disks/D
    labels = dict(extra or {})
    labels.update(
        {
            MANAGED_BY_KEY: MANAGED_BY_VALUE,
            GROUP_KEY: label_value(group),
            INSTANCE_KEY: label_value(instance),
            DISK_KEY: label_value(parts[5]),
            LOCATION_KEY: label_value(parts[3]),
            DISK_ID_KEY: disk_key(path),
        }
    )
    return labels


def managed_disk_filter(disk_source: str) -> str:
    """A snapshots.list filter that selects only this project's snapshots of that disk."""
    return f'labels.{MANAGED_BY_KEY} = "{MANAGED_BY_VALUE}" labels.{DISK_ID_KEY} = "{disk_key(disk_source)}"'


def is_managed_snapshot_of(labels: Mapping[str, str], disk_source: str) -> bool:
    """Client-side double check of what the filter promised."""
    return labels.get(MANAGED_BY_KEY) == MANAGED_BY_VALUE and labels.get(DISK_ID_KEY) == disk_key(disk_source)
