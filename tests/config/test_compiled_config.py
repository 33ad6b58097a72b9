"""The config's compiled form (config/compiled.py): the DAG file reads it only while it is the YAML's own
document, and whatever it holds, it never changes what is built from the config."""

from __future__ import annotations

import json
import os
import sys
from datetime import date, datetime

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gce_vm_backup.config import compiled
from gce_vm_backup.config.compiled import compiled_path, read_document, write_compiled
from gce_vm_backup.config.loading import MAX_BYTES, load_yaml
from gce_vm_backup.config.models import read_config
from gce_vm_backup.dags.backup import register_dags
from vm_backup_cli.__main__ import main

from ..conftest import REPO, TARGET, config, group

sys.path.insert(0, str(REPO / "benchmarks"))
from parse_time import big_config

SHIPPED = REPO / "dags" / "gce_vm_backup.yaml"
DEPLOYMENT_ENV = "GCE_VM_BACKUP_DEPLOYMENT"


def _exact(value):
    """Every type spelled out (1 == 1.0 == True must not hide a difference)."""
    if isinstance(value, dict):
        return {(type(k).__name__, k): _exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact(v) for v in value]
    if isinstance(value, datetime):
        return ("datetime", value.isoformat())
    return (type(value).__name__, value)


@pytest.fixture
def yaml_reads(monkeypatch):
    """How many times the YAML was read into a document (the compiled form was not used)."""
    calls = []

    def counting(text):
        calls.append(text)
        return load_yaml(text)

    monkeypatch.setattr(compiled, "load_yaml", counting)
    return calls


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "gce_vm_backup.yaml"
    path.write_text(SHIPPED.read_text())
    return path


def _dags(path):
    """What the DAG file builds from the config at ``path``: every DAG's id, schedule, params and tasks
    with their arguments (its template fields and its upstream tasks)."""
    built = register_dags({}, path, strict=True)
    return {
        dag_id: (
            str(dag.schedule),
            dag.start_date.isoformat(),
            dag.params.dump(),
            sorted(
                (
                    task.task_id,
                    type(task).__name__,
                    sorted(task.upstream_task_ids),
                    repr([getattr(task, name, None) for name in task.template_fields]),
                )
                for task in dag.tasks
            ),
        )
        for dag_id, dag in built.items()
    }


def _yaml_dags(path, monkeypatch):
    """What the DAG file builds from the YAML alone (as if no compiled form were beside it)."""
    with monkeypatch.context() as scoped:
        scoped.setattr(compiled, "_compiled_document", lambda *args: (False, None))
        return _dags(path)


# ---- what is written ----


def test_the_compiled_form_goes_beside_the_config():
    assert compiled_path("/x/dags/gce_vm_backup.yaml").as_posix() == "/x/dags/gce_vm_backup.compiled.json"
    assert compiled_path("d/gce_vm_backup_prod.yaml").name == "gce_vm_backup_prod.compiled.json"


@pytest.mark.parametrize("text", [SHIPPED.read_text(), big_config(200, 4)], ids=["shipped", "benchmark"])
def test_the_compiled_document_is_the_yamls(tmp_path, text, yaml_reads):
    path = tmp_path / "gce_vm_backup.yaml"
    path.write_text(text)
    assert write_compiled(path) == compiled_path(path)
    yaml_reads.clear()
    assert _exact(read_document(path, compiled=True)) == _exact(yaml.safe_load(text))
    assert yaml_reads == []  # read from the compiled form


def test_the_dag_file_reads_the_compiled_form_and_builds_the_same_dags(config_file, monkeypatch, yaml_reads):
    from_yaml = _yaml_dags(config_file, monkeypatch)
    write_compiled(config_file)
    yaml_reads.clear()
    assert _dags(config_file) == from_yaml
    assert yaml_reads == []


def test_the_compiled_form_says_what_it_is_on_its_first_line(config_file):
    header = json.loads(write_compiled(config_file).read_text().splitlines()[0])
    assert "gce_vm_backup.yaml" in header["about"]
    assert "Do not edit" in header["about"]
    assert header["format"] == compiled.FORMAT


# ---- a stale or hostile compiled form: the YAML is read, the same DAGs are built ----


def _edit_yaml(path):
    path.write_text(path.read_text().replace('schedule: "0 3 * * *"', 'schedule: "0 4 * * *"', 1))


