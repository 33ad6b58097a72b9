"""The bad-input corpus: invalid configs, trigger-form confs and CLI invocations, each with its exact message.

Every case gets one clear message naming the file, group and key (or the argument), never a traceback,
and changes nothing: a broken config produces no DAG and uploads nothing, a refused conf creates no run or
fails before the first API call that could change anything, a bad command line exits 2 before any work.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED
from gce_emulator.__main__ import main as emulator_main
from gce_vm_backup.config.models import load_config, validate_file
from gce_vm_backup.dags.backup import build_dags, register_dags
from gce_vm_backup.errors import ConfigError
from vm_backup_cli.__main__ import main

from ..conftest import REPO, TARGET, config, generated_dagbag, group

MUTATING = {"stop", "start", "resume", "insert", "delete", "createSnapshot"}

# (config text, the exact message after "<file>: ")
BAD = [
    ("version: 1\ngroups: [\n", "invalid YAML (line 3, column 1): expected the node content"),
    ("- a\n- b\n", "the file must be a mapping with 'deployment', 'version' and 'groups'"),
    (config(group(TARGET)).replace("version: 1", "version: 2"), "key 'version': must be 1, got 2"),
    (
        "version: 1\ndeployment: test\ngroups: {}\n",
        "key 'groups': must be a non-empty mapping of group id to group",
    ),
    (config(group(TARGET)) + "extra: 1\n", "key 'extra': unknown key"),
    (
        config(group(f'schedule: "61 * * * *"\n{TARGET}')),
        "group 'web': key 'schedule': invalid cron expression '61 * * * *'",
    ),
    (
        config(group(f'schedule: "@sometimes"\n{TARGET}')),
        "group 'web': key 'schedule': unknown preset '@sometimes'",
    ),
    (
        config(group(TARGET), defaults='start_date: "not a date"'),
        "group 'web': key 'start_date': Input should be a valid datetime",
    ),
    (
        config(group(f"timezone: Mars/Olympus\n{TARGET}")),
        "group 'web': key 'timezone': unknown timezone 'Mars/Olympus'",
    ),
    (
        config(group(f"wait_mode: sometimes\n{TARGET}")),
        "group 'web': key 'wait_mode': Input should be 'defer', 'reschedule' or 'worker'",
    ),
    (
        config(group(f'owner: ""\n{TARGET}')),
        "group 'web': key 'owner': '' is not a valid owner (1-100 characters: letters, digits, spaces and",
    ),
    (
        config(group(f'owner: "ops\\nteam"\n{TARGET}')),
        "group 'web': key 'owner': 'ops\\nteam' is not a valid owner",
    ),
    (
        config(group(TARGET), defaults='start_date: "2026-01-01T00:00:00+00:00"\n  owner: " platform"'),
        "group 'web': key 'owner': ' platform' is not a valid owner",
    ),
    (config(group(f"owner: {'x' * 101}\n{TARGET}")), "group 'web': key 'owner': 'xxxxxxxx"),
    (config(group(f"owner: 42\n{TARGET}")), "group 'web': key 'owner': Input should be a valid string"),
    (
        config(group(f"local_ssd: keep\n{TARGET}")),
        "group 'web': key 'local_ssd': Input should be 'refuse', 'discard' or 'preserve'",
    ),
    (
        config(group(f"max_concurrent_vms: 0\n{TARGET}")),
        "group 'web': key 'max_concurrent_vms': Input should be greater than or equal to 1",
    ),
    (config(group(f"colour: blue\n{TARGET}")), "group 'web': key 'colour': unknown key"),
    (config(group("schedule: null")), "group 'web': a group needs exactly one of 'targets' or 'tiers'"),
    (
        config(group("targets: [{project: demo-project, zone: us-central1-a}]")),
        "group 'web': key 'targets.0': a target needs 'instance' (one VM) or 'labels' (a label selector)",
    ),
    (
        config(group("targets: [{project: demo-project, zones: all, labels: {}}]")),
        "group 'web': key 'targets.0.labels': Dictionary should have at least 1 item after validation, not 0",
    ),
    (
        config(group("targets: [{project: demo-project, zones: all, labels: {a: b}, disks: [x]}]")),
        "group 'web': key 'targets.0.disks': unknown key",
    ),
    (
        config(group("targets: [{project: Demo, zone: us-central1-a, instance: web-1}]")),
        "group 'web': key 'targets.0.project': 'Demo' is not valid here (it must match ^[a-z][-a-z0-9]{4,28}[a-z0-9]$)",
    ),
    (
        config(group("targets: [{project: demo-project, zone: nowhere, instance: web-1}]")),
        "group 'web': key 'targets.0.zone': 'nowhere' is not valid here (it must match ^[a-z]+-[a-z]+[0-9]+-[a-z]$)",
    ),
    (
        config(group(f"{TARGET}\nsnapshot: {{snapshot_type: COLD}}")),
        "group 'web': key 'snapshot.snapshot_type': Input should be 'STANDARD' or 'ARCHIVE'",
    ),
    (
        config(group(f"{TARGET}\nsnapshot: {{labels: {{managed-by: me}}}}")),
        "group 'web': key 'snapshot.labels': label(s) managed-by are reserved for gce-vm-backup's own bookkeeping",
    ),
    (
        config(group(f"{TARGET}\nretention: {{keep_last: 0}}")),
        "group 'web': key 'retention.keep_last': Input should be greater than or equal to 1",
    ),
    (
        config(group(f"{TARGET}\nretention: {{keep_forever: true}}")),
        "group 'web': key 'retention.keep_forever': unknown key",
    ),
    (
        config(
            group(
                "targets:\n  - {project: demo-project, zone: us-central1-a, instance: web-1}\n  - {project: demo-project, zone: us-central1-a, instance: web-1}"
            )
        ),
        "group 'web': VM demo-project/us-central1-a/web-1 is listed twice",
    ),
    (
        config(group(TARGET, name="Web Servers")),
        "group 'Web Servers': group ids are 1-50 chars: lowercase letters, digits, _ and -, starting with a letter",
    ),
    (config(group(TARGET) + group(TARGET)), "invalid YAML (line 8, column 3): duplicate key 'web'"),
    (
        config(group(f"tiers: []\n{TARGET}")),
        "group 'web': key 'tiers': List should have at least 1 item after validation, not 0",
    ),
    (
        config(
            group(f"timezone: Europe/Paris\n{TARGET}"), defaults='start_date: "2026-01-01T03:00:00+01:00"'
        ),
        "group 'web': keys 'timezone' and 'start_date': start_date 2026-01-01T03:00:00+01:00 has its own UTC "
        "offset, so timezone 'Europe/Paris' would be ignored",
    ),
]

# Keys added later, and values pydantic bounds.
MORE_BAD_CONFIGS = [
    (
        "version: 1\ndeployment: test\ndefaults: [a]\ngroups:\n"
        + group(f'start_date: "2026-01-01T00:00:00+00:00"\n{TARGET}'),
        "key 'defaults': must be a mapping",
    ),
    (
        config(group(f"{TARGET}\nnotify: {{email: {{to: []}}}}")),
        "group 'web': key 'notify.email.to': List should have at least 1 item after validation, not 0",
    ),
    (
        config(group(f"{TARGET}\nnotify: {{slack: {{channel: backups}}}}")),
        "group 'web': key 'notify.slack.webhook_conn_id': required key is missing",
    ),
    (
        config(group(f"{TARGET}\nnotify: {{pager: {{to: me}}}}")),
        "group 'web': key 'notify.pager': unknown key",
    ),
    (
        config(group(f"{TARGET}\ntimeouts: {{verify: 10}}")),
        "group 'web': key 'timeouts.verify': Input should be greater than or equal to 60",
    ),
    (
        config(group(f"{TARGET}\npoke_interval: 0")),
        "group 'web': key 'poke_interval': Input should be greater than or equal to 1",
    ),
    (
        config(group(f"{TARGET}\nretry_delay: -5")),
        "group 'web': key 'retry_delay': Input should be greater than or equal to 0",
    ),
    (
        config(group(f"{TARGET}\nsnapshot: {{storage_locations: [us, eu]}}")),
        "group 'web': key 'snapshot.storage_locations': List should have at most 1 item after validation, not 2",
    ),
    (
        config(group(f"{TARGET}\nretention: {{gfs: {{daily: -1}}}}")),
        "group 'web': key 'retention.gfs.daily': Input should be greater than or equal to 0",
    ),
    (
        config(group("targets: [{project: demo-project, zone: us-central1-a, instance: web-1, disks: []}]")),
        "group 'web': key 'targets.0.disks': List should have at least 1 item after validation, not 0",
    ),
]

# A config that could take the DAG processor down (time, memory, a traceback wall).
# Nine levels of nine aliases: 9**9 (387 million) strings once expanded, in about 400 bytes. Before the
# limits, the message "must be 1, got <repr of version>" expanded it: a minute, then MemoryError.
BILLION_LAUGHS = (
    "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(
        f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
        for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "version: *i\n"
)
LIMIT_CONFIGS = [
    (
        BILLION_LAUGHS,
        "invalid YAML (line 6, column 4): more than 100000 values once its aliases are expanded",
    ),
    (
        "a: &a x\nb: [" + ", ".join(["*a"] * 1001) + "]\n",
        "invalid YAML (line 2, column 4005): more than 1000 aliases (*name)",
    ),
    (
        "a: " + "[" * 5000 + "]" * 5000 + "\n",
        "invalid YAML (line 1, column 67): nested more than 64 levels deep",
    ),
    (
        "a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 40 + "*a" + "]" * 40 + "\n",
        "invalid YAML (line 2, column 19): nested more than 64 levels deep once its aliases are expanded",
    ),
    (
        "a: &a [*a]\n",
        "invalid YAML (line 1, column 4): an alias refers to a node that contains it (a recursive structure)",
    ),
    ("? [a]\n: 1\n", "invalid YAML (line 1, column 3): a key must be a plain value, not a list or mapping"),
    ("version: 1\x07\n", "invalid YAML (line 1): character #x0007 is not allowed in YAML"),
    (
        b"version: 1\ndeployment: caf\xe9\n",
        "the file is not UTF-8 text (byte 0xe9 on line 2); save it as UTF-8",
    ),
    ("version: 1\n".encode("utf-16"), "the file is not UTF-8 text (byte 0xff on line 1); save it as UTF-8"),
    (
        "d: &d {a: 1}\ne:\n  <<: *d\n  <<: *d\n",
        "invalid YAML (line 4, column 3): duplicate merge key '<<' (merge several with <<: [*a, *b])",
    ),
    ("e:\n  <<: [1]\n", "invalid YAML (line 2, column 8): expected a mapping for merging, but found scalar"),
    (
        config(group(f"<<: {{retries: 1}}\nretries: 2\nretries: 3\n{TARGET}")),
        "invalid YAML (line 9, column 5): duplicate key 'retries'",
    ),
]


def _selector(labels: str, zones: str = "all") -> str:
    return config(group(f"targets: [{{project: demo-project, zones: {zones}, labels: {labels}}}]"))


LABEL_VALUE_RULE = "a label value is 0-63 characters: lowercase ASCII letters, digits, _ and -"
# Schedules and types that mean something else, and selector label values.
MEANING_CONFIGS = [
    (
        config(group(f'schedule: "0 0 3 * * *"\n{TARGET}')),
        "group 'web': key 'schedule': cron expression '0 0 3 * * *' has 6 fields; use exactly 5 (minute hour "
        "day-of-month month day-of-week): with more, the first is read as seconds",
    ),
    (
        config(group(f'schedule: "0 0 3 * * * 2027"\n{TARGET}')),
        "group 'web': key 'schedule': cron expression '0 0 3 * * * 2027' has 7 fields",
    ),
    (
        config(group(f'schedule: "*/30 * * * *"\n{TARGET}')),
        "group 'web': key 'schedule': '*/30 * * * *' runs more often than hourly (at minutes 0, 30 of an hour), "
        "and every run stops the group's VMs; if that is intended, set 'allow_frequent_schedule: true' in the group",
    ),
    (
        config(group(f'schedule: "* 3 * * *"\n{TARGET}')),
        "group 'web': key 'schedule': '* 3 * * *' runs more often than hourly (every minute of an hour)",
    ),
    (
        config(group(f'schedule: "0,59 */2 * * *"\n{TARGET}')),
        "group 'web': key 'schedule': '0,59 */2 * * *' runs more often than hourly (at minutes 0, 59",
    ),
    (
        config(group(f'allow_frequent_schedule: "yes"\n{TARGET}')),
        "group 'web': key 'allow_frequent_schedule': Input should be a valid boolean, got 'yes'",
    ),
    (
        _selector("{a: b}", zones="[]"),
        "group 'web': key 'targets.0.zones': an empty list would select no zone: write 'zones: all' for every zone",
    ),
    (
        _selector("{a: b}", zones="us-central1-a"),
        "group 'web': key 'targets.0.zones': 'us-central1-a': write 'all' or a list of zones",
    ),
    (
        _selector("{a: b}", zones="null"),
        "group 'web': key 'targets.0.zones': None: write 'all' or a list of zones",
    ),
    (
        _selector("{a: b}", zones="[nowhere]"),
        "group 'web': key 'targets.0.zones.0': 'nowhere' is not valid here",
    ),
    (
        config(group(f"max_concurrent_vms: true\n{TARGET}")),
        "group 'web': key 'max_concurrent_vms': Input should be a valid integer, got True",
    ),
    (
        config(group(f'retries: "2"\n{TARGET}')),
        "group 'web': key 'retries': Input should be a valid integer, got '2'",
    ),
    (
        config(group(f'early_restart: "yes"\n{TARGET}')),
        "group 'web': key 'early_restart': Input should be a valid boolean, got 'yes'",
    ),
    (
        config(group(f'{TARGET}\nretention: {{keep_last: "3"}}')),
        "group 'web': key 'retention.keep_last': Input should be a valid integer, got '3'",
    ),
    (
        config(group(f"{TARGET}\ntimeouts: {{stop: 60.0}}")),
        "group 'web': key 'timeouts.stop': Input should be a valid integer, got 60.0",
    ),
    (
        config(group(f"{TARGET}\nsnapshot: {{guest_flush: 1}}")),
        "group 'web': key 'snapshot.guest_flush': Input should be a valid boolean, got 1",
    ),
    (config(group(TARGET)).replace("version: 1", "version: true"), "key 'version': must be 1, got True"),
    (
        config(group(TARGET), defaults="start_date: 1767225600"),
        "group 'web': key 'start_date': write a date-time such as \"2026-01-01T03:00:00+00:00\", got 1767225600",
    ),
    (
        _selector("{env: 'x\" OR labels.env != \"x'}"),
        f"group 'web': key 'targets.0.labels.env': 'x\" OR labels.env != \"x' is not valid here ({LABEL_VALUE_RULE})",
    ),
    (
        _selector("{env: Prod}"),
        f"group 'web': key 'targets.0.labels.env': 'Prod' is not valid here ({LABEL_VALUE_RULE})",
    ),
    (
        _selector("{env: café}"),
        f"group 'web': key 'targets.0.labels.env': 'café' is not valid here ({LABEL_VALUE_RULE})",
    ),
    (
        _selector(f"{{env: {'a' * 64}}}"),
        f"group 'web': key 'targets.0.labels.env': '{'a' * 64}' is not valid here ({LABEL_VALUE_RULE})",
    ),
    (
        _selector("{env: yes}"),
        "group 'web': key 'targets.0.labels.env': Input should be a valid string (YAML reads an unquoted yes, no, "
        "on, off, true or false as a boolean: quote it)",
    ),
    (
        _selector("{Env: prod}"),
        "group 'web': key 'targets.0.labels.Env.[key]': 'Env' is not valid here (it must match ^[a-z][a-z0-9_-]{0,62}$)",
    ),
    (
        config(group(f'{TARGET}\nsnapshot: {{storage_locations: ["us; x"]}}')),
        "group 'web': key 'snapshot.storage_locations.0': 'us; x' is not valid here",
    ),
    (
        config(group(TARGET, name='"web\\n"')),
        "group 'web\\n': group ids are 1-50 chars: lowercase letters, digits, _ and -, starting with a letter",
    ),
    (
        config(group(TARGET)).replace("deployment: test", 'deployment: "test\\n"'),
        "key 'deployment': 'test\\n' is not valid here",
    ),
]
CONFIGS = BAD + MORE_BAD_CONFIGS + LIMIT_CONFIGS + MEANING_CONFIGS


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`vm-backup ARGV` in process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("text", "expected"), CONFIGS, ids=[c[1][:70] for c in CONFIGS])
def test_bad_config_gets_one_message_from_validate_and_the_dag_file_and_no_dag(tmp_path, text, expected):
    path = tmp_path / "gce_vm_backup.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)

    assert any(str(problem).startswith(f"{path}: {expected}") for problem in validate_file(path))
    code, out, err = run_cli(["validate", str(path)])

    assert code == 1
    assert len(err.splitlines()) == 1, err  # one mistake, one message
    assert err.startswith(f"{path}: {expected}")
    assert "Traceback" not in out + err
    namespace: dict = {}
    with pytest.raises(ConfigError) as raised:  # what the DAG processor shows as the file's import error
        register_dags(namespace, path, strict=True)
    assert f"{path}: {expected}" in str(raised.value)
    assert not [key for key in namespace if key.startswith("gce_vm_backup__")]


def test_the_config_corpus_has_at_least_thirty_cases_each_with_its_own_message():
    assert len(CONFIGS) >= 30
    assert len({expected for _, expected in CONFIGS}) == len(CONFIGS)


def _fifo(tmp_path):
    path = tmp_path / "gce_vm_backup.yaml"
    os.mkfifo(path)
    return path


def _directory(tmp_path):
    path = tmp_path / "gce_vm_backup.yaml"
    path.mkdir()
    return path


def _oversized(tmp_path):
    path = tmp_path / "gce_vm_backup.yaml"
    text = config(group(TARGET)) + "#"
    path.write_text(text + "#" * ((1 << 20) + 1 - len(text)))  # one byte too many
    return path


# Paths that are not a config file: each refused from its stat, before anything is read (a FIFO would
# block the open until a writer comes, /dev/zero would fill the memory).
SPECIAL_FILES = [
    (_fifo, "cannot read the file: it is a FIFO (named pipe); a config must be a regular file"),
    (
        lambda _: Path("/dev/zero"),
        "cannot read the file: it is a character device; a config must be a regular file",
    ),
    (_directory, "cannot read the file: it is a directory; a config must be a regular file"),
    (_oversized, "the file is 1048577 bytes; a config may be at most 1 MiB (1048576 bytes)"),
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("make", "expected"), SPECIAL_FILES, ids=["fifo", "dev-zero", "directory", "too-big"]
)
def test_a_path_that_is_not_a_config_file_is_refused_without_reading_it(tmp_path, make, expected):
    path = make(tmp_path)

    code, out, err = run_cli(["validate", str(path)])

    assert (code, out) == (1, "")
    assert err == f"{path}: {expected}\n"
    with pytest.raises(ConfigError) as raised:
        register_dags({}, path, strict=False)  # even outside strict mode: no group is valid
    assert str(raised.value) == f"{path}: {expected}"


# ---- the trigger form ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def serialized_dags():
    """The DAGs as the API server holds them: it validates a trigger's conf against these params."""
    from airflow.serialization.serialized_objects import DagSerialization

    dags = build_dags(load_config(REPO / "dags" / "gce_vm_backup.yaml"))
    return {dag_id: DagSerialization.from_dict(DagSerialization.to_dict(dag)) for dag_id, dag in dags.items()}


