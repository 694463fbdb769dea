"""Every deadline and limit has a documented default: the README's table under "Reliability"
says what the code says."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from devstack.control import server as control_server
from devstack.manifest.spec import (
    DEFAULT_READY_TIMEOUT_SECONDS,
    DEFAULT_STOP_TIMEOUT_SECONDS,
    ProxySpec,
)
from devstack.proxy import refusal, target
from devstack.proxy.server import ProxyTimeouts
from devstack.proxy.upstream import connection, pool
from devstack.run import process

README = Path(__file__).resolve().parents[2] / "README.md"


def defaults() -> dict[str, float]:
    timeouts, pace, proxy = ProxyTimeouts(), target.BodyPace(), ProxySpec()
    connect = inspect.signature(pool.PooledUpstream.__init__).parameters["connect_timeout"]
    return {
        "ProxyTimeouts.first_byte_seconds": timeouts.first_byte_seconds,
        "ProxyTimeouts.idle_seconds": timeouts.idle_seconds,
        "BodyPace.idle_seconds": pace.idle_seconds,
        "BodyPace.min_bytes_per_second": pace.min_bytes_per_second,
        "LINGER_SECONDS": refusal.LINGER_SECONDS,
        "proxy.wait_seconds": proxy.wait_seconds,
        "proxy.upstream_timeout_seconds": proxy.upstream_timeout_seconds,
        "PooledUpstream(connect_timeout)": connect.default,
        "IDLE_SECONDS": pool.IDLE_SECONDS,
        "ProxyTimeouts.shutdown_seconds": timeouts.shutdown_seconds,
        "stop_timeout_seconds": DEFAULT_STOP_TIMEOUT_SECONDS,
        "KILL_GRACE_SECONDS": process.KILL_GRACE_SECONDS,
        "health.timeout_seconds": DEFAULT_READY_TIMEOUT_SECONDS,
        "READ_TIMEOUT_SECONDS": control_server.READ_TIMEOUT_SECONDS,
        "MAX_REQUEST_LINE_BYTES": target.MAX_REQUEST_LINE_BYTES,
        "MAX_FIELD_BYTES": target.MAX_FIELD_BYTES,
        "MAX_FIELDS": target.MAX_FIELDS,
        "MAX_CONTENT_LENGTH_DIGITS": target.MAX_CONTENT_LENGTH_DIGITS,
        "MAX_ANSWER_HEAD_BYTES": connection.MAX_ANSWER_HEAD_BYTES,
    }


def table() -> dict[str, str]:
    """The reliability section's table of deadlines: the code name -> the default column."""
    section = README.read_text(encoding="utf-8").split("\n## Reliability\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 3 and (name := re.fullmatch(r"`([^`]+)`", cells[1])):
            rows[name.group(1)] = cells[2]
    return rows


@pytest.mark.parametrize(("name", "value"), defaults().items())
def test_the_readme_gives_every_default(name: str, value: float) -> None:
    documented = table()
    assert name in documented, f"README.md, Reliability: no row for `{name}`"
    number = documented[name].split()[0]
    assert float(number) == value, f"README says {documented[name]} for {name}; the code {value:g}"
