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
DAG_FILE = REPO / "dags" / "gce_vm_backup_dags.py"


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


def test_the_parse_benchmarks_floor_rebuilds_the_same_graph_from_empty_operators(tmp_path):
    """benchmarks/parse_time.py's floor must be the backup DAGs' own graph (every task id, mapped group,
    dependency, setup/teardown and trigger rule), or backup / floor measures nothing."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from parse_time import big_config, dag_shape, floor_file

    from gce_vm_backup.config.models import load_config
    from gce_vm_backup.dags.backup import build_dags

    config = tmp_path / "gce_vm_backup.yaml"
    config.write_text(big_config(12, 2))
    dags = build_dags(load_config(config))
    shapes = [dag_shape(dag) for dag in dags.values()]
    namespace: dict = {}
    exec(compile(floor_file(shapes), "floor_dags.py", "exec"), namespace)

    floors = {key: value for key, value in namespace.items() if key in dags}
    assert set(floors) == set(dags)
    for dag_id, dag in dags.items():
        floor = floors[dag_id]
        assert dag_shape(floor) == dag_shape(dag)
        assert {type(task).__name__ for task in floor.tasks} == {"EmptyOperator"}
        assert not floor.params
        assert [(t.task_id, t.is_setup, t.is_teardown) for t in floor.tasks] == [
            (t.task_id, t.is_setup, t.is_teardown) for t in dag.tasks
        ]


def test_the_dag_processor_imports_every_airflow_module_the_dag_file_needs_before_it_forks(tmp_path):
    """What the DAG processor does before it forks a parser (processor._pre_import_airflow_modules: the
    ``airflow.*`` modules the file imports at top level), then the parse: it imports no further provider
    or operator module, so no parse pays for one, but for the modules behind the names the package takes
    from ``airflow.sdk`` (its public interface, imported at their first use: a few milliseconds)."""
    script = textwrap.dedent(
        f"""
        import importlib, json, sys
        try:
            from airflow.dag_processing.dagbag import DagBag
        except ImportError:  # Airflow 3.1
            from airflow.models.dagbag import DagBag
        from airflow.utils.file import iter_airflow_imports
        path = {str(REPO / "dags" / "gce_vm_backup_dags.py")!r}
        for module in iter_airflow_imports(path):
            importlib.import_module(module)
        from airflow.sdk import BaseOperator, BaseOperatorLink, BaseSensorOperator, DAG, Param, TriggerRule, task_group
        before = set(sys.modules)
        bag = DagBag(path)
        assert not bag.import_errors, bag.import_errors
        print(json.dumps(sorted(set(sys.modules) - before)))
        """
    )
    env = {
        **os.environ,
        "GCE_VM_BACKUP_STRICT": "1",
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = json.loads(result.stdout.strip().splitlines()[-1])
    heavy = ("airflow.providers.", "airflow.sdk.bases.", "airflow.sdk.definitions.decorators", "asgiref")
    assert [line for line in DAG_FILE.read_text().splitlines() if "airflow.sdk." in line] == []  # public
    assert [m for m in imported if m.startswith(heavy)] == []
    assert any(m.startswith("gce_vm_backup") for m in imported)  # the package itself: parsed each time
