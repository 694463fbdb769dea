"""Fixtures of the reliability suite: the proxy's two lanes and aiohttp's two parsers."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp.http_parser
import aiohttp.web_protocol
import pytest

from tests.component.test_proxy_harness import LANES, use_lane

PARSERS = ("c", "python")
"""aiohttp's request parsers: ``c`` (llhttp, what an install gets where the wheel has it) and
``python`` (what ``AIOHTTP_NO_EXTENSIONS=1`` or a platform without the wheel gets)."""


@pytest.fixture(params=LANES)
def lane(request: pytest.FixtureRequest) -> Iterator[str]:
    """The proxy's lane (see ``use_lane``): ``fast`` or ``full``."""
    with use_lane(request.param):
        yield request.param


@pytest.fixture(params=PARSERS)
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The full proxy parses requests with aiohttp's C parser or its pure-Python one."""
    if request.param == "python":
        monkeypatch.setattr(
            aiohttp.web_protocol, "HttpRequestParser", aiohttp.http_parser.HttpRequestParserPy
        )
    elif aiohttp.web_protocol.HttpRequestParser is aiohttp.http_parser.HttpRequestParserPy:
        pytest.skip("aiohttp's C parser is not available on this platform")
    name: str = request.param
    return name
