"""The part of ``devstack up`` that needs no event loop, done before the heavy modules load.

In order: take the manifest's lock, decide every service's port, bind the proxy's port (the URL is
the contract: a taken proxy port fails here, before anything starts), start the guardian, and
spawn every service that waits for nothing. Those services then boot while devstack loads
asyncio, the supervisor and the proxy, instead of after.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from devstack.errors import ServiceStartError
from devstack.manifest.env import service_environment
from devstack.manifest.spec import StackSpec
from devstack.proxy.bind import Listeners, bind_proxy
from devstack.run.guardian import Guardian
from devstack.run.lock import RunLock
from devstack.run.output import Printer
from devstack.run.ports import PortAssignment, assign_ports
from devstack.run.spawn import Spawned, spawn


@dataclass(frozen=True)
class UpOptions:
    proxy_port: int | None = None
    """Overrides ``proxy.port`` (``devstack up --port``)."""
    proxy: bool = True
    verbose: bool = False


@dataclass
class Launch:
    """What :func:`prepare` set up; :meth:`close` undoes whatever the run did not."""

    spec: StackSpec
    options: UpOptions
    lock: RunLock
    guardian: Guardian
    assignments: dict[str, PortAssignment] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    listeners: Listeners | None = None
    spawned: dict[str, Spawned | ServiceStartError] = field(default_factory=dict)

    @property
    def proxy_enabled(self) -> bool:
        return self.options.proxy and self.spec.proxy.enabled

    def close(self) -> None:
        if self.listeners is not None:
            self.listeners.close()
        for early in self.spawned.values():  # spawned but never adopted: nobody reads them
            if isinstance(early, Spawned):
                os.close(early.output_fd)
        self.spawned.clear()
        self.guardian.close()  # stops whatever groups are still registered
        self.lock.release()


def service_ports(spec: StackSpec, assignments: dict[str, PortAssignment]) -> dict[str, int]:
    ports = {name: a.port for name, a in assignments.items()}
    for name, service in spec.services.items():
        # A PORT set in the service's own env is what it listens on: probes and routes follow.
        if service.env.get("PORT", "").isdigit():
            ports[name] = int(service.env["PORT"])
    return ports


def prepare(spec: StackSpec, options: UpOptions, printer: Printer) -> Launch:
    lock = RunLock(spec.state_dir)
    lock.acquire(spec.manifest_path)
    launch = Launch(spec=spec, options=options, lock=lock, guardian=Guardian())
    try:
        launch.assignments = assign_ports(spec, proxy_port=options.proxy_port)
        for assignment in launch.assignments.values():
            if message := assignment.message():
                printer.system(message)
        launch.ports = service_ports(spec, launch.assignments)
        if launch.proxy_enabled:
            launch.listeners = bind_proxy(spec, options.proxy_port)
        launch.guardian.start()
        base = dict(os.environ)
        for name, service in spec.services.items():
            if service.depends_on:
                continue
            try:
                launch.spawned[name] = spawn(
                    name,
                    service.command,
                    cwd=service.cwd,
                    env=service_environment(service, launch.ports, base),
                    guardian=launch.guardian,
                    stop_timeout_seconds=service.stop_timeout_seconds,
                )
            except ServiceStartError as exc:
                launch.spawned[name] = exc  # reported by the supervisor, like any start failure
    except BaseException:
        launch.close()
        raise
    return launch
