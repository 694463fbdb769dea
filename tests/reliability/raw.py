"""Raw requests for the framing suites: exact bytes, with ``{host}`` standing for the proxy's
``localhost:<port>``, and what a service must never receive."""

from __future__ import annotations

import re

SMUGGLED = b"GET /api/admin/smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n"
"""A second request hidden in a body: no service may ever receive it as a request."""
CHUNKED_SMUGGLE = b"0\r\n\r\n" + SMUGGLED


def post(*fields: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    head = b"POST /api/x HTTP/" + version + b"\r\nHost: {host}\r\n"
    return head + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body


def get(*fields: bytes, target: bytes = b"/api/x", line: bytes | None = None) -> bytes:
    first = line if line is not None else b"GET " + target + b" HTTP/1.1"
    return first + b"\r\nHost: {host}\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


_REQUEST_LINE = re.compile(rb"[A-Z]+ /[!-~]* HTTP/1\.1")
_FIELD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+: ?[\t -~\x80-\xff]*")


def head_problems(head: bytes) -> list[str]:
    """What makes a request head, as a service received it, anything but clean HTTP/1.1:
    the stricter reading of RFC 9112 that nginx applies."""
    if not head.endswith(b"\r\n\r\n"):
        return ["the head does not end with CRLF CRLF"]
    line, *fields = head[:-4].split(b"\r\n")
    problems = []
    if not _REQUEST_LINE.fullmatch(line):
        problems.append(f"request line {line[:80]!r}")
    names = [f.partition(b":")[0].lower() for f in fields]
    problems += [f"field {f[:80]!r}" for f in fields if not _FIELD.fullmatch(f)]
    if names.count(b"host") != 1:
        problems.append(f"{names.count(b'host')} Host fields")
    if b"transfer-encoding" in names and b"content-length" in names:
        problems.append("both Transfer-Encoding and Content-Length")
    if names.count(b"content-length") > 1 or names.count(b"transfer-encoding") > 1:
        problems.append("a framing field twice")
    if b"smuggled" in line:
        problems.append("a smuggled request")
    return problems


def split_requests(received: bytes) -> list[tuple[bytes, bytes]]:
    """The requests in what a service received, in order, as (head, body): read as a strict
    HTTP/1.1 server would (Content-Length, or chunked with CRLF everywhere)."""
    requests = []
    rest = received
    while rest:
        end = rest.find(b"\r\n\r\n")
        if end == -1:
            raise AssertionError(f"an unfinished head: {rest[:200]!r}")
        head, rest = rest[: end + 4], rest[end + 4 :]
        fields = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (f.partition(b":") for f in head.split(b"\r\n")[1:-2])
        )
        if fields.get(b"transfer-encoding") == b"chunked":
            body, rest = _chunked(rest)
        else:
            length = int(fields.get(b"content-length", b"0"))
            body, rest = rest[:length], rest[length:]
        requests.append((head, body))
    return requests


def _chunked(data: bytes) -> tuple[bytes, bytes]:
    body = b""
    while True:
        line, sep, data = data.partition(b"\r\n")
        assert sep, "an unfinished chunk size"
        size = int(line, 16)
        if size == 0:
            assert data.startswith(b"\r\n"), "trailers or a missing CRLF after the last chunk"
            return body, data[2:]
        body += data[:size]
        assert data[size : size + 2] == b"\r\n", "a chunk without its CRLF"
        data = data[size + 2 :]