def _truncate(path):
    target = compiled_path(path)
    target.write_bytes(target.read_bytes()[:-200])


def _edit_body(path):
    """The document edited, the key left as it was (a hand edit, or a forger who did not recompute it)."""
    target = compiled_path(path)
    target.write_text(target.read_text().replace("0 3 * * *", "0 5 * * *"))


def _garbage(path):
    compiled_path(path).write_bytes(os.urandom(4096))


def _header_only(path):
    target = compiled_path(path)
    target.write_text(target.read_text().splitlines()[0] + "\n")


def _other_format(path):
    target = compiled_path(path)
    header, body, _ = target.read_text().split("\n")
    header = json.dumps({**json.loads(header), "format": compiled.FORMAT + 1})
    target.write_text(f"{header}\n{body}\n")


def _a_list_header(path):
    target = compiled_path(path)
    body = target.read_text().split("\n")[1]
    target.write_text(f"[1, 2]\n{body}\n")


def _too_large(path):
    target = compiled_path(path)
    target.write_bytes(target.read_bytes() + b" " * (compiled.MAX_COMPILED_BYTES + 1))


def _a_directory(path):
    compiled_path(path).unlink()
    compiled_path(path).mkdir()


def _a_fifo(path):
    compiled_path(path).unlink()
    os.mkfifo(compiled_path(path))


def _another_configs(path):
    """The compiled form of another config, moved beside this one."""
    other = path.with_name("gce_vm_backup_other.yaml")
    other.write_text(path.read_text().replace("0 3 * * *", "0 6 * * *"))
    write_compiled(other).rename(compiled_path(path))


STALE_OR_HOSTILE = {
    "edited-yaml": _edit_yaml,
    "truncated": _truncate,
    "edited-document": _edit_body,
    "not-json": _garbage,
    "no-document": _header_only,
    "other-format": _other_format,
    "header-not-a-mapping": _a_list_header,
    "too-large": _too_large,
    "a-directory": _a_directory,
    "a-fifo": _a_fifo,
    "another-configs": _another_configs,
}


@pytest.mark.parametrize("spoil", STALE_OR_HOSTILE.values(), ids=STALE_OR_HOSTILE.keys())
def test_a_stale_or_spoiled_compiled_form_is_ignored(config_file, monkeypatch, yaml_reads, spoil):
    assert 'schedule: "0 3 * * *"' in config_file.read_text()  # what the edits change
    write_compiled(config_file)
    spoil(config_file)
    expected = _yaml_dags(config_file, monkeypatch)
    yaml_reads.clear()
    assert _dags(config_file) == expected
    assert len(yaml_reads) == 1  # the YAML was read


@pytest.mark.parametrize(
    ("module", "name", "value"),
    [(compiled, "_loader_digest", lambda: b"another loader"), (yaml, "__version__", "0.0.1")],
    ids=["loading.py", "PyYAML"],
)
def test_a_compiled_form_from_another_loader_is_ignored(
    config_file, monkeypatch, yaml_reads, module, name, value
):
    """Made by another version of the code that reads a YAML into its document (this package's
    config/loading.py, or PyYAML), it is not trusted to hold what this one reads."""
    write_compiled(config_file)
    expected = _yaml_dags(config_file, monkeypatch)
    monkeypatch.setattr(module, name, value)
    yaml_reads.clear()
    assert _dags(config_file) == expected
    assert len(yaml_reads) == 1


def test_without_the_loaders_source_nothing_is_compiled_nor_read(config_file, monkeypatch, yaml_reads):
    write_compiled(config_file)
    monkeypatch.setattr(compiled, "_loader_digest", lambda: None)
    yaml_reads.clear()
    read_document(config_file, compiled=True)
    assert len(yaml_reads) == 1
    assert write_compiled(config_file) is None
    assert not compiled_path(config_file).exists()


def test_the_environment_is_applied_to_the_compiled_document_as_to_the_yamls(
    config_file, monkeypatch, yaml_reads
):
    """GCE_VM_BACKUP_DEPLOYMENT (the one environment value the config reads) is applied at every parse,
    after the document is read: compiled without it, read with it, the DAGs are the YAML's with it."""
    monkeypatch.delenv(DEPLOYMENT_ENV, raising=False)
    write_compiled(config_file)
    monkeypatch.setenv(DEPLOYMENT_ENV, "staging")
    expected = _yaml_dags(config_file, monkeypatch)
    yaml_reads.clear()
    assert _dags(config_file) == expected
    assert yaml_reads == []
    assert read_config(config_file, compiled=True)[0].deployment == "staging"
    monkeypatch.setenv(DEPLOYMENT_ENV, "Not Valid")
    assert read_config(config_file, compiled=True)[1] == read_config(config_file)[1] != []


