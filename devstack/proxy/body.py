"""The client's request body, read at a bounded pace (:class:`devstack.proxy.target.BodyPace`).

Without a bound, a client that sends one byte every few seconds holds its connection, and the
service's, for as long as it likes: each byte would reset any idle deadline. :class:`PacedBody`
gives up when the client is silent too long or its body averages too slow, and remembers why,
so the full proxy answers 408 (when no answer has reached the client yet) instead of the 502
the cut upstream request would otherwise be.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import cast

from aiohttp import web

from devstack.proxy.forward import RequestBody
from devstack.proxy.target import BadRequest, BodyPace


class PacedBody(RequestBody):
    """A :class:`devstack.proxy.forward.RequestBody` that stops when the client is too slow;
    ``too_slow`` then holds the refusal to answer with."""

    __slots__ = ("_pace", "too_slow")

    def __init__(self, request: web.BaseRequest, pace: BodyPace) -> None:
        super().__init__(request)
        self._pace = pace
        self.too_slow: BadRequest | None = None

    async def chunks(self, progress: Callable[[], None] | None = None) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        source = cast(AsyncGenerator[bytes, None], super().chunks(progress))  # an async def
        waited, received = 0.0, 0
        try:
            while True:
                limit = self._pace.wait_limit(waited, received)
                started = loop.time()
                try:
                    async with asyncio.timeout(max(limit, 0.0)):
                        chunk = await anext(source)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    self.too_slow = BadRequest(408, self._why(received))
                    raise self.too_slow from None
                waited += loop.time() - started  # time the service took the body does not count
                received += len(chunk)
                yield chunk
        finally:
            await source.aclose()

    def _why(self, received: int) -> str:
        pace = self._pace
        return (
            f"the request body stalled after {received} bytes (at most {pace.idle_seconds:g} s "
            f"of silence, at least {pace.min_bytes_per_second:g} bytes/s)"
        )
