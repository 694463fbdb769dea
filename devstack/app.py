"""``devstack up`` once :mod:`devstack.launch` has prepared it: one event loop owning the
supervisor, the proxy and the signals.

The supervisor adopts the services launched early and starts the rest in dependency order; the
proxy's modules load in the meantime. The first SIGINT/SIGTERM stops everything gracefully
(dependents first); a second one forces.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import signal
import time
from typing import TYPE_CHECKING, Any

from devstack.errors import DevstackError, ServiceStartError
from devstack.launch import Launch
from devstack.proxy.bind import Listeners
from devstack.run.output import Printer
from devstack.run.ports import PortAssignment
from devstack.run.starter import SpawningStarter
from devstack.run.supervisor import Supervisor
from devstack.status import ServiceState

if TYPE_CHECKING:
    from devstack.proxy.frontend import Frontend

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_SERVICES_FAILED = 1


def exit_code_of(supervisor: Supervisor) -> int:
    states = {status.state for status in supervisor.statuses()}
    if states & {ServiceState.FAILED, ServiceState.CRASHED}:
        return EXIT_SERVICES_FAILED
    return EXIT_OK


class Stack:
    """One ``devstack up`` from the event loop's side: supervisor, proxy, signals."""

    def __init__(self, launch: Launch, printer: Printer, *, began: float) -> None:
        self.launch = launch
        self.spec = launch.spec
        self.printer = printer
        self.exit_code = EXIT_OK
        self.began = began
        self._signals = 0

    async def run(self) -> int:
        gc.enable()  # cli.main disabled it for the start-up
        loop = asyncio.get_running_loop()
        launch = self.launch
        frontend: Frontend | None = None
        starter = SpawningStarter(launch.spawner)
        supervisor = Supervisor(self.spec, launch.ports, self.printer, starter=starter)
        try:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(signum, self._on_signal, supervisor)
            async with asyncio.TaskGroup() as group:
                supervising = group.create_task(supervisor.run())
                if launch.listeners is not None:
                    frontend = await self._start_frontend(supervisor, supervising, launch.listeners)
                    launch.listeners = None  # the proxy owns them now
                launch.lock.update(
                    ports={n: vars_of(a) for n, a in launch.assignments.items()},
                    proxy_url=frontend.url if frontend else None,
                )
                group.create_task(self._report_start(supervisor, frontend))
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            if frontend is not None:
                await frontend.stop()
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
                None, importlib.import_module, "devstack.proxy.frontend"
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
        for line in summary_lines(supervisor, frontend, elapsed):
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


def summary_lines(supervisor: Supervisor, frontend: Frontend | None, elapsed: float) -> list[str]:
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


def run(launch: Launch, printer: Printer, *, began: float) -> int:
    """Run the stack on a fresh event loop: uvloop when the proxy runs (its hot path gains
    10-20%; a dependency wherever the platform has it, Windows aside); plain asyncio otherwise,
    which starts faster. ``began``: ``time.monotonic()`` when ``devstack up`` started, for the
    summary."""
    loop_factory: Any = None
    if launch.proxy_enabled:
        with contextlib.suppress(ImportError):  # no uvloop for this platform
            import uvloop

            loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        try:
            return runner.run(Stack(launch, printer, began=began).run())
        except* DevstackError as group:
            raise group.exceptions[0] from None
