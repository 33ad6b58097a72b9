"""The bad-input corpus: invalid configs, trigger-form confs and CLI invocations, each with its exact message.

Every case gets one clear message naming the file, group and key (or the argument), never a traceback,
and changes nothing: a broken config produces no DAG and uploads nothing, a refused conf creates no run or
fails before the first API call that could change anything, a bad command line exits 2 before any work.
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED
from gce_vm_backup.config import load_config, validate_file
from gce_vm_backup.dag_factory import build_dags, register_dags
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
CONFIGS = BAD + MORE_BAD_CONFIGS


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


# ---- the trigger form ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def serialized_dags():
    """The DAGs as the API server holds them: it validates a trigger's conf against these params."""
    from airflow.serialization.serialized_objects import DagSerialization

    dags = build_dags(load_config(REPO / "dags" / "gce_vm_backup.yaml"))
    return {dag_id: DagSerialization.from_dict(DagSerialization.to_dict(dag)) for dag_id, dag in dags.items()}


NIGHTLY, LABELLED = "gce_vm_backup__shop-nightly", "gce_vm_backup__labelled-weekly"
FORM_CONFS = [
    (NIGHTLY, {"vms": "web-1"}, "Invalid input for param vms: 'web-1' is not of type 'array'"),
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
    (LABELLED, {"vms": None}, "Invalid input for param vms: None is not of type 'array'"),
    (
        LABELLED,
        {"vms": ["Web Server 1"]},
        "Invalid input for param vms: 'Web Server 1' does not match "
        "'^([a-z]+-[a-z]+[0-9]+-[a-z]/)?[a-z]([-a-z0-9]{0,61}[a-z0-9])?$'",
    ),
    (LABELLED, {"dry_run": "yes"}, "Invalid input for param dry_run: 'yes' is not of type 'boolean'"),
    (LABELLED, {"dry_run": None}, "Invalid input for param dry_run: None is not of type 'boolean'"),
    (NIGHTLY, {"dry_run": 1}, "Invalid input for param dry_run: 1 is not of type 'boolean'"),
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
]


@pytest.mark.parametrize(
    ("argv", "code", "expected"), CLI_CASES, ids=[" ".join(c[0]) or "(none)" for c in CLI_CASES]
)
def test_bad_command_line_exits_with_one_message_naming_the_argument(argv, code, expected):
    exit_code, out, err = run_cli(argv)

    assert exit_code == code
    assert expected in err.strip().splitlines()[-1]
    assert "Traceback" not in out + err


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