NIGHTLY, LABELLED = "gce_vm_backup__shop-nightly", "gce_vm_backup__labelled-weekly"
FORM_CONFS = [
    (NIGHTLY, {"vms": "web-1"}, "Invalid input for param vms: 'web-1' is not of type 'null', 'array'"),
    (
        NIGHTLY,
        {"vms": ["us-central1-a/ghost"]},
        "Invalid input for param vms: 'us-central1-a/ghost' is not one of "
        "['us-central1-a/web-1', 'us-central1-b/db-1']",
    ),
    (
        NIGHTLY,
        {"vms": ["us-central1-a/web-1", "us-central1-a/web-1"]},
        "Invalid input for param vms: ['us-central1-a/web-1', 'us-central1-a/web-1'] has non-unique elements",
    ),
    (LABELLED, {"vms": [""]}, "Invalid input for param vms: '' should be non-empty"),
    (LABELLED, {"vms": [1]}, "Invalid input for param vms: 1 is not of type 'string'"),
    (
        LABELLED,
        {"vms": ["Web Server 1"]},
        "Invalid input for param vms: 'Web Server 1' does not match "
        "'^([a-z]+-[a-z]+[0-9]+-[a-z]/)?[a-z]([-a-z0-9]{0,61}[a-z0-9])?$'",
    ),
    (LABELLED, {"dry_run": "yes"}, "Invalid input for param dry_run: 'yes' is not of type 'null', 'boolean'"),
    (NIGHTLY, {"dry_run": 1}, "Invalid input for param dry_run: 1 is not of type 'null', 'boolean'"),
]


