"""The ``restore_drill`` block of a group: when and where the group's backups are test-restored.

A group with ``restore_drill:`` gets a drill DAG (``restore_dags``). Validated as strictly as the rest of
the config (``config.Group`` holds this model): unknown keys are refused, YAML ints and booleans are not
converted, and every problem names the file, the group and the key (``restore_drill.<key>``).

A drill is isolated from production: ``scratch_project`` and ``network`` are required; the scratch
project, the network's project and the subnetwork's project may not be one of the group's target projects
(``isolation_problems``, checked by ``config.Group`` with the whole group in hand), and the network is
never a project's ``default`` one.

This module imports nothing from ``gce_vm_backup.config.models`` at module level: config imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

ZONE = r"^[a-z]+-[a-z]+[0-9]+-[a-z]$"
PROJECT_ID = r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$"
# A machine type name (e2-small, n2-standard-4, custom-2-4096); a path is not accepted: the drill VM
# lives in the scratch zone, so the type is looked up there.
MACHINE_TYPE = r"^[a-z][-a-z0-9]{0,62}$"
# A network or subnetwork: a name, or a projects/... path (a shared VPC's host project).
NETWORK = r"^([a-z][-a-z0-9]{0,61}[a-z0-9]|projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/(global/networks|regions/[a-z]+-[a-z]+[0-9]+/subnetworks)/[a-z][-a-z0-9]{0,61}[a-z0-9])$"  # noqa: E501
# guest attributes are read as <namespace>/<key> (instances.getGuestAttributes, queryPath / variableKey)
GUEST_ATTRIBUTE = r"^[A-Za-z0-9_-]{1,64}/[A-Za-z0-9_-]{1,64}$"
PRESETS = frozenset({"@once", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GuestAttribute(_Model):
    key: str = Field(pattern=GUEST_ATTRIBUTE, description="<namespace>/<key>, e.g. drill/boot")
    value: str = Field(min_length=1, max_length=1024, description="the value that says the OS came up")


class BootCheck(_Model):
    """How the drill knows the OS came up; exactly one of:

    - ``guest_attribute``: the guest attribute ``key`` holds ``value`` (written by a startup script with
      ``curl -X PUT --data VALUE -H 'Metadata-Flavor: Google'
      http://metadata.google.internal/computeMetadata/v1/instance/guest-attributes/NAMESPACE/KEY``); the
      drill VM gets the metadata ``enable-guest-attributes=TRUE``;
    - ``serial_port``: the serial port 1 output holds this text (a line of the boot log).
    """

    guest_attribute: GuestAttribute | None = None
    serial_port: str | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _exactly_one(self) -> BootCheck:
        if (self.guest_attribute is None) == (self.serial_port is None):
            raise ValueError(BOOT_CHECK_HELP)
        return self


BOOT_CHECK_HELP = (
    "write none, {guest_attribute: {key: NAMESPACE/KEY, value: VALUE}} or "
    "{serial_port: TEXT OF A BOOT LOG LINE}"
)


class DrillTimeouts(_Model):
    create: int = Field(default=1800, ge=60, le=86400, description="seconds to create the disks and the VM")
    boot: int = Field(default=600, ge=30, le=7200, description="seconds for RUNNING and the boot check")
    cleanup: int = Field(default=900, ge=60, le=7200, description="seconds to delete what the drill made")


class RestoreDrill(_Model):
    """A group's restore drill: restore every VM's newest complete READY snapshot set into a scratch zone,
    boot it (optionally), check it, delete it all. Failures notify through the group's ``notify``."""

    schedule: str | None = None  # a cron expression or preset; null: manual runs only
    scratch_zone: str = Field(pattern=ZONE)
    # where the drill creates and deletes its disks and VM: a project of its own, none of the group's
    scratch_project: str = Field(pattern=PROJECT_ID)
    create_vm: bool = True
    machine_type: str = Field(default="e2-small", pattern=MACHINE_TYPE)
    # a name (a network of the scratch project) or projects/HOST/global/networks/NAME (a shared VPC host)
    network: str = Field(pattern=NETWORK)
    subnetwork: str | None = Field(default=None, pattern=NETWORK)
    boot_check: BootCheck | None = None  # ``none`` in the file
    timeouts: DrillTimeouts = DrillTimeouts()
    poll_interval: int = Field(default=10, ge=1, le=300, description="seconds between two looks")

    @field_validator("boot_check", mode="before")
    @classmethod
    def _none_or_a_check(cls, value: Any) -> Any:
        if value is None or value == "none":
            return None
        if not isinstance(value, Mapping):
            raise ValueError(BOOT_CHECK_HELP)
        return value

    @field_validator("network")
    @classmethod
    def _not_default(cls, network: str) -> str:
        if network.rsplit("/", 1)[-1] == "default":
            raise ValueError(
                f"{network!r}: a drill boots copies of production VMs, so it needs a network made for "
                "drills, not a project's default network (whose firewall rules let SSH, RDP and ICMP in "
                "from anywhere); name one in the scratch project or projects/HOST/global/networks/NAME"
            )
        if "/" in network and "/global/networks/" not in network:
            raise ValueError(f"{network!r} is a subnetwork path: put it under 'subnetwork'")
        return network

    @field_validator("subnetwork")
    @classmethod
    def _a_subnetwork(cls, subnetwork: str | None) -> str | None:
        if subnetwork is not None and "/global/networks/" in subnetwork:
            raise ValueError(f"{subnetwork!r} is a network path: put it under 'network'")
        return subnetwork

    @model_validator(mode="after")
    def _network_where_the_vm_is(self) -> RestoreDrill:
        region = self.scratch_zone.rsplit("-", 1)[0]
        host = _project_of(self.network) or self.scratch_project
        if self.subnetwork is not None:
            if not self.subnetwork.startswith("projects/") and host != self.scratch_project:
                raise _problem(
                    "subnetwork",
                    f"{self.subnetwork!r}: the network is in project {host}; give the subnetwork as "
                    f"projects/{host}/regions/{region}/subnetworks/NAME",
                )
            if self.subnetwork.startswith("projects/"):
                if _project_of(self.subnetwork) != host:
                    raise _problem(
                        "subnetwork", f"{self.subnetwork!r} is not in the network's project {host}"
                    )
                if self.subnetwork.split("/")[3] != region:
                    raise _problem(
                        "subnetwork",
                        f"{self.subnetwork!r} is not in region {region}, the scratch zone's",
                    )
        return self

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, schedule: str | None) -> str | None:
        if schedule is None or schedule in PRESETS:
            return schedule
        if schedule.startswith("@"):
            raise ValueError(
                f"unknown preset {schedule!r}; use one of {', '.join(sorted(PRESETS))}, a cron "
                "expression, or null for manual runs only"
            )
        from croniter import croniter

        if not croniter.is_valid(schedule) or len(schedule.split()) != 5:
            raise ValueError(
                f"invalid cron expression {schedule!r}: use exactly 5 fields (minute hour day-of-month "
                "month day-of-week), a preset, or null for manual runs only"
            )
        return schedule

    def boot_check_spec(self) -> dict[str, Any]:
        """The boot check as the drill task takes it: ``{"kind": "none" | "guest_attribute" |
        "serial_port", ...}``."""
        check = self.boot_check
        if check is not None and check.guest_attribute is not None:
            return {
                "kind": "guest_attribute",
                "key": check.guest_attribute.key,
                "value": check.guest_attribute.value,
            }
        if check is not None and check.serial_port is not None:
            return {"kind": "serial_port", "text": check.serial_port}
        return {"kind": "none"}


