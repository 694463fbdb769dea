"""The stack's front door as ``devstack up`` runs it: the proxy with its certificate.

Imported only when the proxy is on, after the services have been spawned. It serves with the
fast lane first; the full proxy (:data:`FULL_MODULE`: aiohttp, about 150 ms of imports) is
started once the services are ready, or as soon as a request needs it
(:meth:`Frontend.start_full`). A leaf certificate cached for these hosts is served with the
``ssl`` module alone (:mod:`devstack.tls.quick`) and checked with cryptography then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.errors import TLSError
from devstack.manifest.spec import StackSpec
from devstack.proxy.bind import Listeners
from devstack.proxy.routing import certificate_hosts
from devstack.proxy.server import Proxy
from devstack.status import ServiceDirectory
from devstack.tls.quick import cached_server_context

if TYPE_CHECKING:
    from devstack.tls.ca import ServerCertificate

logger = logging.getLogger(__name__)


class Frontend:
    """The proxy with its certificate: one HTTPS origin for the whole stack."""

    def __init__(self, spec: StackSpec, listeners: Listeners) -> None:
        self.spec = spec
        self._listeners = listeners
        self._proxy: Proxy | None = None
        self._renewal: asyncio.Task[None] | None = None
        hosts = certificate_hosts(spec)
        self._quick = cached_server_context(hosts)
        """The cached leaf, served without cryptography until :meth:`start_full` checks it."""
        self.certificate: ServerCertificate | None = None
        if self._quick is not None:
            self.ca_path = self._quick.ca_path
            self._context = self._quick.context
        else:  # the first start, new hosts, a renewal due: the full path decides now
            from devstack.tls.ca import ServerCertificate, load_or_create_ca

            authority = load_or_create_ca()
            self.ca_path = authority.cert_path
            self.certificate = ServerCertificate(authority, hosts)
            self._context = self.certificate.context

    @property
    def context(self) -> ssl.SSLContext:
        """The server context the proxy serves from (a renewed certificate is loaded into it)."""
        return self._context

    async def start(self, directory: ServiceDirectory, *, full: bool = True) -> None:
        """Serve. ``full=False``: with the fast lane alone, until :meth:`start_full`."""
        self._proxy = Proxy(self.spec, directory, self._context, listeners=self._listeners)
        await self._proxy.start(full=full)
        if self.certificate is not None:
            self._renewal = asyncio.get_running_loop().create_task(
                self.certificate.keep_renewed()
            )
        elif full:
            self._renewal = asyncio.get_running_loop().create_task(self._verify_then_renew())

    async def start_full(self) -> None:
        """Start the full proxy (its module, :data:`FULL_MODULE`, best imported beforehand
        off the event loop), and check the certificate served from the cache with
        cryptography (in a thread), as the full path would have at the start."""
        assert self._proxy is not None
        await self._proxy.start_full()
        if self._renewal is None and self._quick is not None:
            self._renewal = asyncio.get_running_loop().create_task(self._verify_then_renew())

    async def _verify_then_renew(self) -> None:
        assert self._quick is not None
        loop = asyncio.get_running_loop()
        try:
            self.certificate = await asyncio.to_thread(
                self._quick.verify, reload_with=loop.call_soon_threadsafe
            )
        except TLSError as exc:
            logger.error("the proxy's certificate: %s", exc)
            return
        await self.certificate.keep_renewed()

    @property
    def full_wanted(self) -> asyncio.Event:
        """Set when a request waits for the full proxy."""
        assert self._proxy is not None
        return self._proxy.full_wanted

    async def stop(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
        if self._proxy is not None:
            await self._proxy.stop()

    def static_changed(self, root: Path, files: tuple[Path, ...]) -> None:
        """Files under ``root``, a static route's folder, changed: open pages swap the
        stylesheets among them in place, or reload for anything else. Nothing before
        ``start()``."""
        if self._proxy is not None:
            self._proxy.static_changed(root, files)

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