@pytest.mark.parametrize(("dag_id", "conf", "expected"), FORM_CONFS, ids=[c[2][30:90] for c in FORM_CONFS])
def test_bad_form_value_is_refused_before_a_run_exists(serialized_dags, dag_id, conf, expected):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError) as raised:
        serialized_dags[dag_id].params.deep_merge(conf).validate()  # what create_dagrun runs first

    assert str(raised.value).splitlines()[0] == expected


RUNTIME_CONFIG = """\
version: 1
deployment: test
defaults:
  start_date: "2026-01-01T00:00:00+00:00"
  poke_interval: 1
  retries: 0
groups:
  labelled:
    tiers:
      - - {project: demo-project, zones: all, labels: {tier: web}}
      - - {project: demo-project, zones: all, labels: {tier: db}}
"""
RUNTIME_CONFS = [
    (
        {"vms": ["us-central1-a/ghost"], "dry_run": False},
        "The trigger form's 'vms' (parameter 'only') names VM(s) that are not targets of this group: "
        "us-central1-a/ghost. Nothing was done.",
    ),
    (
        {"vms": [], "dry-run": True},
        "The run's conf has unknown key(s) 'dry-run'; the backup DAGs take only vms, dry_run. Nothing was done.",
    ),
]


@pytest.fixture(scope="module")
def runtime_dag():
    return generated_dagbag("bad_input", RUNTIME_CONFIG).get_dag("gce_vm_backup__labelled")


