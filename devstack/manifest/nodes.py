"""Typed reading of YAML nodes, with the line of every key kept for messages.

:class:`Loading` collects problems (``file:line: key: what is wrong; what was expected``) so that
one pass reports them all; the ``read_*`` functions check one node's type, report what they
expected, and return ``None`` when it is wrong. :mod:`devstack.manifest.schema` builds the
sections of ``devstack.yaml`` from them.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from devstack.manifest.loading import Loading, close_matches, suggestion

__all__ = ["Loading", "suggestion"]  # with the read_* functions below; the two live in .loading

_YAML_TAG = "tag:yaml.org,2002:"
_KINDS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
          "timestamp": "date"}
_CONSTRUCTOR = yaml.constructor.SafeConstructor()

T = TypeVar("T")
E = TypeVar("E", bound=enum.StrEnum)
Entries = Mapping[str, tuple[Node, Node]]
"""A mapping's entries by name: (key node, value node)."""


def line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and tag_of(node) == "null"


def describe(node: Node) -> str:
    """``string 'abc'``, ``integer 5``, ``boolean true``, ``null``, ``a list``, ``a mapping``."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    tag = tag_of(node)
    if tag == "null":
        return "null"
    if tag in ("str", "timestamp"):
        return f"{_KINDS[tag]} {node.value!r}"
    if tag in _KINDS:
        return f"{_KINDS[tag]} {node.value}"
    return f"a value tagged {node.tag} ({node.value!r})"


def tag_of(node: Node) -> str:
    return str(node.tag).removeprefix(_YAML_TAG)


def join_key(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


# --- typed reading of nodes -------------------------------------------------------------------


def read_mapping(
    ld: Loading, node: Node, key: str, allowed: Sequence[str] | None
) -> Entries | None:
    """The entries of a mapping node (null reads as empty); records each key's line and reports
    duplicate keys and, unless ``allowed`` is None, unknown ones. ``<<: *anchor`` merges work."""
    if is_null(node):
        return {}
    if not isinstance(node, MappingNode):
        ld.error(key, line_of(node), f"expected a mapping, got {describe(node)}")
        return None
    first_lines: dict[str, int] = {}
    for knode, _ in node.value:
        name = knode.value if isinstance(knode, ScalarNode) and knode.value != "<<" else None
        if name in first_lines:
            ld.error(join_key(key, name), line_of(knode),
                     f"duplicate key (first on line {first_lines[name]})")
        elif name is not None:
            first_lines[name] = line_of(knode)
    try:
        _CONSTRUCTOR.flatten_mapping(node)
    except yaml.MarkedYAMLError as exc:
        ld.error(key, line_of(node), f"cannot merge: {exc.problem}")
        return None
    entries: dict[str, tuple[Node, Node]] = {}
    for knode, vnode in node.value:
        if not isinstance(knode, ScalarNode):
            ld.error(key, line_of(knode), f"expected a plain name as key, got {describe(knode)}")
            continue
        name = str(knode.value)
        if allowed is not None and name not in allowed and not _is_extension(key, name):
            hint = suggestion(name, allowed, "valid keys")
            ld.error(join_key(key, name), line_of(knode), f"unknown key; {hint}")
            ld.guessed.update(join_key(key, close) for close in close_matches(name, allowed))
            continue
        ld.lines[join_key(key, name)] = line_of(knode)
        entries[name] = (knode, vnode)
    return entries


def _is_extension(key: str, name: str) -> bool:
    """Top-level ``x-...`` keys are ignored (as in Compose files): a home for YAML anchors."""
    return not key and name.startswith("x-")


def read_optional(
    ld: Loading,
    entries: Entries,
    key: str,
    name: str,
    read: Callable[[Loading, Node, str], T | None],
) -> T | None:
    """Read entry ``name`` with ``read``: None when it is absent, empty or invalid."""
    if name not in entries or is_null(entries[name][1]):
        return None
    return read(ld, entries[name][1], join_key(key, name))


def read_key(
    ld: Loading,
    entries: Entries,
    key: str,
    name: str,
    read: Callable[[Loading, Node, str], T | None],
    default: T,
) -> T:
    """Read entry ``name`` with ``read``: ``default`` when it is absent, empty or invalid."""
    value = read_optional(ld, entries, key, name, read)
    return default if value is None else value


def read_scalar(ld: Loading, node: Node, key: str, tag: str, expected: str) -> ScalarNode | None:
    if isinstance(node, ScalarNode) and tag_of(node) == tag:
        return node
    ld.error(key, line_of(node), f"expected {expected}, got {describe(node)}")
    return None


def read_string(ld: Loading, node: Node, key: str) -> str | None:
    scalar = read_scalar(ld, node, key, "str", "a string")
    return None if scalar is None else str(scalar.value)


def read_url_path(ld: Loading, node: Node, key: str) -> str | None:
    """A string starting with ``/``; one that does not is reported, and kept for the checks
    that look across entries."""
    path = read_string(ld, node, key)
    if path is not None and not path.startswith("/"):
        ld.error(key, ld.line(key), f"expected a path starting with '/', got string {path!r}")
    return path


def read_boolean(ld: Loading, node: Node, key: str) -> bool | None:
    scalar = read_scalar(ld, node, key, "bool", "true or false")
    return None if scalar is None else bool(_CONSTRUCTOR.construct_yaml_bool(scalar))


def read_integer(ld: Loading, node: Node, key: str) -> int | None:
    scalar = read_scalar(ld, node, key, "int", "an integer")
    return None if scalar is None else int(_CONSTRUCTOR.construct_yaml_int(scalar))


def read_port(ld: Loading, node: Node, key: str) -> int | None:
    port = read_integer(ld, node, key)
    if port is not None and not 1 <= port <= 65535:
        ld.error(key, line_of(node), f"expected a port number from 1 to 65535, got {port}")
        return None
    return port


def read_seconds(ld: Loading, node: Node, key: str) -> float | None:
    if isinstance(node, ScalarNode) and tag_of(node) in ("int", "float"):
        value = float(_CONSTRUCTOR.construct_yaml_float(node))
        if math.isfinite(value) and value > 0:
            return value
    ld.error(key, line_of(node), f"expected a number of seconds above 0, got {describe(node)}")
    return None


def read_strings(ld: Loading, node: Node, key: str) -> tuple[str, ...] | None:
    """A string or a list of strings; records the line of each item as ``key[i]``."""
    items = node.value if isinstance(node, SequenceNode) else [node]
    values = []
    for index, item in enumerate(items):
        scalar = read_scalar(ld, item, key, "str", "a string or a list of strings")
        if scalar is not None:
            ld.lines[f"{key}[{index}]"] = line_of(item)
            values.append(str(scalar.value))
    return tuple(values) if len(values) == len(items) else None


def read_choice(kind: type[E]) -> Callable[[Loading, Node, str], E | None]:
    """A reader for one of the values of the enum ``kind`` (``restart``, ``reload``)."""

    def read(ld: Loading, node: Node, key: str) -> E | None:
        choices = [member.value for member in kind]
        text = node.value if isinstance(node, ScalarNode) and tag_of(node) == "str" else None
        if text in choices:
            return kind(text)
        close = close_matches(text, choices) if text else []
        hint = f"; did you mean '{close[0]}'?" if close else ""
        expected = f"expected one of {', '.join(choices)}"
        ld.error(key, line_of(node), f"{expected}, got {describe(node)}{hint}")
        return None

    return read


def yaml_bool(node: ScalarNode) -> bool:
    """A YAML 1.1 boolean scalar's value (``yes``, ``on``, ``true`` ...)."""
    return bool(_CONSTRUCTOR.construct_yaml_bool(node))
