"""The ``devstack`` command: parse arguments, call into the package, map errors to exit codes.

Exit codes: 0 success; 1 services failed or crashed; 2 invalid manifest; 3 state folder locked by
a live run; 4 a port that must not move is taken; 5 a service could not start; 6 TLS; 7 trust
store; 8 no stack is running for the manifest (status, logs, restart, stop, start, down); 130
interrupted before anything started. ``devstack run`` exits with its command's status (a death by
signal N as 128+N). See devstack.errors for the tree.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Sequence
from pathlib import Path

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
    return parser


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
    }[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
