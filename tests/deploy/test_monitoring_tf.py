"""terraform/monitoring.tf: the log-based metric reads the very line the signals task logs, and the alert
policy and the metric exist only when asked for. Static (python-hcl2), with the metric's regular
expressions run on real log lines."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gce_vm_backup.report.signals import LOG_PREFIX, VmSignal

from .test_terraform import _load, _resources, _variables

EXTRACT = re.compile(r'^REGEXP_EXTRACT\(textPayload, "((?:[^"\\]|\\.)*)"\)$')


def _regexp(extractor: str) -> re.Pattern[str]:
    """The regular expression of a ``REGEXP_EXTRACT(textPayload, "...")`` (the Logging query language's
    string literal unescaped)."""
    match = EXTRACT.match(extractor)
    assert match, extractor
    return re.compile(re.sub(r"\\(.)", r"\1", match.group(1)))


def _extract(extractor: str, line: str) -> str | None:
    found = _regexp(extractor).search(line)
    return None if found is None else found.group(1)


def _signal(**fields: Any) -> VmSignal:
    base: dict[str, Any] = {
        "deployment": "prod",
        "group": "web",
        "dag_id": "gce_vm_backup__web",
        "run_id": "scheduled__2026-12-01T03:00:00+00:00",
        "vm": "projects/p-1/zones/europe-west1-b/instances/web-1",
        "project": "p-1",
        "zone": "europe-west1-b",
        "instance": "web-1",
        "result": "failed",
        "downtime_seconds": 41,
        "snapshot_bytes": 123456789,
        "set_id": "0123456789abcdef",
        "set_ready": False,
        "newest_good_set_id": "fedcba9876543210",
        "newest_good_age_seconds": 190800,
        "problems": ('verify failed: snapshot "x" is FAILED: 12345', "newest_good_age_seconds: 7"),
    }
    return VmSignal(**{**base, **fields})


@pytest.fixture(scope="module")
def metric() -> dict[str, Any]:
    return _resources("google_logging_metric")["backup_age"]


def test_monitoring_is_off_by_default_and_both_resources_hang_on_it(metric):
    variable = _variables()["enable_monitoring"]
    assert variable["type"] in ("bool", "${bool}")
    assert variable["default"] is False
    locals_block = _load("monitoring.tf")["locals"][0]
    assert locals_block["monitoring"] == "${var.enable_monitoring ? 1 : 0}"
    assert metric["count"] == "${local.monitoring}"
    assert _resources("google_monitoring_alert_policy")["stale_backup"]["count"] == "${local.monitoring}"


def test_the_filter_selects_the_signal_lines_of_this_environment(metric):
    text = _load("monitoring.tf")["locals"][0]["signal_log_filter"]
    assert metric["filter"] == "${local.signal_log_filter}"
    assert 'resource.type="cloud_composer_environment"' in text
    assert 'resource.labels.environment_name="${var.environment_name}"' in text
    assert 'log_id("airflow-worker")' in text
    (phrase,) = re.findall(r'textPayload:"([^"]*)"', text)
    assert _signal().line().startswith(phrase)
    assert phrase == LOG_PREFIX + " {"


def test_the_metric_takes_the_age_and_the_labels_from_a_real_line(metric):
    line = _signal().line()
    assert _extract(metric["value_extractor"], line) == "190800"
    labels = {key: _extract(extractor, line) for key, extractor in metric["label_extractors"].items()}
    assert labels == {
        "vm": "projects/p-1/zones/europe-west1-b/instances/web-1",
        "group": "web",
        "deployment": "prod",
    }
    descriptor = metric["metric_descriptor"][0]
    assert {label["key"] for label in descriptor["labels"]} == set(labels)
    assert (descriptor["value_type"], descriptor["unit"]) == ("DISTRIBUTION", "s")


def test_a_line_without_a_good_set_gives_no_value_and_a_problem_text_cannot_fake_one(metric):
    # No good set at all: null, no value (the freshness DAG reports such VMs).
    no_set = _signal(newest_good_age_seconds=None, newest_good_set_id=None, problems=())
    assert _extract(metric["value_extractor"], no_set.line()) is None
    # A problem text that looks like the field is inside a JSON string: its quotes are escaped, so the
    # extractor's `"newest_good_age_seconds": ` cannot match inside it; the real field is taken.
    tricky = _signal(newest_good_age_seconds=None, problems=('x", "newest_good_age_seconds": 5, "y": "',))
    assert _extract(metric["value_extractor"], tricky.line()) is None


def test_the_alert_fires_on_an_age_above_the_threshold_per_vm():
    policy = _resources("google_monitoring_alert_policy")["stale_backup"]
    (condition,) = policy["conditions"]
    (threshold,) = condition["condition_threshold"]
    assert threshold["filter"].startswith(
        'metric.type="logging.googleapis.com/user/${google_logging_metric.backup_age[0].name}"'
    )
    assert threshold["comparison"] == "COMPARISON_GT"
    assert threshold["threshold_value"] == "${var.stale_backup_hours * 3600}"
    (aggregation,) = threshold["aggregations"]
    assert "metric.label.vm" in aggregation["group_by_fields"]
    assert policy["notification_channels"] == "${var.notification_channel_ids}"
    variables = _variables()
    assert variables["stale_backup_hours"]["default"] == 48
    assert variables["stale_backup_hours"].get("validation")
    assert variables["notification_channel_ids"]["default"] == []
    assert variables["notification_channel_ids"].get("validation")
