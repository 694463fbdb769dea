"""Parity: the example stack's services started once, the same requests sent to devstack's proxy
and to real Caddy running `devstack export caddy`'s Caddyfile (`tls internal`, loopback, a free
port), and the answers compared: status, body and the headers that matter.

Every difference found is in :data:`KNOWN_DIFFERENCES` with its reason, and in the README's
"Exporting" section; a difference that is not listed fails, and so does a listed one that went
away (the list must stay true).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from devstack.proxy.live.script import SCRIPT_TAG
from devstack.tls.ca import client_context
from tests.conditions import async_wait_until, pid_alive, port_accepts, wait_until
from tests.e2e.conftest import DevstackRunner, start_examples

CADDY = shutil.which("caddy") or "caddy"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("caddy") is None, reason="needs Caddy (Debian's caddy)"),
    pytest.mark.skipif(shutil.which("node") is None, reason="the example needs Node.js"),
]

CADDY_START_SECONDS = 30
REQUEST_SECONDS = 20
HEADERS_COMPARED = ("content-type", "location", "allow", "content-range", "x-accel-buffering")

FILE_TYPES = ("devstack names a file's type from Python's table, with no charset (and "
              "application/javascript for .js on Python 3.11); Caddy from Go's, with "
              "charset=utf-8 (text/javascript)")
KNOWN_DIFFERENCES = {
    ("index", "content-type"): FILE_TYPES,
    ("static file", "content-type"): FILE_TYPES,
    ("script file", "content-type"): FILE_TYPES,
    ("folder index", "content-type"): FILE_TYPES,
    ("static file", "cache-control"): "devstack sends Cache-Control: no-cache on files so a page "
    "reloaded after an edit gets the edited file; production's caching is the team's choice",
    ("folder without slash", "body"): "Caddy's redirect to the folder's slash carries a "
    "one-line HTML link (and says text/html), devstack's carries nothing (same status, 308)",
    ("folder without slash", "content-type"): "see the body",
    ("folder without slash", "location"): "Caddy 2.6 (Debian's) leaves the query out of that "
    "redirect's Location; devstack keeps it (/docs?x=1 -> /docs/?x=1)",
    ("reserved path", "status"): "/_devstack/ is devstack's own (the live-reload script and "
    "socket); production has no such path",
}
"""(case, what) -> why: the differences the parity test finds, each kept on purpose."""


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    method: str = "GET"
    host: str = "localhost"
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    compare: tuple[str, ...] = ("status", "body", *HEADERS_COMPARED)
    normalize: Callable[[str], str] = field(default=lambda text: text)


def _without_volatile(text: str) -> str:
    """A posted entry's id and time differ between two posts; the rest must not."""
    text = re.sub(r'"(id|at)":\s*("[^"]*"|\d+)', r'"\1": "-"', text)
    return re.sub(r"/api/ideas/\d+", "/api/ideas/N", text)


CASES = [
    Case("index", "/"),
    Case("static file", "/simon.css", compare=("status", "body", "content-type",
                                               "cache-control")),
    Case("script file", "/simon.js"),
    Case("missing file", "/nope.txt", compare=("status",)),
    Case("dotfile", "/.secret", compare=("status",)),
    Case("file in a dot folder", "/.git/config", compare=("status",)),
    Case("folder without slash", "/docs?x=1"),
    Case("folder index", "/docs/"),
    Case("stripped prefix with a query", "/startup/api/ideas?since=0"),
    Case("stripped prefix alone", "/startup"),
    Case("not under a prefix", "/apix", compare=("status",)),
    Case("host route", "/", host="startup.localhost"),
    Case("host route, other path", "/api/ideas", host="startup.localhost"),
    Case("post with a body", "/api/scores", method="POST", body={"name": "ada", "score": 7},
         normalize=_without_volatile),
    Case("post through a stripped prefix", "/startup/api/ideas", method="POST",
         body={"title": "parity"}, normalize=_without_volatile),
    Case("post to a file", "/simon.css", method="POST", compare=("status", "allow")),
    Case("head of a file", "/simon.js", method="HEAD", compare=("status", "body",
                                                                "content-length")),
    Case("range of a file", "/simon.css", headers={"Range": "bytes=10-99"},
         compare=("status", "body", "content-range", "content-length")),
    Case("post over the service's limit", "/startup/api/ideas", method="POST",
         body={"title": "x" * 20000}),
    Case("encoded characters", "/startup/caf%C3%A9%20x"),
    Case("encoded unreserved character", "/api/%73cores"),
    Case("encoded slash", "/api%2Fscores", compare=("status",)),
    Case("reserved path", "/_devstack/live.js", compare=("status",)),
]


class LoopbackResolver(AbstractResolver):
    """Every name is 127.0.0.1: Host and SNI stay the names asked for."""

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": 0}]

    async def close(self) -> None:
        return None


@dataclass
class Front:
    """One front door (devstack or Caddy): its port and a client context that trusts it."""

    name: str
    port: int
    context: ssl.SSLContext

    def url(self, host: str, path: str) -> str:
        return f"https://{host}:{self.port}{path}"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str


