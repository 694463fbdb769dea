"""Static files on the fast lane (:mod:`devstack.proxy.fastlane`): an answer of
:func:`.answer.answer_file` written to the client's transport.

Up to :data:`ONE_WRITE_BYTES` of body, the head and the body leave in one write (one TLS record
for a small file); anything longer is streamed with back-pressure (:class:`FileStream`): pieces
of :data:`PIECE_BYTES` while the transport takes them, then nothing until it asks for more. A
file kept in memory is sent from there (slices, no copies); a larger one is read from its open
descriptor piece by piece, inline: a read from the page cache takes tens of microseconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Protocol

from devstack.proxy.stamps import SERVER_LINE, date_line
from devstack.proxy.static.answer import FILE_REQUEST_HEADERS, FileAnswer, FileRequest
from devstack.proxy.static.cache import Recalled

logger = logging.getLogger(__name__)

ONE_WRITE_BYTES = 64 * 1024
"""Bodies up to this size leave in the same write as the head."""
PIECE_BYTES = 256 * 1024
"""A streamed body is written in pieces of this size."""

_STATUS_LINES = {
    200: b"HTTP/1.1 200 OK\r\n",
    206: b"HTTP/1.1 206 Partial Content\r\n",
    304: b"HTTP/1.1 304 Not Modified\r\n",
    412: b"HTTP/1.1 412 Precondition Failed\r\n",
    416: b"HTTP/1.1 416 Range Not Satisfiable\r\n",
}
_CLOSING = {True: b"Connection: close\r\n\r\n", False: b"\r\n"}
"""The end of a head: with ``Connection: close`` or without."""
_FIELDS = {name.encode(): field for name, field in FILE_REQUEST_HEADERS.items()}




class StreamFront(Protocol):
    """The client's connection as a :class:`FileStream` writes to it
    (:class:`devstack.proxy.fastlane.FastPath`)."""

    is_writing_paused: bool

    @property
    def transport(self) -> asyncio.Transport: ...

    def answered(self) -> None:
        """The whole answer was written: take the next request."""


def file_request(headers: list[tuple[bytes, bytes]], *, is_head: bool) -> FileRequest:
    """The parts of a raw request head a file's answer depends on."""
    found: dict[str, str] = {}
    for name, value in headers:
        field = _FIELDS.get(name.lower())
        if field is not None:
            found[field] = value.decode("latin-1")
    return FileRequest(is_head, **found) if found else FileRequest(is_head)


def send(front: StreamFront, answer: FileAnswer, fd: int | None, *,
         close: bool) -> tuple[FileStream | None, Recalled | None]:  # fmt: skip
    """Write ``answer`` (its file open as ``fd`` when it is streamed from disk). Returns the
    stream when the body goes on after this call (else ``None``: all written), and the answer
    as it can be written again (:meth:`FileCache.recall`) when it can. ``close``: say
    ``Connection: close`` and close after the answer."""
    head = _STATUS_LINES[answer.status] + answer.fields
    if answer.has_length:
        head += b"Content-Length: %d\r\n" % answer.length
    body = answer.body
    if fd is None and len(body) <= ONE_WRITE_BYTES:
        recalled = Recalled(head, body, close)
        send_again(front, recalled)
        return None, recalled if answer.basis is not None else None
    transport = front.transport
    transport.write(b"".join((head, date_line(), SERVER_LINE, _CLOSING[close])))
    stream = FileStream(front, body if fd is None else fd, answer.offset, answer.length,
                        close=close)  # fmt: skip
    if not stream.pump():
        return stream, None
    if close:
        transport.close()
    return None, None


def send_again(front: StreamFront, answer: Recalled) -> None:
    """Write a whole answer in one write (the head, with today's Date, and the body)."""
    transport = front.transport
    transport.write(b"".join((answer.head, date_line(), SERVER_LINE, _CLOSING[answer.close],
                              answer.body)))  # fmt: skip
    if answer.close:
        transport.close()


class FileStream:
    """A body longer than one write, sent as fast as the client takes it."""

    has_headers = True
    """What the fast lane's timer asks an answer in progress (the head is out)."""

    def __init__(self, front: StreamFront, source: bytes | memoryview | int, offset: int,
                 count: int, *, close: bool) -> None:  # fmt: skip
        """``source``: the bytes to send from ``offset`` (a file in memory), or an open file
        descriptor to read them from (closed when done)."""
        self._front = front
        self._memory = memoryview(source) if not isinstance(source, int) else None
        self._fd = source if isinstance(source, int) else -1
        self._offset = offset
        self._left = count
        self._close = close
        self.is_done = False

    def pump(self) -> bool:
        """Write pieces until the transport asks to pause or the body is out; True when it
        is all written."""
        front = self._front
        transport = front.transport
        while self._left and not front.is_writing_paused:
            if transport.is_closing():
                self.abandon()
                return False
            size = min(self._left, PIECE_BYTES)
            if self._memory is not None:
                piece: bytes | memoryview = self._memory[self._offset : self._offset + size]
            else:
                piece = os.pread(self._fd, size, self._offset)
                if not piece:  # the file shrank under us: cut the client off, it sees why
                    logger.info("a file shrank while it was sent: connection closed")
                    self.abandon()
                    transport.close()
                    return False
            transport.write(piece)
            self._offset += len(piece)
            self._left -= len(piece)
        if self._left or self.is_done:
            return False
        self._finish()
        return True

    def resume(self) -> None:
        """The transport takes more: go on, and end the answer when it is all written."""
        if self.pump():
            if self._close:
                self._front.transport.close()
            else:
                self._front.answered()

    def abandon(self) -> None:
        """The client left (or the answer was cut): release the file."""
        self._finish()

    def time_out(self) -> None:
        """Nothing to time out: the head is out, the idle timer keeps the connection."""

    def _finish(self) -> None:
        self.is_done = True
        self._memory = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