def _project_of(path: str | None) -> str | None:
    """``projects/P/...`` -> P; a bare name -> None."""
    return path.split("/")[1] if path and path.startswith("projects/") else None


def _problem(key: str, message: str) -> ValidationError:
    """A problem at ``<key>`` of the block, from a check that needs several keys (a plain ValueError of a
    model validator would name the block only)."""
    return ValidationError.from_exception_data(
        "RestoreDrill",
        [
            InitErrorDetails(
                type=PydanticCustomError("drill", "{message}", {"message": message}), loc=(key,), input=key
            )
        ],
    )


def isolation_problems(drill: RestoreDrill, target_projects: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(key, message)`` for each of the drill's projects that is one of the group's target projects
    (``target_projects``: project -> where the group names it, e.g. ``targets.0``). The drill creates and
    deletes disks and VMs in its scratch project, and boots copies of production VMs on its network."""
    problems = []
    if drill.scratch_project in target_projects:
        problems.append(
            (
                "scratch_project",
                f"{drill.scratch_project!r} is a target project of the group "
                f"({target_projects[drill.scratch_project]}); a drill creates and deletes disks and VMs "
                "in its scratch project, so it must be a project where no VM of the group lives",
            )
        )
    for key in ("network", "subnetwork"):
        project = _project_of(getattr(drill, key))
        if project is not None and project != drill.scratch_project and project in target_projects:
            problems.append(
                (
                    key,
                    f"{getattr(drill, key)!r} is in {project!r}, a target project of the group "
                    f"({target_projects[project]}); the drill VM, a copy of a production VM, must not "
                    "join a production network",
                )
            )
    return problems
