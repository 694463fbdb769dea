"""The control socket's pure pieces: requests, answers, the status document, the renderings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devstack.control import protocol
from devstack.control.address import MAX_ADDRESS_BYTES, reachable
from devstack.control.protocol import ProtocolError, Request, StackInfo
from devstack.control.render import Follower, status_lines, tail
from devstack.status import ServiceState, ServiceStatus

STACK = StackInfo(
    manifest=Path("/p/devstack.yaml"),
    pid=42,
    proxy_url="https://localhost:8443",
    proxy_port=8443,
    ca_path=Path("/ca.crt"),
    service_urls={"web": "https://localhost:8443/"},
)
WEB = ServiceStatus("web", ServiceState.READY, port=5001, wanted_port=5000, pid=7, restarts=2)
DB = ServiceStatus("db", ServiceState.CRASHED, port=5432, exit_code=1, reason="exited with code 1")


def test_a_request_round_trips() -> None:
    request = Request("restart", ("web", "db"))
    assert protocol.parse_request(request.encode()) == request


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (b"nonsense\n", "not a JSON request"),
        (b"[1]\n", "a request is a JSON object"),
        (b'{"command": "explode"}\n', "unknown command 'explode'; known: status, restart"),
        (b'{"command": "stop", "names": "web"}\n', "names: a list of service names"),
        (b'{"command": "stop"}\n', "stop: name at least one service"),
    ],
)
def test_a_bad_request_says_what_is_wrong(line: bytes, said: str) -> None:
    with pytest.raises(ProtocolError, match=said):
        protocol.parse_request(line)


def test_unknown_names_are_named_with_the_known_ones() -> None:
    assert protocol.unknown_names(["web"], ["web", "db"]) is None
    assert protocol.unknown_names(["wbe", "x"], ["web", "db"]) == (
        "no services named wbe, x in this stack; its services: web, db"
    )


def test_answers_carry_ok_or_the_error() -> None:
    assert protocol.parse_answer(protocol.ok(names=["web"])) == {"ok": True, "names": ["web"]}
    with pytest.raises(ProtocolError, match=r"^no service named x"):
        protocol.parse_answer(protocol.failure("no service named x"))
    with pytest.raises(ProtocolError, match="without `ok`"):
        protocol.parse_answer(b"{}\n")


def test_the_status_document_is_versioned_and_complete() -> None:
    document = json.loads(json.dumps(protocol.status_document(STACK, [WEB, DB])))
    assert document == {
        "version": 1,
        "stack": {
            "manifest": "/p/devstack.yaml",
            "pid": 42,
            "proxy_url": "https://localhost:8443",
            "proxy_port": 8443,
            "ca_path": "/ca.crt",
        },
        "services": [
            {"name": "web", "state": "ready", "ready": True, "pid": 7, "wanted_port": 5000,
             "port": 5001, "restarts": 2, "exit_code": None, "reason": None,
             "url": "https://localhost:8443/"},
            {"name": "db", "state": "crashed", "ready": False, "pid": None, "wanted_port": None,
             "port": 5432, "restarts": 0, "exit_code": 1, "reason": "exited with code 1",
             "url": None},
        ],
    }  # fmt: skip


def test_the_status_table_shows_moved_ports_and_reasons() -> None:
    lines = status_lines(protocol.status_document(STACK, [WEB, DB]))
    assert lines == [
        "# /p/devstack.yaml: running (pid 42), https://localhost:8443",
        "service  state    pid  port                restarts  url / why",
        "web      ready    7    5001 (wanted 5000)  2         https://localhost:8443/",
        "db       crashed  -    5432                0         exited with code 1",
    ]


def test_tail_reads_the_last_lines_and_following_reads_only_new_complete_ones(
    tmp_path: Path,
) -> None:
    log = tmp_path / "web.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(10)))
    lines, end = tail(log, 3)
    assert lines == [b"line 7", b"line 8", b"line 9"]
    follower = Follower(log, end)
    with open(log, "ab") as f:
        f.write(b"new\nhal")
    assert list(follower.read()) == [b"new"]
    with open(log, "ab") as f:
        f.write(b"f\n")
    assert list(follower.read()) == [b"half"]
    log.write_bytes(b"rotated\n")  # shorter than what was read: from its start again
    assert list(follower.read()) == [b"rotated"]
    assert tail(tmp_path / "missing.log", 5) == ([], 0)


def test_a_long_socket_path_is_reached_through_its_folder(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    with reachable(deep / "control.sock") as name:
        assert len(name) <= MAX_ADDRESS_BYTES
        assert name.endswith("/control.sock")
    with reachable(Path("/tmp/x.sock")) as name:
        assert name == "/tmp/x.sock"
