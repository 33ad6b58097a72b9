"""The private-internals check (tests/lint/check_private_internals.py, run by `make lint`): each kind of
violation planted in a file fails it, naming the file and line; the project's own private names, and the
real tree, pass."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("check_private_internals.py")
_spec = importlib.util.spec_from_file_location("check_private_internals", SCRIPT)
assert _spec is not None
assert _spec.loader is not None
checker = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = checker  # dataclasses look their module up
_spec.loader.exec_module(checker)

PLANTED = {
    "internal-from-import": (
        """
        from airflow.sdk.definitions._internal.mixins import ResolveMixin
        """,
        1,
        "import from internal module airflow.sdk.definitions._internal.mixins.ResolveMixin",
    ),
    "internal-import": (
        """
        import airflow.sdk.definitions._internal.node as node
        """,
        1,
        "import of internal module airflow.sdk.definitions._internal.node",
    ),
    "internal-import-module": (
        """
        import importlib

        node = importlib.import_module("airflow.sdk.definitions._internal.node")
        """,
        3,
        "import of internal module airflow.sdk.definitions._internal.node",
    ),
    "private-name-import": (
        """
        from airflow.sdk.bases.operator import _get_parent_defaults
        """,
        1,
        "import of private name _get_parent_defaults from airflow.sdk.bases.operator",
    ),
    "mangled-attribute": (
        """
        def recorded(op):
            return op._BaseOperator__init_kwargs
        """,
        2,
        "name-mangled attribute _BaseOperator__init_kwargs",
    ),
    "mangled-getattr": (
        """
        def built(op):
            return getattr(op, "_BaseOperator__instantiated")
        """,
        2,
        'name-mangled attribute in a string: "_BaseOperator__instantiated"',
    ),
    "object-setattr-on-a-dag": (
        """
        from airflow.sdk import DAG

        with DAG(dag_id="d") as dag:
            pass
        object.__setattr__(dag, "params", {})
        """,
        5,
        "object.__setattr__(dag, ...) bypasses the object's own attribute checks",
    ),
    "object-setattr-in-an-operator": (
        """
        from airflow.sdk import BaseOperator


        class Op(BaseOperator):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                object.__setattr__(self, "x", 1)
        """,
        7,
        "object.__setattr__(self, ...) bypasses the object's own attribute checks (an Airflow class's object)",
    ),
    "private-attribute-write": (
        """
        from airflow.providers.google.common.hooks.base_google import GoogleBaseHook


        class Hook(GoogleBaseHook):
            def forget(self):
                self._cached_credentials = None
        """,
        6,
        "private attribute _cached_credentials of airflow.providers.google.common.hooks.base_google.GoogleBaseHook",
    ),
    "private-attribute-setattr": (
        """
        from airflow.providers.google.common.hooks.base_google import GoogleBaseHook


        def forget(hook: GoogleBaseHook):
            setattr(hook, "_cached_project_id", None)
        """,
        5,
        'setattr(..., "_cached_project_id"): private attribute of '
        "airflow.providers.google.common.hooks.base_google.GoogleBaseHook",
    ),
    "private-attribute-of-a-task-group": (
        """
        from airflow.sdk.definitions.taskgroup import MappedTaskGroup


        def source(group: MappedTaskGroup):
            return group._expand_input
        """,
        5,
        "private attribute _expand_input of airflow.sdk.definitions.taskgroup.MappedTaskGroup",
    ),
    "private-override-in-a-mixin": (
        """
        from airflow.sdk import BaseOperator


        class Faster:
            def _set_xcomargs_dependencies(self):
                pass


        class Op(Faster, BaseOperator):
            pass
        """,
        5,
        "Faster._set_xcomargs_dependencies overrides a private member of airflow.sdk.bases.operator.BaseOperator",
    ),
}


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_a_planted_violation_fails_the_check_naming_file_and_line(kind, tmp_path, capsys):
    code, line, message = PLANTED[kind]
    planted = tmp_path / "planted.py"
    planted.write_text(textwrap.dedent(code).lstrip("\n"))
    assert checker.main([str(tmp_path)]) == 1
    assert f"{planted}:{line}: {message}" in capsys.readouterr().out.splitlines()


def test_the_projects_own_private_names_pass(tmp_path, capsys):
    """Private names of the project's own classes (and frozen objects setting their own fields) are not
    Airflow's, even on an operator; Airflow's public members are fine."""
    (tmp_path / "own.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass

            from airflow.sdk import DAG, BaseOperator


            class HookMixin:
                _hook = None

                @property
                def hook(self):
                    if self._hook is None:
                        self._hook = object()
                    return self._hook


            class Op(HookMixin, BaseOperator):
                def __init__(self, **kwargs):
                    super().__init__(**kwargs)
                    self._pending: list[str] = []


            @dataclass(frozen=True)
            class Frozen:
                value: int

                def __post_init__(self):
                    object.__setattr__(self, "value", abs(self.value))


            def describe(dag: DAG, op: Op):
                dag.params = {}
                return op.task_id, op._pending, dag.dag_id
            """
        )
    )
    assert checker.main([str(tmp_path)]) == 0, capsys.readouterr().out


def test_the_real_tree_passes(capsys):
    assert checker.main([]) == 0, capsys.readouterr().out
