"""The clients that put load on a front door: ``wrk`` for requests per second and latency (or, in
the background, for a steady paced load), ``curl`` for correctness checks and for the streaming
throughput of one large body, and :class:`Poller`, a keep-alive HTTPS client that asks for the
same URL every few milliseconds (to see when a new version answers).

wrk reports through a small Lua ``done`` hook (exact microseconds, error counts) rather than its
human-readable summary. Both clients speak HTTP/1.1 to every contender (wrk always does; curl is
told to, since it would pick HTTP/2 with Caddy).
"""

from __future__ import annotations

import http.client
import re
import signal
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench.errors import BenchError
from bench.launcher import Launched, Launcher
from bench.poll import wait_until

WRK_REPORT = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH-WRK requests=%d duration_us=%d socket_errors=%d bad_status=%d "
    .. "mean_us=%.1f p50_us=%d p99_us=%d\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency.mean, latency:percentile(50), latency:percentile(99)))
end
"""
_WRK_LINE = re.compile(r"BENCH-WRK (.*)")
CLIENT_SLACK_SECONDS = 60.0
"""Added to a client's own duration for its subprocess timeout: the run is always bounded."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    socket_errors: int
    bad_status: int
    mean_us: float
    p50_us: float
    p99_us: float

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds


class Wrk:
    """``wrk -t1 -c<connections> -d<seconds>s <url>``, its report written to ``folder``."""

    def __init__(self, folder: Path) -> None:
        self._script = folder / "wrk-report.lua"
        self._script.write_text(WRK_REPORT)

    def run(self, url: str, *, connections: int, seconds: int) -> WrkResult:
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(self._script), url]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=seconds + CLIENT_SLACK_SECONDS
            )
        except FileNotFoundError as exc:
            raise BenchError("wrk is not installed; apt-get install wrk") from exc
        result = parse_wrk_report(done.stdout) if done.returncode == 0 else None
        if result is None:
            raise BenchError(
                f"wrk on {url} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}"
            )
        if result.requests == 0 or result.bad_status:
            raise BenchError(
                f"wrk on {url}: {result.requests} requests, {result.bad_status} answered with a "
                f"status other than 2xx/3xx; check the contender's log"
            )
        return result


class PacedWrk:
    """``wrk`` in the background until told to stop: each connection sends a request, waits for
    its answer, then ``pause_ms`` more (wrk's Lua ``delay``), so the load is steady and leaves
    the machine room for what is measured meanwhile. Failures are counted, not raised:
    counting them is the point."""

    LONGEST_SECONDS = 600
    REQUEST_TIMEOUT_SECONDS = 30

    def __init__(self, folder: Path, *, pause_ms: int) -> None:
        self._script = folder / f"wrk-paced-{pause_ms}ms.lua"
        self._script.write_text(f"delay = function() return {pause_ms} end\n" + WRK_REPORT)

    def start(self, launcher: Launcher, url: str, *, connections: int) -> Launched:
        argv = [
            "wrk", "-t1", f"-c{connections}", f"-d{self.LONGEST_SECONDS}s",
            f"--timeout={self.REQUEST_TIMEOUT_SECONDS}s", "-s", str(self._script), url,
        ]
        return launcher.start("wrk", argv)

    @staticmethod
    def finish(launched: Launched) -> WrkResult:
        """Stop the run with SIGINT (wrk then reports what it did) and return its report."""
        launched.check_running("putting load on the proxy")
        launched.interrupt(signal.SIGINT)
        wait_until(
            lambda: launched.has_exited,
            timeout=PacedWrk.REQUEST_TIMEOUT_SECONDS + 10,
            message="wrk to report after SIGINT",
        )
        result = parse_wrk_report(launched.output())
        if result is None:
            raise BenchError(f"wrk printed no report:\n{launched.tail()}")
        return result


