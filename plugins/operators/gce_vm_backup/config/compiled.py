"""The compiled form of a config file: its YAML document as JSON, which the DAG file reads in a few
milliseconds where libyaml takes about 60 ms per 1,000 VMs.

``vm-backup validate`` and ``vm-backup sync`` write it next to a valid config (``gce_vm_backup.yaml`` ->
``gce_vm_backup.compiled.json``; sync uploads it with the config); ``read_document(path, compiled=True)``
(the DAG file's read) uses it only when its key matches, and otherwise reads the YAML as always.

What it holds: the document ``load_yaml`` reads from the YAML, before anything else. Validation, the
deployment from ``GCE_VM_BACKUP_DEPLOYMENT`` and every default are applied to it at every parse, as to a
document read from the YAML, so no environment value needs to be part of the key, and a problem is named in
the same words on both paths.

The key is a SHA-256 of: the YAML's bytes; the code that turns them into the document (this package's
``config/loading.py``, by the digest of its source, and PyYAML's version); and the compiled document's own
bytes. Anything else (an edited YAML, another loader, a truncated or edited compiled file, a file that is
not JSON, too large or not a regular file) reads the YAML. The compiled file is trusted as much as the YAML
beside it: whoever can write one can write the other, and the DAG file next to both.

Only a document JSON can hold exactly is compiled: mappings with string keys, lists, strings, numbers,
booleans, null, and dates and timestamps (as ``{"!date": ...}`` / ``{"!datetime": ...}``; a mapping with a
key starting with ``!`` is not compiled). Before it is written, the compiled document is read back and
compared with the YAML's, type for type; a document that differs in any way is not compiled.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from gce_vm_backup.config import loading
from gce_vm_backup.config.loading import decode_config, load_yaml, read_limited

SUFFIX = ".compiled.json"
FORMAT = 1
MAX_COMPILED_BYTES = 8 * loading.MAX_BYTES  # JSON repeats what YAML aliases share
_DATE, _DATETIME = "!date", "!datetime"
_ABOUT = (
    "The compiled form of {name} (vm-backup validate and vm-backup sync write it): the DAG file reads it "
    "instead of the YAML while its key matches the YAML beside it, and ignores it otherwise. Do not edit."
)


class _NotCompilable(Exception):
    """The document holds something JSON cannot hold exactly."""


def compiled_path(config_path: str | os.PathLike[str]) -> Path:
    """Where the compiled form of the config ``config_path`` goes: beside it, ``<stem>.compiled.json``."""
    path = Path(config_path)
    return path.with_name(path.stem + SUFFIX)


@functools.cache
def _loader_digest() -> bytes | None:
    """The digest of the code that reads a YAML into its document; None when its source cannot be read
    (then nothing is compiled, and nothing compiled is used)."""
    try:
        source = Path(loading.__file__).read_bytes()
    except (OSError, TypeError):
        return None
    return hashlib.sha256(source).digest()


def _key(config: bytes, document: bytes) -> str | None:
    loader = _loader_digest()
    if loader is None:
        return None
    digest = hashlib.sha256()
    for part in (
        b"gce-vm-backup compiled config",
        str(FORMAT).encode(),
        loader,
        yaml.__version__.encode(),
        hashlib.sha256(config).digest(),
        hashlib.sha256(document).digest(),
    ):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _encode(value: Any, budget: list[int]) -> Any:
    """``value`` as JSON holds it; raises _NotCompilable past ``budget[0]`` characters of strings or on a
    value JSON cannot hold."""
    kind = type(value)
    if kind is str:
        budget[0] -= len(value)
        if budget[0] < 0:
            raise _NotCompilable("too large")
        return value
    if value is None or kind in (bool, int, float):
        return value
    if kind is list:
        return [_encode(item, budget) for item in value]
    if kind is dict:
        encoded = {}
        for key, item in value.items():
            if type(key) is not str or key.startswith("!"):
                raise _NotCompilable(f"key {key!r}")
            budget[0] -= len(key)
            encoded[key] = _encode(item, budget)
        return encoded
    if kind is datetime:
        return {_DATETIME: value.isoformat()}
    if kind is date:
        return {_DATE: value.isoformat()}
    raise _NotCompilable(kind.__name__)


def _decode_object(value: dict[str, Any]) -> Any:
    if len(value) == 1:
        if _DATE in value:
            return date.fromisoformat(value[_DATE])
        if _DATETIME in value:
            return datetime.fromisoformat(value[_DATETIME])
    return value


def _exact(value: Any) -> Any:
    """``value`` with every type (and a float's and a timestamp's every bit) spelled out: the compiled
    document must be the YAML's, not merely equal to it (1 == 1.0 == True)."""
    kind = type(value)
    if kind is dict:
        return ("dict", tuple((_exact(k), _exact(v)) for k, v in value.items()))
    if kind is list:
        return ("list", tuple(_exact(item) for item in value))
    if kind is float:
        return ("float", "nan" if math.isnan(value) else value.hex())
    if kind is datetime:
        return ("datetime", value.isoformat(), value.utcoffset(), type(value.tzinfo).__name__)
    return (kind.__name__, value)


