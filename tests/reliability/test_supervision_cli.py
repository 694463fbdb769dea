"""The issue's own case, through ``devstack up``: ``setsid sleep 4242`` started by a service is
gone once devstack has stopped, by Ctrl-C or by ``kill -9`` (then the guardian stops it), and a
stack killed with ``kill -9`` starts again."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.run.guardian import command_of
from tests.conditions import wait_until
from tests.e2e.conftest import DevstackRunner
from tests.reliability.escapees import carrying, kill_all, new_token

pytestmark = pytest.mark.e2e

MANIFEST = """\
services:
  web:
    command: sh -c 'setsid sleep 4242 & python3 -m http.server $PORT --bind 127.0.0.1'
"""


@pytest.fixture
def devstack(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevstackRunner]:
    runner = DevstackRunner(tmp_path, tmp_path_factory.mktemp("devstack-logs"))
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture
def token(devstack: DevstackRunner) -> Iterator[str]:
    token = new_token()
    devstack.env["RELIABILITY_TOKEN"] = token  # every service inherits it
    try:
        yield token
    finally:
        kill_all(token)


def sleepers(token: str) -> list[int]:
    return [pid for pid in carrying(token) if command_of(pid) == "sleep 4242"]


def test_ctrl_c_leaves_no_escaped_descendant(
    devstack: DevstackRunner, tmp_path: Path, token: str
) -> None:
    (tmp_path / "devstack.yaml").write_text(MANIFEST)
    run = devstack.start("up", "--no-proxy", "--no-watch")
    run.wait_for("service(s) up")
    wait_until(lambda: sleepers(token), message="sleep 4242 to run")
    assert run.interrupt() == 0
    assert carrying(token) == [], "a process of the stack outlived devstack"


def test_kill_9_leaves_no_escaped_descendant_and_the_stack_starts_again(
    devstack: DevstackRunner, tmp_path: Path, token: str
) -> None:
    (tmp_path / "devstack.yaml").write_text(MANIFEST)
    first = devstack.start("up", "--no-proxy", "--no-watch")
    first.wait_for("service(s) up")
    wait_until(lambda: sleepers(token), message="sleep 4242 to run")
    first.popen.send_signal(signal.SIGKILL)
    first.popen.wait()
    wait_until(
        lambda: not carrying(token), timeout=15, message="the guardian to stop every process"
    )
    again = devstack.start("up", "--no-proxy", "--no-watch")
    again.wait_for("service(s) up")
    wait_until(lambda: sleepers(token), message="sleep 4242 to run again")
    assert again.interrupt() == 0
    assert carrying(token) == []
