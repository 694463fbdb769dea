"""TLS 1.3's cipher suites in the server's order, which the ``ssl`` module cannot set.

``SSLContext.set_ciphers`` orders TLS 1.2's suites only. TLS 1.3's keep OpenSSL's order, with
AES-256-GCM-SHA384 first, and OpenSSL clients (curl, wrk, Python, Node.js) ask for it first: each
handshake then runs its key schedule on SHA-384, on both sides. Go's server, and so Caddy's,
picks AES-128-GCM-SHA256 on a machine with AES instructions. Measured on a 2-core VM with wrk
making one TLS connection per request: about 15 % more connections per second on a bare uvloop
TLS server, with less CPU per handshake on the server and on the client.

:func:`prefer_aes128` calls OpenSSL's ``SSL_CTX_set_ciphersuites`` through ctypes, on the
``SSL_CTX`` of the context: the first field after the object header in CPython's
``PySSLContext`` (3.8 to 3.14). The pointer is used only on Linux, where the libssl the ``ssl``
module runs on is found in ``/proc/self/maps`` and must report the same version, and only after
``SSL_CTX_get_options`` reads back exactly the options the context reports. Whatever fails,
the context keeps OpenSSL's order: slower, never wrong.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import ssl
import sys
from functools import cache
from pathlib import Path

logger = logging.getLogger(__name__)

SERVER_ORDER = ":".join([
    "TLS_AES_128_GCM_SHA256",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_256_GCM_SHA384",
])  # fmt: skip
"""TLS 1.3's three suites, AES-128-GCM first (as Go orders them)."""
OP_PRIORITIZE_CHACHA = 0x00200000
"""OpenSSL's ``SSL_OP_PRIORITIZE_CHACHA``: a client that puts ChaCha20 first (one without AES
instructions) still gets it under the server's order. Not exported by the ``ssl`` module."""
CPYTHON_LAYOUT = ((3, 8), (3, 14))
"""The CPython versions whose ``PySSLContext`` starts with ``SSL_CTX *ctx`` (checked in their
``Modules/_ssl.c``)."""


def prefer_aes128(context: ssl.SSLContext) -> bool:
    """Put :data:`SERVER_ORDER` on ``context`` and make the server's order win; False (and the
    context unchanged) where that cannot be done safely."""
    libssl = _libssl()
    if libssl is None:
        return False
    ctx = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not ctx or libssl.SSL_CTX_get_options(ctx) != context.options:
        logger.debug("TLS 1.3 suites: the SSL_CTX pointer did not check out; OpenSSL's order")
        return False
    if libssl.SSL_CTX_set_ciphersuites(ctx, SERVER_ORDER.encode()) != 1:
        return False
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | OP_PRIORITIZE_CHACHA
    return True


@cache
def _libssl() -> ctypes.CDLL | None:
    """The libssl the ``ssl`` module is linked with, its two functions typed; None off CPython
    (or a version not known to lay ``PySSLContext`` out as expected) and off Linux."""
    low, high = CPYTHON_LAYOUT
    if sys.implementation.name != "cpython" or not low <= sys.version_info[:2] <= high:
        return None
    path = _loaded_libssl()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)  # already loaded by _ssl: the same handle, nothing new runs
        lib.OpenSSL_version_num.restype = ctypes.c_ulong
        if lib.OpenSSL_version_num() != ssl.OPENSSL_VERSION_NUMBER:
            return None
        lib.SSL_CTX_get_options.restype = ctypes.c_uint64
        lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_set_ciphersuites.restype = ctypes.c_int
        lib.SSL_CTX_set_ciphersuites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    except (OSError, AttributeError) as exc:
        logger.debug("TLS 1.3 suites: no usable libssl (%s); OpenSSL's order", exc)
        return None
    return lib


def _loaded_libssl() -> str | None:
    """The path of the libssl mapped into this process (the ``ssl`` module loaded it)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/maps").read_text().splitlines():
            path = line.rpartition(" ")[2]
            if Path(path).name.startswith("libssl.so"):
                return path
    return None
