"""Compute Engine resource paths, parsed and printed in one place.

A reference is a frozen dataclass of a resource's parts (project, zone or region, name). ``path`` prints
the relative form the API takes in requests (``projects/P/zones/Z/instances/N``), ``url`` the full form
Compute Engine returns in ``selfLink``, ``sourceDisk``, ``disks[].source`` etc.
(``https://www.googleapis.com/compute/v1/projects/...``), and ``str()`` is the path.

``parse`` is strict: it takes a path, or a URL of any host (a Private Service Connect endpoint, the
emulator) whose path is ``/compute/<version>/`` followed by the resource's path, and raises
InvalidPathError (a ValueError) naming the expected form for anything else: another kind of resource, a
missing or empty part, a trailing slash, whitespace, a query. A part is any run of characters without
``/``, whitespace, ``?`` or ``#`` (``-`` included: the aggregated zone). Printing never checks: a
reference built from parts prints them as given, as the f-strings it replaces did.

``VmRef.parse(ref.path) == ref`` and ``VmRef.parse(text).path == text`` for every path ``text``
(tests/compute/test_paths.py); the same for each reference type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, TypeVar

API_ROOT = "https://www.googleapis.com/compute/v1/"

_PART = r"[^/\s?#]+"
# An optional URL root: scheme, host, /compute/<version>/ (www.googleapis.com, compute.googleapis.com, a
# Private Service Connect name, the emulator's loopback address).
_ROOT = r"(?:https?://[^/\s?#]+/compute/[a-z0-9]+/)?"

R = TypeVar("R", bound="_Ref")


class InvalidPathError(ValueError):
    """A text that is not a path or URL of the expected kind of Compute Engine resource."""


def _compile(body: str) -> re.Pattern[str]:
    return re.compile(_ROOT + body.format(p=_PART))


class _Ref:
    """What every reference shares: ``parse``, ``url`` and ``str()``."""

    FORM: ClassVar[str]
    PATTERN: ClassVar[re.Pattern[str]]

    @property
    def path(self) -> str:
        raise NotImplementedError

    @property
    def url(self) -> str:
        """The full URL Compute Engine itself returns for the resource."""
        return API_ROOT + self.path

    def __str__(self) -> str:
        return self.path

    @classmethod
    def _match(cls, text: object) -> re.Match[str]:
        match = cls.PATTERN.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise InvalidPathError(f"not a {cls.FORM} path or URL: {text!r}")
        return match

    @classmethod
    def is_valid(cls: type[R], text: object) -> bool:
        """Whether ``parse`` takes ``text``."""
        try:
            cls._match(text)
        except InvalidPathError:
            return False
        return True


@dataclass(frozen=True)
class VmRef(_Ref):
    """A VM: ``projects/P/zones/Z/instances/N``."""

    project: str
    zone: str
    name: str

    FORM: ClassVar[str] = "projects/P/zones/Z/instances/NAME"
    PATTERN: ClassVar[re.Pattern[str]] = _compile(r"projects/({p})/zones/({p})/instances/({p})")

    @classmethod
    def parse(cls, text: str) -> VmRef:
        return cls(*cls._match(text).groups())

    @property
    def path(self) -> str:
        return f"projects/{self.project}/zones/{self.zone}/instances/{self.name}"


@dataclass(frozen=True)
class DiskRef(_Ref):
    """A disk: zonal ``projects/P/zones/Z/disks/N`` or regional ``projects/P/regions/R/disks/N``."""

    project: str
    location: str
    name: str
    regional: bool = False

    FORM: ClassVar[str] = "projects/P/(zones|regions)/L/disks/NAME"
    PATTERN: ClassVar[re.Pattern[str]] = _compile(r"projects/({p})/(zones|regions)/({p})/disks/({p})")

    @classmethod
    def parse(cls, text: str) -> DiskRef:
        project, kind, location, name = cls._match(text).groups()
        return cls(project, location, name, regional=kind == "regions")

    @classmethod
    def of(cls, project: str, zone: str | None, region: str | None, name: str) -> DiskRef:
        """The disk in ``zone`` when one is given, else in ``region``."""
        return cls(project, str(zone), name) if zone else cls(project, str(region), name, regional=True)

    @property
    def kind(self) -> str:
        """``zones`` or ``regions``."""
        return "regions" if self.regional else "zones"

    @property
    def scope(self) -> str:
        """``zones/Z`` or ``regions/R``."""
        return f"{self.kind}/{self.location}"

    @property
    def location_path(self) -> str:
        """``projects/P/zones/Z`` or ``projects/P/regions/R``: where the disk (and its instant snapshots)
        live."""
        return f"projects/{self.project}/{self.scope}"

    @property
    def where(self) -> dict[str, str]:
        """``{"zone": Z}`` or ``{"region": R}``: the location of a request about the disk."""
        return {"region" if self.regional else "zone": self.location}

    @property
    def path(self) -> str:
        return f"{self.location_path}/disks/{self.name}"


@dataclass(frozen=True)
class SnapshotRef(_Ref):
    """A (standard, global) snapshot: ``projects/P/global/snapshots/N``."""

    project: str
    name: str

    FORM: ClassVar[str] = "projects/P/global/snapshots/NAME"
    PATTERN: ClassVar[re.Pattern[str]] = _compile(r"projects/({p})/global/snapshots/({p})")

    @classmethod
    def parse(cls, text: str) -> SnapshotRef:
        return cls(*cls._match(text).groups())

    @property
    def path(self) -> str:
        return f"projects/{self.project}/global/snapshots/{self.name}"
