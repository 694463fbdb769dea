"""How long the proxy waits for clients: the deadlines both lanes keep."""

from __future__ import annotations

from dataclasses import dataclass, field

from devstack.proxy.target import BodyPace


@dataclass(frozen=True)
class ProxyTimeouts:
    """Deadlines that keep slow or silent clients from holding sockets forever."""

    first_byte_seconds: float = 10.0
    """From accept to the first byte, and for the TLS handshake."""
    idle_seconds: float = 75.0
    """An idle keep-alive connection (or one that never finishes its headers) is closed."""
    body_pace: BodyPace = field(default_factory=BodyPace)
    """How slowly a request body may arrive (408 beyond)."""
    shutdown_seconds: float = 2.0


DEFAULT_TIMEOUTS = ProxyTimeouts()
