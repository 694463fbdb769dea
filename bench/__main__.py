"""``python -m bench``: parse the options, run the sections, print one table per section."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from bench import ci, profile, proxy, reload, soak, static, supervise
from bench.errors import BenchError
from bench.launcher import Launcher
from bench.report import Table

logger = logging.getLogger("bench")

EXIT_OK = 0
EXIT_TARGETS_MISSED = 1
TOOLS = {
    "supervisor": (("honcho", "pip install honcho"),),
    "profile": (
        ("py-spy", "pip install py-spy"),
        ("wrk", "apt-get install wrk"),
        ("caddy", "apt-get install caddy"),
        ("curl", "apt-get install curl"),
    ),
    "proxy": (
        ("caddy", "apt-get install caddy"),
        ("nginx", "apt-get install nginx-light"),
        ("wrk", "apt-get install wrk"),
        ("curl", "apt-get install curl"),
    ),
    "static": (
        ("caddy", "apt-get install caddy"),
        ("wrk", "apt-get install wrk"),
        ("curl", "apt-get install curl"),
    ),
    "reload": (
        ("watchfiles", "pip install watchfiles"),
        ("caddy", "apt-get install caddy"),
        ("wrk", "apt-get install wrk"),
        ("curl", "apt-get install curl"),
    ),
    "ci": (("node", "apt-get install nodejs"),),
    "soak": (),
}
PYTHON_MODULES = ("honcho", "watchfiles")
"""Tools run as ``python -m NAME`` on the bench's interpreter, looked for as modules."""
SECTIONS = ("supervisor", "proxy", "reload", "static", "ci", "soak")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark devstack against honcho (supervisor), Caddy (proxy), "
        "watchfiles' CLI behind Caddy (reload) and Caddy's file_server (static), with ratios "
        "against anchors measured in the same run; devstack run around a command (ci); and a "
        "soak: mixed traffic while a service is edited, restarted and killed (soak).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer and shorter rounds (and a 30 s soak)",
    )
    parser.add_argument(
        "--only", choices=SECTIONS, help="run one section instead of all of them"
    )
    parser.add_argument(
        "--soak-seconds",
        type=_positive_seconds,
        metavar="SECONDS",
        help=f"how long the soak faults its target under traffic (default "
        f"{soak.FULL.seconds:g}, {soak.QUICK.seconds:g} with --quick)",
    )
    parser.add_argument(
        "--soak-seed",
        type=int,
        metavar="N",
        help="the soak's seed (its fault and request draws); default: a random one, printed",
    )
    parser.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=10,
        metavar="SECONDS",
        help="instead of benchmarking, sample devstack's proxy with py-spy under wrk -c50 "
        "(default 10 s) and print where its time goes",
    )
    parser.add_argument(
        "--profile-output", type=Path, metavar="FILE", help="keep py-spy's raw stacks here"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug lines from the bench")
    return parser


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text}")
    return value


def check_tools(sections: Sequence[str]) -> None:
    """Fail before anything starts when a contender or client is missing."""
    missing = []
    for section in sections:
        for tool, install in TOOLS[section]:
            found = (
                _python_module_exists(tool)
                if tool in PYTHON_MODULES
                else shutil.which(tool) is not None
            )
            if not found:
                missing.append(f"{tool} ({install})")
    if missing:
        raise BenchError(f"missing: {', '.join(missing)}; see bench/README.md")


def _python_module_exists(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def machine_line() -> str:
    versions = [f"{os.cpu_count()} CPU(s)", f"Python {sys.version.split()[0]}"]
    for argv in (["caddy", "version"], ["nginx", "-v"], ["wrk", "-v"]):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        words = (done.stdout + done.stderr).split()
        version = next((w for w in words if any(c.isdigit() for c in w)), "?")
        versions.append(f"{argv[0]} {version.rsplit('/', 1)[-1]}")
    return "machine: " + ", ".join(versions)


def byte_compile_devstack() -> None:
    """Compile devstack's modules as a regular (non-editable) install does, so that start-up is
    measured as users get it and as honcho (installed, compiled) is measured; an editable
    checkout with PYTHONDONTWRITEBYTECODE set would otherwise compile every module on every
    start."""
    import compileall

    import devstack

    compileall.compile_dir(Path(devstack.__file__).parent, quiet=1)


def run(sections: Sequence[str], args: argparse.Namespace) -> list[Table]:
    """Run each section in one temporary folder and print its table as soon as it is done."""
    byte_compile_devstack()
    tables = []
    with tempfile.TemporaryDirectory(prefix="devstack-bench-") as tmp:
        folder = Path(tmp)
        # Traversable but not listable by others: nginx workers run as "nobody" under root.
        folder.chmod(0o711)
        with Launcher(folder) as launcher:
            for section in sections:
                began = time.monotonic()
                if section == "profile":
                    found = profile.run(
                        launcher, folder / "profile", args.profile, args.profile_output
                    )
                    print(found.render() + "\n", flush=True)
                    continue
                if section == "supervisor":
                    settings = supervise.QUICK if args.quick else supervise.FULL
                    table = supervise.run(launcher, folder / "supervisor", settings)
                elif section == "proxy":
                    proxy_settings = proxy.QUICK if args.quick else proxy.FULL
                    table = proxy.run(launcher, folder / "proxy", proxy_settings)
                elif section == "ci":
                    ci_settings = ci.QUICK if args.quick else ci.FULL
                    table = ci.run(launcher, folder / "ci", ci_settings)
                elif section == "soak":
                    soak_settings = soak.QUICK if args.quick else soak.FULL
                    if args.soak_seconds is not None:
                        soak_settings = dataclasses.replace(
                            soak_settings, seconds=args.soak_seconds
                        )
                    table = soak.run(
                        launcher, folder / "soak", soak_settings, seed=args.soak_seed
                    )
                elif section == "static":
                    static_settings = static.QUICK if args.quick else static.FULL
                    table = static.run(launcher, folder / "static", static_settings)
                else:
                    reload_settings = reload.QUICK if args.quick else reload.FULL
                    table = reload.run(launcher, folder / "reload", reload_settings)
                logger.info("%s section took %.0f s", section, time.monotonic() - began)
                print(table.render() + "\n", flush=True)
                tables.append(table)
    return tables


def _interrupt_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the launcher, which stops everything


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="bench: %(message)s",
        stream=sys.stderr,
    )
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    if args.profile is not None:
        sections = ["profile"]
    else:
        sections = [args.only] if args.only else list(SECTIONS)
    try:
        check_tools(sections)
        print(machine_line() + "\n", flush=True)
        tables = run(sections, args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; every process the bench started was stopped", file=sys.stderr)
        return 130
    if not tables:
        return EXIT_OK
    rows = [row for table in tables for row in table.rows if row.ok is not None]
    missed = [row for table in tables for row in table.missed]
    print(f"{len(rows) - len(missed)} of {len(rows)} targets met")
    for row in missed:
        print(f"  missed: {row.metric}")
    return EXIT_TARGETS_MISSED if missed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
