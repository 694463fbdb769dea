"""``devstack up`` once :mod:`devstack.launch` has prepared it: one event loop owning the
supervisor, the proxy, the file watcher and the signals.

The supervisor adopts the services launched early and starts the rest in dependency order; the
proxy's and the watcher's modules load in the meantime. Once the stack is up, the watcher's
change sets become reloads (``Supervisor.reload``) and, under static routes, browser reloads
(``Frontend.static_changed``). The first SIGINT/SIGTERM stops everything gracefully (dependents
first); a second one forces.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import os
import signal
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from devstack.control.address import socket_path
from devstack.control.protocol import StackInfo
from devstack.control.server import ControlServer
from devstack.errors import DevstackError, ServiceStartError
from devstack.launch import Launch
from devstack.oneshot import OneShot
from devstack.proxy.bind import Listeners
from devstack.run.output import SYSTEM_NAME, Printer
from devstack.run.ports import PortAssignment
from devstack.run.starter import SpawningStarter
from devstack.run.supervisor import Supervisor
from devstack.status import ServiceState, ServiceStatus

if TYPE_CHECKING:
    from devstack.proxy.frontend import Frontend
    from devstack.reload.changes import ChangeSet
    from devstack.reload.loop import LoopDetector

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_SERVICES_FAILED = 1
T = TypeVar("T")


def exit_code_of(supervisor: Supervisor) -> int:
    states = {status.state for status in supervisor.statuses()}
    if states & {ServiceState.FAILED, ServiceState.CRASHED}:
        return EXIT_SERVICES_FAILED
    return EXIT_OK


class Stack:
    """One ``devstack up`` from the event loop's side: supervisor, proxy, signals."""

    def __init__(
        self, launch: Launch, printer: Printer, *, began: float, oneshot: OneShot | None = None
    ) -> None:
        """``oneshot``: ``devstack run``'s command, run once the services are ready; the stack
        stops when it ends, and its status is the run's."""
        self.launch = launch
        self.oneshot = oneshot
        self.spec = launch.spec
        self.printer = printer
        self.exit_code = EXIT_OK
        self.began = began
        self._signals = 0
        self._reload: asyncio.Future[None] | None = None
        """The watcher's modules loading in the background, when something is watched."""
        self._watching = asyncio.Event()
        """Set once edits are seen (or watching is over): the summary waits for it."""
        self._manifest_watched = asyncio.Event()
        """Set once edits to the manifest are reported (:mod:`devstack.reload.manifest`)."""

    @property
    def is_watching(self) -> bool:
        if not self.launch.options.watch:
            return False
        if any(service.watch for service in self.spec.services.values()):
            return True
        return self.launch.proxy_enabled and any(route.static for route in self.spec.routes)

    async def run(self) -> int:
        gc.enable()  # cli.main disabled it for the start-up
        loop = asyncio.get_running_loop()
        launch = self.launch
        frontend: Frontend | None = None
        starter = SpawningStarter(launch.spawner)
        supervisor = Supervisor(self.spec, launch.ports, self.printer, starter=starter)
        try:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(signum, self._on_signal, supervisor, signum)
            if self.is_watching:
                # pathspec and watchfiles take ~100 ms to import: in the default executor, beside
                # the services' start-up, and only when something is watched.
                self._reload = asyncio.ensure_future(load_in_background(_load_reload))
            control = ControlServer(
                socket_path(self.spec.state_dir),
                supervisor,
                StackInfo(manifest=self.spec.manifest_path, pid=os.getpid()),
                logs_dir=self.spec.state_dir / "logs",
            )
            async with asyncio.TaskGroup() as group:
                supervising = group.create_task(supervisor.run())
                group.create_task(control.serve(supervising))
                serving = asyncio.Event()  # the proxy serves (at once without one)
                if self.oneshot is not None:
                    proxy_url = launch.listeners.origin if launch.listeners is not None else None
                    group.create_task(
                        self.oneshot.run(supervisor, proxy_url, launch.trust, serving)
                    )
                if launch.listeners is not None:
                    frontend = await self._start_frontend(supervisor, supervising, launch.listeners)
                    launch.listeners = None  # the proxy owns them now
                    control.stack = stack_info(control.stack, frontend)
                    group.create_task(self._complete_frontend(supervisor, supervising, frontend))
                serving.set()
                launch.lock.update(
                    ports={n: vars_of(a) for n, a in launch.assignments.items()},
                    proxy_url=frontend.url if frontend else None,
                )
                group.create_task(self._report_start(supervisor, frontend))
                if self._reload is not None:
                    group.create_task(self._watch(supervisor, supervising, frontend))
                if self.watches_manifest:
                    manifest = group.create_task(self._watch_manifest())
                    supervising.add_done_callback(lambda _: manifest.cancel())
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            if frontend is not None:
                await frontend.stop()
        if self.oneshot is not None and self.oneshot.code is not None:
            return self.oneshot.code
        if self.exit_code == EXIT_OK:
            self.exit_code = exit_code_of(supervisor)
        return self.exit_code

    async def _start_frontend(
        self, supervisor: Supervisor, supervising: asyncio.Task[None], listeners: Listeners
    ) -> Frontend:
        # The fast lane's modules (neither aiohttp nor cryptography: see _complete_frontend),
        # and the certificate (the first start, or a renewal, issues one).
        load: Callable[..., Awaitable[Any]] = load_in_background
        if self.oneshot is not None:
            # `devstack run` starts its command once the proxy serves, so nothing is gained by
            # loading it beside the readiness probes, and the GIL's hand-overs between the two
            # threads cost CPU that the services' start-up wants: about 40 ms on the example
            # stack (bench ci, alternated runs). On the loop, then.
            load = load_here
        try:
            module = await load(importlib.import_module, "devstack.proxy.frontend")
            frontend: Frontend = await load(module.Frontend, self.spec, listeners)
            await frontend.start(supervisor, full=False)
        except BaseException:
            supervisor.request_shutdown()
            await asyncio.shield(supervising)
            raise
        return frontend

    async def _complete_frontend(
        self, supervisor: Supervisor, supervising: asyncio.Task[None], frontend: Frontend
    ) -> None:
        """The proxy serves with its fast lane; the full proxy (aiohttp) loads once the
        services are ready, beside nothing they need, or as soon as a request needs it. Under
        ``devstack run`` only then: a command that never needs it never waits for it."""
        wanted = asyncio.ensure_future(frontend.full_wanted.wait())
        waits: list[asyncio.Future[Any]] = [wanted, supervising]
        if self.oneshot is None:
            waits.append(supervisor.started)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            wanted.cancel()
        if supervising.done():
            return
        from devstack.proxy.server import FULL_MODULE

        await load_in_background(importlib.import_module, FULL_MODULE)
        await frontend.start_full()
        gc.freeze()  # aiohttp's modules and the full proxy are long-lived too (see _report_start)

    def _on_signal(self, supervisor: Supervisor, signum: int) -> None:
        if self.oneshot is not None and self.oneshot.on_signal(signum):
            return  # the command's: the stack stops once it has ended
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
        if self._reload is not None:
            await self._watching.wait()  # "up" promises that edits reload from now on
        if self.watches_manifest:
            await self._manifest_watched.wait()  # and that edits to the manifest are reported
        lines = summary_lines(supervisor, frontend, elapsed, watching=self._reload is not None)
        # One write: no service's line lands inside the table, and a reader sees it whole.
        self.printer.lines(SYSTEM_NAME, (line.encode("utf-8", "replace") for line in lines))
        # Everything long-lived exists now: keep the cyclic GC away from it (measured: +5% req/s
        # and a lower p99 through the proxy).
        gc.freeze()

    @property
    def watches_manifest(self) -> bool:
        """``up`` reports edits to its manifest (``run``, and ``--no-watch``, do not)."""
        return self.launch.options.watch and self.oneshot is None

    async def _watch_manifest(self) -> None:
        from devstack.reload.manifest import watch_manifest

        def report(line: str, is_error: bool) -> None:
            self.printer.system(line, error=is_error)

        try:
            await watch_manifest(self.spec, report, started=self._manifest_watched)
        finally:
            self._manifest_watched.set()

    async def _watch(
        self, supervisor: Supervisor, supervising: asyncio.Task[None], frontend: Frontend | None
    ) -> None:
        """Once the stack is up, turn each change set into reloads until the supervisor ends.
        A watcher that breaks (the system's limit on watches, a folder gone) is reported and
        the stack keeps running without it."""
        try:
            await self._watch_changes(supervisor, supervising, frontend)
        finally:
            self._watching.set()

    async def _watch_changes(
        self, supervisor: Supervisor, supervising: asyncio.Task[None], frontend: Frontend | None
    ) -> None:
        assert self._reload is not None
        await self._reload
        from devstack.reload.loop import LoopDetector
        from devstack.reload.watcher import Watcher

        try:
            await supervisor.started
        except (asyncio.CancelledError, ServiceStartError):
            return  # _report_start says why
        watcher = Watcher(self.spec)
        supervising.add_done_callback(lambda _: watcher.stop())
        if supervising.done():
            return
        detector = LoopDetector()
        reloading: dict[str, ServiceStatus] = {}
        following = asyncio.get_running_loop().create_task(
            follow_reloads(supervisor, detector, reloading)
        )
        try:
            async for changes in watcher.changes():
                if not changes:
                    self._watching.set()  # the watch is in place
                self._apply(changes, supervisor, frontend, detector, reloading)
        except OSError as exc:
            self.printer.system(f"watching files stopped: {exc}; edits no longer reload "
                                "anything (`devstack up --no-watch` skips watching)", error=True)
        finally:
            following.cancel()

    def _apply(
        self,
        changes: ChangeSet,
        supervisor: Supervisor,
        frontend: Frontend | None,
        detector: LoopDetector,
        reloading: dict[str, ServiceStatus],
    ) -> None:
        from devstack.reload.loop import loop_warning

        for name, files in changes.services.items():
            kept, looping = detector.screen(name, files)
            for file in looping:
                self.printer.system(loop_warning(name, file), error=True, service=name)
            if kept:
                reloading[name] = supervisor.status(name)
                detector.reloaded(name)
                supervisor.reload(name, kept)
        if frontend is not None:
            for root, paths in changes.static.items():
                frontend.static_changed(root, paths)


