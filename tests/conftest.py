from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


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


@pytest.fixture(autouse=True)
def activated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run as from an activated virtual environment (`. .venv/bin/activate`), however pytest was
    started (`.venv/bin/python -m pytest`): the interpreter's folder first on PATH, so that
    services whose command is `python ...` get the interpreter that has the stack's packages."""
    bin_dir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        monkeypatch.setenv("PATH", bin_dir + os.pathsep + path)
