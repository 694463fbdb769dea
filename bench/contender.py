"""The programs the bench compares, started the way their users start them.

- devstack: ``python -m devstack up`` on a generated ``devstack.yaml``, as a subprocess, with its
  own ``DEVSTACK_HOME`` in the bench's temporary folder (so the CA is never the user's);
- honcho: ``python -m honcho start`` on the equivalent Procfile;
- Caddy: ``caddy run`` on a generated Caddyfile (``tls internal``, admin endpoint off, no trust
  store changes, all state under the temporary folder);
- watchfiles: its own CLI (``python -m watchfiles --filter python 'CMD' DIR``), restarting a
  service on every change, as a user assembles hot reload without devstack (behind Caddy);
- nginx: a command line for devstack to supervise, with its own config, prefix, pid file and
  logs in the temporary folder, answering ``return 200 "ok"`` and serving one large (sparse)
  file for the streaming figure.

Every one listens on loopback ports picked by binding port 0.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.errors import BenchError
from bench.launcher import Launched, Launcher
from bench.poll import wait_until
from bench.ports import free_port, port_accepts

PYTHON = sys.executable
"""The real interpreter, for every Python program alike: a pyenv shim would add ~90 ms a start."""
HELLO_SCRIPT = Path(__file__).resolve().parent / "hello.py"
HELLO_BODY = b"Hello, world"
NGINX_BODY = b"ok"
BIG_FILE_PATH = "/big"

UP_LINE = re.compile(r"(\d+) service\(s\) up in")
PROXY_LINE = re.compile(r"proxy listening on https://localhost:(\d+)")
HELLO_LINE = re.compile(r"hello listening on http://127\.0\.0\.1:(\d+)/")
START_SECONDS = 60.0
STOP_SECONDS = 20.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrontDoor:
    """One way in to the upstream under test: a proxy's HTTPS port or the upstream itself."""

    name: str
    url: str
    cacert: Path | None = None
    """The CA that signed its certificate (``None`` for plain HTTP)."""
    process: Launched | None = None
    """The process whose memory is reported, when it is one the bench watches."""


def devstack_argv(*args: str) -> list[str]:
    return [PYTHON, "-m", "devstack", *args]


def devstack_env(home: Path) -> dict[str, str]:
    return dict(os.environ, DEVSTACK_HOME=str(home), NO_COLOR="1")


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """``devstack.yaml`` in ``folder``; values are quoted by the YAML dumper, not by hand."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "devstack.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def start_devstack(
    launcher: Launcher, manifest: Path, home: Path, *, proxy: bool
) -> tuple[Launched, int | None]:
    """``devstack up`` on ``manifest`` until it reports every service up; returns the process
    and the proxy's port (``None`` with ``proxy=False``)."""
    args = ["up", "-f", str(manifest)] + (["--port", "0"] if proxy else ["--no-proxy"])
    launched = launcher.start(
        "devstack", devstack_argv(*args), env=devstack_env(home), cwd=manifest.parent
    )

    def started() -> bool:
        launched.check_running("starting its services")
        return UP_LINE.search(launched.output()) is not None

    wait_until(started, timeout=START_SECONDS, message=f"devstack up on {manifest} to report")
    if not proxy:
        return launched, None
    found = PROXY_LINE.search(launched.output())
    if found is None:
        raise BenchError(f"devstack up did not print its proxy's port:\n{launched.tail()}")
    return launched, int(found.group(1))


def stop_devstack(launcher: Launcher, devstack: Launched) -> None:
    """Ctrl-C, as a user would; the launcher's SIGTERM/SIGKILL if it does not exit in time."""
    devstack.interrupt(signal.SIGINT)
    try:
        wait_until(lambda: devstack.has_exited, timeout=STOP_SECONDS, message="devstack to exit")
    except BenchError:
        logger.warning("devstack did not exit within %g s of SIGINT", STOP_SECONDS)
    launcher.stop(devstack)


def devstack_certificate(home: Path) -> Path:
    """A certificate (with its key) devstack issued and cached in ``home``: what the floors
    serve with."""
    certs = sorted((home / "tls" / "certs").glob("*.pem"))
    if not certs:
        raise BenchError(f"no certificate in {home}/tls/certs: a devstack run makes one first")
    return certs[0]


