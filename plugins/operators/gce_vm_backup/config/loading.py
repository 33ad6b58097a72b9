"""Reading the config file without letting it take the DAG processor down.

The DAG processor reads the config at every parse, so a hostile or broken file must cost little and end
in one line: ``read_config_text(path)`` refuses anything but a regular file of at most ``MAX_BYTES`` (a
FIFO, ``/dev/zero`` or a directory is refused after ``stat``, before it is opened, and the open is
non-blocking in case the path is swapped in between) and anything but UTF-8 text; ``load_yaml(text)`` is
``yaml.safe_load`` that also refuses duplicate keys, more than ``MAX_ALIASES`` aliases, more than
``MAX_NODES`` values once aliases are expanded (an alias bomb is refused in microseconds, before any
Python object is built), nesting deeper than ``MAX_DEPTH`` and recursive aliases, and supports YAML
merge keys (``<<: *defaults``, ``<<: [*a, *b]``). Both raise ConfigFileError, whose message is one line.

Speed: the DAG processor parses the file at every parse, and PyYAML's pure-Python scanner and parser are
most of that (about 0.15 s of a 1,000-VM config). When PyYAML has libyaml (``yaml.__with_libyaml__``, true
of the PyPI wheels), the events come from libyaml's C parser and our composer and constructor, with every
limit above, run on them in Python (``_FastLoader``). libyaml's own composer is not used: it recurses in C
with no depth check, and counts nothing. libyaml words its errors differently and marks some of them
elsewhere, so a document it refuses as a syntax error is read again by the pure-Python loader
(``_Loader``), whose message (or, if it reads the document after all, whose result) is the one given. A
limit, a duplicate key or a bad merge is refused by our own code in both loaders, in the same words at the
same line and column, so it is refused at once, not read again by the pure-Python loader.
"""

from __future__ import annotations

import os
import stat
from importlib import import_module
from typing import TYPE_CHECKING, Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

MAX_BYTES = 1 << 20  # 1 MiB: a config of a thousand VMs is about 100 KiB
MAX_ALIASES = 1000
MAX_NODES = 100_000  # values (scalars, lists, mappings) once aliases are expanded
MAX_DEPTH = 64  # a config nests about 7 levels deep
MERGE_TAG = "tag:yaml.org,2002:merge"
STR_TAG = "tag:yaml.org,2002:str"
_MERGE = object()  # stands for a merge key among a mapping's own keys


class ConfigFileError(ValueError):
    """The file cannot be read as a config; the message is one line, without the file name."""


class _LimitError(yaml.MarkedYAMLError):
    pass


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _check_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise ConfigFileError(f"cannot read the file: it is {_kind(mode)}; a config must be a regular file")


def _check_size(size: int, limit: int, *, known: bool = True) -> None:
    if size > limit:
        raise ConfigFileError(
            f"the file is {size if known else 'more than ' + str(limit)} bytes; a config may be at most "
            f"1 MiB ({MAX_BYTES} bytes)"
        )


def read_limited(path: str | os.PathLike[str], limit: int = MAX_BYTES) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them. Raises ConfigFileError when it
    is missing or unreadable, not a regular file or larger."""
    try:
        _check_regular(os.stat(path).st_mode)  # before opening: opening a FIFO blocks until a writer comes
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigFileError(f"cannot read the file: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        _check_regular(info.st_mode)  # the path was swapped for something else after the stat
        _check_size(info.st_size, limit)
        with open(fd, "rb", closefd=False) as stream:
            data = stream.read(limit + 1)
    except OSError as exc:
        raise ConfigFileError(f"cannot read the file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    _check_size(len(data), limit, known=False)  # it grew after the fstat
    return data


def decode_config(data: bytes) -> str:
    """The config file's bytes as text. Raises ConfigFileError when they are not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigFileError(
            f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save it as UTF-8"
        ) from None


def read_config_text(path: str | os.PathLike[str]) -> str:
    """The file's text. Raises ConfigFileError when it is missing or unreadable, not a regular file,
    larger than MAX_BYTES or not UTF-8."""
    return decode_config(read_limited(path))


class _ResolveCache:
    """The resolver's tag, memoised per scalar value (mixed in ahead of the Resolver): a config repeats its
    keys and most of its values (a project, a zone) once per VM, and the implicit resolvers' regexes are a
    third of the read. The tag depends on nothing else when there are no path resolvers (the safe loaders
    have none)."""

    _resolved: dict[tuple[str, Any], str] | None = None
    if TYPE_CHECKING:  # from the Resolver the loader mixes in
        yaml_path_resolvers: dict[Any, Any]

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is not ScalarNode or self.yaml_path_resolvers:
            return super().resolve(kind, value, implicit)  # type: ignore[misc]
        if self._resolved is None:
            self._resolved = {}
        key = (value, implicit)
        tag = self._resolved.get(key)
        if tag is None:
            tag = self._resolved[key] = super().resolve(kind, value, implicit)  # type: ignore[misc]
        return tag


