"""Which TCP ports have a listening socket right now, asked of the kernel in one cheap call.

Readiness of twenty services by connecting to each port every few milliseconds costs real CPU
while those services are trying to boot on the same cores. One ``sock_diag`` netlink dump of
the LISTEN sockets (what ``ss -l`` does; about 60 us for IPv4 and IPv6 together) answers for
every port at once. ``/proc/net/tcp`` is not used for polling: reading it walks every socket
hash bucket and costs milliseconds even when nearly empty.

Where netlink is unavailable (not Linux, a restricted sandbox) :meth:`ListeningPorts.snapshot`
returns None and callers fall back to connecting.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct

logger = logging.getLogger(__name__)

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
TCPF_LISTEN = 1 << 10
_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
_REQUEST = struct.Struct("=BBBBI48x")  # struct inet_diag_req_v2 (socket id left zero)
_SPORT_OFFSET = _HEADER.size + 4  # inet_diag_msg: family, state, timer, retrans, then sport


class ListeningPorts:
    """A netlink socket kept open for repeated ``snapshot()`` calls."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
        except (AttributeError, OSError) as exc:
            logger.debug("no sock_diag netlink here (%s); readiness probes will connect", exc)

    def snapshot(self) -> frozenset[int] | None:
        """Local ports of every LISTEN socket (IPv4 and IPv6), or None if the kernel won't say."""
        if self._sock is None:
            return None
        ports: set[int] = set()
        try:
            for family in (socket.AF_INET, socket.AF_INET6):
                self._dump(family, ports)
        except OSError as exc:
            logger.debug("sock_diag failed (%s); falling back to connecting", exc)
            self.close()
            return None
        return frozenset(ports)

    def _dump(self, family: int, ports: set[int]) -> None:
        assert self._sock is not None
        request = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, TCPF_LISTEN)
        header = _HEADER.pack(
            _HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
        )
        self._sock.send(header + request)
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
                if kind == NLMSG_ERROR:
                    raise OSError("sock_diag answered with an error")
                if kind == NLMSG_DONE:
                    return
                (port,) = struct.unpack_from(">H", data, offset + _SPORT_OFFSET)
                ports.add(port)
                offset += (length + 3) & ~3
            if not data:
                return

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
