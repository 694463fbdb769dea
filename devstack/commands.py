"""What each CLI command does, in terms of the package; ``cli.py`` only parses and maps errors."""

from __future__ import annotations

import argparse
import sys
import time

from devstack.errors import TrustError
from devstack.launch import UpOptions, prepare
from devstack.manifest import loader as manifest
from devstack.run.lock import live_record
from devstack.run.output import Printer, logging_to


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


def ports(args: argparse.Namespace) -> int:
    from devstack.run.ports import assign_ports

    spec = _load(args).spec
    record = live_record(spec.state_dir)
    if record is not None and isinstance(record.get("ports"), dict):
        rows = record["ports"]
        source = f"running (pid {record.get('pid')})"
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
