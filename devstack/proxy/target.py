"""What a request asks for, checked once for both lanes: the request-target and the Host. Pure.

The rules (RFC 9112 section 3.2, RFC 9110 section 7.2, RFC 3986):

- **Origin form** (``/path?query``) is the normal case. Its path is *normalized*: percent
  escapes of unreserved characters are decoded (``%2e`` is ``.``, ``%7E`` is ``~``), other
  escapes get upper-case hex digits, and dot segments are removed (RFC 3986 section 5.2.4), so
  ``/api/../admin`` is ``/admin`` and ``/api/%2e%2e/admin`` too. A path that would climb above
  ``/`` is refused (400). Routing and forwarding use the same normalized path: what a service
  receives is what was matched. The query is passed on untouched.
- **Encoded slashes** (``%2F``) are data, not separators: they are matched and forwarded as
  they are, so ``/api%2Fadmin/x`` is the one segment ``api%2Fadmin`` and is under neither
  ``/api`` nor ``/api/admin``. A static route never serves such a path (404).
- **Absolute form** (``http://host/path``) is what a forward proxy is sent. devstack is not one:
  it takes the absolute form only when its authority is a host the proxy serves, and then treats
  it as the origin form with that authority as the Host (RFC 9112 section 3.2.2).
- **Asterisk form** (``OPTIONS *``) is answered by the proxy itself; ``*`` with any other method
  is refused (400). **Authority form** (``CONNECT host:port``) is refused (405): devstack does not
  tunnel.
- **Head limits** (RFC 9112 section 3, RFC 6585 section 5): a request line longer than
  :data:`MAX_REQUEST_LINE_BYTES` is refused with 414; a header field whose name and value
  together exceed :data:`MAX_FIELD_BYTES`, or more than :data:`MAX_FIELDS` header fields, with
  431. A request body must keep coming: see :class:`BodyPace`.
- **Framing** (:func:`check_message_framing`; RFC 9112 sections 2.3 and 6, and nginx's rules):
  an HTTP/1.0 request with ``Transfer-Encoding`` is refused (400) and the connection closed
  (its end cannot be trusted); so is one with both ``Transfer-Encoding`` and
  ``Content-Length``, with more than one ``Content-Length``, or one that is not 1 to
  :data:`MAX_CONTENT_LENGTH_DIGITS` digits. A transfer coding other than ``chunked`` alone is
  refused with 501 (the proxy would have to decode it, or pass on a body its service cannot
  frame), a major version other than 1 with 505. aiohttp's C parser refuses most of these
  itself; its pure-Python parser (``AIOHTTP_NO_EXTENSIONS``) lets some through.
- **Host** must be ``host[:port]``: a DNS name (letters, digits, ``-``, ``.``, ``_``), an IPv4
  address or a bracketed IPv6 literal, and an optional port of at most five digits. Anything
  else (``localhost@evil.example``, ``evil.example/.localhost``, spaces, ``#``) is refused
  (400) before any upstream is contacted, as is a request without a Host.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
"""What ``OPTIONS *`` and a refused ``CONNECT`` are told (``Allow``)."""

MAX_REQUEST_LINE_BYTES = 8190
"""The longest request line (method, target and version, without CRLF): 414 beyond."""
MAX_FIELD_BYTES = 8190
"""The longest header field, name and value together (what aiohttp measures): 431 beyond."""
MAX_FIELDS = 100
"""The most header fields a request may carry: 431 beyond."""
MAX_CONTENT_LENGTH_DIGITS = 18
"""The longest Content-Length, in digits: anything shorter fits a signed 64-bit integer, what
services commonly parse it into."""

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_PLAIN_PATH = re.compile(r"/(?!/)[A-Za-z0-9\-_~!$&'()*+,;=:@/.]*")
"""A path that needs no work: no escapes and (checked apart) no dot segments."""
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
"""What a path may hold (RFC 3986 ``pchar`` and ``/``); ``%`` is checked by :data:`_ESCAPE`."""
_QUERY_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%\[\]{}|\\^`\"<>]*")
"""Lenient: browsers send ``|``, ``^``, quotes and brackets unescaped in queries."""
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9_.])?")
_PORT = re.compile(r"[0-9]{1,5}")
_CONTENT_LENGTH = re.compile(f"[0-9]{{1,{MAX_CONTENT_LENGTH_DIGITS}}}")


class BadRequest(Exception):
    """A request the proxy refuses itself, before any upstream is contacted (or, for a body that
    stalls, 408, before any answer reached the client). ``status`` is the answer's (400, 405,
    408, 414, 431); ``allow`` goes in ``Allow`` when set (405)."""

    def __init__(self, status: int, message: str, *, allow: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.allow = allow


@dataclass(frozen=True, slots=True)
class RequestTarget:
    """A checked request-target: the normalized ``path``, the ``query`` as sent (without the
    ``?``, ``None`` when absent), and ``host`` when the absolute form named one."""

    path: str
    query: str | None = None
    host: str | None = None
    is_asterisk: bool = False

    @property
    def path_qs(self) -> str:
        return self.path if self.query is None else f"{self.path}?{self.query}"


@functools.lru_cache(maxsize=1024)
def parse_target(method: str, target: str) -> RequestTarget:
    """Check and normalize a request-target (see the module's rules); raise
    :class:`BadRequest` for what devstack refuses. Cached: the fast lane asks for every
    request, and the same targets come again and again."""
    if method == "CONNECT":
        raise BadRequest(
            405, "CONNECT is not supported: devstack is not a forward proxy", allow=ALLOWED_METHODS
        )
    if len(method) + len(target) + 10 > MAX_REQUEST_LINE_BYTES:  # "M T HTTP/1.1"
        raise BadRequest(414, f"the request line is longer than {MAX_REQUEST_LINE_BYTES} bytes")
    if target == "*":
        if method != "OPTIONS":
            raise BadRequest(400, f"the target * is only valid for OPTIONS, not {method}")
        return RequestTarget(path="*", is_asterisk=True)
    host: str | None = None
    if not target.startswith("/"):
        host, target = _split_absolute(target)
    path, sep, query = target.partition("?")
    if "#" in target:
        raise BadRequest(400, "the request target must not contain a fragment (#)")
    if sep and not _QUERY_CHARS.fullmatch(query):
        raise BadRequest(400, "the query holds characters that must be percent-encoded")
    return RequestTarget(path=normalize_path(path), query=query if sep else None, host=host)


@functools.lru_cache(maxsize=1024)
def normalize_path(path: str) -> str:
    """``/a/./b/../c%2e%7e`` -> ``/a/c.~``: unreserved escapes decoded, other escapes in upper
    case, dot segments removed. Raises :class:`BadRequest` for a path that climbs above ``/``,
    holds bytes a path may not, or a malformed escape."""
    if _PLAIN_PATH.fullmatch(path) and "/." not in path:
        return path
    if not path.startswith("/") or path.startswith("//"):
        # Two leading slashes would read as an authority (//host/...) once forwarded or
        # written in a Location.
        if path.startswith("//"):
            return normalize_path("/" + path.lstrip("/"))
        raise BadRequest(400, "the request target must start with /")
    if not _PATH_CHARS.fullmatch(path):
        raise BadRequest(400, "the path holds characters that must be percent-encoded")
    if "%" in path:
        if path.count("%") != len(_ESCAPE.findall(path)):
            raise BadRequest(400, "the path holds a malformed percent escape")
        path = _ESCAPE.sub(_normalize_escape, path)
    return remove_dot_segments(path)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 on an absolute path; :class:`BadRequest` where it would climb
    above the root (``/..``), which the RFC silently clamps but a server may read otherwise."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        is_last = i == len(segments) - 1
        if segment == ".":
            if is_last:
                out.append("")
        elif segment == "..":
            if not out:
                raise BadRequest(400, "the path climbs above the root (/..)")
            out.pop()
            if is_last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def parse_host(value: str) -> str:
    """A Host header as ``host[:port]`` -> the normalized host (lower case, no port, no trailing
    dot; IPv6 in brackets). Raises :class:`BadRequest` for anything else."""
    host = _parse_host(value)
    if host is None:
        raise BadRequest(400, f"invalid Host header {value[:100]!r}: expected host[:port]")
    return host


@functools.lru_cache(maxsize=512)
def _parse_host(value: str) -> str | None:
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return None
        literal, rest = value[1:end], value[end + 1 :]
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            return None
        name = f"[{literal.lower()}]"
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
        if not _HOST_NAME.fullmatch(name):
            return None
        name = name.lower().rstrip(".")
    if rest and not (rest[0] == ":" and _PORT.fullmatch(rest[1:]) and int(rest[1:]) <= 65535):
        return None
    return name


def check_framing(version: tuple[int, int], *, has_transfer_encoding: bool) -> None:
    """Refuse (400) an HTTP/1.0 request with ``Transfer-Encoding`` (RFC 9112 section 6.1)."""
    if has_transfer_encoding and version < (1, 1):
        raise BadRequest(400, "Transfer-Encoding is not allowed in an HTTP/1.0 request")


def check_message_framing(
    version: tuple[int, int], transfer_encodings: Sequence[str], content_lengths: Sequence[str]
) -> None:
    """Refuse a request whose body framing is ambiguous or unsupported (see the module's
    rules), given its version and its ``Transfer-Encoding`` and ``Content-Length`` values."""
    if version[0] != 1:
        raise BadRequest(505, f"HTTP/{version[0]}.{version[1]} is not supported here: use HTTP/1.1")
    check_framing(version, has_transfer_encoding=bool(transfer_encodings))
    if transfer_encodings:
        if content_lengths:
            raise BadRequest(
                400, "a request must not carry both Transfer-Encoding and Content-Length"
            )
        codings = [c.strip(" \t").lower() for value in transfer_encodings for c in value.split(",")]
        if codings != ["chunked"]:
            raise BadRequest(
                501, f"unsupported Transfer-Encoding {', '.join(codings)[:100]!r}: only chunked is"
            )
    if len(content_lengths) > 1:
        raise BadRequest(400, "a request must carry at most one Content-Length")
    if content_lengths and not _CONTENT_LENGTH.fullmatch(content_lengths[0]):
        raise BadRequest(400, f"invalid Content-Length {content_lengths[0][:40]!r}")


@dataclass(frozen=True, slots=True)
class BodyPace:
    """How long reading a request body may take. The client may stay silent for at most
    ``idle_seconds`` between chunks, and the body must average ``min_bytes_per_second`` after
    an allowance of ``idle_seconds``: the time spent waiting for it may not exceed
    ``idle_seconds + received / min_bytes_per_second`` (as Apache's ``mod_reqtimeout`` does
    with ``body=20,MinRate=500``). Time spent waiting for the service to take the body does
    not count. A body too slow is answered 408 when nothing was answered yet, else the
    connection is cut."""

    idle_seconds: float = 30.0
    min_bytes_per_second: float = 1024.0

    def wait_limit(self, waited: float, received: int) -> float:
        """How long the next chunk may be awaited, after ``waited`` seconds spent awaiting the
        ``received`` bytes so far; zero or less means the body is too slow already."""
        allowance = self.idle_seconds + received / self.min_bytes_per_second - waited
        return min(self.idle_seconds, allowance)


def _split_absolute(target: str) -> tuple[str, str]:
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise BadRequest(400, "the request target must be a path (/...) or an http(s) URL")
    authority, slash, path = rest.partition("/")
    if "?" in authority:
        authority, _, query = authority.partition("?")
        path, slash = f"?{query}", ""
    if "@" in authority:
        raise BadRequest(400, "the request target must not carry user information (@)")
    return parse_host(authority), "/" + path if slash else "/" + path.lstrip("/")


def _normalize_escape(match: re.Match[str]) -> str:
    code = int(match.group(1), 16)
    return chr(code) if code in _UNRESERVED else f"%{match.group(1).upper()}"
