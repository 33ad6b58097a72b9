"""The backup config file: YAML (safe_load) validated into typed models.

``load_config(path)`` returns a BackupConfig or raises ConfigError with every problem;
``validate_file(path)`` returns the problems, each naming the file, the group and the key. Imports
no Google library: the DAG processor runs this at every parse. The file is read through
``config_file`` (regular files only, size, alias and depth limits), and validated strictly: YAML gives
real ints and booleans, so ``"2"`` for 2 or ``"yes"`` for true is refused, not converted.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gce_vm_backup.config.compiled import read_document
from gce_vm_backup.config.labels import DEPLOYMENT, LABEL_KEY, LABEL_VALUE
from gce_vm_backup.config.loading import ConfigFileError, load_yaml
from gce_vm_backup.config.restore import RestoreDrill
from gce_vm_backup.config.retention import RetentionPolicy
from gce_vm_backup.errors import ConfigError

GCE_NAME = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
PROJECT_ID = r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$"
ZONE = r"^[a-z]+-[a-z]+[0-9]+-[a-z]$"
GROUP_ID = re.compile(r"^[a-z][a-z0-9_-]{0,49}$")
LABEL_VALUE_RULE = "a label value is 0-63 characters: lowercase ASCII letters, digits, _ and -"
STORAGE_LOCATION = r"^[a-z]+(-[a-z]+[0-9]+)?$"  # a multi-region (us) or a region (europe-west1)
PRESETS = frozenset({"@once", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"})
CONFIG_VERSION = 1
# What identifies a deployment (one Composer environment's copy of this package): a label value on every
# snapshot it makes, so retention (and sync) act only on what this deployment made.
DEPLOYMENT_ENV = "GCE_VM_BACKUP_DEPLOYMENT"
# A service account's email: the identity restores and drills impersonate (``impersonation_chain``).
# The DAG owner Airflow shows (and filters on): a team, a person or an address; a comma separates several.
OWNER = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9 ._@+,]{0,99}$")
OWNER_RULE = "1-100 characters: letters, digits, spaces and . _ @ + , -, starting with a letter or digit"
DEFAULT_OWNER = "platform"
SERVICE_ACCOUNT = r"^[a-z0-9][-a-z0-9._]{0,62}@[a-z0-9][-a-z0-9.]{0,252}\.gserviceaccount\.com$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExplicitTarget(_Model):
    """One VM, optionally with a subset of its disks."""

    project: str = Field(pattern=PROJECT_ID)
    zone: str = Field(pattern=ZONE)
    instance: str = Field(pattern=GCE_NAME)
    disks: list[Annotated[str, Field(pattern=GCE_NAME)]] | None = Field(default=None, min_length=1)

    def as_operator_target(self) -> dict[str, Any]:
        return {"project_id": self.project, "zone": self.zone, "instance": self.instance, "disks": self.disks}

    @property
    def display_name(self) -> str:
        return f"{self.zone}/{self.instance}"


class SelectorTarget(_Model):
    """Every VM of a project (in some zones, or all) carrying all the given labels, resolved at run time."""

    project: str = Field(pattern=PROJECT_ID)
    zones: list[Annotated[str, Field(pattern=ZONE)]] | None = None  # None: every zone (``zones: all``)
    labels: dict[Annotated[str, Field(pattern=LABEL_KEY)], Annotated[str, Field(pattern=LABEL_VALUE)]] = (
        Field(min_length=1)
    )

    @field_validator("zones", mode="before")
    @classmethod
    def _all_or_a_list(cls, value: Any) -> Any:
        if value == "all":
            return None
        if value == []:
            raise ValueError("an empty list would select no zone: write 'zones: all' for every zone")
        if not isinstance(value, list):
            raise ValueError(f"{_short(value)}: write 'all' or a list of zones, for example [us-central1-a]")
        return value

    def as_operator_target(self) -> dict[str, Any]:
        zones = None if self.zones is None else list(self.zones)
        return {"project_id": self.project, "zones": zones, "labels": dict(self.labels)}


def _target_kind(value: Any) -> str | None:
    if isinstance(value, Mapping):
        if "instance" in value:
            return "instance"
        if "labels" in value:
            return "selector"
    return None


Target = Annotated[
    Annotated[ExplicitTarget, Tag("instance")] | Annotated[SelectorTarget, Tag("selector")],
    Discriminator(
        _target_kind,
        custom_error_type="target_kind",
        custom_error_message="a target needs 'instance' (one VM) or 'labels' (a label selector)",
    ),
]


class SnapshotSettings(_Model):
    labels: dict[Annotated[str, Field(pattern=LABEL_KEY)], Annotated[str, Field(pattern=LABEL_VALUE)]] = {}
    storage_locations: list[Annotated[str, Field(pattern=STORAGE_LOCATION)]] | None = Field(
        default=None, min_length=1, max_length=1
    )
    snapshot_type: Literal["STANDARD", "ARCHIVE"] | None = None
    guest_flush: bool = False
    description: str | None = Field(default=None, max_length=2048)
    # The VM's metadata values (not only its keys) in the manifest every snapshot carries in its
    # description (vm_manifest), for a rebuild of a deleted VM. Off by default: values may hold secrets,
    # and whoever can read a snapshot can read its description.
    keep_metadata_values: bool = False

    @field_validator("labels")
    @classmethod
    def _no_reserved_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        from gce_vm_backup.config.labels import RESERVED_KEYS

        reserved = sorted(set(labels) & RESERVED_KEYS)
        if reserved:
            raise ValueError(
                f"label(s) {', '.join(reserved)} are reserved for gce-vm-backup's own bookkeeping"
            )
        return labels


class EmailSettings(_Model):
    """Failure email through Airflow's SMTP provider (the ``smtp_conn_id`` connection, or its default)."""

    to: list[str] = Field(min_length=1)
    from_email: str | None = None
    smtp_conn_id: str | None = None  # default: Airflow's [email] email_conn_id ("smtp_default")

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class SlackSettings(_Model):
    """Failure message to a Slack incoming webhook stored in an Airflow connection."""

    webhook_conn_id: str = Field(min_length=1)  # a Slack incoming-webhook connection (URL in password)
    channel: str | None = None


