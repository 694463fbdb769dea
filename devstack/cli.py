"""The ``devstack`` command: parse arguments, call into the package, map errors to exit codes.

Exit codes: 0 success; 1 services failed or crashed; 2 invalid manifest; 3 state folder locked by
a live run; 4 a port that must not move is taken; 5 a service could not start; 6 TLS; 7 trust
store; 8 no stack is running for the manifest (status, logs, restart, stop, start, down); 130
interrupted before anything started. ``devstack run`` exits with its command's status (a death by
signal N as 128+N). See devstack.errors for the tree.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from devstack import __version__
from devstack.errors import DevstackError

EXIT_INTERRUPTED = 130


def _manifest_argument(parser: argparse.ArgumentParser, *, short: bool = True) -> None:
    """``-f/--file``; only ``--file`` where ``-f`` means follow (``logs``)."""
    parser.add_argument(
        *(("-f", "--file") if short else ("--file",)),
        type=Path,
        metavar="FILE",
        help="the manifest (default: devstack.yaml in this folder, else Procfile)",
    )


def _timeout_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="give up when services are not ready after S seconds (default: 60; implies --wait)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devstack",
        description="Run every service of a web stack locally, behind one HTTPS origin.",
    )
    parser.add_argument("--version", action="version", version=f"devstack {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="start every service and the proxy; Ctrl-C stops them")
    _manifest_argument(up)
    up.add_argument("--port", type=int, metavar="N", help="the proxy's port (overrides proxy.port)")
    up.add_argument("--no-proxy", action="store_true", help="start the services only")
    up.add_argument(
        "--no-watch", action="store_true", help="never reload on file changes (for CI)"
    )
    up.add_argument("-v", "--verbose", action="store_true", help="debug lines, one per request")
    up.add_argument(
        "-d", "--detach", action="store_true", help="run in the background; `devstack down` stops"
    )
    up.add_argument(
        "--wait", action="store_true", help="return once every service is ready (implies -d)"
    )
    _timeout_argument(up)

    run = commands.add_parser(
        "run", help="run a command against the stack (started for it unless one runs), then stop"
    )
    _manifest_argument(run)
    run.add_argument("--port", type=int, metavar="N", help="the proxy's port, if it starts one")
    _timeout_argument(run)
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command")

    check = commands.add_parser("check", help="validate the manifest without starting anything")
    _manifest_argument(check)

    ports = commands.add_parser("ports", help="each service's wanted and actual port")
    _manifest_argument(ports)

    status = commands.add_parser("status", help="the running stack's services and their state")
    _manifest_argument(status)
    status.add_argument("--json", action="store_true", help="the versioned JSON document")

    logs = commands.add_parser("logs", help="the last lines of the running stack's services")
    _manifest_argument(logs, short=False)
    logs.add_argument("names", nargs="*", metavar="NAME", help="only these services")
    logs.add_argument("-f", "--follow", action="store_true", help="print new lines as they come")
    logs.add_argument("-n", "--lines", type=int, default=20, metavar="N", help="(default: 20)")

    for name, what in (
        ("restart", "restart services of the running stack"),
        ("stop", "stop services of the running stack (they stay stopped until started)"),
        ("start", "start stopped services of the running stack again"),
    ):
        act = commands.add_parser(name, help=what)
        _manifest_argument(act)
        act.add_argument("names", nargs="+", metavar="NAME")

    down = commands.add_parser("down", help="stop the running stack; returns once all is gone")
    _manifest_argument(down)

    commands.add_parser("ca", help="print the path of devstack's CA certificate")

    trust = commands.add_parser("trust", help="install devstack's CA in the system and browsers")
    trust.add_argument("--uninstall", action="store_true", help="remove it again")
    _export_parser(commands)
    _import_parser(commands)
    return parser


EXPORT_FORMATS = ("caddy", "k8s", "compose", "systemd", "supervisord")
"""The keys of ``devstack.export.formats.FORMATS`` (not imported here: ``cli`` stays light)."""


def _assignment(what: str) -> Callable[[str], tuple[str, str]]:
    """An argparse type for ``NAME=VALUE`` options (``what`` names the value)."""

    def parse(text: str) -> tuple[str, str]:
        name, sep, value = text.partition("=")
        if not sep or not name or not value:
            raise argparse.ArgumentTypeError(f"expected NAME={what}, got {text!r}")
        return name, value

    return parse


def _export_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = commands.add_parser(
        "export", help="the manifest as a Caddyfile, Kubernetes objects, a Compose file or units"
    )
    export.add_argument("format", choices=EXPORT_FORMATS, metavar="FORMAT",
                        help=f"one of: {', '.join(EXPORT_FORMATS)}")
    _manifest_argument(export)
    export.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="write here (a folder for systemd's several units); default: stdout")
    export.add_argument("--domain", metavar="NAME",
                        help="the site's address (example.com); host routes go under it")
    export.add_argument("--upstream", type=_assignment("HOST:PORT"), action="append", default=[],
                        metavar="NAME=HOST:PORT", help="where Caddy reaches a service")
    export.add_argument("--image", type=_assignment("IMAGE"), action="append", default=[],
                        metavar="NAME=IMAGE", help="a service's image (over services.NAME.image)")
    export.add_argument("--root", metavar="DIR",
                        help="where the manifest's folder is on the target (default /srv/APP)")
    export.add_argument("--app", metavar="NAME", help="the application's name (default: the "
                        "manifest's folder's name)")
    export.add_argument("--ingress", choices=("nginx", "traefik"), default="nginx",
                        help="the Ingress controller that strips prefixes (k8s; default nginx)")
    export.add_argument("--namespace", default="default", metavar="NS",
                        help="the Kubernetes namespace (k8s; default: default)")


def _import_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    imp = commands.add_parser("import", help="a devstack.yaml from a Caddyfile's routes")
    imp.add_argument("format", choices=("caddy",), metavar="FORMAT", help="caddy")
    imp.add_argument("source", type=Path, metavar="CADDYFILE")
    imp.add_argument("-o", "--output", type=Path, default=Path("devstack.yaml"), metavar="FILE",
                     help="the manifest to write (default devstack.yaml; never overwritten; "
                     "'-': stdout)")
    imp.add_argument("--root", metavar="DIR", help="the project's folder in the Caddyfile's "
                     "paths: static folders under it become relative to the manifest")


def main(argv: Sequence[str] | None = None) -> int:
    # Start-up allocates much and frees little: no cyclic collections until `up` has its event
    # loop running (app.Stack.run turns them back on); the other commands are short.
    gc.disable()
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except DevstackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def command() -> NoReturn:
    """The ``devstack`` program (its entry point, and ``python -m devstack``): :func:`main`, then
    :func:`leave`."""
    leave(main())


def leave(code: int) -> NoReturn:
    """Exit with ``code`` without the interpreter's finalization.

    By the time :func:`main` returns, every process devstack started has stopped and every file
    it wrote is closed (the stack's printer and logs are closed in ``finally`` blocks; the event
    loop's executor has been joined). What finalization would still do is tear the loaded
    modules down object by object: 45-70 ms once the proxy's modules are loaded, after
    ``devstack run``'s command or ``devstack down`` is already done. So: flush what the logging
    module, stdout and stderr still hold, then ``os._exit``. An exception out of :func:`main` (a
    defect) never gets here: Python prints it and exits as usual."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a reader gone away (`| head`): nothing to do
            stream.flush()
    os._exit(code)


def _dispatch(args: argparse.Namespace) -> int:
    from devstack import commands

    handler = {
        "up": commands.up,
        "run": commands.run,
        "check": commands.check,
        "ports": commands.ports,
        "status": commands.status,
        "logs": commands.logs,
        "restart": commands.restart,
        "stop": commands.stop,
        "start": commands.start,
        "down": commands.down,
        "ca": commands.ca,
        "trust": commands.trust,
        "export": commands.export,
        "import": commands.import_,
    }[args.command]
    return handler(args)


if __name__ == "__main__":
    command()
