"""What each CLI command does, in terms of the package; ``cli.py`` only parses and maps errors."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.errors import TrustError
from devstack.launch import UpOptions, prepare
from devstack.manifest import loader as manifest
from devstack.run.lock import live_record
from devstack.run.output import Printer, logging_to

if TYPE_CHECKING:
    from devstack.control.client import Stack

FOLLOW_POLL_SECONDS = 0.1


def _load(args: argparse.Namespace) -> manifest.LoadResult:
    result = manifest.load(args.file)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return result


def up(args: argparse.Namespace) -> int:
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
    from devstack.control.client import Stack

    spec = _load(args).spec
    return Stack(spec.state_dir, spec.manifest_path)


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
