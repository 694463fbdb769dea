"""Hot reload through `devstack up`: edit a file, see the reload line and the new answer through
the proxy (an HTTP client verifying devstack's CA); a service that writes into its own watch set
is caught by the loop detector; `--no-watch` turns watching off."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp

from devstack.tls.ca import client_context
from tests.conditions import wait_until
from tests.e2e.conftest import DevstackProcess, DevstackRunner

APP = """\
import http.server, os

VERSION = {version!r}
{on_start}

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = VERSION.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

WRITES_ITS_LOG = 'open("server.log", "a").write("started\\n")'


def write_stack(folder: Path, *, watch: str = "", on_start: str = "") -> Path:
    (folder / "web").mkdir()
    (folder / "web" / "app.py").write_text(APP.format(version="one", on_start=on_start))
    (folder / "devstack.yaml").write_text(
        f"services:\n  web:\n    command: python app.py\n    cwd: web\n{watch}"
        "routes:\n  - path: /\n    service: web\n"
    )
    return folder / "web" / "app.py"


def start(devstack: DevstackRunner, *args: str) -> tuple[DevstackProcess, int, str]:
    run = devstack.start("up", "--port", "0", *args)
    out = run.wait_for("open https://localhost:")  # the summary's last line: its rows are out
    match = re.search(r"proxy listening on https://localhost:(\d+)", out)
    assert match, out
    return run, int(match.group(1)), out


def get(port: int) -> str:
    async def fetch() -> str:
        async with aiohttp.ClientSession() as session, session.get(
            f"https://localhost:{port}/", ssl=client_context(), timeout=aiohttp.ClientTimeout(10)
        ) as response:
            assert response.status == 200, await response.text()
            return await response.text()

    return asyncio.run(fetch())


def summary_row(out: str, name: str) -> list[str]:
    rows = [line.split("|", 1)[1].split() for line in out.splitlines() if "devstack |" in line]
    return next(row for row in rows if row[:1] == [name])


def test_an_edit_reloads_the_service_and_the_proxy_answers_with_the_new_code(
    devstack: DevstackRunner, tmp_path: Path
) -> None:
    app = write_stack(tmp_path, watch='    watch: ["*.py"]\n')
    run, port, out = start(devstack)
    assert summary_row(out, "web")[3] == "*.py"
    assert get(port) == "one"
    app.write_text(APP.format(version="two", on_start=""))
    out = run.wait_for("web: reloaded in")
    assert "web: reloading (app.py" in out, out
    assert get(port) == "two"
    assert run.interrupt() == 0


def test_a_service_writing_into_its_own_watch_set_is_caught_and_keeps_running(
    devstack: DevstackRunner, tmp_path: Path
) -> None:
    app = write_stack(tmp_path, on_start=WRITES_ITS_LOG)
    run, port, out = start(devstack)
    assert summary_row(out, "web")[3] == "everything"
    app.write_text(APP.format(version="two", on_start=WRITES_ITS_LOG))
    warning = ("web: server.log changes every time web starts; not reloading on it. "
               "Add it to watch_ignore (or .gitignore)")
    out = run.wait_for(warning)
    assert out.count(warning) == 1
    wait_until(lambda: get(port) == "two", message="the stack to answer with the new code")
    assert run.popen.poll() is None
    assert run.interrupt() == 0


def test_no_watch_turns_watching_off(devstack: DevstackRunner, tmp_path: Path) -> None:
    write_stack(tmp_path)
    run, _, out = start(devstack, "--no-watch")
    assert summary_row(out, "web")[3] == "off"
    assert run.interrupt() == 0


def test_edits_to_the_manifest_are_reported_and_the_stack_keeps_running(
    devstack: DevstackRunner, tmp_path: Path
) -> None:
    write_stack(tmp_path)
    run, port, _ = start(devstack)
    manifest = tmp_path / "devstack.yaml"
    manifest.write_text(manifest.read_text().replace(
        "routes:", "  jobs:\n    command: sleep 1000\nroutes:"
    ))  # fmt: skip
    run.wait_for("devstack.yaml changed: service jobs added. The running stack keeps the "
                 "configuration it started with: stop devstack and start it again to apply the "
                 "edit")
    manifest.write_text("services: [\n")
    run.wait_for("devstack.yaml changed and the manifest does not load; the stack keeps running as "
                 "it started:")
    run.wait_for("invalid YAML")
    assert get(port) == "one"  # still served, as started
    assert run.interrupt() == 0

