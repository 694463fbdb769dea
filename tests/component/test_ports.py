"""ports.py against the real kernel: sockets held in this process and in a child process, on
each of 127.0.0.1, 0.0.0.0, ::1 and ::."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devstack.manifest.spec import ServiceSpec, StackSpec
from devstack.netstat.holders import PortHolder, find_holder, is_port_free, shorten_command
from devstack.run.ports import assign_ports, pick_free_port
from tests.conditions import wait_until


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")

ADDRESSES = [
    pytest.param("127.0.0.1", id="127.0.0.1"),
    pytest.param("0.0.0.0", id="0.0.0.0"),
    pytest.param("::1", id="::1", marks=needs_ipv6),
    pytest.param("::", id="::", marks=needs_ipv6),
]

CHILD_LISTENER = """\
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.bind((sys.argv[1], 0))
s.listen()
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""
"""Listens on port 0 of argv[1], prints the port, and holds it until stdin closes."""


@contextmanager
def listening(host: str, port: int = 0) -> Iterator[int]:
    """A socket of this process listening on ``host``: the port it got."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, port))
        sock.listen()
        yield sock.getsockname()[1]


@contextmanager
def child_listening(host: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A child process listening on ``host``; it exits (and is reaped) when the block ends."""
    argv = [sys.executable, "-c", CHILD_LISTENER, host]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip().isdigit(), f"child listener printed {line!r} instead of its port"
            yield proc, int(line)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def released_port() -> int:
    """A port that was free a moment ago: bound to 0 on loopback, read back, closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def stack(tmp_path: Path, ports: dict[str, int | None]) -> StackSpec:
    services = {
        name: ServiceSpec(name=name, command="x", cwd=tmp_path, port=port)
        for name, port in ports.items()
    }
    return StackSpec(manifest_path=tmp_path / "devstack.yaml", services=services)


# --- is_port_free / find_holder / pick_free_port ---------------------------------------------


def test_a_released_port_is_free_and_has_no_holder() -> None:
    port = released_port()
    assert is_port_free(port)
    assert find_holder(port) is None


@pytest.mark.parametrize("host", ADDRESSES)
def test_a_port_held_by_this_process_is_taken_and_we_are_the_holder(host: str) -> None:
    with listening(host) as port:
        assert not is_port_free(port)
        holder = find_holder(port)
        assert holder is not None
        assert holder.pid == os.getpid()
        assert holder.command
    wait_until(lambda: is_port_free(port), timeout=5, message=f"port {port} to be free again")


@pytest.mark.parametrize("host", ADDRESSES)
def test_a_port_held_by_a_child_names_its_pid_and_command(host: str) -> None:
    with child_listening(host) as (proc, port):
        assert not is_port_free(port)
        holder = find_holder(port)
        expected = shorten_command([sys.executable, "-c", CHILD_LISTENER, host])
        assert holder == PortHolder(pid=proc.pid, command=expected)
        assert str(holder) == f"pid {proc.pid} ({expected})"


def test_a_port_in_time_wait_is_free() -> None:
    """A server restarted right after it closed a connection binds again: servers set
    SO_REUSEADDR, and the kernel lets a SO_REUSEADDR bind past TIME_WAIT sockets left by one."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            conn, _ = server.accept()
            conn.close()  # active close on the server side: TIME_WAIT on 127.0.0.1:port
            client.recv(1)
    assert _in_time_wait(port), f"expected a TIME_WAIT socket on 127.0.0.1:{port}"
    assert is_port_free(port)
    assert find_holder(port) is None