class NotifySettings(_Model):
    """A group's ``notify`` block. Both are optional; neither means no notification at all."""

    email: EmailSettings | None = None
    slack: SlackSettings | None = None


class Approver(_Model):
    """An Airflow user who may approve a replace-disks restore: ``id`` as the auth manager knows it (the
    HITL ``assigned_users`` entry), ``name`` shown in the UI (default: the id)."""

    id: str = Field(min_length=1, max_length=256)
    name: str | None = Field(default=None, min_length=1, max_length=256)

    def as_hitl_user(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name or self.id}


class RestoreApproval(_Model):
    """Who approves a replace-disks restore (the ``restore_approval`` block of a group).

    ``approvers``: the only users the approval is assigned to (and accepted from); empty: anyone Airflow
    lets respond. ``four_eyes``: an approval given by the user who triggered the run is refused.
    """

    approvers: list[Approver] = []
    four_eyes: bool = False

    @field_validator("approvers", mode="before")
    @classmethod
    def _ids_or_mappings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"id": item} if isinstance(item, str) else item for item in value]
        return value


class Timeouts(_Model):
    stop: int = Field(default=900, ge=30, description="seconds to wait for a VM to stop")
    snapshot: int = Field(default=7200, ge=60, description="seconds to wait for all snapshots of a VM")
    start: int = Field(default=900, ge=30, description="seconds to wait for a VM to be RUNNING again")
    verify: int = Field(
        default=7200,
        ge=60,
        description="seconds to wait, after the start, for this run's snapshots to be READY",
    )


def _same_offsets(start: datetime, zone: str) -> bool:
    """Whether the named zone has the start date's UTC offset all through the start date's year (UTC
    with +00:00: the zone changes nothing; Europe/Paris with +01:00: not in summer)."""
    tz = ZoneInfo(zone)
    moments = [start.replace(tzinfo=None), *(datetime(start.year, month, 15) for month in range(1, 13))]
    return all(moment.replace(tzinfo=tz).utcoffset() == start.utcoffset() for moment in moments)


