"""``devstack up``: one event loop owning the supervisor, the proxy and the signals.

Order of a run: take the manifest's lock, decide ports, bind the proxy (its port is the contract,
so a taken proxy port fails before anything starts), start the guardian, then the supervisor.
The first SIGINT/SIGTERM stops everything gracefully (dependents first); a second one forces.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devstack.config import StackSpec
from devstack.errors import DevstackError, ServiceStartError
from devstack.guardian import Guardian
from devstack.listen import Listeners, bind_proxy
from devstack.lock import RunLock
from devstack.output import Printer
from devstack.ports import PortAssignment, assign_ports
from devstack.state import ServiceState
from devstack.supervisor import Supervisor

if TYPE_CHECKING:
    from devstack.frontend import Frontend

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
        self.began = time.monotonic()
        self._signals = 0

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        listeners = None
        if self.options.proxy and self.spec.proxy.enabled:
            # The URL is the contract: a taken proxy port fails before anything starts.
            listeners = bind_proxy(self.spec, self.options.proxy_port)
        frontend: Frontend | None = None
        self.guardian.start()
        supervisor = Supervisor(self.spec, self.ports, self.printer, guardian=self.guardian)
        try:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(signum, self._on_signal, supervisor)
            async with asyncio.TaskGroup() as group:
                supervising = group.create_task(supervisor.run())
                if listeners is not None:
                    frontend = await self._start_frontend(supervisor, supervising, listeners)
                self.lock.update(
                    ports={n: vars_of(a) for n, a in self.assignments.items()},
                    proxy_url=frontend.url if frontend else None,
                )
                group.create_task(self._report_start(supervisor, frontend))
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            if frontend is not None:
                await frontend.stop()
            elif listeners is not None:
                listeners.close()
            self.guardian.close()
        if self.exit_code == EXIT_OK:
            self.exit_code = exit_code_of(supervisor)
        return self.exit_code

    async def _start_frontend(
        self, supervisor: Supervisor, supervising: asyncio.Task[None], listeners: Listeners
    ) -> Frontend:
        try:
            # Loading aiohttp and cryptography takes a few hundred milliseconds of imports. Done
            # in the default executor, they overlap the services' start-up and the readiness
            # probes instead of blocking the loop in front of them.
            module = await asyncio.get_running_loop().run_in_executor(
                None, importlib.import_module, "devstack.frontend"
            )
            frontend: Frontend = module.Frontend(self.spec, listeners)
            await frontend.start(supervisor)
        except BaseException:
            supervisor.request_shutdown()
            await asyncio.shield(supervising)
            raise
        return frontend

    def _on_signal(self, supervisor: Supervisor) -> None:
        self._signals += 1
        if self._signals == 1:
            self.printer.system("stopping (press Ctrl-C again to force)")
            supervisor.request_shutdown()
        else:
            self.printer.system("forcing: killing every service now", error=True)
            supervisor.request_shutdown(force=True)

    async def _report_start(self, supervisor: Supervisor, frontend: Frontend | None) -> None:
        try:
            await supervisor.started
        except asyncio.CancelledError:
            return  # shut down before everything was up
        except ServiceStartError as exc:
            self.printer.system(f"error: {exc}; stopping the stack", error=True)
            self.exit_code = exc.exit_code
            supervisor.request_shutdown()
            return
        elapsed = time.monotonic() - self.began
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
    """Run ``up`` on a fresh event loop: uvloop when installed and the proxy runs (its hot path
    gains 10-20%); plain asyncio otherwise, which starts faster."""
    loop_factory: Any = None
    if options.proxy and spec.proxy.enabled:
        with contextlib.suppress(ImportError):
            import uvloop

            loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        try:
            return runner.run(up(spec, options, printer))
        except* DevstackError as group:
            raise group.exceptions[0] from None
