from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def free_port() -> Iterator[int]:
    """A port that was free a moment ago on loopback (bound to 0, read back, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    yield port


@pytest.fixture(autouse=True)
def devstack_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own DEVSTACK_HOME, so the CA and caches never touch the user's."""
    home = tmp_path_factory.mktemp("devstack-home")
    monkeypatch.setenv("DEVSTACK_HOME", str(home))
    return home