class Group(_Model):
    """One schedule group: becomes one DAG."""

    description: str = ""
    # Declared before ``schedule``, whose validator reads it: every run stops VMs, so a schedule that
    # fires more often than hourly needs this explicit opt-in.
    allow_frequent_schedule: bool = False
    schedule: str | None = None
    start_date: datetime
    timezone: str = "UTC"
    tags: list[str] = []
    # The owner of the group's DAGs (backup, restore, drill) in Airflow's DAG list.
    owner: str = DEFAULT_OWNER
    targets: list[Target] | None = Field(default=None, min_length=1)
    tiers: list[Annotated[list[Target], Field(min_length=1)]] | None = Field(default=None, min_length=1)
    snapshot: SnapshotSettings = SnapshotSettings()
    local_ssd: Literal["refuse", "discard", "preserve"] = "refuse"
    wait_mode: Literal["defer", "reschedule", "worker"] = "defer"
    poke_interval: int = Field(default=30, ge=1, le=3600)
    timeouts: Timeouts = Timeouts()
    retries: int = Field(default=2, ge=0, le=10)
    retry_delay: int = Field(
        default=600, ge=0, description="seconds; >= 600 lets a rate-limited snapshot succeed"
    )
    max_concurrent_vms: int = Field(default=10, ge=1, le=500)
    early_restart: bool = False
    # true: after verify (or convert), check that retention's own listing finds each new snapshot (listed.py)
    check_listed: bool = False
    # instant: capture instant snapshots while the VM is down, convert them to standard ones once it runs
    # again (instant_ops); instant_fallback says what a disk whose type has no instant snapshots gets.
    snapshot_mode: Literal["standard", "instant"] = "standard"
    instant_fallback: Literal["refuse", "standard"] = "refuse"
    gcp_conn_id: str = "google_cloud_default"
    # The identity every restore and drill task impersonates (never a backup task); None: the connection's.
    restore_service_account: str | None = Field(default=None, pattern=SERVICE_ACCOUNT)
    # The drill's own identity (create and delete only in its scratch project); None: restore_service_account.
    drill_service_account: str | None = Field(default=None, pattern=SERVICE_ACCOUNT)
    restore_approval: RestoreApproval = RestoreApproval()
    retention: RetentionPolicy | None = None
    notify: NotifySettings | None = None
    restore_drill: RestoreDrill | None = None

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, schedule: str | None, info: ValidationInfo) -> str | None:
        if schedule is None or schedule in PRESETS:  # @hourly is the most frequent preset
            return schedule
        if schedule.startswith("@"):
            raise ValueError(
                f"unknown preset {schedule!r}; use one of {', '.join(sorted(PRESETS))}, a cron "
                "expression, or null for manual runs only"
            )
        if not _valid_cron(schedule):
            raise ValueError(f"invalid cron expression {schedule!r}")
        fields = schedule.split()
        if len(fields) != 5:
            raise ValueError(
                f"cron expression {schedule!r} has {len(fields)} fields; use exactly 5 (minute hour "
                "day-of-month month day-of-week): with more, the first is read as seconds"
            )
        minutes = cron_minutes(schedule)
        if len(minutes) > 1 and not info.data.get("allow_frequent_schedule"):
            at = "every minute" if len(minutes) == 60 else f"at minutes {', '.join(map(str, minutes))}"
            raise ValueError(
                f"{schedule!r} runs more often than hourly ({at} of an hour), and every run stops the "
                "group's VMs; if that is intended, set 'allow_frequent_schedule: true' in the group"
            )
        return schedule

    @field_validator("owner")
    @classmethod
    def _valid_owner(cls, owner: str) -> str:
        if not OWNER.fullmatch(owner) or owner != owner.strip():
            raise ValueError(f"{_short(owner)} is not a valid owner ({OWNER_RULE})")
        return owner

    @field_validator("snapshot_mode")
    @classmethod
    def _instant_has_no_guest_flush(cls, mode: str, info: ValidationInfo) -> str:
        snapshot = info.data.get("snapshot")
        if mode == "instant" and snapshot is not None and snapshot.guest_flush:
            raise ValueError(
                "'instant' cannot honour snapshot.guest_flush: an instant snapshot has no guest flush, and "
                "its standard snapshot is made from it, not from the disk; drop one of the two"
            )
        return mode

    @field_validator("start_date", mode="before")
    @classmethod
    def _iso_start_date(cls, value: Any) -> Any:
        # The config is validated strictly (no "2" for 2, no "yes" for true); a start date may still be
        # an ISO 8601 string or a YAML date, parsed as pydantic does outside strict mode.
        if isinstance(value, str | date) and not isinstance(value, datetime):
            with contextlib.suppress(ValidationError):
                return _LAX_DATETIME.validate_python(value)
        if isinstance(value, int | float):  # pydantic would read a number as seconds since 1970
            raise ValueError(f'write a date-time such as "2026-01-01T03:00:00+00:00", got {_short(value)}')
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {name!r} (use an IANA name such as Europe/Paris)") from None
        return name

    @model_validator(mode="after")
    def _checks(self) -> Group:
        if self.start_date.tzinfo is None:
            object.__setattr__(self, "start_date", self.start_date.replace(tzinfo=ZoneInfo(self.timezone)))
        elif "timezone" in self.model_fields_set and not _same_offsets(self.start_date, self.timezone):
            # The DAG's timezone is the start date's: a start date with its own offset would silently
            # override the named zone (and its daylight saving time). One of the two must go.
            raise ValueError(
                f"keys 'timezone' and 'start_date': start_date {self.start_date.isoformat()} has its own "
                f"UTC offset, so timezone {self.timezone!r} would be ignored (the schedule would follow "
                f"{self.start_date.strftime('%z')} all year); give start_date without an offset to "
                "schedule in the timezone, or drop 'timezone'"
            )
        if (self.targets is None) == (self.tiers is None):
            raise ValueError("a group needs exactly one of 'targets' or 'tiers'")
        seen: set[str] = set()
        for target in self.all_targets():
            if isinstance(target, ExplicitTarget):
                key = f"{target.project}/{target.zone}/{target.instance}"
                if key in seen:
                    raise ValueError(f"VM {key} is listed twice")
                seen.add(key)
        if self.restore_drill is not None:
            self._check_drill_isolation(self.restore_drill)
        return self

    def _check_drill_isolation(self, drill: RestoreDrill) -> None:
        """The drill's projects are none of the group's (restore_config.isolation_problems)."""
        from pydantic_core import InitErrorDetails, PydanticCustomError

        from gce_vm_backup.config.restore import isolation_problems

        where: dict[str, str] = {}
        for number, tier in enumerate(self.tier_list):
            for index, target in enumerate(tier):
                at = f"targets.{index}" if self.targets is not None else f"tiers.{number}.{index}"
                where.setdefault(target.project, at)
        problems = isolation_problems(drill, where)
        if problems:
            raise ValidationError.from_exception_data(
                "Group",
                [
                    InitErrorDetails(
                        type=PydanticCustomError("drill", "{message}", {"message": message}),
                        loc=("restore_drill", key),
                        input=getattr(drill, key),
                    )
                    for key, message in problems
                ],
            )

    @property
    def tier_list(self) -> list[list[ExplicitTarget | SelectorTarget]]:
        return [list(self.targets)] if self.targets is not None else [list(t) for t in self.tiers or []]

    def all_targets(self) -> list[ExplicitTarget | SelectorTarget]:
        return [target for tier in self.tier_list for target in tier]

    def explicit_vm_names(self) -> list[str]:
        return [t.display_name for t in self.all_targets() if isinstance(t, ExplicitTarget)]

    def has_selectors(self) -> bool:
        return any(isinstance(t, SelectorTarget) for t in self.all_targets())

    @property
    def drill_identity(self) -> str | None:
        """The account the drill tasks impersonate: ``drill_service_account``, else the restore's."""
        return self.drill_service_account or self.restore_service_account

    @property
    def retry_timedelta(self) -> timedelta:
        return timedelta(seconds=self.retry_delay)


