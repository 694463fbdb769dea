"""What each CLI command does, in terms of the package; ``cli.py`` only parses and maps errors."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devstack.errors import DevstackError, ServiceStartError, StackNotRunning, TrustError
from devstack.launch import UpOptions, prepare, proxy_enabled, trust_environment
from devstack.manifest import loader as manifest
from devstack.manifest.env import stack_variables
from devstack.run.lock import live_record
from devstack.run.output import Printer, logging_to

if TYPE_CHECKING:
    from devstack.control.client import Stack
    from devstack.control.detach import Detached
    from devstack.manifest.spec import StackSpec

FOLLOW_POLL_SECONDS = 0.1
READY_TIMEOUT_SECONDS = 60.0
"""How long ``up --wait`` and ``run`` wait for every service to be ready, unless ``--timeout``."""
EXIT_NOT_FOUND = 127


def _load(args: argparse.Namespace) -> manifest.LoadResult:
    result = manifest.load(args.file)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return result


def up(args: argparse.Namespace) -> int:
    if args.detach or args.wait or args.timeout is not None:
        return _up_detached(args)
    began = time.monotonic()
    spec = _load(args).spec
    options = UpOptions(
        proxy_port=args.port,
        proxy=not args.no_proxy,
        verbose=args.verbose,
        watch=not args.no_watch,
    )
    printer = Printer(spec.services, logs_dir=spec.state_dir / "logs")
    with logging_to(printer, verbose=options.verbose):
        try:
            launch = prepare(spec, options, printer)
            try:
                from devstack.app import run  # asyncio and the rest load while services boot

                return run(launch, printer, began=began)
            finally:
                launch.close()
        finally:
            printer.close()


def check(args: argparse.Namespace) -> int:
    result = _load(args)
    spec = result.spec
    routes = f", {len(spec.routes)} route(s)" if spec.routes else ""
    print(f"{spec.manifest_path}: ok: {len(spec.services)} service(s){routes}")
    return 0


def _stack(args: argparse.Namespace) -> Stack:
    """The stack running from the manifest, found without parsing it: a manifest broken by an
    edit in progress must not keep ``status``, ``logs`` or ``down`` from the running stack."""
    from devstack.control.client import Stack
    from devstack.manifest.spec import state_dir_of

    path = manifest.locate(args.file).absolute()
    return Stack(state_dir_of(path), path)


def status(args: argparse.Namespace) -> int:
    from devstack.control.render import status_lines

    document = _stack(args).ask("status")
    document.pop("ok")
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        for line in status_lines(document):
            print(line)
    return 0


def _act(args: argparse.Namespace) -> int:
    """``restart``, ``stop`` and ``start``: the request goes to the stack, which acts on it."""
    answer = _stack(args).ask(args.command, *args.names)
    done = {"restart": "restarting", "stop": "stopping", "start": "starting"}[args.command]
    print(f"{done}: {', '.join(answer['names'])}")
    return 0


restart = stop = start = _act


def down(args: argparse.Namespace) -> int:
    stack = _stack(args)
    count = stack.down()
    print(f"stopped {stack.manifest}: {count} process(es) gone")
    return 0


def logs(args: argparse.Namespace) -> int:
    from devstack.control.render import Follower, prefixed, tail

    stack = _stack(args)
    answer = stack.ask("logs", *args.names)
    files = {name: Path(path) for name, path in answer["logs"].items()}
    width = max(map(len, files)) if len(files) > 1 else 0
    followers = []
    for name, path in files.items():
        lines, end = tail(path, args.lines)
        for line in prefixed(name, lines, width):
            print(line)
        followers.append((name, Follower(path, end)))
    sys.stdout.flush()
    while args.follow and stack.is_live():
        for name, follower in followers:
            for line in prefixed(name, list(follower.read()), width):
                print(line, flush=True)
        time.sleep(FOLLOW_POLL_SECONDS)  # tail -f: the files are polled
    return 0


def ports(args: argparse.Namespace) -> int:
    from devstack.errors import StackNotRunning
    from devstack.run.ports import assign_ports

    stack = _stack(args)
    spec = _load(args).spec
    record = live_record(spec.state_dir) or {}
    try:
        document = stack.ask("status")
    except StackNotRunning:
        document = None
    if document is not None:
        held = record.get("ports")
        if not isinstance(held, dict):
            held = {}
        rows = {
            s["name"]: {
                "wanted": s["wanted_port"],
                "port": s["port"],
                "holder": (held.get(s["name"]) or {}).get("holder"),
            }
            for s in document["services"]
        }
        source = f"running (pid {document['stack']['pid']})"
    else:
        rows = {
            name: {
                "wanted": a.wanted,
                "port": a.port,
                "holder": str(a.holder) if a.holder else None,
            }
            for name, a in assign_ports(spec).items()
        }
        source = "not running; what `devstack up` would use now"
    table = [("service", "wanted", "actual", "note")]
    for name, row in rows.items():
        note = f"{row['wanted']} is held by {row['holder']}" if row.get("holder") else ""
        wanted = "-" if row.get("wanted") is None else str(row["wanted"])
        table.append((name, wanted, str(row["port"]), note))
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    print(f"# {spec.manifest_path}: {source}")
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False)) + "  " + r[3])
    return 0


def ca(args: argparse.Namespace) -> int:
    from devstack.tls.ca import ca_cert_path

    print(ca_cert_path())
    return 0


def trust(args: argparse.Namespace) -> int:
    from devstack.tls import trust as trust_store
    from devstack.tls.ca import load_or_create_ca

    authority = load_or_create_ca()
    report = trust_store.uninstall(authority) if args.uninstall else trust_store.install(authority)
    for line in report.lines():
        print(line)
    return 0 if report.is_complete else TrustError.exit_code


class _Gave(Exception):
    """A detached start that did not get a ready stack; ``code`` is the exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _up_arguments(args: argparse.Namespace) -> list[str]:
    """The arguments of ``up`` that the detached run gets."""
    arguments = [] if args.port is None else ["--port", str(args.port)]
    for flag in ("no_proxy", "no_watch", "verbose"):
        if getattr(args, flag, False):
            arguments.append("--" + flag.replace("_", "-"))
    return arguments


