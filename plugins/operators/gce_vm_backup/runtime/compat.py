"""What moved between the supported Airflow versions (README "Supported Airflow versions").

The task SDK of Airflow 3.2 (1.2.0) has the task exceptions in ``airflow.sdk.exceptions``; Airflow 3.1's
(1.1.x) still raises and catches the ones in ``airflow.exceptions``, where 3.2+ keeps deprecated aliases.
"""

from __future__ import annotations

try:
    from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowFailException, AirflowSensorTimeout  # type: ignore[no-redef]

__all__ = ["AirflowFailException", "AirflowSensorTimeout"]