def stack_info(bare: StackInfo, frontend: Frontend) -> StackInfo:
    """What the control socket says of the stack once the proxy listens."""
    return StackInfo(
        manifest=bare.manifest,
        pid=bare.pid,
        proxy_url=frontend.url,
        proxy_port=urllib.parse.urlsplit(frontend.url).port,
        ca_path=frontend.ca_path,
        service_urls={name: frontend.service_url(name) for name in frontend.spec.services},
    )


BACKGROUND_SWITCH_SECONDS = 0.0005
"""The GIL's switch interval while modules load in a background thread (Python's default is
5 ms). Each system call of the event loop (a readiness probe, a read of ``/proc``, a spawn)
releases the GIL, and the importing thread takes it; the loop then waited up to the whole
interval to get it back, for every call. With 0.5 ms the supervisor keeps its pace while the
proxy loads."""


class _Background:
    loads = 0
    interval = 0.0


async def load_here(load: Callable[..., T], *args: Any) -> T:
    """``load(*args)`` on the event loop's thread, which waits meanwhile."""
    return load(*args)


async def load_in_background(load: Callable[..., T], *args: Any) -> T:
    """``load(*args)`` in the default executor, with the GIL handed back to the event loop
    within :data:`BACKGROUND_SWITCH_SECONDS` while any such load runs."""
    if _Background.loads == 0:
        _Background.interval = sys.getswitchinterval()
        sys.setswitchinterval(min(_Background.interval, BACKGROUND_SWITCH_SECONDS))
    _Background.loads += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(None, load, *args)
    finally:
        _Background.loads -= 1
        if _Background.loads == 0:
            sys.setswitchinterval(_Background.interval)