@dataclass
class Pair:
    devstack: Front
    caddy: Front
    caddyfile: str
    runner: DevstackRunner
    folder: Path
    """The example's copy: the manifest's folder, where control commands run."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _caddyfile(exported: str, https_port: int, http_port: int, storage: Path) -> str:
    """The export as production would run it, with `tls internal` in every site (a local CA
    instead of a public one) and the global options a test needs: no admin endpoint, no trust
    store touched, its own storage and ports."""
    sites = re.sub(r"^(\S.*\{)$", "\\1\n\ttls internal", exported, flags=re.M)
    options = (f"{{\n\tadmin off\n\tskip_install_trust\n\tstorage file_system {storage}\n"
               f"\thttp_port {http_port}\n\thttps_port {https_port}\n"
               f"\tauto_https disable_redirects\n}}\n")
    return options + sites


def _handshakes(port: int, name: str, root: Path) -> bool:
    """Caddy gets its certificates in the background after it starts listening."""
    context = ssl.create_default_context(cafile=str(root))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=name):
            return True
    except (OSError, ssl.SSLError):
        return False


@contextlib.contextmanager
def _caddy(folder: Path, caddyfile: str, port: int, names: list[str]) -> Iterator[Path]:
    """Caddy running ``caddyfile``; yields its local CA's root certificate."""
    config = folder / "Caddyfile"
    config.write_text(caddyfile)
    log = folder / "caddy.log"
    env = {"HOME": str(folder), "XDG_DATA_HOME": str(folder / "data"),
           "XDG_CONFIG_HOME": str(folder / "config")}
    with log.open("wb") as out:
        caddy = subprocess.Popen(
            [CADDY, "run", "--config", str(config), "--adapter", "caddyfile"],
            cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    root = folder / "storage" / "pki" / "authorities" / "local" / "root.crt"
    try:
        def up() -> bool:
            if caddy.poll() is not None:
                raise AssertionError(f"caddy exited ({caddy.returncode}):\n{log.read_text()}")
            return port_accepts(port) and root.exists() and all(
                _handshakes(port, name, root) for name in names)

        wait_until(up, timeout=CADDY_START_SECONDS,
                   message="caddy to listen with a certificate for every site")
        yield root
    finally:
        caddy.terminate()
        try:
            caddy.wait(timeout=10)
        except subprocess.TimeoutExpired:
            caddy.kill()
            caddy.wait()
        assert not pid_alive(caddy.pid)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("parity")
    home = tmp_path_factory.mktemp("devstack-home")
    runner = DevstackRunner(tmp, tmp_path_factory.mktemp("devstack-logs"))
    runner.env["DEVSTACK_HOME"] = str(home)
    try:
        run, folder, port = start_examples(runner, tmp)
        public = folder / "simon" / "public"
        (public / ".secret").write_text("not for the web\n")
        (public / ".git").mkdir()
        (public / ".git" / "config").write_text("[core]\n")
        (public / "docs").mkdir()
        (public / "docs" / "index.html").write_text("<!doctype html><title>docs</title>\n")
        status = json.loads(runner.run("status", "--json", cwd=folder).stdout)
        ports = {service["name"]: service["port"] for service in status["services"]}
        caddy_port, http_port = _free_port(), _free_port()
        exported = runner.run(
            "export", "caddy", "--domain", f"localhost:{caddy_port}", "--root", str(folder),
            *(f"--upstream={name}=127.0.0.1:{p}" for name, p in ports.items()), cwd=folder)
        assert exported.returncode == 0, exported.stderr
        caddyfile = _caddyfile(exported.stdout, caddy_port, http_port, tmp / "caddy" / "storage")
        (tmp / "caddy").mkdir(exist_ok=True)
        names = ["localhost", "startup.localhost"]
        with _caddy(tmp / "caddy", caddyfile, caddy_port, names) as root:
            yield Pair(
                Front("devstack", port, client_context(home)),
                Front("caddy", caddy_port, ssl.create_default_context(cafile=str(root))),
                caddyfile,
                runner,
                folder,
            )
        assert run.interrupt() == 0
    finally:
        runner.close()


@contextlib.asynccontextmanager
async def _session(front: Front) -> AsyncIterator[aiohttp.ClientSession]:
    """A client of one front door that, once closed, waits until its sockets are: a TLS
    transport finishes closing on later turns of the loop, and a loop closed before that
    leaves a socket behind (a ResourceWarning, an error here)."""
    sockets: list[Any] = []

    async def on_request_end(session: object, context: object,
                             params: aiohttp.TraceRequestEndParams) -> None:
        if params.response.connection is not None:
            sockets.append(params.response.connection.transport.get_extra_info("socket"))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    connector = aiohttp.TCPConnector(resolver=LoopbackResolver(), ssl=front.context)
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace],
                                     timeout=aiohttp.ClientTimeout(
                                         sock_read=REQUEST_SECONDS,
                                         sock_connect=REQUEST_SECONDS)) as session:
        yield session
    await async_wait_until(lambda: all(s is None or s.fileno() == -1 for s in sockets),
                           timeout=REQUEST_SECONDS, message=f"the connections to {front.name} "
                           "to close")