def _start(
    stack: Stack, spec: StackSpec, arguments: list[str]
) -> tuple[Detached, dict[str, Any]]:
    """Start the stack in the background; its status once it answers. :class:`_Gave` with the
    run's code when it exits first (the tail of its log printed)."""
    from devstack.control import detach

    run = detach.start(stack, arguments)
    proxy = proxy_enabled(spec, UpOptions(proxy="--no-proxy" not in arguments))
    document = detach.wait_answering(stack, run, proxy=proxy)
    if document is None:
        print(f"error: devstack exited ({run.popen.returncode}) before it was up:", file=sys.stderr)
        for line in run.log_tail():
            print(line, file=sys.stderr)
        raise _Gave(run.popen.returncode or 1)
    return run, document


def _wait_ready(stack: Stack, timeout: float, run: Detached | None) -> dict[str, Any]:
    """Every service ready: the status document. Otherwise the last lines of those that are not
    are printed, what ``run`` started is stopped, and :class:`_Gave`."""
    from devstack.control import detach

    try:
        document, waiting = detach.wait_ready(stack, timeout)
    except StackNotRunning:
        if run is None:
            raise
        code = run.popen.wait()
        print(f"error: devstack exited ({code}) before its services were ready:", file=sys.stderr)
        for line in run.log_tail():
            print(line, file=sys.stderr)
        raise _Gave(code or ServiceStartError.exit_code) from None
    if not waiting:
        return document
    print(f"error: not ready after {timeout:g}s: {', '.join(waiting)}", file=sys.stderr)
    detach.print_service_tails(stack, waiting)
    if run is not None:
        detach.stop_if_running(stack)
    raise _Gave(ServiceStartError.exit_code)


def _up_detached(args: argparse.Namespace) -> int:
    stack = _stack(args)
    try:
        run, document = _start(stack, _load(args).spec, _up_arguments(args))
        if args.wait or args.timeout is not None:
            document = _wait_ready(stack, args.timeout or READY_TIMEOUT_SECONDS, run)
    except _Gave as gave:
        return gave.code
    url = document["stack"]["proxy_url"] or "(no proxy)"
    where = "" if args.file is None else f" -f {args.file}"
    print(f"devstack is up (pid {run.popen.pid}): {url}")
    print(f"logs: {run.log}; stop it with `devstack down{where}`")
    return 0


def command_environment(document: dict[str, Any]) -> dict[str, str]:
    """The environment of a command run against the stack: the caller's, the CA trust variables
    and where the stack listens, layered as for the services (devstack.manifest.env)."""
    ports = {s["name"]: s["port"] for s in document["services"] if s["port"] is not None}
    proxy_url = document["stack"]["proxy_url"]
    env = dict(os.environ)
    if proxy_url is not None:
        env.update(trust_environment())
    env.update(stack_variables(ports, proxy_url))
    return env