def devstack_ca(home: Path) -> Path:
    """The CA certificate ``devstack up`` made in ``home`` (``devstack ca``)."""
    done = subprocess.run(
        devstack_argv("ca"), env=devstack_env(home), capture_output=True, text=True, timeout=30
    )
    path = Path(done.stdout.strip())
    if done.returncode != 0 or not path.is_file():
        raise BenchError(f"`devstack ca` gave no CA file (exit {done.returncode}): {done.stderr}")
    return path


def hello_port(launched: Launched) -> int:
    """The port the hello service got, from its first line in devstack's output."""
    found = HELLO_LINE.search(launched.output())
    if found is None:
        raise BenchError(f"the hello service did not say where it listens:\n{launched.tail()}")
    return int(found.group(1))


def hello_service() -> dict[str, Any]:
    """The Python upstream as a devstack service (devstack gives it ``$PORT``)."""
    return {"command": shlex.join([PYTHON, str(HELLO_SCRIPT)]), "port": free_port()}


def nginx_service(folder: Path, big_file_bytes: int) -> dict[str, Any]:
    """nginx as a devstack service: ``return 200 "ok"`` on ``/`` and a sparse file of
    ``big_file_bytes`` zeros on :data:`BIG_FILE_PATH`, everything it writes under ``folder``."""
    port = free_port()
    prefix = folder / "nginx"
    www = prefix / "www"
    www.mkdir(parents=True, exist_ok=True)
    big = www / "big.bin"
    with open(big, "wb") as f:
        f.truncate(big_file_bytes)  # sparse: zeros without writing a GiB to disk
    # nginx workers drop root's privileges (to "nobody"): they must be able to read the file.
    # The bench's temporary root is made traversable (0711) by ``python -m bench`` for this.
    www.chmod(0o755)
    big.chmod(0o644)
    conf = prefix / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(prefix=prefix, port=port, big=big, big_path=BIG_FILE_PATH)
    )
    command = shlex.join(
        ["nginx", "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log"),
         "-g", "daemon off;"]
    )
    return {"command": command, "port": port}


NGINX_CONF = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    sendfile on;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location = / {{ default_type text/plain; return 200 "ok"; }}
        location = {big_path} {{ default_type application/octet-stream; alias {big}; }}
    }}
}}
"""

CADDYFILE = """\
{{
    admin off
    auto_https disable_redirects
    skip_install_trust
    http_port {http_port}
    https_port {port}
    storage file_system {{
        root {storage}
    }}
}}

https://localhost:{port} {{
    bind 127.0.0.1 [::1]
    tls internal
    reverse_proxy 127.0.0.1:{upstream}
}}
"""


def start_caddy(launcher: Launcher, folder: Path, upstream: int) -> FrontDoor:
    """Caddy as a local HTTPS reverse proxy in front of ``127.0.0.1:upstream``, with its
    internal CA; its home, data and config folders are under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    port, http_port = free_port(), free_port()
    storage = folder / "data"
    caddyfile = folder / "Caddyfile"
    caddyfile.write_text(
        CADDYFILE.format(port=port, http_port=http_port, storage=storage, upstream=upstream)
    )
    env = dict(
        os.environ,
        HOME=str(folder),
        XDG_DATA_HOME=str(folder / "xdg-data"),
        XDG_CONFIG_HOME=str(folder / "xdg-config"),
    )
    argv = ["caddy", "run", "--config", str(caddyfile), "--adapter", "caddyfile"]
    launched = launcher.start("caddy", argv, env=env, cwd=folder)
    root = storage / "pki" / "authorities" / "local" / "root.crt"

    def started() -> bool:
        launched.check_running("starting")
        return root.is_file() and port_accepts(port)

    wait_until(started, timeout=START_SECONDS, message=f"caddy to listen on port {port}")
    return FrontDoor("caddy", f"https://localhost:{port}/", cacert=root, process=launched)


def start_watchfiles(launcher: Launcher, command: str, folder: Path, port: int) -> Launched:
    """watchfiles' CLI running ``command`` in ``folder`` with ``PORT=port``, restarting it when
    a Python file under ``folder`` changes (SIGINT, then a new process); returns once the port
    accepts."""
    argv = [PYTHON, "-m", "watchfiles", "--filter", "python", command, str(folder)]
    env = dict(os.environ, PORT=str(port), HOST="127.0.0.1", PYTHONUNBUFFERED="1")
    launched = launcher.start("watchfiles", argv, env=env, cwd=folder)

    def started() -> bool:
        launched.check_running("starting its command")
        return port_accepts(port)

    wait_until(started, timeout=START_SECONDS, message=f"watchfiles' {command} to listen on {port}")
    return launched
