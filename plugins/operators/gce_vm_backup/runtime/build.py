"""Building the package's operators at DAG parse time, for less than Airflow's generic path costs.

The DAG processor builds every operator of every DAG at every parse (1,300 for 1,000 VMs in 50 groups), so
the per-operator overhead above Airflow's own is what makes the DAG file slower than the same graph of
EmptyOperators (benchmarks/parse_time.py). Three generic costs are cut here, each doing exactly what
Airflow does, in fewer steps:

- ``FastBuild._set_xcomargs_dependencies``: the upstream tasks of the XComArgs in an operator's template
  fields (Airflow's ``BaseOperator._set_xcomargs_dependencies``, run once when the operator is built) are
  found in one walk and set in one ``set_upstream`` call, rather than one call per reference (each hashes
  the DAG for every task involved). The walk visits what ``XComArg.iter_xcom_references`` visits, in the
  same order.
- ``FastBuild.__setattr__``: BaseOperator.__setattr__, step for step, but the ``_convert_<name>`` lookup is
  a set lookup of the names the class has converters for (Airflow formats the name and looks it up through
  the MRO on every attribute set: BaseOperator's own ``__init__`` sets about 60). Less than half the cost,
  on every attribute any ``__init__`` of the operator sets. Only where BaseOperator.__setattr__ is the one
  copied (``COPIED_SETATTR``); under any other, Airflow's own sets every attribute.
- ``init_super``: ``super().__init__(**kwargs)`` without the ``apply_defaults`` wrapper Airflow's metaclass
  puts around every ``__init__`` of the MRO (the floor's EmptyOperator has one; ours had two to four, each
  merging default_args and deep-copying the DAG's params again). Called from inside an operator's own
  (wrapped) ``__init__``, the outer wrapper has already found the DAG and task group, merged
  ``default_args`` and the params, and passes them down; what the skipped wrapper would still add,
  ``init_super`` does: the parameters of that ``__init__`` missing from the arguments are filled from
  ``default_args``, and the arguments are recorded for mapping (``_BaseOperator__init_kwargs``). Airflow's
  classes below ours (BaseOperator; BaseSensorOperator, whose own ``super().__init__`` keeps BaseOperator's
  wrapper) are called with exactly the arguments they got before.

Neither changes a task, a dependency, a default or a template field (tests/dags/test_build.py compares
them with Airflow's own path).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.definitions._internal.abstractoperator import AbstractOperator
from airflow.sdk.definitions._internal.mixins import ResolveMixin

# Exact types that cannot hold an XComArg (a subclass of one could, in theory: it takes the full path).
_LEAF_TYPES = frozenset({str, int, float, bool, type(None), bytes})
_SEQUENCES = (tuple, set, list)
_NO_VALUE = object()


def xcom_upstream(value: Any, found: dict[int, Any]) -> None:
    """Add to ``found`` (id -> operator) every operator an XComArg in ``value`` refers to, looking where
    ``XComArg.iter_xcom_references`` looks: resolvable values (XComArg, a mapped input, a Param's
    reference), inside tuples, sets, lists and dict values, and in an operator's template fields."""
    if type(value) in _LEAF_TYPES:
        return
    if isinstance(value, ResolveMixin):
        for operator, _ in value.iter_references():
            found.setdefault(id(operator), operator)
    elif isinstance(value, _SEQUENCES):
        for item in value:
            xcom_upstream(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            xcom_upstream(item, found)
    elif isinstance(value, AbstractOperator):
        for name in value.template_fields:
            xcom_upstream(getattr(value, name), found)


_CONVERTED: dict[type, frozenset[str]] = {}


def _converted(cls: type) -> frozenset[str]:
    """The attribute names BaseOperator.__setattr__ converts for instances of ``cls``: those with a
    ``_convert_<name>`` on the class (found once per class)."""
    names = _CONVERTED.get(cls)
    if names is None:
        names = frozenset(n.removeprefix("_convert_") for n in dir(cls) if n.startswith("_convert_"))
        _CONVERTED[cls] = names
    return names


# What BaseOperator.__setattr__ calls as super().__setattr__: the next __setattr__ of its MRO (object's).
_BELOW_BASE_OPERATOR: Callable[..., None] = next(
    c for c in BaseOperator.__mro__[1:] if "__setattr__" in vars(c)
).__setattr__


# BaseOperator.__setattr__ as FastBuild.__setattr__ copies it (Airflow 3.1 to 3.3): the names and
# constants its code uses. Where Airflow's differs, FastBuild leaves every attribute set to Airflow's own.
COPIED_SETATTR = (
    (
        "getattr",
        "super",
        "__setattr__",
        "_BaseOperator__from_mapped",
        "_lock_for_execution",
        "_BaseOperator__init_kwargs",
        "_BaseOperator__instantiated",
        "template_fields",
        "_set_xcomargs_dependency",
    ),
    (None, "_convert_"),
)


def is_the_copied_setattr(setattr_function: Callable[..., Any]) -> bool:
    code = setattr_function.__code__
    return (code.co_names, code.co_consts) == COPIED_SETATTR


class FastBuild:
    """Mixed into the package's operators (ahead of BaseOperator): see the module docstring."""

    template_fields: Any

    def __setattr__(self, key: str, value: Any) -> None:
        # BaseOperator.__setattr__ (Airflow 3.1 to 3.3 alike), with the converter found by a set lookup
        if key in _converted(type(self)):
            value = getattr(self, f"_convert_{key}")(value)
        _BELOW_BASE_OPERATOR(self, key, value)
        if self._BaseOperator__from_mapped or self._lock_for_execution:  # type: ignore[attr-defined]
            return
        if key in self._BaseOperator__init_kwargs:  # type: ignore[attr-defined]
            self._BaseOperator__init_kwargs[key] = value  # type: ignore[attr-defined]
        if self._BaseOperator__instantiated and key in self.template_fields:  # type: ignore[attr-defined]
            self._set_xcomargs_dependency(key, value)  # type: ignore[attr-defined]

    if not is_the_copied_setattr(BaseOperator.__setattr__):  # another Airflow: its own __setattr__
        del __setattr__

    def _set_xcomargs_dependencies(self) -> None:
        found: dict[int, Any] = {}
        for name in self.template_fields:
            value = getattr(self, name, _NO_VALUE)
            if value is not _NO_VALUE:
                xcom_upstream(value, found)
        if found:
            self.set_upstream(list(found.values()))  # type: ignore[attr-defined]


@functools.cache
def _unwrapped(init: Callable[..., Any]) -> tuple[Callable[..., Any], tuple[str, ...]]:
    """The function under Airflow's wrapper (itself if unwrapped) and its named parameters."""
    function = getattr(init, "__wrapped__", init)
    names = tuple(
        name
        for name, parameter in inspect.signature(function).parameters.items()
        if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    )
    return function, names


def init_super(owner: type[Any], operator: Any, kwargs: dict[str, Any]) -> None:
    """``super(owner, operator).__init__(**kwargs)`` without the apply_defaults wrapper of that ``__init__``
    (see the module docstring).

    Only for a call from inside the ``__init__`` of ``owner`` (the wrapper of the outermost ``__init__`` has
    run: it did the DAG, task group, default_args and params, and sets the XComArg dependencies once this
    returns). Raises what that ``__init__`` raises (TypeError for a missing argument)."""
    function, names = _unwrapped(super(owner, operator).__init__.__func__)
    defaults = kwargs.get("default_args") or {}
    for name in names:
        if name not in kwargs and name in defaults:
            kwargs[name] = defaults[name]
    function(operator, **kwargs)
    # recorded as the wrapper records them: without default_args
    operator._BaseOperator__init_kwargs.update((k, v) for k, v in kwargs.items() if k != "default_args")


def set_fields(operator: Any, /, **values: Any) -> None:
    """Set an operator's own attributes in its ``__init__``, in one step.

    Until its outermost ``__init__`` returns, BaseOperator.__setattr__ only converts the BaseOperator
    fields that have a ``_convert_<name>``, and copies the value into the recorded init arguments when an
    inner ``__init__`` recorded that name; its XComArg handling starts once the operator is instantiated.
    For the operator's own attributes (neither, and no descriptor of the class) a ``__dict__`` update is
    the same, at a fraction of the cost (each __setattr__, FastBuild's too, looks up a converter and the
    recorded arguments, one attribute at a time).
    """
    vars(operator).update(values)
