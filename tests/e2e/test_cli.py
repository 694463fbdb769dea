"""The small commands and the exit codes users and CI scripts rely on."""

from __future__ import annotations

import os
import socket
import textwrap
from pathlib import Path

from tests.e2e.conftest import DevstackRunner


def test_ca_prints_only_the_path_of_a_pem_certificate(
    devstack: DevstackRunner, devstack_home: Path
) -> None:
    result = devstack.run("ca")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    path = Path(lines[0])
    assert path.is_relative_to(devstack_home)
    assert path.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert devstack.run("ca").stdout == result.stdout  # never regenerated


def test_check_reports_ok_and_warns_about_low_ports(
    devstack: DevstackRunner, tmp_path: Path
) -> None:
    (tmp_path / "devstack.yaml").write_text(
        textwrap.dedent("""\
        services:
          web:
            command: python -m http.server $PORT
            port: 80
        """)
    )
    result = devstack.run("check")
    assert result.returncode == 0
    assert result.stdout.strip() == f"{tmp_path / 'devstack.yaml'}: ok: 1 service(s)"
    assert "devstack.yaml:4: services.web.port: port 80 is reserved for HTTP" in result.stderr


def test_a_taken_proxy_port_fails_at_once_naming_the_holder(
    devstack: DevstackRunner, tmp_path: Path
) -> None:
    (tmp_path / "devstack.yaml").write_text(
        "services:\n  web:\n    command: python -m http.server $PORT --bind 127.0.0.1\n"
    )
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = devstack.run("up", "--port", str(port))
    assert result.returncode == 4
    message = result.stderr.strip()
    assert message.startswith(f"error: proxy port {port} is held by pid {os.getpid()} (")
    assert message.endswith("; stop it or use --port N")
    assert "web: starting" not in result.stdout  # nothing started
