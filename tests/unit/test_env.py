"""env.py: .env files and the environment a service's process starts with."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devstack.errors import ManifestError
from devstack.manifest.env import read_env_file, service_environment, service_variable_prefix
from devstack.manifest.spec import ServiceSpec


def service(name: str = "web", **env: str) -> ServiceSpec:
    return ServiceSpec(name=name, command="true", cwd=Path("/"), env=env)


def test_read_env_file(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(
        "# a comment\n"
        "PLAIN=1\n"
        "QUOTED='two words'\n"
        'DOUBLE="line\\none"\n'
        "SPACED = yes\n"
        "\n"
        "not an assignment\n"
    )
    assert read_env_file(path) == {
        "PLAIN": "1",
        "QUOTED": "two words",
        "DOUBLE": "line\none",
        "SPACED": "yes",
    }


def test_read_env_file_that_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        read_env_file(tmp_path / ".env")
    assert str(caught.value) == (
        f"{tmp_path}/.env: cannot read environment file: No such file or directory"
    )


def test_read_env_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"A=caf\xe9\n")
    with pytest.raises(ManifestError) as caught:
        read_env_file(tmp_path / ".env")
    assert str(caught.value) == (
        f"{tmp_path}/.env: environment file is not UTF-8 text (byte 0xe9 at offset 5)"
    )


@pytest.mark.parametrize(
    ("name", "prefix"),
    [("web", "DEVSTACK_WEB"), ("web-app", "DEVSTACK_WEB_APP"), ("Api2", "DEVSTACK_API2"),
     ("a_b", "DEVSTACK_A_B")],
)
def test_service_variable_prefix(name: str, prefix: str) -> None:
    assert service_variable_prefix(name) == prefix


def test_service_environment() -> None:
    env = service_environment(
        service("web", DEBUG="1"),
        {"web": 3000, "web-api": 4001},
        {"PATH": "/usr/bin", "HOST": "laptop", "PORT": "1"},
    )
    assert env == {
        "PATH": "/usr/bin",
        "HOST": "127.0.0.1",
        "PYTHONUNBUFFERED": "1",
        "DEBUG": "1",
        "PORT": "3000",
        "DEVSTACK_WEB_PORT": "3000",
        "DEVSTACK_WEB_URL": "http://127.0.0.1:3000",
        "DEVSTACK_WEB_API_PORT": "4001",
        "DEVSTACK_WEB_API_URL": "http://127.0.0.1:4001",
    }


def test_explicit_port_host_and_unbuffered_win() -> None:
    spec = service("web", PORT="5000", HOST="0.0.0.0", PYTHONUNBUFFERED="0")
    env = service_environment(spec, {"web": 3000}, {})
    assert (env["PORT"], env["HOST"], env["PYTHONUNBUFFERED"]) == ("5000", "0.0.0.0", "0")
    assert env["DEVSTACK_WEB_PORT"] == "3000"


def test_service_without_a_port_gets_no_port_variable() -> None:
    env = service_environment(service("worker"), {"web": 3000}, {})
    assert "PORT" not in env
    assert env["DEVSTACK_WEB_URL"] == "http://127.0.0.1:3000"


def test_service_environment_leaves_its_inputs_and_os_environ_alone() -> None:
    before = dict(os.environ)
    base = {"A": "1"}
    spec = service("web", B="2")
    env = service_environment(spec, {"web": 3000}, base)
    env["C"] = "3"
    assert base == {"A": "1"}
    assert dict(spec.env) == {"B": "2"}
    assert dict(os.environ) == before


TRUST = {"SSL_CERT_FILE": "/home/tls/bundle.pem", "NODE_EXTRA_CA_CERTS": "/home/tls/ca.crt"}


def test_trust_variables_and_the_proxy_url_join_the_environment() -> None:
    env = service_environment(
        service("web"),
        {"web": 3000},
        {"SSL_CERT_FILE": "/etc/corp.pem", "DEVSTACK_URL": "stale"},
        trust=TRUST,
        proxy_url="https://localhost:8443",
    )
    assert env["SSL_CERT_FILE"] == "/home/tls/bundle.pem"  # devstack's own environment loses
    assert env["NODE_EXTRA_CA_CERTS"] == "/home/tls/ca.crt"
    assert env["DEVSTACK_URL"] == "https://localhost:8443"
    assert env["DEVSTACK_WEB_URL"] == "http://127.0.0.1:3000"


def test_a_services_own_env_wins_over_the_trust_variables() -> None:
    spec = service("web", SSL_CERT_FILE="/mine.pem")
    env = service_environment(spec, {"web": 3000}, {}, trust=TRUST)
    assert env["SSL_CERT_FILE"] == "/mine.pem"
    assert env["NODE_EXTRA_CA_CERTS"] == "/home/tls/ca.crt"


def test_no_proxy_no_url_and_no_trust_variables() -> None:
    env = service_environment(service("web"), {"web": 3000}, {})
    assert "DEVSTACK_URL" not in env
    assert not {"SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS"} & env.keys()