def _in_time_wait(port: int) -> bool:
    local = f"0100007F:{port:04X}"
    rows = (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
    return any(row[1] == local and row[3] == "06" for row in rows)


def test_pick_free_port_returns_a_free_high_port() -> None:
    port = pick_free_port()
    assert 1024 <= port <= 65535
    assert is_port_free(port)


def test_pick_free_port_avoids_what_it_is_told_to() -> None:
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    avoid = range(low, (low + high) // 2)
    picks = {pick_free_port(avoid) for _ in range(5)}
    assert picks.isdisjoint(avoid)


# --- assign_ports ----------------------------------------------------------------------------


def test_a_free_wanted_port_is_given_as_is(tmp_path: Path) -> None:
    wanted = released_port()
    result = assign_ports(stack(tmp_path, {"web": wanted}))
    assert result["web"].port == wanted
    assert result["web"].message() is None
    assert not (tmp_path / ".devstack").exists()


@pytest.mark.parametrize("host", ADDRESSES)
def test_a_held_wanted_port_moves_the_service_and_the_message_names_the_holder(
    tmp_path: Path, host: str
) -> None:
    with child_listening(host) as (proc, wanted):
        result = assign_ports(stack(tmp_path, {"simon": wanted}))
        simon = result["simon"]
        assert simon.moved
        assert simon.port != wanted
        assert is_port_free(simon.port)
        command = shorten_command([sys.executable, "-c", CHILD_LISTENER, host])
        assert simon.message() == (
            f"simon: port {wanted} is held by pid {proc.pid} ({command}); using {simon.port}"
        )


def test_the_pick_sticks_while_free_and_the_wanted_port_is_taken_back(tmp_path: Path) -> None:
    with listening("127.0.0.1") as wanted:
        spec = stack(tmp_path, {"simon": wanted})
        first = assign_ports(spec)["simon"]
        assert first.moved
        assert first.holder is not None
        assert first.holder.pid == os.getpid()
        second = assign_ports(spec)["simon"]
        assert second.port == first.port
        sticky = json.loads((spec.state_dir / "ports.json").read_text())
        assert sticky == {
            "version": 1,
            "services": {"simon": {"wanted": wanted, "port": first.port}},
        }

    wait_until(lambda: is_port_free(wanted), timeout=5, message=f"port {wanted} to be released")
    back = assign_ports(spec)["simon"]
    assert back.port == wanted
    assert not back.moved

    with listening("::1" if _has_ipv6_loopback() else "127.0.0.1", wanted):
        again = assign_ports(spec)["simon"]
        assert again.port == first.port, "the earlier pick is reused when the wanted port is taken"


def test_a_previous_pick_that_got_taken_is_replaced(tmp_path: Path) -> None:
    with listening("127.0.0.1") as wanted:
        spec = stack(tmp_path, {"simon": wanted})
        first = assign_ports(spec)["simon"]
        with listening("0.0.0.0", first.port):
            second = assign_ports(spec)["simon"]
        assert second.port not in (wanted, first.port)
        assert second.holder is not None
        assert second.holder.pid == os.getpid()
        third = assign_ports(spec)["simon"]
        assert third.port == second.port


def test_a_service_without_a_port_gets_a_stable_one(tmp_path: Path) -> None:
    spec = stack(tmp_path, {"worker": None})
    first = assign_ports(spec)["worker"]
    assert not first.moved
    assert first.message() is None
    assert assign_ports(spec)["worker"].port == first.port


def test_ports_never_collide(tmp_path: Path) -> None:
    free = released_port()
    with (
        listening("127.0.0.1") as held_a,
        listening("::" if _has_ipv6_loopback() else "0.0.0.0") as held_b,
    ):
        spec = stack(
            tmp_path,
            {"a": held_a, "b": held_b, "c": free, "d": None, "e": None, "f": None, "g": held_a},
        )
        result = assign_ports(spec, proxy_port=released_port())
        given = [a.port for a in result.values()]
        assert len(set(given)) == len(given), f"two services share a port: {result}"
        assert result["c"].port == free
        assert {held_a, held_b}.isdisjoint(given)
        again = assign_ports(spec, proxy_port=None)
        assert {n: a.port for n, a in again.items()} == {n: a.port for n, a in result.items()}


def test_the_proxy_port_is_avoided(tmp_path: Path) -> None:
    spec = stack(tmp_path, {"worker": None})
    worker = assign_ports(spec)["worker"].port
    moved = assign_ports(spec, proxy_port=worker)["worker"]
    assert moved.port != worker, "a previous pick equal to the proxy port must not be reused"

    proxy = released_port()
    web = assign_ports(stack(tmp_path, {"web": proxy}), proxy_port=proxy)["web"]
    assert web.port != proxy
    assert web.message() == f"web: port {proxy} is devstack's proxy port; using {web.port}"