def _load_reload() -> None:
    """Import the watcher's modules (pathspec with them) and watchfiles, for its first batch."""
    for name in ("watchfiles", "devstack.reload.watcher", "devstack.reload.loop"):
        importlib.import_module(name)


async def follow_reloads(
    supervisor: Supervisor, detector: LoopDetector, reloading: dict[str, ServiceStatus]
) -> None:
    """Tell ``detector`` when each reloading service is back. ``reloading`` holds each one's
    status when its reload was asked for."""
    while True:
        await supervisor.changed()
        for name, before in list(reloading.items()):
            if is_back(before, supervisor.status(name)):
                detector.settled(name)
                del reloading[name]


def is_back(before: ServiceStatus, now: ServiceStatus) -> bool:
    """Whether a service whose status was ``before`` when a reload was asked for is back:
    ready as a new process (or still the old one, the new one having failed: blue-green), or
    ended some other way (crashed into backoff, failed, stopped)."""
    if now.state is ServiceState.READY:
        return now.pid != before.pid or (now.has_failed_reload and now != before)
    ended = (ServiceState.BACKOFF, ServiceState.CRASHED, ServiceState.FAILED, ServiceState.DONE,
             ServiceState.STOPPED)
    return now.state in ended and now != before


def vars_of(assignment: PortAssignment) -> dict[str, Any]:
    return {
        "wanted": assignment.wanted,
        "port": assignment.port,
        "holder": str(assignment.holder) if assignment.holder else None,
        "message": assignment.message(),
    }


def summary_lines(
    supervisor: Supervisor, frontend: Frontend | None, elapsed: float, *, watching: bool = False
) -> list[str]:
    """The start-up summary; ``watching``: whether files are watched at all (the watcher's
    modules are loaded then)."""
    if watching:
        from devstack.reload.changes import describe_watch
    rows = [("service", "state", "port", "watch", "url")]
    for status in supervisor.statuses():
        url = frontend.service_url(status.name) if frontend else f"http://127.0.0.1:{status.port}"
        service = supervisor.spec.services[status.name]
        watch = describe_watch(service) if watching else "off"
        rows.append((status.name, status.state.value, str(status.port), watch, url or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"{len(rows) - 1} service(s) up in {elapsed:.2f}s"]
    for row in rows:
        lines.append(
            "  "
            + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
            + "  "
            + row[4]
        )
    if frontend is not None:
        lines.append(f"open {frontend.url}  (CA: {frontend.ca_path}; `devstack trust` to trust it)")
    return lines


def run(launch: Launch, printer: Printer, *, began: float, oneshot: OneShot | None = None) -> int:
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
            return runner.run(Stack(launch, printer, began=began, oneshot=oneshot).run())
        except* DevstackError as group:
            raise group.exceptions[0] from None
