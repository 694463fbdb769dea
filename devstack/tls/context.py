"""The proxy's server :class:`ssl.SSLContext`, before any certificate is loaded into it.

Only the ``ssl`` module: the quick start
(:mod:`devstack.tls.quick`) builds the same context as :class:`~devstack.tls.ca.ServerCertificate`
without importing cryptography.
"""

from __future__ import annotations

import ssl

ALPN_PROTOCOLS = ["http/1.1"]
SESSION_TICKETS = 1
"""TLS 1.3 session tickets sent after a handshake (OpenSSL's default is two). One is what a
client resumes its next connection with (as Go's server, and so Caddy, sends); each ticket costs
the server an encryption and the client a session to store. Resuming spares the client the
certificate and its signature check; with OpenSSL 3.0 the server's side of a resumed handshake
costs about what a full one does."""
TLS12_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
])  # fmt: skip
"""For TLS 1.2 clients, in the server's order (the leaf's key is ECDSA): AES-128-GCM first,
cheaper per byte than AES-256 with the same forward secrecy, as Go and Caddy prefer. TLS 1.3's
suites keep OpenSSL's order: the ``ssl`` module cannot set them. (Setting them through ctypes,
AES-128-GCM first, was tried: no measurable change in new connections per second, on either
side, so the ``ssl`` module's reach is where this stops.)"""


def server_context() -> ssl.SSLContext:
    """The proxy's server side: TLS 1.2 or newer, ALPN ``http/1.1``, :data:`SESSION_TICKETS`
    tickets, :data:`TLS12_CIPHERS` in the server's order; no certificate yet."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.num_tickets = SESSION_TICKETS
    return context
