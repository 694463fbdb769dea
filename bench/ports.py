"""Loopback ports: free ones to hand to the programs the bench starts, and whether one accepts
connections yet."""

from __future__ import annotations

import contextlib
import http.client
import socket


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago (bound to 0, read back,
    released together so none is handed out twice). The programs that get them bind them
    themselves, so a small race with other programs remains; they are never fixed numbers."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
    return ports


def free_port() -> int:
    return free_ports(1)[0]


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts a TCP connection on ``host:port`` now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def is_ready(port: int, health: str | None) -> bool:
    """Whether a service on ``port`` is ready as devstack judges it: ``GET health`` answers 2xx,
    or, without a health path, the port accepts a connection."""
    if health is None:
        return port_accepts(port)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", health)
        return 200 <= connection.getresponse().status < 300
    except OSError:
        return False
    finally:
        connection.close()
