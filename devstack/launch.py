"""The part of ``devstack up`` that needs no event loop, done before the heavy modules load.

In order: take the manifest's lock, bind the proxy's port (the URL is the contract: a taken proxy
port fails here, before anything starts; and with port 0 the kernel's pick must be known before
the services' ports are decided), decide every service's port, make sure devstack's CA and
the CA bundle exist (services are told to trust them, so they must be there when they start: only
with the proxy, whose CA it is), start the guardian, and spawn every service that waits for
nothing. Those services then boot while devstack loads
asyncio, the supervisor and the proxy, instead of after.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from devstack.errors import ServiceStartError
from devstack.manifest.spec import ServiceSpec, StackSpec
from devstack.proxy.bind import Listeners, bind_proxy
from devstack.run.guardian import Guardian, kill_families
from devstack.run.lock import RunLock
from devstack.run.output import Printer
from devstack.run.ports import PortAssignment, assign_ports
from devstack.run.spawn import Spawned, Spawner


@dataclass(frozen=True)
class UpOptions:
    proxy_port: int | None = None
    """Overrides ``proxy.port`` (``devstack up --port``)."""
    proxy: bool = True
    verbose: bool = False
    watch: bool = True
    """False: no file changes reload anything (``devstack up --no-watch``, for CI)."""


class EarlySpawner(Spawner):
    """A :class:`Spawner` that can spawn a service before the event loop runs, and hands that
    process to the service's first start; every later start spawns anew. What no start took is
    stopped by :meth:`close`."""

    def __init__(
        self,
        ports: dict[str, int],
        *,
        guardian: Guardian,
        trust: Mapping[str, str] | None = None,
        proxy_url: str | None = None,
    ) -> None:
        super().__init__(ports, guardian=guardian, trust=trust, proxy_url=proxy_url)
        self._early: dict[str, tuple[ServiceSpec, Spawned]] = {}

    def spawn_early(self, service: ServiceSpec) -> None:
        """Spawn ``service`` now. A command that cannot be executed leaves nothing behind: the
        first start tries again, and the supervisor reports the failure like any other."""
        with contextlib.suppress(ServiceStartError):
            self._early[service.name] = (service, super().spawn(service))

    def spawn(self, service: ServiceSpec) -> Spawned:
        early = self._early.pop(service.name, None)
        return early[1] if early is not None else super().spawn(service)

    def close(self) -> None:
        """Stop what was spawned early and never taken: nobody reads its output."""
        early, self._early = self._early, {}
        kill_families({
            s.popen.pid: (s.family, service.stop_timeout_seconds) for service, s in early.values()
        })  # the group and whatever left it (a daemon forked at start-up)
        for _, spawned in early.values():
            spawned.popen.wait()
            os.close(spawned.output_fd)
            if self.guardian is not None:
                self.guardian.forget(spawned.popen.pid)


@dataclass
class Launch:
    """What :func:`prepare` set up; :meth:`close` undoes whatever the run did not."""

    spec: StackSpec
    options: UpOptions
    lock: RunLock
    guardian: Guardian
    assignments: dict[str, PortAssignment]
    ports: dict[str, int]
    spawner: EarlySpawner
    """Spawns every service; the first start of a service without dependencies takes the
    process spawned for it before the event loop ran."""
    listeners: Listeners | None = None
    trust: dict[str, str] = field(default_factory=dict)
    """The CA trust variables the services get (none without the proxy)."""

    @property
    def proxy_enabled(self) -> bool:
        return proxy_enabled(self.spec, self.options)

    def close(self) -> None:
        if self.listeners is not None:
            self.listeners.close()
        self.spawner.close()
        self.guardian.close()  # stops whatever groups are still registered
        self.lock.release()


def proxy_enabled(spec: StackSpec, options: UpOptions) -> bool:
    return options.proxy and spec.proxy.enabled


def trust_environment() -> dict[str, str]:
    """Find (or, on first use, create) devstack's CA, bring the CA bundle up to date and return
    the variables that point the services' runtimes at them. Only creating the CA loads
    :mod:`devstack.tls.ca` and cryptography (about 100 ms): the proxy loads them later anyway,
    in the background, and checks the CA then."""
    from devstack.tls import bundle, home

    ca_cert = home.existing_ca_cert()
    if ca_cert is None:
        from devstack.tls import ca

        ca_cert = ca.load_or_create_ca().cert_path
    return bundle.trust_environment(ca_cert, bundle.write_bundle(ca_cert))


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
    listeners = None
    trust: dict[str, str] = {}
    try:
        proxy_port = options.proxy_port
        if proxy_enabled(spec, options):
            # Bound before the services' ports are picked: with port 0 the kernel could
            # otherwise hand the proxy the very port just picked (and released) for a service.
            listeners = bind_proxy(spec, options.proxy_port)
            proxy_port = listeners.port
            trust = trust_environment()
        assignments = assign_ports(spec, proxy_port=proxy_port)
        for assignment in assignments.values():
            if message := assignment.message():
                printer.system(message)
    except BaseException:
        if listeners is not None:
            listeners.close()
        lock.release()
        raise
    ports = service_ports(spec, assignments)
    guardian = Guardian()
    proxy_url = listeners.origin if listeners is not None else None
    launch = Launch(
        spec=spec,
        options=options,
        lock=lock,
        guardian=guardian,
        assignments=assignments,
        ports=ports,
        spawner=EarlySpawner(ports, guardian=guardian, trust=trust, proxy_url=proxy_url),
        listeners=listeners,
        trust=trust,
    )
    try:
        guardian.start()
        for service in spec.services.values():
            if not service.depends_on:
                launch.spawner.spawn_early(service)
    except BaseException:
        launch.close()
        raise
    return launch
