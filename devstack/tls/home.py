"""Where devstack keeps its per-user TLS files: paths only, no cryptography, so the start of
``devstack up`` can find an existing CA without loading :mod:`devstack.tls.ca`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

TLS_DIR_NAME = "tls"
CA_CERT_NAME = "ca.crt"
CA_KEY_NAME = "ca.key"
LEAF_DIR_NAME = "certs"


def devstack_home() -> Path:
    """Where devstack keeps per-user data (the CA, cached certificates). Not created here.

    ``$DEVSTACK_HOME`` wins; otherwise ``~/Library/Application Support/devstack`` on macOS and
    ``$XDG_DATA_HOME/devstack`` (default ``~/.local/share/devstack``) elsewhere.
    """
    override = os.environ.get("DEVSTACK_HOME")
    if override:
        return Path(override).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "devstack"
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "devstack"
    return Path.home() / ".local" / "share" / "devstack"


def tls_dir(home: Path | None = None) -> Path:
    return (home if home is not None else devstack_home()) / TLS_DIR_NAME


def existing_ca_cert(home: Path | None = None) -> Path | None:
    """The CA certificate's path when the CA exists already (``None`` on first use)."""
    path = tls_dir(home) / CA_CERT_NAME
    return path if path.is_file() else None
