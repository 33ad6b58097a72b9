"""Bad-input corpus cases of a drill that could touch production (``restore_drill``): one clear message
naming the file, group and key, the same from ``vm-backup validate`` and the DAG file, and no DAG.
Kept apart from test_corpus.py only so that the two can change independently; the check is the corpus's."""

from __future__ import annotations

import pytest

from ..conftest import TARGET, config, group
from .test_corpus import test_bad_config_gets_one_message_from_validate_and_the_dag_file_and_no_dag as check

SELECTOR = "targets: [{project: shop-prod, zones: all, labels: {app: shop}}]"
DRILL = [
    (
        config(group(f"{TARGET}\nrestore_drill: {{scratch_zone: us-central1-a, network: drills}}")),
        "group 'web': key 'restore_drill.scratch_project': required key is missing",
    ),
    (
        config(
            group(f"{TARGET}\nrestore_drill: {{scratch_zone: us-central1-b, scratch_project: drill-scratch}}")
        ),
        "group 'web': key 'restore_drill.network': required key is missing",
    ),
    (
        config(
            group(
                f"{TARGET}\nrestore_drill: "
                "{scratch_zone: us-central1-a, scratch_project: demo-project, network: drills}"
            )
        ),
        "group 'web': key 'restore_drill.scratch_project': 'demo-project' is a target project of the group "
        "(targets.0)",
    ),
    (
        config(
            group(
                f"{SELECTOR}\nrestore_drill: "
                "{scratch_zone: us-central1-b, scratch_project: shop-prod, network: drills}"
            )
        ),
        "group 'web': key 'restore_drill.scratch_project': 'shop-prod' is a target project of the group "
        "(targets.0)",
    ),
    (
        config(
            group(
                f"{TARGET}\nrestore_drill: "
                "{scratch_zone: us-central1-b, scratch_project: drill-scratch, network: default}"
            )
        ),
        "group 'web': key 'restore_drill.network': 'default': a drill boots copies of production VMs",
    ),
]


@pytest.mark.parametrize(("text", "expected"), DRILL, ids=[c[1][:70] for c in DRILL])
def test_a_drill_that_could_touch_production_gets_one_message_and_no_dag(tmp_path, text, expected):
    check(tmp_path, text, expected)
