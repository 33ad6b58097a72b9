"""docs/metrics.md documents exactly the log line's fields and the metrics the code sends."""

from __future__ import annotations

import re
from pathlib import Path

from gce_vm_backup.report.signals import LOG_FIELDS, METRICS, VmSignal

PAGE = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `([a-z_.]+)` \| ([^|]+) \|", re.MULTILINE)


def _rows(heading: str) -> dict[str, str]:
    text = PAGE.read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return {name: kind.strip() for name, kind in ROW.findall(section)}


def test_every_field_of_the_log_line_is_documented_with_its_type_in_order():
    rows = _rows("The log line")
    assert list(rows) == list(LOG_FIELDS)
    assert rows == {name: kind for name, (kind, _) in LOG_FIELDS.items()}
    # and the code's line has exactly these fields
    assert set(VmSignal.__dataclass_fields__) - {"snapshots", "set_time"} | {"event"} == set(LOG_FIELDS)


def test_every_metric_is_documented_with_its_kind():
    assert _rows("Airflow metrics") == {name: kind for name, (kind, _) in METRICS.items()}
