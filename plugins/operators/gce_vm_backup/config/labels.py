"""The labels that mark a snapshot as made by this project, and the list filters that find only those.

A snapshot is a candidate for retention, and is adopted by a retried snapshot task, only when it carries
``managed-by=gce-vm-backup``, this deployment's ``gce-vm-backup-deployment``, this group's
``gce-vm-backup-group`` and the ``gce-vm-backup-disk-key`` of the disk, AND its ``sourceDisk`` is that
disk: anyone can compute the labels, but Compute Engine sets ``sourceDisk`` itself.

Every list filter the package sends is built by ``label_filter``, in the form the Compute Engine list
reference documents (the ``filter`` parameter of every ``list`` / ``aggregatedList`` method): one
expression ``labels.k = "v"``, or several, "each separate expression within parentheses", which are
ANDed: ``(labels.a = "x") (labels.b = "y")``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from gce_vm_backup.compute.paths import DiskRef
from gce_vm_backup.errors import ConfigError

MANAGED_BY_KEY = "managed-by"
MANAGED_BY_VALUE = "gce-vm-backup"
DEPLOYMENT_KEY = "gce-vm-backup-deployment"
# A deployment id: 1-40 chars, lowercase letters, digits and -, starting with a letter, not ending with -.
DEPLOYMENT = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
GROUP_KEY = "gce-vm-backup-group"
INSTANCE_KEY = "gce-vm-backup-instance"
DISK_KEY = "gce-vm-backup-disk"
LOCATION_KEY = "gce-vm-backup-location"
DISK_ID_KEY = "gce-vm-backup-disk-key"
# Which backup run made the snapshot (sha256 of "<dag id>|<run id>", 16 hex): every disk of a VM snapshotted
# by one run forms a snapshot set, which restores and drills take whole.
RUN_KEY = "gce-vm-backup-run"
# On an instant snapshot: the standard snapshot it is converted into (instant_names.TARGET_LABEL).
INSTANT_TARGET_KEY = "gce-vm-backup-snapshot"
RESERVED_KEYS = frozenset(
    {
        MANAGED_BY_KEY,
        DEPLOYMENT_KEY,
        GROUP_KEY,
        INSTANCE_KEY,
        DISK_KEY,
        LOCATION_KEY,
        DISK_ID_KEY,
        RUN_KEY,
        INSTANT_TARGET_KEY,
    }
)
# Compute Engine label keys and values (https://cloud.google.com/compute/docs/labeling-resources), in
# the ASCII subset this package accepts: a value never holds a quote, a space, a parenthesis or a capital.
# Compute Engine label keys and values (ASCII only: a value also ends up quoted inside a list filter).
# The config's models validate with the same patterns.
LABEL_KEY = r"^[a-z][a-z0-9_-]{0,62}$"
LABEL_VALUE = r"^[a-z0-9_-]{0,63}$"
LABEL_KEY_RE = re.compile(LABEL_KEY)
LABEL_VALUE_RE = re.compile(LABEL_VALUE)


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


def check_deployment(value: Any, *, name: str = "deployment") -> str:
    """The deployment id, checked as the config checks it. Raises ConfigError naming ``name``."""
    if not isinstance(value, str) or not DEPLOYMENT.match(value):
        raise ConfigError(
            f"The required parameter {name!r} must be this deployment's id (1-40 chars: lowercase letters, "
            f"digits and -, starting with a letter, not ending with -), got {value!r}"
        )
    return value


def check_group(group: Any) -> str:
    """The group id the snapshots are labelled with. Raises ConfigError naming the parameter."""
    if not isinstance(group, str) or not group:
        raise ConfigError(f"The required parameter 'group' must be the group's id, got {group!r}")
    return group


def label_filter(labels: Mapping[str, str]) -> str:
    """A list filter matching resources that carry every one of ``labels`` (sorted by key).

    One label gives ``labels.k = "v"``; more give ``(labels.a = "x") (labels.b = "y")``; none gives "".
    Raises ConfigError for a key or value that is not a Compute Engine label key or value, so that
    no input can change the meaning of the filter (``x" OR labels.env != "x`` is refused).
    """
    terms = []
    for key, value in sorted(labels.items()):
        if not isinstance(key, str) or not LABEL_KEY_RE.match(key):
            raise ConfigError(f"{key!r} is not a Compute Engine label key; it cannot go into a filter")
        if not isinstance(value, str) or not LABEL_VALUE_RE.match(value):
            raise ConfigError(
                f"label {key}={value!r}: not a Compute Engine label value (at most 63 of a-z, 0-9, _ and -); "
                "it cannot go into a filter"
            )
        terms.append(f'labels.{key} = "{value}"')
    if len(terms) == 1:
        return terms[0]
    return " ".join(f"({term})" for term in terms)


def managed_snapshot_labels(
    *,
    deployment: str,
    group: str,
    instance: str,
    disk_source: str,
    extra: Mapping[str, str] | None = None,
    run: str | None = None,
) -> dict[str, str]:
    """The labels of a snapshot this project makes. User labels cannot override the reserved ones.
    ``run`` (``run_label(dag_id, run_id)``) marks the backup run, so a VM's snapshot set can be found."""
    path = disk_path(disk_source)
    disk = DiskRef.parse(path)
    labels = dict(extra or {})
    labels.update(
        {
            MANAGED_BY_KEY: MANAGED_BY_VALUE,
            DEPLOYMENT_KEY: check_deployment(deployment),
            GROUP_KEY: label_value(group),
            INSTANCE_KEY: label_value(instance),
            DISK_KEY: label_value(disk.name),
            LOCATION_KEY: label_value(disk.location),
            DISK_ID_KEY: disk_key(path),
        }
    )
    if run is not None:
        labels[RUN_KEY] = run
    return labels


