"""The list ``filter`` of Compute Engine, in its documented AIP-160 form, parsed strictly.

Reference: the ``filter`` parameter of every Compute Engine v1 ``list`` / ``aggregatedList`` method (for
example https://cloud.google.com/compute/docs/reference/rest/v1/snapshots/list, the same text as
``compute_v1.ListSnapshotsRequest.filter``): "your expression must specify the field name, an operator,
and the value ... The value must be a string, a number, or a boolean. The operator must be either ``=``,
``!=``, ``>``, ``<``, ``<=``, ``>=`` or ``:``"; "The ``:*`` comparison can be used to test whether a key
has been defined" (``labels.owner:*``); "To filter on multiple expressions, provide each separate
expression within parentheses ... ``(scheduling.automaticRestart = true) (cpuPlatform = "Intel
Skylake")``. By default, each expression is an ``AND`` expression. However, you can include ``AND`` and
``OR`` expressions explicitly."

What this emulator accepts, and nothing looser (anything else is HTTP 400 naming the filter):

- a single expression ``FIELD OP VALUE``, unparenthesized (``labels.env = "prod"``), or
- one or more parenthesized expressions ``(FIELD OP VALUE)``, separated by whitespace (AND), ``AND`` or
  ``OR``. The reference gives no precedence between ``AND`` and ``OR`` (its one example mixing them says
  nothing about grouping), so a filter that mixes them is refused rather than guessed at; parentheses do
  not nest (nesting is not documented either).
- FIELD: ``name``, ``status``, ``creationTimestamp`` or ``labels.KEY`` (any other field is refused:
  the emulator does not pretend to filter what it does not model).
- OP: ``=``, ``!=``, ``>``, ``<``, ``<=``, ``>=``; ``:`` only as ``FIELD:*`` (the field is set).
  ``>`` and friends compare numbers as numbers, other values as strings (RFC 3339 timestamps sort).
  A missing field equals nothing: ``=`` and the orderings are false, ``!=`` is true.
- VALUE: a double-quoted string without ``"`` or ``\\`` inside (escapes are not documented), or a bare
  literal of characters other than whitespace, parentheses, quotes, backslashes and ``*``.

The reference's other form, regular expressions with ``eq`` / ``ne``, is not implemented: 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

FIELDS = frozenset({"name", "status", "creationTimestamp"})
_EXPRESSION = re.compile(
    r"""\s*(?P<field>[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)?)
        \s*(?:(?P<has>:\*)|(?P<op>!=|<=|>=|=|<|>)\s*(?:"(?P<quoted>[^"\\]*)"|(?P<bare>[^\s()"'\\*]+)))\s*""",
    re.VERBOSE,
)
_CONNECTOR = re.compile(r"\s+(?:(?P<word>AND|OR)\s+)?")

Predicate = Callable[[Mapping[str, Any]], bool]


class FilterError(ValueError):
    """The filter expression is not in the documented syntax (or uses what the emulator does not model)."""


@dataclass(frozen=True)
class _Term:
    field: str
    op: str  # "=", "!=", "<", ">", "<=", ">=" or ":*"
    value: str

    def __call__(self, resource: Mapping[str, Any]) -> bool:
        if self.field.startswith("labels."):
            actual = (resource.get("labels") or {}).get(self.field.removeprefix("labels."))
        else:
            actual = resource.get(self.field)
        if self.op == ":*":
            return actual is not None
        if self.op == "!=":
            return actual is None or str(actual) != self.value
        if actual is None:
            return False
        if self.op == "=":
            return str(actual) == self.value
        left, right = _comparable(actual, self.value)
        return {
            "<": left < right,
            ">": left > right,
            "<=": left <= right,
            ">=": left >= right,
        }[self.op]


def _comparable(actual: Any, value: str) -> tuple[Any, Any]:
    try:
        return float(actual), float(value)
    except (TypeError, ValueError):
        return str(actual), value


def _error(expression: str, detail: str) -> FilterError:
    return FilterError(
        f"Invalid value for field 'filter': {expression!r}. Invalid list filter expression: {detail}"
    )


def _term(text: str, expression: str) -> _Term:
    match = _EXPRESSION.fullmatch(text)
    if not match:
        raise _error(expression, f"{text.strip()!r} is not one 'field op value' expression")
    field = match["field"]
    if field not in FIELDS and not re.fullmatch(r"labels\.[a-z][a-z0-9_-]{0,62}", field):
        raise _error(expression, f"unsupported field {field!r}")
    if match["has"]:
        return _Term(field, ":*", "")
    value = match["quoted"] if match["quoted"] is not None else match["bare"]
    return _Term(field, match["op"], value)


def _closing(expression: str, start: int) -> int:
    """The index of the ')' closing the '(' at ``start`` (quotes respected); nesting is refused."""
    quoted = False
    for index in range(start + 1, len(expression)):
        char = expression[index]
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            raise _error(expression, "nested parentheses are not supported")
        elif not quoted and char == ")":
            return index
    raise _error(expression, "unbalanced parentheses or quotes")


def compile_filter(expression: str | None) -> Predicate:
    """A predicate over a resource's JSON view. Raises FilterError for anything outside the grammar above."""
    if not expression or not expression.strip():
        return lambda resource: True
    text = expression.strip()
    if not text.startswith("("):
        term = _term(text, expression)
        return term
    terms: list[_Term] = []
    connectors: set[str] = set()
    position = 0
    while True:
        if position >= len(text) or text[position] != "(":
            raise _error(expression, "each expression of several must be within parentheses")
        end = _closing(text, position)
        terms.append(_term(text[position + 1 : end], expression))
        position = end + 1
        if position == len(text):
            break
        connector = _CONNECTOR.match(text, position)
        if not connector:
            raise _error(expression, "parenthesized expressions must be separated by whitespace, AND or OR")
        connectors.add(connector["word"] or "AND")
        position = connector.end()
    if connectors == {"AND", "OR"}:
        raise _error(
            expression, "it mixes AND and OR, whose precedence is not documented; filter in two calls instead"
        )
    if connectors == {"OR"}:
        return lambda resource: any(term(resource) for term in terms)
    return lambda resource: all(term(resource) for term in terms)
