"""Parsing the DAG file imports no Google client library and makes no network call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from ..conftest import REPO

# Airflow itself reads the Google provider's metadata (airflow.providers.google.get_provider_info) when
# it loads its configuration; that is measured as the baseline of a trivial DAG file and allowed.
GOOGLE_PREFIXES = ("google", "airflow.providers.google", "grpc", "requests_oauthlib")
TRIVIAL_DAG = "from airflow.sdk import DAG\nwith DAG('trivial', schedule=None):\n    pass\n"


def _parse(dag_file, env):
    script = textwrap.dedent(
        f"""
        import json, socket, sys, runpy
        def refuse(*args, **kwargs):
            raise AssertionError("network call during DAG parsing")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        namespace = runpy.run_path({str(dag_file)!r})
        print(json.dumps({{
            "dags": sorted(k for k in namespace if k.startswith("gce_vm_backup__")),
            "modules": sorted(sys.modules),
        }}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_parsing_the_dag_file_imports_no_google_library_and_opens_no_socket(tmp_path):
    env = {**os.environ, "GCE_VM_BACKUP_STRICT": "1"}
    trivial = tmp_path / "trivial_dag.py"
    trivial.write_text(TRIVIAL_DAG)
    baseline = {m for m in _parse(trivial, env)["modules"] if m.startswith(GOOGLE_PREFIXES)}

    report = _parse(REPO / "dags" / "gce_vm_backup_dags.py", env)

    assert len(report["dags"]) == 3
    google_modules = {m for m in report["modules"] if m.startswith(GOOGLE_PREFIXES)}
    assert google_modules - baseline == set()
    assert "google.cloud.compute_v1" not in report["modules"]