def parse_wrk_report(stdout: str) -> WrkResult | None:
    """The figures :data:`WRK_REPORT` printed, or ``None`` when wrk printed no report."""
    found = _WRK_LINE.search(stdout)
    if found is None:
        return None
    fields = dict(item.split("=", 1) for item in found.group(1).split())
    return WrkResult(
        requests=int(fields["requests"]),
        seconds=int(fields["duration_us"]) / 1e6,
        socket_errors=int(fields["socket_errors"]),
        bad_status=int(fields["bad_status"]),
        mean_us=float(fields["mean_us"]),
        p50_us=float(fields["p50_us"]),
        p99_us=float(fields["p99_us"]),
    )


@dataclass(frozen=True)
class Download:
    status: int
    size: int
    seconds: float

    @property
    def megabytes_per_second(self) -> float:
        return self.size / self.seconds / 1e6


def _curl_argv(url: str, cacert: Path | None, max_seconds: float) -> list[str]:
    argv = ["curl", "--http1.1", "-sS", "--max-time", f"{max_seconds:g}"]
    parts = urlsplit(url)
    if parts.scheme == "https":
        # Pin the address so every contender is reached the same way (IPv4 loopback).
        argv += ["--resolve", f"{parts.hostname}:{parts.port}:127.0.0.1"]
        if cacert is not None:
            argv += ["--cacert", str(cacert)]
    return argv


def fetch(url: str, cacert: Path | None) -> tuple[int, bytes]:
    """GET ``url`` verifying its certificate against ``cacert``; the status and the body."""
    argv = [*_curl_argv(url, cacert, 10), "-o", "-", "-w", "\n%{http_code}", url]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10 + CLIENT_SLACK_SECONDS)
    except FileNotFoundError as exc:
        raise BenchError("curl is not installed; apt-get install curl") from exc
    if done.returncode != 0:
        raise BenchError(f"curl {url} failed: {done.stderr.decode(errors='replace').strip()}")
    body, _, status = done.stdout.rpartition(b"\n")
    return int(status), body


def download(url: str, cacert: Path | None, *, expected_bytes: int) -> Download:
    """GET a large body into /dev/null; fail unless it is 200 and all ``expected_bytes``."""
    max_seconds = 300.0
    report = "%{http_code} %{size_download} %{time_total}"
    argv = [*_curl_argv(url, cacert, max_seconds), "-o", "/dev/null", "-w", report, url]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=max_seconds + CLIENT_SLACK_SECONDS
    )
    try:
        status, size, seconds = done.stdout.split()
        result = Download(int(status), int(size), float(seconds))
    except ValueError as exc:
        raise BenchError(f"curl {url} failed: {done.stderr.strip()}") from exc
    if result.status != 200 or result.size != expected_bytes:
        raise BenchError(
            f"download of {url}: status {result.status}, {result.size} of {expected_bytes} bytes"
        )
    return result


@dataclass(frozen=True)
class Answer:
    """What one request of the :class:`Poller` got: a status and body, or a socket error."""

    status: int | None
    body: bytes = b""
    error: str | None = None

    @property
    def is_failure(self) -> bool:
        """Not 2xx/3xx, or no answer at all (refused, reset, timed out)."""
        return self.status is None or not 200 <= self.status < 400


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``localhost`` (the name the certificate is checked against) at 127.0.0.1, as
    curl's ``--resolve`` does for the other clients."""

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class Poller:
    """GET one URL over and over on one keep-alive HTTP/1.1 connection (a new one after an
    error), certificate verified against ``cacert``, every answer kept as an :class:`Answer`."""

    def __init__(self, url: str, cacert: Path | None, *, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self._path = parts.path or "/"
        self._connection: http.client.HTTPConnection
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=cacert)
            self._connection = _PinnedHTTPSConnection(
                parts.hostname, parts.port, timeout=timeout, context=context
            )
        else:
            self._connection = http.client.HTTPConnection(
                parts.hostname, parts.port, timeout=timeout
            )

    def get(self) -> Answer:
        try:
            self._connection.request("GET", self._path)
            response = self._connection.getresponse()
            return Answer(response.status, response.read())
        except (OSError, http.client.HTTPException) as exc:
            self._connection.close()
            return Answer(None, error=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._connection.close()
