"""How the supervisor gets a running process for a service: a :class:`ProcessStarter`.

The supervisor asks for a process each time a service starts (the first start, restarts, starts
after a backoff) and knows a process only as a :class:`StartedProcess`. :class:`SpawningStarter`
is the real starter: it takes a :class:`~devstack.run.spawn.Spawner` (``devstack up`` passes one
that hands out the processes it spawned before the event loop ran) and watches what it spawns as
a :class:`~devstack.run.process.ServiceProcess`. Tests pass a starter of fake processes instead.
"""

from __future__ import annotations

from typing import Protocol

from devstack.manifest.spec import ServiceSpec
from devstack.run.process import OutputHandler, ServiceProcess
from devstack.run.spawn import Spawner


class StartedProcess(Protocol):
    """What the supervisor needs of one started process of a service."""

    @property
    def pid(self) -> int: ...

    @property
    def started_at(self) -> float:
        """When it was spawned, on the timeline of the supervisor's clock."""
        ...

    async def wait(self) -> int:
        """Its exit code once it has exited (negative: killed by that signal)."""
        ...

    async def stop(self, *, force: bool = False) -> int | None:
        """Stop its whole process group (also what is left of it after the main process
        exited); return once nothing of it runs."""
        ...


class ProcessStarter(Protocol):
    def start(self, service: ServiceSpec, port: int, on_output: OutputHandler) -> StartedProcess:
        """Start ``service``'s command with ``PORT`` set to ``port`` (a blue-green reload starts
        the new process on a fresh one), its output going to ``on_output`` line by line;
        ServiceStartError when the command cannot be executed."""
        ...


class SpawningStarter:
    """The real :class:`ProcessStarter`: spawn, then watch from the event loop."""

    def __init__(self, spawner: Spawner) -> None:
        self._spawner = spawner

    def start(self, service: ServiceSpec, port: int, on_output: OutputHandler) -> ServiceProcess:
        spawner = self._spawner
        is_home = spawner.port_of(service.name) == port
        return ServiceProcess(
            service.name,
            spawner.spawn(service) if is_home else spawner.spawn_on(service, port),
            on_output=on_output,
            guardian=self._spawner.guardian,
            stop_timeout_seconds=service.stop_timeout_seconds,
        )