_LAX_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def cron_minutes(schedule: str) -> list[int]:
    """The minutes of the hour at which a valid 5-field cron expression fires. In every hour it fires at
    all, it fires at each of them: with two or more, consecutive runs are less than an hour apart."""
    return list(_cron_minutes(schedule))


# Cached per expression: the groups of a config mostly share a few schedules, and croniter expands an
# expression again at every call (at every parse of the DAG file, once per group).
@functools.lru_cache(maxsize=256)
def _valid_cron(schedule: str) -> bool:
    from croniter import croniter

    return bool(croniter.is_valid(schedule))


@functools.lru_cache(maxsize=256)
def _cron_minutes(schedule: str) -> tuple[int, ...]:
    from croniter import croniter

    minutes = croniter.expand(schedule)[0][0]
    return tuple(range(60)) if "*" in minutes else tuple(sorted({int(m) for m in minutes}))


@dataclass(frozen=True)
class BackupConfig:
    source: str
    groups: dict[str, Group]
    deployment: str = ""  # the config's ``deployment`` (or GCE_VM_BACKUP_DEPLOYMENT); "" only with problems


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 100
_REPR.maxlist = _REPR.maxdict = 5


@dataclass(frozen=True)
class ConfigProblem:
    file: str
    group: str | None
    key: str | None
    message: str

    def __str__(self) -> str:
        where = [self.file]
        if self.group:
            where.append(f"group {self.group!r}")
        if self.key:
            where.append(f"key {self.key!r}")
        return f"{': '.join(where)}: {self.message}"


