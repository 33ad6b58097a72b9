"""The subset of Compute Engine list-filter syntax the project sends, parsed strictly.

Supported: ``FIELD OP VALUE`` terms with OP ``=``, ``!=``, ``eq``, ``ne``; FIELD is ``name``,
``status`` or ``labels.KEY``; VALUE quoted or bare; terms joined by ``AND`` or whitespace, each
optionally in parentheses. Anything else is an error, never silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_TERM = re.compile(
    r"""\s*\(?\s*(?P<field>[A-Za-z][A-Za-z0-9_.\-]*)\s*(?P<op>!=|=|\beq\b|\bne\b)\s*
        (?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s()"]+))\s*\)?\s*(?:\bAND\b)?""",
    re.VERBOSE,
)


class FilterError(ValueError):
    """The filter expression is not in the supported syntax."""


def compile_filter(expression: str | None) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate over a resource's JSON view. Raises FilterError for unsupported syntax."""
    if not expression or not expression.strip():
        return lambda resource: True
    terms: list[tuple[str, bool, str]] = []
    position = 0
    while position < len(expression):
        match = _TERM.match(expression, position)
        if not match or match.end() == position:
            raise FilterError(f"Invalid value for field 'filter': {expression!r}")
        field, op = match["field"], match["op"]
        if field not in ("name", "status") and not field.startswith("labels."):
            raise FilterError(f"Invalid value for field 'filter': unsupported field {field!r}")
        value = match["quoted"] if match["quoted"] is not None else match["bare"]
        terms.append((field, op in ("=", "eq"), value))
        position = match.end()

    def predicate(resource: Mapping[str, Any]) -> bool:
        for field, equal, value in terms:
            if field.startswith("labels."):
                actual = (resource.get("labels") or {}).get(field.removeprefix("labels."))
            else:
                actual = resource.get(field)
            if (actual == value) != equal:
                return False
        return True

    return predicate
