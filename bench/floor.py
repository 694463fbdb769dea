"""The ci section's floor: the least a Python orchestrator does before it starts a command.

Run as a program, by the bench: ``python bench/floor.py MANIFEST PLAN CERT -- CMD...``. It reads
the manifest with PyYAML (as devstack does: libyaml's loader), spawns every service of ``PLAN``
(a JSON list of ``{"command", "cwd", "port", "health"}``, ports already chosen) with its
``PORT`` in a session of its own, loads asyncio and uvloop, listens with TLS (the ``ssl`` module,
``CERT``: a certificate and its key), polls every service every 2 ms (``GET health`` answering
2xx, else the port accepting), then runs CMD and stops the services.

No supervisor, no logs, no guardian, no control socket, no routing: what is left is Python's own
start, its standard library and the services' start-up, on the same two cores. Its overhead is
what any orchestrator written in Python pays at least. Standard library, PyYAML and uvloop only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.002


def main(argv: list[str]) -> int:
    manifest, plan_file, cert = argv[1:4]
    command = argv[argv.index("--") + 1:]
    import yaml

    yaml.load(Path(manifest).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    plan = json.loads(Path(plan_file).read_text())
    services = []
    for service in plan:
        env = dict(os.environ, PORT=str(service["port"]))
        services.append(subprocess.Popen(
            ["sh", "-c", f"exec {service['command']}"], cwd=service["cwd"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        ))  # fmt: skip
    try:
        import uvloop

        return uvloop.run(serve_then_run(plan, cert, command))
    finally:
        for process in services:
            os.killpg(process.pid, signal.SIGTERM)
        for process in services:
            process.wait()


async def serve_then_run(plan: list[dict[str, Any]], cert: str, command: list[str]) -> int:
    import asyncio
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert)
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0, ssl=context)
    try:
        await asyncio.gather(*(ready(s["port"], s["health"]) for s in plan))
        process = await asyncio.create_subprocess_exec(*command)
        return await process.wait()
    finally:
        server.close()


async def ready(port: int, health: str | None) -> None:
    import asyncio

    head = f"GET {health} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if health is None:
                writer.close()
                return
            writer.write(head)
            status = (await reader.readline()).split()[1:2]
            writer.close()
            if status and status[0].startswith(b"2"):
                return
        except OSError:
            pass
        await asyncio.sleep(POLL_SECONDS)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
