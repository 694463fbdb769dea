"""The soak's service (``bench/soak_service.py``) stops as devstack's restarts expect: on SIGTERM,
a request under way finishes, its body included. With aiohttp's ``run_app`` it did not (every
connection drops what it receives once the shutdown starts), and the soak saw an upload cut by a
reload answered 502 (see the service's docstring)."""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.component.test_supervisor import free_ports
from tests.conditions import port_accepts, wait_until

REPO = Path(__file__).resolve().parents[2]
SERVICE = REPO / "bench" / "soak_service.py"
BODY = os.urandom(256 * 1024)
DEADLINE_SECONDS = 10.0


@pytest.fixture
def service() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_ports(1)[0]
    process = subprocess.Popen(
        [sys.executable, str(SERVICE)], env={**os.environ, "PORT": str(port)}, cwd=REPO
    )
    try:
        wait_until(lambda: port_accepts(port) or process.poll() is not None,
                   timeout=DEADLINE_SECONDS, message="the soak service to listen")  # fmt: skip
        assert process.poll() is None, f"the soak service exited {process.returncode}"
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_an_upload_under_way_when_sigterm_comes_is_answered(
    service: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = service
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_SECONDS)
    try:
        connection.request("GET", "/soak/hello")  # the connection is accepted and kept alive
        answer = connection.getresponse()
        assert answer.status == 200 and answer.read().startswith(b"hello from")
        connection.putrequest("POST", "/soak/upload")
        connection.putheader("Content-Length", str(len(BODY)))
        connection.endheaders(BODY[: 64 * 1024])
        process.send_signal(signal.SIGTERM)  # as devstack stops it for a restart or a reload
        wait_until(lambda: not port_accepts(port), timeout=DEADLINE_SECONDS,
                   message="the soak service to stop listening (its shutdown began)")  # fmt: skip
        connection.send(BODY[64 * 1024 :])
        answer = connection.getresponse()  # a socket timeout: the rest of the body was dropped
        assert answer.status == 200
        assert answer.read().decode() == hashlib.sha256(BODY).hexdigest()
    finally:
        connection.close()
    assert process.wait(DEADLINE_SECONDS) == 0