@pytest.mark.airflow
@pytest.mark.emulator
@pytest.mark.slow
@pytest.mark.parametrize(("conf", "expected"), RUNTIME_CONFS, ids=["unknown-vm", "unknown-key"])
def test_conf_the_form_cannot_check_fails_the_run_before_any_change(
    runtime_dag, monkeypatch, capfd, conf, expected
):
    with Emulator(DEMO_SEED, time_scale=60) as emulator:
        connection = {"conn_type": "google_cloud_platform", "extra": {"compute_endpoint": emulator.url}}
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
        statuses = {
            (zone, name): emulator.instance("demo-project", zone, name)["status"] for zone, name in VMS
        }

        run = runtime_dag.test(run_conf=conf)

        assert run.state == "failed"
        states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
        assert states[("resolve_tier_1", -1)] == "failed"
        assert states.get(("resolve_tier_2", -1)) in ("upstream_failed", None)
        assert [c for c in emulator.calls if c.method.rsplit(".", 1)[-1] in MUTATING] == []
        assert {(z, n): emulator.instance("demo-project", z, n)["status"] for z, n in VMS} == statuses
        assert emulator.snapshots("demo-project") == []
    out, err = capfd.readouterr()  # dag.test prints the task logs
    assert expected in out + err


VMS = [("us-central1-a", "web-1"), ("us-central1-a", "batch-1"), ("us-central1-b", "db-1")]


