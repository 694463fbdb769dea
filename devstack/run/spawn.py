"""Starting a service's command: one process in its own session, its output on a pipe.

Synchronous and light (no event loop, no asyncio import), so ``devstack up`` can start the
services that wait for nothing before its own heavier modules have loaded; everything after the
spawn (watching the exit, pumping output, stopping) is :mod:`devstack.run.process`'s.
:class:`Spawner` spawns the services of one stack, each with its environment.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devstack.errors import ServiceStartError
from devstack.manifest.env import service_environment
from devstack.manifest.spec import ServiceSpec
from devstack.run.guardian import MARK_VARIABLE, Family, Guardian, new_mark, start_time

# Anything that needs a shell to mean what it says: pipes, redirections, variables, globs, ...
_SHELL_SYNTAX = re.compile(r"[|&;<>()$`\\*?\[\]#~{}!\n]")
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_]\w*)\}|([A-Za-z_]\w*))")


def command_argv(command: str, env: Mapping[str, str] | None = None) -> list[str]:
    """Run simple commands directly (one process, signals straight to the program); anything
    else through sh. A command whose only shell syntax is ``$NAME`` / ``${NAME}`` of variables set
    in ``env`` (``python -m http.server $PORT``) has them substituted here, as sh would, and runs
    directly too."""
    sh = ["/bin/sh", "-c", command]
    if env is not None and _VARIABLE.search(command):
        return _expanded_argv(command, env) or sh
    if _SHELL_SYNTAX.search(command):
        return sh
    try:
        argv = shlex.split(command)
    except ValueError:
        return sh
    if not argv or "=" in argv[0]:  # `FOO=1 cmd` is a shell assignment
        return sh
    return argv


def _expanded_argv(command: str, env: Mapping[str, str]) -> list[str] | None:
    """The argv sh would run, or None when only sh can say (quotes, unset or multi-word
    values, any other shell syntax)."""
    if "'" in command or '"' in command or _SHELL_SYNTAX.search(_VARIABLE.sub("", command)):
        return None
    values = {}
    for match in _VARIABLE.finditer(command):
        name = match.group(1) or match.group(2)
        value = env.get(name)
        if value is None or not value or any(c.isspace() for c in value):
            return None
        values[name] = value
    argv = command.split()
    if not argv or "=" in argv[0]:
        return None
    return [_VARIABLE.sub(lambda m: values[m.group(1) or m.group(2)], arg) for arg in argv]


def resolve_executable(argv: list[str], *, cwd: Path, env: Mapping[str, str]) -> str | None:
    program = argv[0]
    if "/" in program:
        path = cwd / program
        return str(path) if os.access(path, os.X_OK) and path.is_file() else None
    return shutil.which(program, path=env.get("PATH", os.defpath))


@dataclass
class Spawned:
    """A started process whose output pipe nobody reads yet."""

    popen: subprocess.Popen[bytes]
    output_fd: int
    """The pipe's read end: the child's stdout and stderr, in order."""
    spawned_at: float
    """``time.monotonic()`` right after the spawn."""
    family: Family
    """Its process group and every process carrying its mark: what stopping it stops."""


def spawn(
    name: str,
    command: str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    guardian: Guardian | None = None,
    stop_timeout_seconds: float = 5.0,
) -> Spawned:
    """Start ``command`` in a new session (so its group can be signalled as one), its
    environment marked (so descendants that leave the group are found: see
    :mod:`devstack.run.guardian`), and register its family with the guardian;
    ServiceStartError when it cannot be executed."""
    argv = command_argv(command, env)
    executable = resolve_executable(argv, cwd=cwd, env=env)
    if executable is None:
        raise ServiceStartError(
            f"{name}: command not found: {argv[0]} (command: {command}); "
            "check the spelling, the service's cwd and PATH"
        )
    mark = new_mark()
    read_fd, write_fd = os.pipe()
    try:
        popen = subprocess.Popen(
            argv,
            executable=executable,
            cwd=cwd,
            env={**env, MARK_VARIABLE: mark},
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        os.close(read_fd)
        raise ServiceStartError(
            f"{name}: cannot run {argv[0]}: {exc.strerror} (command: {command})"
        ) from exc
    finally:
        os.close(write_fd)
    spawned_at = time.monotonic()
    family = Family(popen.pid, mark, start_time(popen.pid))
    if guardian is not None:
        guardian.register(family, stop_timeout_seconds)
    return Spawned(popen=popen, output_fd=read_fd, spawned_at=spawned_at, family=family)


class Spawner:
    """Spawns the services of one stack: each with its environment (devstack's own, taken once,
    the port every service got, and, when the proxy runs, the variables trusting devstack's CA
    and its URL), its group registered with the guardian."""

    def __init__(
        self,
        ports: Mapping[str, int],
        *,
        guardian: Guardian | None = None,
        trust: Mapping[str, str] | None = None,
        proxy_url: str | None = None,
    ) -> None:
        self.guardian = guardian
        self._ports = dict(ports)
        self._base_env = dict(os.environ)
        self._trust = dict(trust or {})
        self._proxy_url = proxy_url

    def port_of(self, name: str) -> int | None:
        """The port service ``name`` got at the start of the run."""
        return self._ports.get(name)

    def spawn(self, service: ServiceSpec) -> Spawned:
        """Start ``service``'s command; ServiceStartError when it cannot be executed."""
        return self._spawn(service, self._ports)

    def spawn_on(self, service: ServiceSpec, port: int) -> Spawned:
        """Start ``service``'s command with ``PORT`` (and its own ``DEVSTACK_<NAME>_PORT``) set to
        ``port`` instead of the port it got at the start (a blue-green reload). Its peers'
        environments are not changed: they keep the port the service got at the start."""
        return self._spawn(service, {**self._ports, service.name: port})

    def _spawn(self, service: ServiceSpec, ports: Mapping[str, int]) -> Spawned:
        return spawn(
            service.name,
            service.command,
            cwd=service.cwd,
            env=service_environment(
                service, ports, self._base_env, trust=self._trust, proxy_url=self._proxy_url
            ),
            guardian=self.guardian,
            stop_timeout_seconds=service.stop_timeout_seconds,
        )
