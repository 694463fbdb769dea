"""What travels over the control socket: requests, answers and the ``status`` document.

A request is one line of JSON, ``{"command": "restart", "names": ["web"]}``; the answer is one
line, ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. Everything here is pure:
the server and the client both use it, and the unit tests check it without a socket.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.status import ServiceStatus

SCHEMA_VERSION = 1
"""The ``version`` of the ``status`` document; raised when a field changes meaning or goes."""

COMMANDS = ("status", "restart", "stop", "start", "down", "logs")
NAMED = ("restart", "stop", "start")
"""Commands that need at least one service name."""

MAX_REQUEST_BYTES = 64 * 1024


class ProtocolError(ValueError):
    """A request or an answer that does not follow the protocol; the message says why."""


@dataclass(frozen=True)
class Request:
    command: str
    names: tuple[str, ...] = ()

    def encode(self) -> bytes:
        return json.dumps({"command": self.command, "names": list(self.names)}).encode() + b"\n"


def parse_request(line: bytes) -> Request:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"not a JSON request: {exc}") from exc
    if not isinstance(data, dict):
        raise ProtocolError("a request is a JSON object")
    command = data.get("command")
    if command not in COMMANDS:
        raise ProtocolError(f"unknown command {command!r}; known: {', '.join(COMMANDS)}")
    names = data.get("names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ProtocolError("names: a list of service names")
    if command in NAMED and not names:
        raise ProtocolError(f"{command}: name at least one service")
    return Request(command, tuple(names))


def unknown_names(names: Iterable[str], known: Sequence[str]) -> str | None:
    """The error for names that are no service of the stack, or None when all are."""
    unknown = [name for name in names if name not in known]
    if not unknown:
        return None
    which = ", ".join(unknown)
    noun = "service" if len(unknown) == 1 else "services"
    return f"no {noun} named {which} in this stack; its services: {', '.join(known)}"


def ok(**fields: Any) -> bytes:
    return json.dumps({"ok": True, **fields}).encode() + b"\n"


def failure(message: str) -> bytes:
    return json.dumps({"ok": False, "error": message}).encode() + b"\n"


def parse_answer(line: bytes) -> dict[str, Any]:
    """The answer's fields; :class:`ProtocolError` for a refusal (its message) or garbage."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"the stack sent an unreadable answer: {exc}") from exc
    if not isinstance(data, dict) or "ok" not in data:
        raise ProtocolError("the stack sent an answer without `ok`")
    if not data["ok"]:
        raise ProtocolError(str(data.get("error", "refused")))
    return data


@dataclass(frozen=True)
class StackInfo:
    """What the ``status`` document says about the stack itself."""

    manifest: Path
    pid: int
    proxy_url: str | None = None
    proxy_port: int | None = None
    ca_path: Path | None = None
    service_urls: Mapping[str, str | None] = field(default_factory=dict)
    """Where each service is reached through the proxy (None: no route to it, or no proxy)."""


def status_document(
    stack: StackInfo, statuses: Iterable[ServiceStatus]
) -> dict[str, Any]:
    """The versioned ``status`` document (``devstack status --json``), as README's "Control"
    describes it."""
    return {
        "version": SCHEMA_VERSION,
        "stack": {
            "manifest": str(stack.manifest),
            "pid": stack.pid,
            "proxy_url": stack.proxy_url,
            "proxy_port": stack.proxy_port,
            "ca_path": None if stack.ca_path is None else str(stack.ca_path),
        },
        "services": [service_entry(s, stack.service_urls.get) for s in statuses],
    }


def service_entry(
    status: ServiceStatus, url_of: Callable[[str], str | None]
) -> dict[str, Any]:
    return {
        "name": status.name,
        "state": str(status.state),
        "ready": status.is_ready,
        "pid": status.pid,
        "wanted_port": status.wanted_port,
        "port": status.port,
        "restarts": status.restarts,
        "exit_code": status.exit_code,
        "reason": status.reason,
        "url": url_of(status.name),
    }