def _merge(defaults: Mapping[str, Any], group: Mapping[str, Any]) -> dict[str, Any]:
    """Group keys override defaults; nested blocks (snapshot, timeouts, retention) merge one level deep."""
    merged = dict(defaults)
    for key, value in group.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) and key != "targets":
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _short(value: Any) -> str:
    """A value as a message shows it: a repr cut short (the input may be large, its aliases shared)."""
    return _REPR.repr(value)


def _problems_from(error: ValidationError, file: str, group: str | None) -> list[ConfigProblem]:
    problems = []
    for item in error.errors():
        raw_loc = item["loc"]
        # a tagged union adds its tag ('instance' / 'selector') right after the list index
        loc = [
            str(part)
            for index, part in enumerate(raw_loc)
            if not (
                0 < index < len(raw_loc) - 1
                and isinstance(raw_loc[index - 1], int)
                and part in ("instance", "selector")
            )
        ]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "string_pattern_mismatch" and item["ctx"]["pattern"] == LABEL_VALUE:
            message = f"{_short(item['input'])} is not valid here ({LABEL_VALUE_RULE})"
        elif item["type"] == "string_pattern_mismatch":
            message = f"{_short(item['input'])} is not valid here (it must match {item['ctx']['pattern']})"
        elif item["type"] == "string_type" and isinstance(item["input"], bool):
            message += " (YAML reads an unquoted yes, no, on, off, true or false as a boolean: quote it)"
        elif item["type"] in ("int_type", "bool_type"):  # strict: YAML gives real ints and booleans
            message += f", got {_short(item['input'])}"
        elif item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "missing":
            message = "required key is missing"
        problems.append(ConfigProblem(file, group, ".".join(loc) or None, message))
    return problems


def _deployment(
    raw: Mapping[str, Any], file: str, environ: Mapping[str, str]
) -> tuple[str, list[ConfigProblem]]:
    """The deployment id: ``GCE_VM_BACKUP_DEPLOYMENT`` when set (one config file synced to staging and
    prod), else the file's top-level ``deployment``; required, since retention deletes only what the
    deployment made."""
    from_env = environ.get(DEPLOYMENT_ENV, "").strip()
    value = from_env or raw.get("deployment")
    if value is None:
        return "", [
            ConfigProblem(
                file,
                None,
                "deployment",
                "required key is missing: a short id of this deployment (for example prod), written as a "
                "label on every snapshot so that retention deletes only what it made "
                f"(or set {DEPLOYMENT_ENV})",
            )
        ]
    if not isinstance(value, str) or not DEPLOYMENT.fullmatch(value):
        return "", [
            ConfigProblem(
                file,
                None,
                None if from_env else "deployment",
                f"{f'environment variable {DEPLOYMENT_ENV}: ' if from_env else ''}{_short(value)} is not "
                "valid here (1-40 chars: lowercase letters, digits and -, starting with a letter, not ending "
                "with -)",
            )
        ]
    return value, []


