"""``.env`` files and the environment each service's process starts with.

Everything here builds plain dicts; nothing reads or writes ``os.environ``. The caller passes the
parent's environment in as ``base``.

A service's environment, from weakest to strongest:

1. ``base``: the environment devstack itself was started with;
2. ``HOST=127.0.0.1`` and ``PYTHONUNBUFFERED=1`` (so Python children print as they go);
   then ``trust``: the variables that make the common runtimes trust devstack's CA (built by
   ``devstack.tls.bundle``; replacing any devstack itself was started with);
3. the service's ``env`` (its ``env_file`` files merged under its ``env:`` mapping at load time),
   so a service may set ``HOST`` or ``PYTHONUNBUFFERED`` itself;
4. ``PORT``: the port the service got, unless its ``env`` sets ``PORT`` explicitly;
5. for every service in the stack, ``DEVSTACK_<NAME>_PORT`` and
   ``DEVSTACK_<NAME>_URL=http://127.0.0.1:<port>``, where ``<NAME>`` is the service name
   upper-cased with every character outside ``[A-Z0-9]`` turned into ``_``
   (see :func:`service_variable_prefix`), and ``DEVSTACK_URL``: the proxy's origin
   (``proxy_url``), when the proxy runs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from honcho import environ

from devstack.errors import ManifestError
from devstack.manifest.spec import ServiceSpec

logger = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"
PROXY_URL_VARIABLE = "DEVSTACK_URL"
_NOT_VARIABLE_CHARACTER = re.compile(r"[^A-Z0-9]")
_NOTHING: Mapping[str, str] = MappingProxyType({})


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``KEY=value`` file the way honcho (and foreman) do.

    Raises :class:`ManifestError` naming ``path`` when it cannot be read or is not UTF-8 text.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(
            f"cannot read environment file: {exc.strerror or exc}", path=path
        ) from exc
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"environment file is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start})",
            path=path,
        ) from exc
    values: dict[str, str] = environ.parse(text)
    return values


def service_variable_prefix(name: str) -> str:
    """``DEVSTACK_<NAME>``: the stem of the variables that tell other services where ``name``
    listens (``web-app`` -> ``DEVSTACK_WEB_APP``)."""
    return "DEVSTACK_" + _NOT_VARIABLE_CHARACTER.sub("_", name.upper())


def service_environment(
    service: ServiceSpec,
    ports: Mapping[str, int],
    base: Mapping[str, str],
    *,
    trust: Mapping[str, str] = _NOTHING,
    proxy_url: str | None = None,
) -> dict[str, str]:
    """The complete environment of ``service``'s process, given the port every service got.

    ``PORT`` is left out when ``service`` has no entry in ``ports`` (and its env sets none);
    ``DEVSTACK_URL`` when ``proxy_url`` is None (no proxy).
    """
    env = dict(base)
    env["HOST"] = LOOPBACK_HOST
    env["PYTHONUNBUFFERED"] = "1"
    env.update(trust)
    env.update(service.env)
    if "PORT" not in service.env and service.name in ports:
        env["PORT"] = str(ports[service.name])
    env.update(stack_variables(ports, proxy_url))
    return env


def stack_variables(ports: Mapping[str, int], proxy_url: str | None) -> dict[str, str]:
    """Where the stack listens (step 5 above): ``DEVSTACK_<NAME>_PORT``/``_URL`` for every
    service, and ``DEVSTACK_URL`` unless ``proxy_url`` is None. Services get them, and so do
    the commands ``devstack run`` starts."""
    variables: dict[str, str] = {}
    for name, port in ports.items():
        prefix = service_variable_prefix(name)
        variables[f"{prefix}_PORT"] = str(port)
        variables[f"{prefix}_URL"] = f"http://{LOOPBACK_HOST}:{port}"
    if proxy_url is not None:
        variables[PROXY_URL_VARIABLE] = proxy_url
    return variables
