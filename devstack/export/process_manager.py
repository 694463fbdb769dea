"""systemd units and a supervisord file, written by honcho's own exporters and templates (the
files ``honcho export`` writes for a Procfile), from the manifest's services.

What is added to what honcho maps (a command and an environment per process): each service's
``cwd`` (as ``cd DIR && command``, under ``--root``), its environment as under devstack
(``HOST``, ``PYTHONUNBUFFERED``, ``env`` and its env files, ``PORT``, peers' addresses,
``DEVSTACK_URL`` with ``--domain``), and the quoting its template leaves out (a ``'``, a ``\\``
or a ``%`` in a command). What the templates do not say: ``depends_on`` (every unit starts
with the target), ``health``, ``restart`` (always restarted) and ``stop_timeout_seconds``
(systemd's and supervisord's defaults).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from typing import Any

from honcho.environ import ProcessParams
from honcho.export.supervisord import Export as SupervisordExport
from honcho.export.systemd import Export as SystemdExport

from devstack.export.document import Document
from devstack.export.options import (
    ExportOptions,
    app_name,
    check_names,
    loopback_environment,
    on_target,
    target_root,
)
from devstack.manifest.spec import StackSpec

SHELL = "/bin/sh"
"""honcho's default shell."""


def render_systemd(spec: StackSpec, options: ExportOptions) -> tuple[Document, ...]:
    return _render(spec, options, SystemdExport(), _systemd_quoted)


def render_supervisord(spec: StackSpec, options: ExportOptions) -> tuple[Document, ...]:
    return _render(spec, options, SupervisordExport(), _supervisord_quoted)


def _render(spec: StackSpec, options: ExportOptions, exporter: SystemdExport |
            SupervisordExport, quoted: Callable[[str], str]) -> tuple[Document, ...]:
    check_names(spec, options)
    app = app_name(spec, options)
    root = target_root(spec, options)
    processes = []
    for service in spec.services.values():
        command = service.command
        cwd = on_target(spec, options, service.cwd)
        if cwd != root:
            command = f"cd {shlex.quote(str(cwd))} && {command}"
        env = loopback_environment(spec, service, options)
        processes.append(ProcessParams(service.name, quoted(command), False, env))
    context = {"app": app, "app_root": str(root), "log": f"/var/log/{app}", "shell": SHELL,
               "user": app}
    files: Iterable[Any] = exporter.render(processes, context)
    return tuple(Document(file.name, _ended(file.content)) for file in files)


def _systemd_quoted(command: str) -> str:
    """For ``ExecStart=... '{{ cmd }}'``: systemd unquotes with C escapes and reads ``%`` as a
    specifier."""
    return command.replace("\\", "\\\\").replace("'", "\\'").replace("%", "%%")


def _supervisord_quoted(command: str) -> str:
    """For ``command=... '{{ cmd }}'`` (the template doubles ``%``): supervisord splits it
    as a POSIX shell would."""
    return command.replace("'", "'\"'\"'")


def _ended(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"