def _compile(config: bytes, name: str) -> bytes | None:
    """The compiled file's bytes for the bytes of the config file ``name``: a line of JSON (what it is,
    the format, the key), then the document's JSON on one line. None when the document cannot be
    compiled. Raises ConfigFileError when the YAML cannot be read (as the YAML path would)."""
    document = load_yaml(decode_config(config))
    try:
        body = json.dumps(_encode(document, [MAX_COMPILED_BYTES]), separators=(",", ":")).encode("ascii")
    except (_NotCompilable, ValueError):  # ValueError: an int past Python's digit limit
        return None
    if _exact(json.loads(body, object_hook=_decode_object)) != _exact(document):
        return None
    key = _key(config, body)
    if key is None:
        return None
    header = {"about": _ABOUT.format(name=name), "format": FORMAT, "key": key}
    return json.dumps(header).encode("ascii") + b"\n" + body + b"\n"


def write_compiled(config_path: str | os.PathLike[str]) -> Path | None:
    """Write the compiled form of the config file ``config_path`` beside it (atomically) and return its
    path; when the document cannot be compiled, remove any compiled form there and return None. Raises
    ConfigFileError when the config cannot be read, OSError when the folder cannot be written."""
    target = compiled_path(config_path)
    content = _compile(read_limited(config_path), Path(config_path).name)
    if content is None or len(content) > MAX_COMPILED_BYTES:
        target.unlink(missing_ok=True)
        return None
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def _compiled_document(config: bytes, path: Path) -> tuple[bool, Any]:
    """(True, the document) from the compiled form beside the config, when its key matches ``config``;
    (False, None) otherwise."""
    try:
        content = read_limited(path, MAX_COMPILED_BYTES)
        header_end = content.index(b"\n")
        body_end = content.index(b"\n", header_end + 1)
        header = json.loads(content[:header_end])
        body = content[header_end + 1 : body_end]
        key = _key(config, body)
        if (
            key is None
            or type(header) is not dict
            or header.get("format") != FORMAT
            or header.get("key") != key
        ):
            return False, None
        return True, json.loads(body, object_hook=_decode_object)
    except Exception:  # unreadable, missing or malformed: the YAML is read instead
        return False, None


def read_document(config_path: str | os.PathLike[str], *, compiled: bool = False) -> Any:
    """The config file's document, as ``load_yaml`` reads it; with ``compiled``, from its compiled form
    when that one's key matches. Raises ConfigFileError (see loading.py)."""
    config = read_limited(config_path)
    if compiled:
        found, document = _compiled_document(config, compiled_path(config_path))
        if found:
            return document
    return load_yaml(decode_config(config))
