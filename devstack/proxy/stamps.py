"""The ``Date`` and ``Server`` lines the fast lane writes itself, the same as aiohttp's server
writes them on the full proxy, without importing aiohttp: the fast lane serves before aiohttp
(about 150 ms of imports) has loaded.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import re
import sys
import time
from pathlib import Path

from devstack.proxy.httpdate import format_http_date

_VERSION_LINE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.M)


def aiohttp_version() -> str:
    """aiohttp's ``__version__``, read from the top of its ``__init__.py`` (importing it just for
    this would cost what the fast lane avoids); imported only where that file cannot be read."""
    spec = importlib.util.find_spec("aiohttp")
    if spec is not None and spec.origin is not None:
        try:
            found = _VERSION_LINE.search(Path(spec.origin).read_text(encoding="utf-8"))
        except OSError:
            found = None
        if found is not None:
            return found.group(1)
    import aiohttp

    return aiohttp.__version__


SERVER_SOFTWARE = f"Python/{sys.version_info[0]}.{sys.version_info[1]} aiohttp/{aiohttp_version()}"
"""What aiohttp's server says in ``Server`` (``aiohttp.http.SERVER_SOFTWARE``), so both lanes say
the same; a test holds them equal."""
SERVER_LINE = b"Server: " + SERVER_SOFTWARE.encode() + b"\r\n"


class _DateLine:
    """The ``Date`` header line, formatted once a second: the wall clock is read then (a system
    call on some virtual machines), and the event loop's clock, which costs none, says when the
    second is over."""

    def __init__(self) -> None:
        self._until = -math.inf
        self._line = b""

    def __call__(self) -> bytes:
        now = asyncio.get_running_loop().time()
        if now >= self._until:
            wall = time.time()
            self._line = b"Date: %s\r\n" % format_http_date(wall).encode()
            self._until = now + 1.0 - wall % 1.0
        return self._line


date_line = _DateLine()
"""``Date: <now, RFC 9110's format>\\r\\n``."""
