"""``devstack up``: one event loop owning the supervisor, the proxy and the signals.

Order of a run: take the manifest's lock, decide ports, bind the proxy (its port is the contract,
so a taken proxy port fails before anything starts), start the guardian, then the supervisor.
The first SIGINT/SIGTERM stops everything gracefully (dependents first); a second one forces.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from devstack.config import StackSpec
from devstack.errors import DevstackError, ServiceStartError
from devstack.guardian import Guardian
from devstack.lock import RunLock
from devstack.output import Printer
from devstack.ports import PortAssignment, assign_ports
from devstack.proxy import Proxy
from devstack.routing import certificate_hosts
from devstack.state import ServiceDirectory, ServiceState
from devstack.supervisor import Supervisor
from devstack.tls import ServerCertificate, load_or_create_ca

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_SERVICES_FAILED = 1


@dataclass(frozen=True)
class UpOptions:
    proxy_port: int | None = None
    """Overrides ``proxy.port`` (``devstack up --port``)."""
    proxy: bool = True
    verbose: bool = False


class PrinterLogHandler(logging.Handler):
    """devstack's own log records, printed as ``devstack |`` lines between the services' lines."""

    def __init__(self, printer: Printer) -> None:
        super().__init__()
        self._printer = printer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._printer.system(self.format(record), error=record.levelno >= logging.WARNING)
        except Exception:  # a logging handler must never raise into the code that logged
            self.handleError(record)


@contextlib.contextmanager
def logging_to(printer: Printer, *, verbose: bool) -> Iterator[None]:
    handler = PrinterLogHandler(printer)
    root = logging.getLogger("devstack")
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def exit_code_of(supervisor: Supervisor) -> int:
    states = {status.state for status in supervisor.statuses()}
    if states & {ServiceState.FAILED, ServiceState.CRASHED}:
        return EXIT_SERVICES_FAILED
    return EXIT_OK


async def up(spec: StackSpec, options: UpOptions, printer: Printer) -> int:
    lock = RunLock(spec.state_dir)
    with logging_to(printer, verbose=options.verbose), lock.held(spec.manifest_path):
        assignments = assign_ports(spec, proxy_port=options.proxy_port)
        for assignment in assignments.values():
            if message := assignment.message():
                printer.system(message)
        stack = Stack(spec, options, printer, assignments, lock)
        return await stack.run()


class Frontend:
    """The proxy with its certificate: one HTTPS origin for the whole stack."""

    def __init__(self, spec: StackSpec, *, port: int | None) -> None:
        self.spec = spec
        self._port = port
        self._proxy: Proxy | None = None
        self._renewal: asyncio.Task[None] | None = None
        authority = load_or_create_ca()
        self.ca_path = authority.cert_path
        self.certificate = ServerCertificate(authority, certificate_hosts(spec))

    async def start(self, directory: ServiceDirectory) -> None:
        self._proxy = Proxy(self.spec, directory, self.certificate.context, port=self._port)
        await self._proxy.start()
        self._renewal = asyncio.get_running_loop().create_task(self.certificate.keep_renewed())

    async def stop(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
        if self._proxy is not None:
            await self._proxy.stop()

    @property
    def url(self) -> str:
        assert self._proxy is not None
        return self._proxy.url

    def service_url(self, name: str) -> str | None:
        """Where a browser reaches ``name`` through the proxy (its first route)."""
        assert self._proxy is not None
        port = self._proxy.port
        if not self.spec.routes:
            return f"https://{name}.localhost:{port}/"
        for route in self.spec.routes:
            if route.service != name:
                continue
            host = route.host or "localhost"
            return f"https://{host}:{port}{route.path or '/'}"
        return None


class Stack:
    """The parts of one ``devstack up`` and the order they start and stop in."""

    def __init__(
        self,
        spec: StackSpec,
        options: UpOptions,
        printer: Printer,
        assignments: dict[str, PortAssignment],
        lock: RunLock,
    ) -> None:
        self.spec = spec
        self.options = options
        self.printer = printer
        self.assignments = assignments
        self.ports = {name: a.port for name, a in assignments.items()}
        for name, service in spec.services.items():
            # A PORT set in the service's own env is what it listens on: probes and routes follow.
            if service.env.get("PORT", "").isdigit():
                self.ports[name] = int(service.env["PORT"])
        self.lock = lock
        self.guardian = Guardian()
        self.exit_code = EXIT_OK
        self._signals = 0

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        frontend = None
        if self.options.proxy and self.spec.proxy.enabled:
            frontend = Frontend(self.spec, port=self.options.proxy_port)
        self.guardian.start()
        supervisor = Supervisor(self.spec, self.ports, self.printer, guardian=self.guardian)
        try:
            if frontend is not None:
                await frontend.start(supervisor)
            self.lock.update(
                ports={n: vars_of(a) for n, a in self.assignments.items()},
                proxy_url=frontend.url if frontend else None,
            )
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(signum, self._on_signal, supervisor)
            async with asyncio.TaskGroup() as group:
                group.create_task(supervisor.run())
                group.create_task(self._report_start(supervisor, frontend))
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            if frontend is not None:
                await frontend.stop()
            self.guardian.close()
        if self.exit_code == EXIT_OK:
            self.exit_code = exit_code_of(supervisor)
        return self.exit_code

    def _on_signal(self, supervisor: Supervisor) -> None:
        self._signals += 1
        if self._signals == 1:
            self.printer.system("stopping (press Ctrl-C again to force)")
            supervisor.request_shutdown()
        else:
            self.printer.system("forcing: killing every service now", error=True)
            supervisor.request_shutdown(force=True)

    async def _report_start(self, supervisor: Supervisor, frontend: Frontend | None) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            await supervisor.started
        except asyncio.CancelledError:
            return  # shut down before everything was up
        except ServiceStartError as exc:
            self.printer.system(f"error: {exc}; stopping the stack", error=True)
            self.exit_code = exc.exit_code
            supervisor.request_shutdown()
            return
        elapsed = loop.time() - began
        for line in summary_lines(self.spec, supervisor, frontend, elapsed):
            self.printer.system(line)
        # Everything long-lived exists now: keep the cyclic GC away from it (PERFORMANCE.md).
        gc.freeze()


def vars_of(assignment: PortAssignment) -> dict[str, Any]:
    return {
        "wanted": assignment.wanted,
        "port": assignment.port,
        "holder": str(assignment.holder) if assignment.holder else None,
        "message": assignment.message(),
    }


def summary_lines(
    spec: StackSpec, supervisor: Supervisor, frontend: Frontend | None, elapsed: float
) -> list[str]:
    rows = [("service", "state", "port", "url")]
    for status in supervisor.statuses():
        url = frontend.service_url(status.name) if frontend else f"http://127.0.0.1:{status.port}"
        rows.append((status.name, status.state.value, str(status.port), url or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{len(rows) - 1} service(s) up in {elapsed:.2f}s"]
    for row in rows:
        lines.append(
            "  "
            + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
            + "  "
            + row[3]
        )
    if frontend is not None:
        lines.append(f"open {frontend.url}  (CA: {frontend.ca_path}; `devstack trust` to trust it)")
    return lines


def run(spec: StackSpec, options: UpOptions, printer: Printer) -> int:
    """Run ``up`` on a fresh event loop (uvloop when installed)."""
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        try:
            return runner.run(up(spec, options, printer))
        except* DevstackError as group:
            raise group.exceptions[0] from None
