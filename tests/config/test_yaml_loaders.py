"""The two YAML loaders of config_file: libyaml's parser under our composer (fast) and the pure-Python one.

Both must read every document to the same values and refuse every hostile one on their own, before any
Python object is built: the fast loader is not allowed to lean on the fallback for a limit, since the
fallback only runs after the fast one has finished (or crashed) with a document.
"""

from __future__ import annotations

import sys
import time
from datetime import date, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gce_vm_backup.config import loading as config_file
from gce_vm_backup.config.loading import LOADERS, ConfigFileError, load_yaml

from ..bad_input.test_corpus import BAD, LIMIT_CONFIGS, MORE_BAD_CONFIGS
from ..conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from parse_time import big_config

FAST = pytest.mark.skipif(len(LOADERS) < 2, reason="PyYAML built without libyaml")


def _typed(value):
    """The value with every type spelled out: 1 == 1.0 == True must not hide a loader's difference."""
    if isinstance(value, dict):
        return {(type(k).__name__, k): _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


def _read(text: str, loader: type) -> object:
    """The loader's reading, typed."""
    return _typed(yaml.load(text, Loader=loader))


def _both(text: str) -> list:
    """[the fast loader's reading, the pure one's]."""
    return [_read(text, loader) for loader in LOADERS]


EXAMPLES = sorted((REPO / "dags").glob("*.yaml")) + sorted((REPO / "docs").glob("**/*.yaml"))


@FAST
def test_libyaml_is_used_when_pyyaml_has_it():
    assert yaml.__with_libyaml__
    assert (config_file._FastLoader, config_file._Loader) == LOADERS


@FAST
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_both_loaders_read_the_shipped_configs_alike(path: Path):
    fast, pure = _both(path.read_text())
    assert fast == pure


MERGES = """\
defaults: &defaults {retries: 1, poke_interval: 5, labels: {team: ops}}
other: &other {retry_delay: 900}
web: {<<: *defaults, retries: 4}
db:
  <<: [*other, *defaults]
  when: 2026-01-01
  at: 2026-01-01 03:00:00+00:00
  quoted: "2026-01-01"
  flags: [yes, no, on, off, true, ~, null, 0o17, 0x1f, 1_000, 1.5e3, .inf, -.nan]
  text: |
    line one
    line two
  folded: >
    one
    two
  "key with: colon": 'single ''quoted'''
  unicode: "caf\\u00e9 \U0001f600"
"""


@FAST
@pytest.mark.parametrize(
    "text",
    [MERGES, big_config(40, 2), "", "# only a comment\n", "--- just a string\n", "[1, [2, [3]]]\n"],
    ids=["merges-and-scalar-types", "benchmark-config", "empty", "comment", "scalar", "nested"],
)
def test_both_loaders_give_the_same_values_and_types(text: str):
    fast, pure = _both(text)
    assert fast == pure
    if text is MERGES:  # the document really has what the test claims to compare
        loaded = yaml.load(text, Loader=config_file._FastLoader)
        assert loaded["web"] == {"retries": 4, "poke_interval": 5, "labels": {"team": "ops"}}
        assert loaded["db"]["retry_delay"] == 900
        assert type(loaded["db"]["when"]) is date
        assert type(loaded["db"]["at"]) is datetime
        assert loaded["db"]["quoted"] == "2026-01-01"


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.dates(),
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)


@FAST
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=DOCUMENTS, flow=st.booleans())
def test_both_loaders_read_any_dumped_document_alike(document, flow):
    text = yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True)
    fast, pure = _both(text)
    assert fast == pure


@pytest.mark.parametrize(
    "text",
    [MERGES, big_config(40, 2), "a: &x {b: [1, {c: d}]}\nc: *x\n", "s: !!str 5\nset: !!set {x, y}\n"],
    ids=["merges-and-scalar-types", "benchmark-config", "aliases", "explicit-tags"],
)
def test_each_loader_reads_a_document_as_safe_load_does(text: str):
    """Not only alike: what yaml.safe_load reads (the shortcuts of the tag cache and the mapping
    constructor must not change a value or a type)."""
    expected = _typed(yaml.safe_load(text))
    assert [_read(text, loader) for loader in LOADERS] == [expected] * len(LOADERS)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=DOCUMENTS, flow=st.booleans())
def test_each_loader_reads_any_dumped_document_as_safe_load_does(document, flow):
    text = yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True)
    expected = _typed(yaml.safe_load(text))
    assert [_read(text, loader) for loader in LOADERS] == [expected] * len(LOADERS)


# Every refused document of the corpus, hostile ones first: each loader refuses it by itself.
YAML_ERRORS = [(text, expected) for text, expected in LIMIT_CONFIGS if isinstance(text, str)] + [
    (text, expected)
    for text, expected in BAD + MORE_BAD_CONFIGS
    if isinstance(text, str) and expected.startswith("invalid YAML")
]