def run(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise DevstackError("run: name a command: devstack run -- CMD ARGS...")
    timeout = args.timeout or READY_TIMEOUT_SECONDS
    spec = _load(args).spec
    if live_record(spec.state_dir) is not None:  # the control client loads only then
        from devstack.control.client import Stack

        stack = Stack(spec.state_dir, spec.manifest_path)
        if stack.is_live():
            return _run_against(stack, argv, timeout)
    return _run_in_process(spec, argv, timeout, args.port)


def _run_in_process(spec: StackSpec, argv: list[str], timeout: float, port: int | None) -> int:
    """The stack runs in this process, its output in ``.devstack/logs/devstack.log``, and
    stops when the command ends (:mod:`devstack.oneshot`)."""
    began = time.monotonic()
    options = UpOptions(proxy_port=port, watch=False)
    logs_dir = spec.state_dir / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    with open(logs_dir / "devstack.log", "ab") as out:
        printer = Printer(spec.services, stream=out, colour=False, logs_dir=logs_dir)
        with logging_to(printer, verbose=False):
            try:
                launch = prepare(spec, options, printer)
                try:
                    # asyncio and the rest load once the services are spawned, as for `up`
                    from devstack.app import run as run_stack
                    from devstack.oneshot import Command, OneShot

                    oneshot = OneShot(Command(argv, timeout), logs_dir)
                    return run_stack(launch, printer, began=began, oneshot=oneshot)
                finally:
                    launch.close()
            finally:
                printer.close()


def _run_against(stack: Stack, argv: list[str], timeout: float) -> int:
    """The command against the stack already running for the manifest, which keeps running."""
    from devstack.control import detach

    try:
        document = _wait_ready(stack, timeout, None)
    except _Gave as gave:
        return gave.code
    try:
        child = subprocess.Popen(argv, env=command_environment(document))
    except OSError as exc:
        print(f"error: cannot run {argv[0]}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    with _forwarding(child):
        code = detach.exit_status(child.wait())
    if code != 0:
        names = detach.troubled(stack.ask("status"))
        if names:
            detach.print_service_tails(stack, names)
    return code


@contextlib.contextmanager
def _forwarding(child: subprocess.Popen[bytes]) -> Iterator[None]:
    """While ``child`` runs, SIGTERM and SIGHUP sent to devstack go to it, and SIGINT unless
    the terminal sent it to both (see :mod:`devstack.oneshot`)."""
    from devstack.oneshot import is_terminal_foreground

    def forward(signum: int, frame: object) -> None:
        if signum != signal.SIGINT or not is_terminal_foreground():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, forward) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def export(args: argparse.Namespace) -> int:
    from devstack.export.document import joined
    from devstack.export.formats import render
    from devstack.export.options import ExportOptions, IngressController

    options = ExportOptions(
        domain=args.domain,
        upstreams=dict(args.upstream),
        images=dict(args.image),
        root=args.root,
        app=args.app,
        ingress=IngressController(args.ingress),
        namespace=args.namespace,
    )
    documents = render(args.format, _load(args).spec, options)
    if args.output is None:
        sys.stdout.write(joined(documents))
        return 0
    folder = args.output if len(documents) > 1 else None
    try:
        (folder or args.output.parent).mkdir(parents=True, exist_ok=True)
        for document in documents:
            path = folder / document.name if folder is not None else args.output
            path.write_text(document.text, encoding="utf-8")
    except OSError as exc:
        raise DevstackError(f"cannot write the export to {args.output}: "
                            f"{exc.strerror or exc}") from exc
    names = ", ".join(document.name for document in documents)
    print(f"{args.output}: {names}" if folder is not None else f"wrote {args.output}",
          file=sys.stderr)
    return 0


def import_(args: argparse.Namespace) -> int:
    from devstack.export.caddy_import import import_caddyfile

    try:
        text = args.source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise DevstackError(f"{args.source}: cannot read the Caddyfile: {reason or exc}") from exc
    result = import_caddyfile(text, args.source, root=args.root)
    for line in result.unmapped:
        print(f"warning: {line}", file=sys.stderr)
    if str(args.output) == "-":
        sys.stdout.write(result.manifest)
        return 0
    try:
        with args.output.open("x", encoding="utf-8") as file:
            file.write(result.manifest)
    except FileExistsError:
        raise DevstackError(f"{args.output} exists; devstack import never overwrites a "
                            "manifest: pass -o NEW_FILE, or -o - for stdout") from None
    except OSError as exc:
        raise DevstackError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    print(f"wrote {args.output}: {result.summary}", file=sys.stderr)
    return 0