async def _ask(front: Front, case: Case) -> Answer:
    """The answer, with the live-reload tag devstack adds to pages taken out of the body."""
    async with _session(front) as session, session.request(
            case.method, front.url(case.host, case.path), json=case.body, allow_redirects=False,
            headers={"Accept": "*/*", **case.headers}) as response:
        body = (await response.read()).replace(SCRIPT_TAG, b"").decode(errors="replace")
        headers = {k.lower(): v for k, v in response.headers.items()}
        return Answer(response.status, headers, case.normalize(body))


def _differences(case: Case, devstack: Answer, caddy: Answer) -> dict[tuple[str, str], str]:
    found = {}
    for what in case.compare:
        if what == "status":
            mine, theirs = str(devstack.status), str(caddy.status)
        elif what == "body":
            mine, theirs = devstack.body, caddy.body
        else:
            mine = case.normalize(devstack.headers.get(what, ""))
            theirs = case.normalize(caddy.headers.get(what, ""))
        if mine != theirs:
            found[(case.name, what)] = f"devstack {mine[:200]!r} != caddy {theirs[:200]!r}"
    return found


def _known(case: Case) -> set[tuple[str, str]]:
    return {key for key in KNOWN_DIFFERENCES if key[0] == case.name}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_devstack_and_caddy_answer_alike(pair: Pair, case: Case) -> None:
    async def both() -> tuple[Answer, Answer]:
        return await _ask(pair.devstack, case), await _ask(pair.caddy, case)

    devstack, caddy = asyncio.run(both())
    found = _differences(case, devstack, caddy)
    assert set(found) == _known(case), (found, _known(case))


def test_websocket_through_both(pair: Pair) -> None:
    async def first_message(front: Front) -> dict[str, Any]:
        async with _session(front) as session, session.ws_connect(
                front.url("localhost", "/api/ws"), timeout=aiohttp.ClientWSTimeout(ws_close=5)
        ) as ws:
            message: dict[str, Any] = await asyncio.wait_for(ws.receive_json(), REQUEST_SECONDS)
            return message

    async def both() -> tuple[dict[str, Any], dict[str, Any]]:
        return await first_message(pair.devstack), await first_message(pair.caddy)

    devstack, caddy = asyncio.run(both())
    assert devstack["type"] == caddy["type"] == "scores"
    assert devstack["scores"] == caddy["scores"]


def _open_event_stream(front: Front, path: str) -> tuple[str, str, bytes]:
    """Status line, Content-Type and the bytes up to the first ``tick`` event, read over a
    plain blocking TLS socket (an event stream never ends: closing the socket is the end)."""
    with socket.create_connection(("127.0.0.1", front.port), timeout=REQUEST_SECONDS) as raw, \
            front.context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost:{front.port}\r\n"
                    "Accept: text/event-stream\r\n\r\n".encode())
        data = b""
        while b"event: tick\n" not in data:
            chunk = tls.recv(65536)
            assert chunk, f"{front.name} closed the stream: {data!r}"
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = dict(line.lower().split(": ", 1) for line in lines[1:])
    return lines[0], fields.get("content-type", ""), body


def test_server_sent_events_through_both(pair: Pair) -> None:
    opening = b"retry: 2000\n: connected\n\n"
    for front in (pair.devstack, pair.caddy):
        status, content_type, body = _open_event_stream(front, "/startup/events")
        assert (status, content_type) == ("HTTP/1.1 200 OK", "text/event-stream; charset=utf-8")
        assert opening in body, (front.name, body)


def _service_state(pair: Pair, name: str) -> str:
    status = json.loads(pair.runner.run("status", "--json", cwd=pair.folder).stdout)
    state: str = next(s["state"] for s in status["services"] if s["name"] == name)
    return state


def test_a_stopped_service_is_a_502_through_both(pair: Pair) -> None:
    """Runs last: it stops simon, then starts it again on its port (the one Caddy dials)."""
    case = Case("stopped service", "/api/scores", compare=("status",))
    assert pair.runner.run("stop", "simon", cwd=pair.folder).returncode == 0
    try:
        wait_until(lambda: _service_state(pair, "simon") == "stopped", timeout=30,
                   message="simon to stop")

        async def both() -> tuple[Answer, Answer]:
            return await _ask(pair.devstack, case), await _ask(pair.caddy, case)

        devstack, caddy = asyncio.run(both())
        assert (devstack.status, caddy.status) == (502, 502)
        assert "simon" in devstack.body  # devstack's page names the service and its state
    finally:
        assert pair.runner.run("start", "simon", cwd=pair.folder).returncode == 0
        wait_until(lambda: _service_state(pair, "simon") == "ready", timeout=30,
                   message="simon to be ready again")
