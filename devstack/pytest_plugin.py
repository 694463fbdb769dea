"""devstack's pytest plugin (registered through the ``pytest11`` entry point): the ``devstack``
session fixture runs the stack for the whole test session.

The first test that asks for ``devstack`` starts the stack in the background (as
``devstack up -d --no-watch --port 0``: no reloads while tests run, a free proxy port so that two
suites run side by side), waits until every service is ready, and gives a :class:`Devstack`. The
stack is stopped when the session ends, whatever happened. A stack already running for the same
manifest is used and left running, as ``devstack run`` does; ``--devstack-url URL`` uses a
stack started elsewhere and starts nothing.

The manifest: ``--devstack-manifest PATH``, else the ``devstack_manifest`` ini option (relative
to the ini file), else the nearest ``devstack.yaml``, ``devstack.yml`` or ``Procfile`` in the
folder of the tests named on the command line or above it (then the rootdir).

When a test that uses the fixture fails, the lines its services logged during that test are
added to its report (a section ``devstack: service logs``).

Only this module loads when pytest starts; the rest of devstack loads when a test asks for the
fixture, so the plugin costs nothing to suites that do not use it.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import pytest

if TYPE_CHECKING:
    from devstack.control.client import Stack
    from devstack.control.detach import Detached

MANIFEST_NAMES = ("devstack.yaml", "devstack.yml", "Procfile")
READY_TIMEOUT_SECONDS = 60.0
"""How long the fixture waits for every service (``--devstack-timeout`` overrides it)."""
RESTART_TIMEOUT_SECONDS = 60.0
REPORT_LINES = 40
"""At most this many lines per service in a failed test's report (the last ones)."""
FAILURE_TAIL_LINES = 20
POLL_SECONDS = 0.02
REAP_SECONDS = 10.0
SECTION = "devstack: service logs"


class DevstackFixtureError(Exception):
    """The fixture could not give a stack, or a request to it failed; the message says why and
    what to do."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("devstack", "devstack: the stack under test")
    group.addoption(
        "--devstack-manifest",
        metavar="PATH",
        help="the stack's manifest (devstack.yaml or Procfile, or its folder); default: the "
        "devstack_manifest ini option, else the nearest one at or above the tests' folder",
    )
    group.addoption(
        "--devstack-url",
        metavar="URL",
        help="use the stack already running at this proxy URL (started with `devstack up -d`); "
        "nothing is started or stopped",
    )
    group.addoption(
        "--devstack-timeout",
        type=float,
        metavar="SECONDS",
        help=f"how long to wait for every service to be ready (default {READY_TIMEOUT_SECONDS:g})",
    )
    parser.addini("devstack_manifest", "the stack's manifest, relative to the ini file",
                  default="")


@dataclass
class Devstack:
    """The running stack, as the ``devstack`` fixture gives it."""

    proxy_url: str
    """The proxy's origin, ``https://localhost:PORT``."""
    ca_file: Path
    """devstack's CA certificate: what verifies the proxy's certificate."""
    manifest: Path | None
    """The stack's manifest (``None``: only ``--devstack-url`` is known)."""
    _stack: Stack | None = field(repr=False, default=None)
    _logs_dir: Path | None = field(repr=False, default=None)
    _names: tuple[str, ...] = field(repr=False, default=())

    def url(self, path: str = "/", service: str | None = None) -> str:
        """``path`` on the proxy (``url("/api/scores")``). With ``service``, ``path`` below
        where the proxy reaches that service (its first route: ``url("/", "startup")`` is
        ``https://startup.localhost:PORT/`` for a host route)."""
        if service is None:
            return self.proxy_url + "/" + path.lstrip("/")
        entry = self.status(service)
        base: str | None = entry.get("url")
        if base is None:
            raise DevstackFixtureError(
                f"no route reaches {service}: add one to {self.manifest} to test it through "
                "the proxy"
            )
        return urljoin(base if base.endswith("/") else base + "/", path.lstrip("/"))

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies the proxy against devstack's CA (and only it)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def status(self, name: str | None = None) -> Any:
        """The stack's status document (``devstack status --json``), or one service's entry."""
        document = self._ask("status")
        document.pop("ok", None)
        if name is None:
            return document
        for entry in document["services"]:
            if entry["name"] == name:
                return entry
        known = ", ".join(entry["name"] for entry in document["services"])
        raise DevstackFixtureError(f"no service named {name!r}; the stack has: {known}")

    def restart(self, name: str, timeout: float = RESTART_TIMEOUT_SECONDS) -> Any:
        """Restart service ``name`` and wait until its new process is ready: its status entry."""
        before = self.status(name)
        self._ask("restart", name)
        deadline = time.monotonic() + timeout
        while True:
            entry = self.status(name)
            if entry["ready"] and entry["pid"] is not None and (
                entry["pid"] != before["pid"] or entry["restarts"] > before["restarts"]
            ):
                return entry
            if time.monotonic() > deadline:
                raise DevstackFixtureError(
                    f"{name} is not ready {timeout:g}s after a restart (state {entry['state']}"
                    f"{': ' + entry['reason'] if entry.get('reason') else ''}); its last lines:\n"
                    + "\n".join(self.logs(name, FAILURE_TAIL_LINES))
                )
            time.sleep(POLL_SECONDS)  # readiness is the stack's to report: it is polled

    def logs(self, name: str, lines: int = 50) -> list[str]:
        """The last ``lines`` lines service ``name`` wrote (``devstack logs NAME -n LINES``)."""
        from devstack.control.render import tail

        answer = self._ask("logs", name)
        found, _ = tail(Path(answer["logs"][name]), lines)
        return [line.decode(errors="replace") for line in found]

    def environment(self) -> dict[str, str]:
        """The environment for a command run against the stack, as ``devstack run`` gives it:
        the caller's, plus ``DEVSTACK_URL``, ``DEVSTACK_<NAME>_URL``/``_PORT`` and the CA trust
        variables (``subprocess.run([...], env=devstack.environment())``)."""
        from devstack.commands import command_environment

        return command_environment(self.status())

    def log_offsets(self) -> dict[str, int]:
        """Where each service's log file ends now (see :meth:`lines_since`)."""
        if self._logs_dir is None:
            return {}
        return {name: _size(self._logs_dir / f"{name}.log") for name in self._names}

    def lines_since(self, offsets: Mapping[str, int]) -> dict[str, list[str]]:
        """What each service logged after ``offsets`` (its last :data:`REPORT_LINES` lines)."""
        if self._logs_dir is None:
            return {}
        found = {}
        for name in self._names:
            path = self._logs_dir / f"{name}.log"
            try:
                with open(path, "rb") as f:
                    f.seek(offsets.get(name, 0))
                    data = f.read()
            except FileNotFoundError:
                continue
            lines = data.decode(errors="replace").splitlines()
            if lines:
                found[name] = lines[-REPORT_LINES:]
        return found

    def _ask(self, command: str, *names: str) -> dict[str, Any]:
        from devstack.errors import DevstackError

        if self._stack is None:
            raise DevstackFixtureError(
                f"the stack at {self.proxy_url} was given with --devstack-url and no running "
                "stack's control socket was found for it: pass --devstack-manifest with its "
                "manifest to use status, restart and logs"
            )
        try:
            return self._stack.ask(command, *names)
        except DevstackError as exc:
            raise DevstackFixtureError(str(exc)) from exc


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@dataclass
class _Session:
    """What the fixture opened, and how to close it."""

    devstack: Devstack
    started: Detached | None
    opened_at: dict[str, int]
    """The services' log offsets before the stack started: a first test's report starts there."""

    def close(self) -> None:
        if self.started is not None and self.devstack._stack is not None:
            from devstack.control.detach import stop_if_running

            stop_if_running(self.devstack._stack)
            self.started.popen.wait(REAP_SECONDS)  # gone already: `down` waited for it


