"""The header rules of both lanes, as tables: every case runs through the ``str`` form (the full
proxy) and the ``bytes`` form (the fast lane, the upstream connection), which must agree."""

from __future__ import annotations

import pytest

from devstack.proxy.headers import (
    HOP_BY_HOP,
    HOP_BY_HOP_BYTES,
    NOT_FORWARDED,
    NOT_FORWARDED_BYTES,
    named_in_connection,
    request_headers,
    request_headers_bytes,
    response_headers,
    response_headers_bytes,
)

Pairs = list[tuple[str, str]]


def _encoded(pairs: Pairs) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs]


def test_the_bytes_sets_are_the_str_sets_encoded() -> None:
    assert {name.encode() for name in HOP_BY_HOP} == HOP_BY_HOP_BYTES
    assert {name.encode() for name in NOT_FORWARDED} == NOT_FORWARDED_BYTES
    assert {"connection", "keep-alive", "te", "transfer-encoding", "upgrade"} <= HOP_BY_HOP
    assert all(name == name.lower() for name in NOT_FORWARDED)


CONNECTION_VALUES = [
    (["close"], {"close"}),
    (["Keep-Alive, X-Foo"], {"keep-alive", "x-foo"}),
    (["  X-Foo ,\tX-BAR\t, ,", "x-baz"], {"x-foo", "x-bar", "x-baz"}),
    ([",,"], set()),
    ([""], set()),
]


@pytest.mark.parametrize(("values", "expected"), CONNECTION_VALUES)
def test_names_in_connection_are_trimmed_and_lower_case_in_both_forms(
    values: list[str], expected: set[str]
) -> None:
    assert named_in_connection(values) == expected
    assert named_in_connection([v.encode() for v in values]) == {e.encode() for e in expected}


REQUESTS: list[tuple[str, Pairs, Pairs]] = [
    (
        "hop-by-hop headers never reach the service, whatever their case",
        [
            ("Host", "a.localhost"),
            ("KEEP-ALIVE", "5"),
            ("te", "trailers"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic x"),
            ("Accept", "*/*"),
        ],
        [("Host", "a.localhost"), ("Accept", "*/*")],
    ),
    (
        "names listed in Connection are dropped, with odd spacing and case",
        [
            ("Host", "h"),
            ("Connection", " x-Trace ,\tX-SECRET"),
            ("X-Trace", "1"),
            ("x-secret", "2"),
            ("X-Kept", "3"),
        ],
        [("Host", "h"), ("X-Kept", "3")],
    ),
    (
        "a client's X-Forwarded-* is dropped, never trusted or appended to",
        [
            ("Host", "h"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("x-forwarded-host", "evil.example"),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Prefix", "/admin"),
        ],
        [("Host", "h")],
    ),
    (
        "Expect is the proxy's to answer",
        [("Host", "h"), ("Expect", "100-continue")],
        [("Host", "h")],
    ),
    (
        "repeated headers stay apart and in order",
        [("Host", "h"), ("Cookie", "a=1"), ("Accept", "x"), ("Cookie", "b=2")],
        [("Host", "h"), ("Cookie", "a=1"), ("Accept", "x"), ("Cookie", "b=2")],
    ),
]


@pytest.mark.parametrize(("case", "incoming", "kept"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_request_headers_agree_in_both_forms(case: str, incoming: Pairs, kept: Pairs) -> None:
    added = [("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-Proto", "https"),
             ("X-Forwarded-Host", "a.localhost:8080"), ("X-Forwarded-Prefix", "/api")]  # fmt: skip
    as_str = request_headers(incoming, client="127.0.0.1", host="a.localhost:8080", prefix="/api")
    as_bytes = request_headers_bytes(
        _encoded(incoming), client=b"127.0.0.1", host=b"a.localhost:8080", prefix=b"/api"
    )
    assert as_str == kept + added, case
    assert as_bytes == _encoded(kept + added), case


def test_x_forwarded_prefix_only_when_a_prefix_was_stripped_and_empty_values_left_out() -> None:
    assert request_headers([("Host", "h")], client="", host="h", prefix=None) == [
        ("Host", "h"), ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "h"),
    ]  # fmt: skip
    assert request_headers_bytes([(b"Host", b"h")], client=b"", host=b"h", prefix=None) == [
        (b"Host", b"h"), (b"X-Forwarded-Proto", b"https"), (b"X-Forwarded-Host", b"h"),
    ]  # fmt: skip


RESPONSES: list[tuple[str, Pairs, Pairs]] = [
    (
        "hop-by-hop headers never reach the client, whatever their case",
        [
            ("Content-Type", "text/plain"),
            ("TRANSFER-ENCODING", "chunked"),
            ("keep-alive", "timeout=5"),
            ("Connection", "keep-alive"),
            ("Trailer", "X-Sum"),
        ],
        [("Content-Type", "text/plain")],
    ),
    (
        "names listed in Connection are dropped",
        [("Connection", "close,  X-Internal"), ("X-Internal", "1"), ("ETag", '"a"')],
        [("ETag", '"a"')],
    ),
    (
        "Set-Cookie stays separate, in order; X-Forwarded-* from a service passes",
        [("Set-Cookie", "a=1; Path=/"), ("X-Forwarded-For", "x"), ("Set-Cookie", "b=2, c=3")],
        [("Set-Cookie", "a=1; Path=/"), ("X-Forwarded-For", "x"), ("Set-Cookie", "b=2, c=3")],
    ),
    (
        "Expect in an answer is no business of the proxy",
        [("Expect", "odd"), ("Content-Length", "0")],
        [("Expect", "odd"), ("Content-Length", "0")],
    ),
]


@pytest.mark.parametrize(("case", "incoming", "kept"), RESPONSES, ids=[r[0] for r in RESPONSES])
def test_response_headers_agree_in_both_forms(case: str, incoming: Pairs, kept: Pairs) -> None:
    assert response_headers(incoming) == kept, case
    assert response_headers_bytes(_encoded(incoming)) == _encoded(kept), case