def run_label(dag_id: str, run_id: str) -> str:
    """The value of the ``gce-vm-backup-run`` label for one DAG run (16 hex: a valid label value)."""
    return hashlib.sha256(f"{dag_id}|{run_id}".encode()).hexdigest()[:16]


def _scope_labels(*, deployment: str, group: str, disk_source: str) -> dict[str, str]:
    return {
        MANAGED_BY_KEY: MANAGED_BY_VALUE,
        DEPLOYMENT_KEY: check_deployment(deployment),
        GROUP_KEY: label_value(group),
        DISK_ID_KEY: disk_key(disk_source),
    }


def managed_disk_filter(disk_source: str, *, deployment: str, group: str) -> str:
    """The snapshots.list filter of this deployment's and group's snapshots of that disk."""
    return label_filter(_scope_labels(deployment=deployment, group=group, disk_source=disk_source))


def scope_mismatch(
    labels: Mapping[str, str], source_disk: str | None, disk_source: str, *, deployment: str, group: str
) -> str | None:
    """Why a snapshot (its labels and ``sourceDisk``) is NOT this deployment's and group's snapshot of
    ``disk_source``, or None when it is. The client-side check of what the filter promised, plus the
    one thing labels cannot forge: the disk Compute Engine says the snapshot was made from."""
    wanted = _scope_labels(deployment=deployment, group=group, disk_source=disk_source)
    wrong = [f"{key}={labels.get(key)!r}" for key, value in wanted.items() if labels.get(key) != value]
    if wrong:
        return f"its labels are not ours ({', '.join(wrong)})"
    made_from = disk_path(source_disk) if source_disk and "projects/" in source_disk else source_disk
    if made_from != disk_path(disk_source):
        return f"it was made from disk {made_from or '(none)'}"
    return None


def is_managed_snapshot_of(
    labels: Mapping[str, str], source_disk: str | None, disk_source: str, *, deployment: str, group: str
) -> bool:
    """True when the snapshot is this deployment's and group's snapshot of that disk (``scope_mismatch``)."""
    return scope_mismatch(labels, source_disk, disk_source, deployment=deployment, group=group) is None
