"""What moved between the supported Airflow versions (README "Supported Airflow versions").

The task SDK of Airflow 3.2 (1.2.0) has the task exceptions in ``airflow.sdk.exceptions``; Airflow 3.1's
(1.1.x) still raises and catches the ones in ``airflow.exceptions``, where 3.2+ keeps deprecated aliases.
Its configuration is ``airflow.sdk.configuration.conf``; Airflow 3.1 has only ``airflow.configuration``'s.

``DAG(allowed_run_types=...)`` came with Airflow 3.2.0 (task SDK 1.2.0): on 3.2 creating a backfill of a
DAG that leaves out ``backfill`` is refused (API 400, CLI error), and from 3.3 its dry run too. Airflow
3.1 has no such argument: there, a backfill run is refused by the run's first task
(base.refuse_backfill).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from airflow.sdk import DAG

try:
    from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowFailException, AirflowSensorTimeout  # type: ignore[no-redef]

try:
    from airflow.sdk.configuration import conf
except ImportError:  # Airflow 3.1
    from airflow.configuration import conf

DAG_HAS_ALLOWED_RUN_TYPES = "allowed_run_types" in inspect.signature(DAG).parameters


def allowed_run_types(*run_types: str) -> dict[str, Any]:
    """``{"allowed_run_types": [...]}`` for ``DAG(**...)`` where Airflow has the argument, else ``{}``.

    ``run_types`` are DagRunType values (``"scheduled"``, ``"manual"``); the DAG converts them.
    """
    if not DAG_HAS_ALLOWED_RUN_TYPES:
        return {}
    values: Sequence[str] = list(run_types)
    return {"allowed_run_types": values}


__all__ = [
    "DAG_HAS_ALLOWED_RUN_TYPES",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "allowed_run_types",
    "conf",
]