class _Limits(_ResolveCache, Composer):
    """The composer with limits on aliases, values and depth, before (and after) aliases are expanded;
    mixed into a loader ahead of its parser. The counts start at 0 per loader (one per document)."""

    _depth = _aliases = _nodes = 0
    if TYPE_CHECKING:  # from the parser and the constructor the loader mixes in

        def check_event(self, *choices: Any) -> bool: ...
        def peek_event(self) -> Any: ...
        def construct_document(self, node: Node) -> Any: ...

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise _LimitError(None, None, f"more than {MAX_ALIASES} aliases (*name)", mark)
            return super().compose_node(parent, index)
        self._depth += 1
        self._nodes += 1
        if self._depth > MAX_DEPTH:
            raise _LimitError(
                None, None, f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark
            )
        if self._nodes > MAX_NODES:
            raise _LimitError(None, None, f"more than {MAX_NODES} values", self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        if self._aliases:  # without aliases the tree is as composed: counted and depth-checked above
            _check_expansion(node, {}, set())
        return self.construct_document(node)


class _Loader(_Limits, yaml.SafeLoader):
    """SafeLoader (pure Python) with the limits, unique keys, and merge keys."""


# libyaml's parser, when PyYAML was built with it (yaml.cyaml imports it from the C extension).
CParser: Any = import_module("yaml.cyaml").CParser if yaml.__with_libyaml__ else None


if CParser is not None:

    class _FastLoader(_Limits, CParser, SafeConstructor, Resolver):
        """The same as ``_Loader`` on libyaml's parser events (see the module docstring)."""

        def __init__(self, stream: str):
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)


def _check_expansion(node: Node, memo: dict[int, tuple[int, int]], active: set[int]) -> tuple[int, int]:
    """(values, depth) of ``node`` with its aliases expanded, memoised per node: an alias bomb is measured
    without being expanded. Raises _LimitError past MAX_NODES or MAX_DEPTH, or on a recursive alias."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise _LimitError(
            None, None, "an alias refers to a node that contains it (a recursive structure)", node.start_mark
        )
    active.add(key)
    children: list[Node] = []
    if isinstance(node, SequenceNode):
        children = list(node.value)
    elif isinstance(node, MappingNode):
        children = [child for pair in node.value for child in pair]
    size, depth = 1, 1
    for child in children:
        child_size, child_depth = _check_expansion(child, memo, active)
        size, depth = size + child_size, max(depth, child_depth + 1)
        if size > MAX_NODES:
            raise _LimitError(
                None, None, f"more than {MAX_NODES} values once its aliases are expanded", node.start_mark
            )
        if depth > MAX_DEPTH:
            raise _LimitError(
                None,
                None,
                f"nested more than {MAX_DEPTH} levels deep once its aliases are expanded",
                node.start_mark,
            )
    active.discard(key)
    memo[key] = (size, depth)
    return size, depth


def _construct(loader: _Loader, node: Node, deep: bool) -> Any:
    """``loader.construct_object(node)``; a plain string scalar (most of a config) is its value, without
    the constructor's dispatch (its result is the same immutable value)."""
    if node.tag == STR_TAG and type(node) is ScalarNode:
        return node.value
    return loader.construct_object(node, deep=deep)


def _construct_mapping(loader: _Loader, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
    """A mapping whose own keys are unique (plain safe_load keeps the last one silently); keys brought in
    by a merge key (``<<``) may be overridden, as YAML merge keys intend. Without a merge key the dict is
    built here, as SafeConstructor.construct_mapping builds it, from the keys already constructed."""
    keys: set[Any] = set()
    pairs: list[tuple[Any, Node]] | None = []
    for key_node, value_node in node.value:
        key = _MERGE if key_node.tag == MERGE_TAG else _construct(loader, key_node, deep)
        try:
            duplicate = key in keys
        except TypeError:
            raise ConstructorError(
                None, None, "a key must be a plain value, not a list or mapping", key_node.start_mark
            ) from None
        if duplicate:
            what = "merge key '<<' (merge several with <<: [*a, *b])" if key is _MERGE else f"key {key!r}"
            raise ConstructorError(None, None, f"duplicate {what}", key_node.start_mark)
        keys.add(key)
        if key is _MERGE:
            pairs = None  # SafeConstructor.flatten_mapping merges them
        elif pairs is not None:
            pairs.append((key, value_node))
    if pairs is None:
        return loader.construct_mapping(node, deep=deep)
    return {key: _construct(loader, value_node, deep) for key, value_node in pairs}


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# The loaders load_yaml tries in turn (tests compare them): the fast one only where libyaml is there.
LOADERS: tuple[type, ...] = (_Loader,)
if CParser is not None:
    _FastLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    LOADERS = (_FastLoader, _Loader)


def load_yaml(text: str) -> Any:
    """The document, as ``yaml.safe_load`` builds it. Raises ConfigFileError ("invalid YAML (line L,
    column C): ...") on a syntax error, a duplicate or unhashable key, or a limit."""
    *fast, pure = LOADERS
    for loader in fast:
        try:
            return yaml.load(text, Loader=loader)  # noqa: S506 - SafeConstructor, limits of _Limits
        except (_LimitError, ConstructorError) as exc:
            # Our composer's and constructor's own words, at libyaml's marks (the same line and column):
            # a hostile document is not read a second time.
            raise _one_line(exc, text) from None
        except yaml.YAMLError:
            pass  # libyaml's syntax error: the pure-Python loader says why, in its words
    try:
        return yaml.load(text, Loader=pure)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise _one_line(exc, text) from None


def _one_line(exc: yaml.YAMLError, text: str) -> ConfigFileError:
    if isinstance(exc, yaml.reader.ReaderError):  # a control character: no mark, a multi-line str()
        line = text.count("\n", 0, exc.position) + 1
        return ConfigFileError(
            f"invalid YAML (line {line}): character #x{exc.character:04x} is not allowed in YAML"
        )
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    detail = getattr(exc, "problem", None) or str(exc)
    return ConfigFileError(f"invalid YAML{where}: {' '.join(str(detail).split())}")