def test_a_problem_is_named_alike_on_both_paths(tmp_path, monkeypatch):
    """A config with a broken group is compiled too (its document is what it is): the DAG file names the
    same problems in the same words, and builds the other groups alike."""
    path = tmp_path / "gce_vm_backup.yaml"
    path.write_text(config(group(TARGET) + group('schedule: "bad"\n' + TARGET, name="broken")))
    assert write_compiled(path) is not None
    assert read_config(path, compiled=True) == read_config(path)
    assert read_config(path)[1] != []


# ---- what is not compiled ----


@pytest.mark.parametrize(
    "text",
    [
        "a: !!binary aGVsbG8=\n",  # bytes
        "a: !!set {x, y}\n",  # a set
        "1: one\n",  # a key that is not a string
        "2026-01-01: day\n",
        "'!date': 2026-01-01\n",  # a key that would read as a tagged value
        "a: {'!datetime': x}\n",
    ],
)
def test_a_document_json_cannot_hold_exactly_is_not_compiled(tmp_path, text, yaml_reads):
    path = tmp_path / "gce_vm_backup.yaml"
    path.write_text(text)
    compiled_path(path).write_text("stale\n")
    assert write_compiled(path) is None
    assert not compiled_path(path).exists()  # a stale one goes: sync never uploads it
    yaml_reads.clear()
    assert _exact(read_document(path, compiled=True)) == _exact(load_yaml(text))
    assert len(yaml_reads) == 1


def test_dates_timestamps_and_floats_come_back_exactly(tmp_path):
    text = (
        "d: 2026-01-01\nnaive: 2026-01-01 03:00:00\nutc: 2026-01-01T03:00:00Z\n"
        "paris: 2026-07-01T03:00:00.123456+02:00\nf: [1.0, -0.0, .inf, -.inf, .nan, 1e300, 0.1]\n"
        "i: [1, 0o17, 0x1f, -7]\nb: [yes, no, true]\nn: ~\n"
    )
    path = tmp_path / "gce_vm_backup.yaml"
    path.write_text(text)
    assert write_compiled(path) is not None
    document = read_document(path, compiled=True)
    assert type(document["d"]) is date
    assert document["paris"].utcoffset().total_seconds() == 7200
    assert document["naive"].tzinfo is None
    assert compiled._exact(document) == compiled._exact(load_yaml(text))


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.dates(),
    st.datetimes(),
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=DOCUMENTS, flow=st.booleans())
def test_any_document_is_read_back_exactly_or_not_compiled(tmp_path_factory, document, flow):
    path = tmp_path_factory.mktemp("doc") / "gce_vm_backup.yaml"
    text = yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True)
    if len(text.encode()) > MAX_BYTES:
        return
    path.write_text(text)
    expected = compiled._exact(load_yaml(text))
    written = write_compiled(path)
    assert compiled._exact(read_document(path, compiled=True)) == expected
    if written is None:  # only a key starting with "!" is refused among these
        assert "'!" in repr(document) or '"!' in repr(document)


# ---- who writes it ----


def test_validate_compiles_a_valid_config_and_says_so(config_file, capsys):
    assert main(["validate", str(config_file)]) == 0
    assert f"compiled to {compiled_path(config_file)}" in capsys.readouterr().out
    assert compiled_path(config_file).is_file()


def test_validate_compiles_no_config_with_a_problem(tmp_path, capsys):
    path = tmp_path / "gce_vm_backup.yaml"
    path.write_text(config(group('schedule: "bad"\n' + TARGET)))
    assert main(["validate", str(path)]) == 1
    assert not compiled_path(path).exists()


def test_validate_in_a_folder_it_cannot_write_still_succeeds(config_file, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError("read-only")

    monkeypatch.setattr(compiled.tempfile, "mkstemp", refuse)
    assert main(["validate", str(config_file)]) == 0
    assert "not compiled (read-only): the DAG file reads the YAML" in capsys.readouterr().out
