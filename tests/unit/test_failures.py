"""Low-level errors -> the proxy's failure kinds and their messages, as one table; and the
status each kind is answered with (:func:`devstack.proxy.pages.status_for`)."""

from __future__ import annotations

import errno

import aiohttp
import httptools
import pytest

from devstack.proxy.failures import (
    ClientGone,
    ConnectionLost,
    ForwardError,
    Stage,
    UpstreamBroken,
    UpstreamRefused,
    UpstreamTimeout,
    failure_for,
)
from devstack.proxy.pages import status_for


def _parse_error() -> httptools.HttpParserError:
    parser = httptools.HttpResponseParser(object())
    try:
        parser.feed_data(b"NOT HTTP AT ALL\r\n\r\n")
    except httptools.HttpParserError as exc:
        return exc
    raise AssertionError("httptools took garbage for an answer")


def _connector_error(code: int) -> aiohttp.ClientConnectorError:
    key = aiohttp.client_reqrep.ConnectionKey("127.0.0.1", 9, False, True, None, None, None)
    return aiohttp.ClientConnectorError(key, OSError(code, "refused or worse"))


CASES: list[tuple[str, BaseException, Stage, type[ForwardError], str, int | None]] = [
    ("refused", ConnectionRefusedError(), Stage.CONNECTING, UpstreamRefused,
     "nothing accepts connections on port 4000", 502),
    ("refused, as aiohttp wraps it", _connector_error(errno.ECONNREFUSED), Stage.ANSWERING,
     UpstreamRefused, "nothing accepts connections on port 4000", 502),
    ("no connection in time", TimeoutError(), Stage.CONNECTING, UpstreamRefused,
     "nothing accepts connections on port 4000", 502),
    ("cannot connect otherwise", OSError(errno.EHOSTUNREACH, "No route to host"),
     Stage.CONNECTING, UpstreamRefused, "cannot connect to port 4000: [Errno 113] No route to host",
     502),
    ("no answer in time", TimeoutError(), Stage.ANSWERING, UpstreamTimeout,
     "no answer within 2.5 s", 504),
    ("reset by the service", ConnectionResetError(), Stage.ANSWERING, UpstreamBroken,
     "the service reset the connection", 502),
    ("reset, as the connection reports it", ConnectionLost(ConnectionResetError()),
     Stage.ANSWERING, UpstreamBroken, "the service reset the connection", 502),
    ("cut short", ConnectionLost(), Stage.ANSWERING, UpstreamBroken,
     "the service closed the connection before its answer was complete", 502),
    ("malformed answer", ConnectionLost(_parse_error()), Stage.ANSWERING, UpstreamBroken,
     f"malformed answer: {_parse_error()}", 502),
    ("malformed answer, unwrapped", _parse_error(), Stage.ANSWERING, UpstreamBroken,
     f"malformed answer: {_parse_error()}", 502),
    ("aiohttp's client gave up", aiohttp.ServerDisconnectedError(), Stage.ANSWERING,
     UpstreamBroken, "Server disconnected", 502),
    ("client gone", ConnectionResetError(), Stage.DELIVERING, ClientGone,
     "the client closed the connection", None),
    ("client gone, broken pipe", BrokenPipeError(), Stage.DELIVERING, ClientGone,
     "the client closed the connection", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "error", "stage", "kind", "detail", "status"), CASES, ids=[c[0] for c in CASES]
)
def test_each_low_level_error_maps_to_one_kind_with_one_message(
    case: str,
    error: BaseException,
    stage: Stage,
    kind: type[ForwardError],
    detail: str,
    status: int | None,
) -> None:
    failure = failure_for(error, "api", stage, port=4000, limit=2.5)
    assert type(failure) is kind, case
    assert (failure.service, failure.detail) == ("api", detail), case
    assert str(failure) == f"api: {detail}"
    assert status_for(failure) == status


def test_a_failure_already_mapped_passes_as_it_is() -> None:
    failure = UpstreamTimeout("api", "no answer within 1 s")
    assert failure_for(failure, "other", Stage.DELIVERING) is failure


def test_connection_lost_says_how_in_its_message() -> None:
    assert str(ConnectionLost(ConnectionResetError())) == "the service reset the connection"
    assert ConnectionLost().cause is None