_SESSION = pytest.StashKey["_Session"]()
_OFFSETS = pytest.StashKey["dict[str, int]"]()


@pytest.fixture(scope="session")
def devstack(request: pytest.FixtureRequest) -> Iterator[Devstack]:
    """The stack under test, running and ready; stopped at the end of the session (unless it
    was already running)."""
    config = request.config
    failure: str | None = None
    try:
        session = _open(config)
    except DevstackFixtureError as exc:
        failure = f"devstack: {exc}"
    if failure is not None:  # outside the handler: the report shows the message alone
        pytest.fail(failure, pytrace=False)
    config.stash[_SESSION] = session
    try:
        yield session.devstack
    finally:
        del config.stash[_SESSION]
        session.close()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    session = item.config.stash.get(_SESSION, None)
    if session is not None:
        item.stash[_OFFSETS] = session.devstack.log_offsets()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    session = item.config.stash.get(_SESSION, None)
    if report.failed and session is not None and "devstack" in getattr(item, "fixturenames", ()):
        offsets = item.stash.get(_OFFSETS, session.opened_at)
        text = _report_text(session.devstack, offsets)
        if text:
            report.sections.append((SECTION, text))
    return report


def _report_text(stack: Devstack, offsets: Mapping[str, int]) -> str:
    found = stack.lines_since(offsets)
    if not found:
        return "(the services wrote nothing during this test)"
    states: dict[str, str] = {}
    try:
        for entry in stack.status()["services"]:
            states[entry["name"]] = f"{entry['state']}, {entry['restarts']} restart(s)"
    except DevstackFixtureError:
        pass  # the stack is gone: its logs still say why
    parts = []
    for name, lines in found.items():
        state = f" ({states[name]})" if name in states else ""
        parts.append(f"--- {name}{state} ---\n" + "\n".join(lines))
    return "\n".join(parts)


def _open(config: pytest.Config) -> _Session:
    url = config.getoption("devstack_url")
    manifest = _manifest(config, required=url is None)
    if url is not None:
        return _attach(url.rstrip("/"), manifest)
    assert manifest is not None
    return _start(config, manifest)