@FAST
@pytest.mark.parametrize("loader", LOADERS, ids=lambda loader: loader.__name__)
@pytest.mark.parametrize(("text", "expected"), YAML_ERRORS, ids=lambda v: v[:30] if isinstance(v, str) else v)
def test_each_loader_refuses_every_document_the_corpus_refuses(loader, text, expected):
    if not expected.startswith("invalid YAML"):
        pytest.skip("refused when the file is read, before any loader")
    with pytest.raises(yaml.YAMLError):
        yaml.load(text, Loader=loader)


@pytest.mark.parametrize(("text", "expected"), YAML_ERRORS, ids=lambda v: v[:30] if isinstance(v, str) else v)
def test_load_yaml_gives_the_pure_python_loaders_message_whichever_loader_refused(
    monkeypatch, text, expected
):
    if not expected.startswith("invalid YAML"):
        pytest.skip("refused when the file is read, before any loader")
    with pytest.raises(ConfigFileError) as default:
        load_yaml(text)
    monkeypatch.setattr(config_file, "LOADERS", (config_file._Loader,))
    with pytest.raises(ConfigFileError) as pure_only:
        load_yaml(text)
    assert str(default.value) == str(pure_only.value)
    assert str(default.value).startswith(expected)


@FAST
@pytest.mark.parametrize(
    "text",
    [
        "a: {\u00e9t\u00e9: 1, \u00e9t\u00e9: 2}\n",  # a duplicate key after two-byte characters
        "\U0001f600: &a [x]\nb: {c: [*a], c: 1}\n",  # after a four-byte character
        "caf\u00e9: &d {a: 1}\ne: {<<: *d, <<: *d}\n",
        "caf\u00e9: [" + ", ".join(["*a"] * 3) + "]\n",  # an undefined alias
        "x: !python/object:os.system ls\n",  # a tag the safe constructor refuses
    ],
)
def test_our_own_refusals_name_the_same_line_and_column_in_both_loaders(monkeypatch, text):
    with pytest.raises(ConfigFileError) as default:
        load_yaml(text)
    monkeypatch.setattr(config_file, "LOADERS", (config_file._Loader,))
    with pytest.raises(ConfigFileError) as pure_only:
        load_yaml(text)
    assert str(default.value) == str(pure_only.value)


@FAST
@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("a: &a x\nb: [" + ", ".join(["*a"] * 1001) + "]\n", "more than 1000 aliases"),
        ("a: [" + ", ".join(["1"] * 100_001) + "]\n", "more than 100000 values"),
        ("a: " + "[" * 300_000 + "]" * 300_000 + "\n", "nested more than 64 levels deep"),
        ("a: &a [*a]\n", "recursive structure"),
    ],
    ids=["aliases", "values", "depth-of-300000", "recursion"],
)
def test_the_fast_loader_enforces_each_limit_itself_and_quickly(text, limit):
    """libyaml's own composer recurses in C without a depth check: 300,000 nested lists (600 KB, under the
    1 MiB cap) must be refused by our composer at level 65, not crash the DAG processor."""
    started = time.monotonic()
    with pytest.raises(yaml.YAMLError, match=limit):
        yaml.load(text, Loader=config_file._FastLoader)
    if limit != "more than 100000 values":  # composing 100,000 values takes its time in either loader
        assert time.monotonic() - started < 1.0


def _no_pure_loader(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the pure-Python loader ran")

    monkeypatch.setattr(config_file._Loader, "__init__", refuse)


@FAST
def test_a_valid_config_is_read_by_the_fast_loader_alone(monkeypatch):
    _no_pure_loader(monkeypatch)
    assert load_yaml(big_config(20, 1))["groups"]["group-000"]["schedule"] == "0 3 * * *"


@FAST
def test_a_hostile_document_is_refused_by_the_fast_loader_without_a_second_read(monkeypatch):
    _no_pure_loader(monkeypatch)
    for text, _expected in LIMIT_CONFIGS[:5]:
        with pytest.raises(ConfigFileError, match="invalid YAML"):
            load_yaml(text)


@FAST
def test_a_document_only_libyaml_refuses_is_read_as_the_pure_python_loader_reads_it(monkeypatch):
    """The fallback's other half: whatever libyaml refuses, the result is the pure-Python loader's."""

    def refuse(self, *args, **kwargs):
        raise yaml.YAMLError("libyaml refused it")

    monkeypatch.setattr(config_file._FastLoader, "get_single_data", refuse)
    assert load_yaml("a: 1\n") == {"a": 1}


@FAST
def test_the_fast_loader_takes_its_events_from_libyamls_c_parser():
    """What makes them fast (benchmarks/parse_time.py measures how much; a timed assertion here failed
    in CI once the pure-Python loader got faster too)."""
    assert yaml.__with_libyaml__
    assert issubclass(config_file._FastLoader, config_file.CParser)  # yaml.cyaml.CParser
    assert not issubclass(config_file._FastLoader, yaml.SafeLoader)  # not the pure-Python scanner and parser
    assert issubclass(config_file._Loader, yaml.SafeLoader)
