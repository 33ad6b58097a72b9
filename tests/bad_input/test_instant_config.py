"""Bad-input corpus cases of the instant-snapshot keys (``snapshot_mode``, ``instant_fallback``): one clear
message naming the file, group and key, the same from ``vm-backup validate`` and the DAG file, and no DAG.
Kept apart from test_corpus.py only so that the two can change independently; the check is the corpus's."""

from __future__ import annotations

import pytest

from ..conftest import TARGET, config, group
from .test_corpus import test_bad_config_gets_one_message_from_validate_and_the_dag_file_and_no_dag as check

INSTANT = [
    (
        config(group(f"snapshot_mode: fast\n{TARGET}")),
        "group 'web': key 'snapshot_mode': Input should be 'standard' or 'instant'",
    ),
    (
        config(group(f"snapshot_mode: INSTANT\n{TARGET}")),
        "group 'web': key 'snapshot_mode': Input should be 'standard' or 'instant'",
    ),
    (
        config(group(f"snapshot_mode: true\n{TARGET}")),
        "group 'web': key 'snapshot_mode': Input should be 'standard' or 'instant'",
    ),
    (
        config(group(f"snapshot_mode: instant\ninstant_fallback: skip\n{TARGET}")),
        "group 'web': key 'instant_fallback': Input should be 'refuse' or 'standard'",
    ),
    (
        config(
            group(TARGET), defaults='start_date: "2026-01-01T00:00:00+00:00"\n  instant_fallback: [standard]'
        ),
        "group 'web': key 'instant_fallback': Input should be 'refuse' or 'standard'",
    ),
    (
        config(group(f"snapshot_mode: instant\nsnapshot: {{guest_flush: true}}\n{TARGET}")),
        "group 'web': key 'snapshot_mode': 'instant' cannot honour snapshot.guest_flush",
    ),
    (
        config(group(f"snapshot: {{snapshot_mode: instant}}\n{TARGET}")),
        "group 'web': key 'snapshot.snapshot_mode': unknown key",
    ),
]


@pytest.mark.parametrize(("text", "expected"), INSTANT, ids=[c[1][:70] for c in INSTANT])
def test_bad_instant_key_gets_one_message_and_no_dag(tmp_path, text, expected):
    check(tmp_path, text, expected)