# ---- the command line ---------------------------------------------------------------------------------
@pytest.fixture
def broken_source(tmp_path):
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "gce_vm_backup.yaml").write_text("version: 1\ndeployment: test\ngroups: {}\n")
    return tmp_path


CLI_CASES = [
    ([], 2, "vm-backup: error: the following arguments are required: COMMAND"),
    (["frobnicate"], 2, "vm-backup: error: argument COMMAND: invalid choice: 'frobnicate'"),
    (["validate", "--strict"], 2, "vm-backup: error: unrecognized arguments: --strict"),
    (
        ["validate", "/nonexistent/gce_vm_backup.yaml"],
        1,
        "/nonexistent/gce_vm_backup.yaml: cannot read the file: No such file or directory",
    ),
    (["sync"], 2, "vm-backup sync: error: one of the arguments --bucket --environment is required"),
    (
        ["sync", "--bucket", "backups", "--environment", "e"],
        2,
        "vm-backup sync: error: argument --environment: not allowed with argument --bucket",
    ),
    (
        ["sync", "--environment", "e"],
        2,
        "vm-backup sync: error: --environment needs --location (the environment's region)",
    ),
    (
        ["sync", "--bucket", "backups", "--location", "europe-west1"],
        2,
        "vm-backup sync: error: --location goes with --environment",
    ),
    (
        ["sync", "--bucket", "Bad_Bucket!"],
        2,
        "vm-backup sync: error: --bucket: 'Bad_Bucket!' is not a bucket name (expected NAME or gs://NAME; "
        "lowercase letters, digits, -, _ and .)",
    ),
    (
        ["sync", "--bucket", "backups", "--source", "/nonexistent"],
        2,
        "vm-backup sync: error: --source: /nonexistent has neither a dags/ nor a plugins/ folder",
    ),
    (
        ["demo", "--time-scale", "fast"],
        2,
        "vm-backup demo: error: argument --time-scale: 'fast' is not a number",
    ),
    (
        ["demo", "--time-scale", "0"],
        2,
        "vm-backup demo: error: argument --time-scale: must be greater than 0, got 0",
    ),
    # every numeric and path argument is checked by its argparse type.
    (
        ["demo", "--time-scale", "inf"],
        2,
        "vm-backup demo: error: argument --time-scale: must be a finite number, got inf",
    ),
    (
        ["demo", "--time-scale", "nan"],
        2,
        "vm-backup demo: error: argument --time-scale: must be a finite number, got nan",
    ),
    (
        ["demo", "--time-scale", "-1"],
        2,
        "vm-backup demo: error: argument --time-scale: must be greater than 0, got -1",
    ),
    (
        ["demo", "--time-scale", "1e9"],
        2,
        "vm-backup demo: error: argument --time-scale: must be at most 100000, got 1e9",
    ),
    (
        ["demo", "--airflow-home", "/etc/hostname/home"],
        2,
        "vm-backup demo: error: argument --airflow-home: /etc/hostname exists and is not a directory",
    ),
    (
        ["local-env", "--port", "99999"],
        2,
        "vm-backup local-env: error: argument --port: must be 0-65535 (0: any free port), got 99999",
    ),
    (
        ["local-env", "--port", "-1"],
        2,
        "vm-backup local-env: error: argument --port: must be 0-65535 (0: any free port), got -1",
    ),
    (
        ["local-env", "--port", "http"],
        2,
        "vm-backup local-env: error: argument --port: 'http' is not a port number (0-65535)",
    ),
    (
        ["local-env", "--time-scale", "inf"],
        2,
        "vm-backup local-env: error: argument --time-scale: must be a finite number, got inf",
    ),
    (
        ["local-env", "--home", "/etc/hostname"],
        2,
        "vm-backup local-env: error: argument --home: /etc/hostname exists and is not a directory",
    ),
    (
        ["local-env", "--config", "/nonexistent.yaml"],
        2,
        "vm-backup local-env: error: argument --config: cannot read /nonexistent.yaml: No such file or directory",
    ),
    (
        ["local-env", "--config", "/dev/zero"],
        2,
        "vm-backup local-env: error: argument --config: /dev/zero is not a regular file",
    ),
]


