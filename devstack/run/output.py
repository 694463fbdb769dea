"""The printer: every line of every service, prefixed ``HH:MM:SS name |``, one colour per service.

Lines are written whole with one ``write`` each, so two services never mix mid-line. Each
service's lines also go to ``.devstack/logs/<name>.log`` (no colour). Child output arrives as raw
chunks; :class:`LineSplitter` turns them into lines without asyncio's 64 KiB ``readline`` limit:
lines up to :data:`MAX_LINE_BYTES` are kept whole, longer ones are cut into pieces of that size
(nothing is dropped), and output without a final newline is flushed at end-of-file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

MAX_LINE_BYTES = 4 * 1024 * 1024
SYSTEM_NAME = "devstack"

# Readable on dark and light terminals; red is kept for errors.
PALETTE = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")
RESET = "\x1b[0m"
BOLD_RED = "\x1b[1;31m"


def should_colour(stream: BinaryIO | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Colour on a terminal unless NO_COLOR is set (https://no-color.org); FORCE_COLOR forces it."""
    environ = os.environ if environ is None else environ
    if environ.get("NO_COLOR"):
        return False
    if environ.get("FORCE_COLOR"):
        return True
    stream = stream or sys.stdout.buffer
    try:
        return os.isatty(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False


class LineSplitter:
    """Feed chunks, get complete lines (without the newline) through ``emit``."""

    def __init__(self, emit: Callable[[bytes], None], max_line: int = MAX_LINE_BYTES) -> None:
        self._emit = emit
        self._max_line = max_line
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        buffer = self._buffer
        buffer += chunk
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            self._emit_line(bytes(buffer[start:end]))
            start = end + 1
        del buffer[:start]
        while len(buffer) >= self._max_line:
            self._emit(bytes(buffer[: self._max_line]))
            del buffer[: self._max_line]

    def close(self) -> None:
        """End of output: what is left without a final newline is a line too."""
        if self._buffer:
            self._emit_line(bytes(self._buffer))
            self._buffer.clear()

    def _emit_line(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        while len(line) > self._max_line:
            self._emit(line[: self._max_line])
            line = line[self._max_line :]
        self._emit(line)


class Printer:
    """Writes prefixed lines to the terminal (or whatever stdout is) and to per-service logs."""

    def __init__(
        self,
        names: Iterable[str],
        *,
        stream: BinaryIO | None = None,
        colour: bool | None = None,
        logs_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stream = stream or sys.stdout.buffer
        self._colour = should_colour(self._stream) if colour is None else colour
        self._clock = clock
        names = list(names)
        self._width = max([len(SYSTEM_NAME), *(len(n) for n in names)])
        self._prefixes: dict[str, bytes] = {}
        for index, name in enumerate(names):
            self._prefixes[name] = self._make_prefix(name, PALETTE[index % len(PALETTE)])
        self._prefixes[SYSTEM_NAME] = self._make_prefix(SYSTEM_NAME, "1")
        self._logs: dict[str, BinaryIO] = {}
        if logs_dir is not None:
            logs_dir.mkdir(parents=True, exist_ok=True)
            for name in names:
                self._logs[name] = open(logs_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in close()

    def _make_prefix(self, name: str, colour: str) -> bytes:
        label = f"{name:<{self._width}} | "
        if not self._colour:
            return label.encode()
        return f"\x1b[{colour}m{label}{RESET}".encode()

    def _stamp(self) -> bytes:
        return time.strftime("%H:%M:%S ", time.localtime(self._clock())).encode()

    def line(self, name: str, text: bytes) -> None:
        """One line of output from service ``name`` (no trailing newline)."""
        self.lines(name, (text,))

    def lines(self, name: str, texts: Iterable[bytes]) -> None:
        """Several lines of service ``name``, written with one write (and one flush)."""
        stamp = self._stamp()
        head = stamp + (self._prefixes.get(name) or self._make_prefix(name, "0"))
        texts = list(texts)
        self._write(b"".join(head + text + b"\n" for text in texts))
        log = self._logs.get(name)
        if log is not None:
            log.write(b"".join(stamp + text + b"\n" for text in texts))
            log.flush()

    def system(self, message: str, *, error: bool = False, service: str | None = None) -> None:
        """devstack's own line; ``service`` also copies it into that service's log."""
        text = message.encode("utf-8", "replace")
        if self._colour and error:
            text = BOLD_RED.encode() + text + RESET.encode()
        stamp = self._stamp()
        self._write(stamp + self._prefixes[SYSTEM_NAME] + text + b"\n")
        if service is not None and service in self._logs:
            self._logs[service].write(stamp + b"[devstack] " + message.encode() + b"\n")

    def flush(self) -> None:
        for log in self._logs.values():
            log.flush()
        with contextlib.suppress(BrokenPipeError, ValueError):
            self._stream.flush()

    def close(self) -> None:
        self.flush()
        for log in self._logs.values():
            log.close()
        self._logs.clear()

    def _write(self, data: bytes) -> None:
        try:
            self._stream.write(data)
            self._stream.flush()
        except BrokenPipeError:
            # Our reader went away (`devstack up | head`): keep the services' logs going.
            pass


class PrinterLogHandler(logging.Handler):
    """devstack's own log records, printed as ``devstack |`` lines between the services' lines."""

    def __init__(self, printer: Printer) -> None:
        super().__init__()
        self._printer = printer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._printer.system(self.format(record), error=record.levelno >= logging.WARNING)
        except Exception:  # a logging handler must never raise into the code that logged
            self.handleError(record)


@contextlib.contextmanager
def logging_to(printer: Printer, *, verbose: bool) -> Iterator[None]:
    """Route the ``devstack`` loggers to ``printer`` (INFO, or DEBUG when verbose) for a while."""
    handler = PrinterLogHandler(printer)
    root = logging.getLogger("devstack")
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