def _manifest(config: pytest.Config, *, required: bool) -> Path | None:
    """The manifest the session's stack runs: see the module's docstring."""
    given = config.getoption("devstack_manifest")
    if given:
        return Path(given).absolute()
    ini = config.getini("devstack_manifest")
    if ini:
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        return base / str(ini)
    starts = [config.invocation_params.dir / arg.split("::")[0] for arg in config.args]
    for start in [*starts, config.rootpath]:
        folder = start if start.is_dir() else start.parent
        for candidate in (folder, *folder.parents):
            for name in MANIFEST_NAMES:
                if (candidate / name).is_file():
                    return candidate / name
    if not required:
        return None
    raise DevstackFixtureError(
        f"no {', '.join(MANIFEST_NAMES)} found at or above the tests' folder "
        f"({', '.join(str(s) for s in starts) or config.rootpath}): pass --devstack-manifest "
        "PATH, or set devstack_manifest in the pytest ini file"
    )


def _load(manifest: Path) -> tuple[Stack, tuple[str, ...], Path]:
    from devstack.control.client import Stack
    from devstack.errors import DevstackError
    from devstack.manifest.loader import load

    try:
        spec = load(manifest).spec
    except DevstackError as exc:
        raise DevstackFixtureError(str(exc)) from exc
    stack = Stack(spec.state_dir, spec.manifest_path)
    return stack, tuple(spec.services), spec.state_dir / "logs"


def _attach(url: str, manifest: Path | None) -> _Session:
    """``--devstack-url``: the stack someone else started. Its control socket is used when the
    stack running for ``manifest`` is the one at ``url``."""
    from devstack.errors import DevstackError
    from devstack.tls.home import CA_CERT_NAME, tls_dir

    ca_file = tls_dir() / CA_CERT_NAME
    if manifest is not None:
        stack, names, logs_dir = _load(manifest)
        try:
            document = stack.ask("status") if stack.is_live() else None
        except DevstackError:
            document = None
        if document is not None and (document["stack"]["proxy_url"] or "").rstrip("/") == url:
            ca = document["stack"]["ca_path"]
            return _Session(
                Devstack(url, Path(ca) if ca else ca_file, stack.manifest, stack, logs_dir, names),
                None,
                {},
            )
    return _Session(Devstack(url, ca_file, None), None, {})


def _start(config: pytest.Config, manifest: Path) -> _Session:
    from devstack.control import detach

    stack, names, logs_dir = _load(manifest)
    opened_at = {name: _size(logs_dir / f"{name}.log") for name in names}
    started = None
    if not stack.is_live():
        started = detach.start(stack, ["--no-watch", "--port", "0"])
    try:
        document = _ready(stack, started, config.getoption("devstack_timeout"))
    except BaseException:
        if started is not None:
            detach.stop_if_running(stack)
            started.popen.wait(REAP_SECONDS)
        raise
    proxy_url = document["stack"]["proxy_url"]
    if proxy_url is None:
        if started is not None:
            detach.stop_if_running(stack)
            started.popen.wait(REAP_SECONDS)
        raise DevstackFixtureError(
            f"the stack for {stack.manifest} runs without its proxy: the fixture needs it"
        )
    devstack = Devstack(proxy_url, Path(document["stack"]["ca_path"]), stack.manifest, stack,
                        logs_dir, names)
    return _Session(devstack, started, opened_at)


def _ready(stack: Stack, started: Detached | None, timeout: float | None) -> dict[str, Any]:
    """The stack's status once every service is ready; :class:`DevstackFixtureError` with the
    last lines of what is not."""
    from devstack.control import detach
    from devstack.errors import StackNotRunning

    if started is not None and detach.wait_answering(stack, started, proxy=True) is None:
        raise DevstackFixtureError(
            f"devstack exited ({started.popen.returncode}) before it was up for "
            f"{stack.manifest}:\n" + "\n".join(started.log_tail())
        )
    timeout = READY_TIMEOUT_SECONDS if timeout is None else timeout
    try:
        document, waiting = detach.wait_ready(stack, timeout)
    except StackNotRunning as exc:
        tail = "\n".join(started.log_tail()) if started is not None else ""
        raise DevstackFixtureError(f"devstack stopped before its services were ready:\n{tail}"
                                   ) from exc
    if waiting:
        raise DevstackFixtureError(
            f"not ready after {timeout:g}s: {', '.join(waiting)}\n" + _tails(stack, waiting)
        )
    return document


def _tails(stack: Stack, names: list[str]) -> str:
    from devstack.control.render import tail

    parts = []
    for name in names:
        lines, _ = tail(stack.state_dir / "logs" / f"{name}.log", FAILURE_TAIL_LINES)
        parts.append(f"--- last lines of {name} ---\n"
                     + "\n".join(line.decode(errors="replace") for line in lines))
    return "\n".join(parts)