@pytest.mark.parametrize(
    ("argv", "code", "expected"), CLI_CASES, ids=[" ".join(c[0]) or "(none)" for c in CLI_CASES]
)
def test_bad_command_line_exits_with_one_message_naming_the_argument(argv, code, expected):
    exit_code, out, err = run_cli(argv)

    assert exit_code == code
    assert expected in err.strip().splitlines()[-1]
    assert "Traceback" not in out + err


def run_emulator_cli(argv: list[str]) -> tuple[int, str, str]:
    """`gce-emulator ARGV` in process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = emulator_main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def _seed(tmp_path, text):
    path = tmp_path / "seed.yaml"
    path.write_text(text)
    return str(path)


EMULATOR_CASES = [
    (lambda _: ["--port", "99999"], "argument --port: must be 0-65535 (0: any free port), got 99999"),
    (lambda _: ["--port", "eighty"], "argument --port: 'eighty' is not a port number (0-65535)"),
    (lambda _: ["--time-scale", "nan"], "argument --time-scale: must be a finite number, got nan"),
    (lambda _: ["--time-scale", "inf"], "argument --time-scale: must be a finite number, got inf"),
    (lambda _: ["--time-scale", "-60"], "argument --time-scale: must be greater than 0, got -60"),
    (lambda _: ["--time-scale", "0"], "argument --time-scale: must be greater than 0, got 0"),
    (lambda _: ["--time-scale", "1e400"], "argument --time-scale: must be a finite number, got 1e400"),
    (
        lambda _: ["--host", "0.0.0.0"],
        "argument --host: the emulator only binds loopback addresses, got '0.0.0.0'",
    ),
    (
        lambda tmp: ["--seed", _seed(tmp, "projects: [\n")],
        "argument --seed: {tmp}/seed.yaml: invalid YAML (line 2, column 1): expected the node content",
    ),
    (
        lambda tmp: ["--seed", _seed(tmp, "just a string\n")],
        "argument --seed: {tmp}/seed.yaml: a seed is a mapping with 'projects', got str 'just a string'",
    ),
    (
        lambda tmp: ["--seed", _seed(tmp, "projects: {p: {zones: {z: {instances: [{status: RUNNING}]}}}}\n")],
        "argument --seed: {tmp}/seed.yaml: not a valid seed (KeyError: 'name')",
    ),
    (
        lambda _: ["--seed", "/nonexistent.yaml"],
        "argument --seed: cannot read /nonexistent.yaml: No such file or directory",
    ),
    (
        lambda tmp: ["--seed", str(_fifo(tmp))],
        "argument --seed: {tmp}/gce_vm_backup.yaml is not a regular file",
    ),
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("argv", "expected"), EMULATOR_CASES, ids=[c[1][:60] for c in EMULATOR_CASES])
def test_bad_emulator_command_line_exits_2_with_one_line_naming_the_argument(tmp_path, argv, expected):
    code, out, err = run_emulator_cli(argv(tmp_path))

    assert (code, out) == (2, "")
    assert err.splitlines()[-1].startswith(f"gce-emulator: error: {expected.format(tmp=tmp_path)}")
    assert "Traceback" not in err


def test_sync_with_a_broken_config_names_it_and_uploads_nothing(broken_source, monkeypatch):
    def no_client(*args, **kwargs):
        raise AssertionError("sync reached Cloud Storage with a broken config")

    monkeypatch.setattr("google.cloud.storage.Client", no_client)

    code, out, err = run_cli(["sync", "--bucket", "backups", "--source", str(broken_source)])

    assert code == 1
    assert err.splitlines() == [
        f"{broken_source}/dags/gce_vm_backup.yaml: key 'groups': must be a non-empty mapping of group id to "
        "group",
        "sync: the config is invalid (1 problem(s)); nothing was uploaded.",
    ]
    assert "Traceback" not in out + err


def test_an_emulator_port_already_taken_is_one_line_and_exit_1():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        code, out, err = run_emulator_cli(["--port", str(port)])

    assert (code, out) == (1, "")
    assert err == f"gce-emulator: cannot listen on 127.0.0.1:{port}: Address already in use\n"