def parse_config(
    text: str, file: str, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Group], list[ConfigProblem]]:
    """Every valid group and every problem; a broken group does not hide the others."""
    return _parse_config(text, file, os.environ if environ is None else environ)[1:]


def _parse_config(
    text: str, file: str, environ: Mapping[str, str]
) -> tuple[str, dict[str, Group], list[ConfigProblem]]:
    return _parse_document(functools.partial(load_yaml, text), file, environ)


def _parse_document(
    load: Callable[[], Any], file: str, environ: Mapping[str, str]
) -> tuple[str, dict[str, Group], list[ConfigProblem]]:
    """The deployment, the valid groups and every problem of the document ``load()`` returns (a
    ConfigFileError it raises is one problem)."""
    try:
        raw = load()
    except ConfigFileError as exc:
        return "", {}, [ConfigProblem(file, None, None, str(exc))]
    if not isinstance(raw, Mapping):
        return (
            "",
            {},
            [
                ConfigProblem(
                    file, None, None, "the file must be a mapping with 'deployment', 'version' and 'groups'"
                )
            ],
        )
    problems: list[ConfigProblem] = []
    unknown = sorted(set(raw) - {"deployment", "version", "defaults", "groups"}, key=str)
    problems += [ConfigProblem(file, None, str(key), "unknown key") for key in unknown]
    if type(raw.get("version")) is not int or raw.get("version") != CONFIG_VERSION:
        problems.append(
            ConfigProblem(
                file, None, "version", f"must be {CONFIG_VERSION}, got {_short(raw.get('version'))}"
            )
        )
    deployment, deployment_problems = _deployment(raw, file, environ)
    problems += deployment_problems
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        problems.append(ConfigProblem(file, None, "defaults", "must be a mapping"))
        defaults = {}
    groups_raw = raw.get("groups")
    if not isinstance(groups_raw, Mapping) or not groups_raw:
        problems.append(
            ConfigProblem(file, None, "groups", "must be a non-empty mapping of group id to group")
        )
        return deployment, {}, problems
    groups: dict[str, Group] = {}
    for group_id, body in groups_raw.items():
        group_id = str(group_id)
        if not GROUP_ID.fullmatch(group_id):
            problems.append(
                ConfigProblem(
                    file,
                    group_id,
                    None,
                    "group ids are 1-50 chars: lowercase letters, digits, _ and -, starting with a letter",
                )
            )
            continue
        if not isinstance(body, Mapping):
            problems.append(ConfigProblem(file, group_id, None, "a group must be a mapping"))
            continue
        try:
            # strict: YAML gives real ints and booleans; "2" for 2 or "yes" for true is a mistake
            groups[group_id] = Group.model_validate(_merge(defaults, body), strict=True)
        except ValidationError as exc:
            problems += _problems_from(exc, file, group_id)
    return deployment, groups, problems


def read_config(path: str | Path, *, compiled: bool = False) -> tuple[BackupConfig, list[ConfigProblem]]:
    """The valid groups of the file and every problem found (a missing file is one problem).

    ``compiled``: the document comes from the config's compiled form when that one was made from the
    file as it is now (config/compiled.py), and is validated the same way; what the DAG file reads."""
    path = Path(path)
    load = functools.partial(read_document, path, compiled=compiled)
    deployment, groups, problems = _parse_document(load, str(path), os.environ)
    return BackupConfig(str(path), groups, deployment), problems


def validate_file(path: str | Path) -> list[ConfigProblem]:
    """Every problem of the config file (empty when it is valid)."""
    return read_config(path)[1]


def load_config(path: str | Path) -> BackupConfig:
    """The config; raises ConfigError with every problem."""
    config, problems = read_config(path)
    if problems:
        raise ConfigError(problems)
    return config
