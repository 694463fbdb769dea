"""Services call a peer through the proxy over HTTPS with nothing configured by hand: devstack's
environment points Python (``SSL_CERT_FILE``) and Node (``NODE_EXTRA_CA_CERTS``) at its CA, and
``DEVSTACK_URL`` at the proxy, on the free port ``proxy.port: 0`` picked."""

from __future__ import annotations

import json
import re
import shutil
import ssl
import urllib.request
from pathlib import Path

import pytest

from devstack.tls.ca import client_context
from tests.e2e.conftest import DevstackRunner

PEER = """\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"peer saw {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
"""

PYTHON_CLIENT = """\
import json, os, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = os.environ["DEVSTACK_URL"] + "/peer/from-python"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                result = {"url": url, "status": answer.status, "body": answer.read().decode()}
        except Exception as exc:
            result = {"url": url, "error": repr(exc)}
        body = json.dumps(result).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
"""

NODE_CLIENT = """\
const http = require("node:http");
http.createServer(async (request, response) => {
  const url = process.env.DEVSTACK_URL + "/peer/from-node";
  let result;
  try {
    const answer = await fetch(url);
    result = { url, status: answer.status, body: await answer.text() };
  } catch (error) {
    result = { url, error: String(error && (error.cause || error)) };
  }
  response.writeHead(200, { "Content-Type": "application/json" });
  response.end(JSON.stringify(result));
}).listen(Number(process.env.PORT), process.env.HOST);
"""

MANIFEST = """\
proxy:
  port: 0
services:
  peer:
    command: python peer.py
  python-client:
    command: python client.py
{node}
routes:
  - path: /peer
    service: peer
    strip_prefix: true
  - path: /python
    service: python-client
  - path: /node
    service: node-client
"""


def fetch_json(url: str, context: ssl.SSLContext) -> dict[str, object]:
    with urllib.request.urlopen(url, context=context, timeout=30) as answer:
        result: dict[str, object] = json.loads(answer.read())
    return result


@pytest.fixture
def stack(devstack: DevstackRunner, tmp_path: Path) -> tuple[int, bool]:
    """The stack up: the proxy's port, and whether the Node service is part of it."""
    node = shutil.which("node") is not None
    (tmp_path / "peer.py").write_text(PEER)
    (tmp_path / "client.py").write_text(PYTHON_CLIENT)
    (tmp_path / "client.js").write_text(NODE_CLIENT)
    node_service = "  node-client:\n    command: node client.js\n" if node else ""
    (tmp_path / "devstack.yaml").write_text(MANIFEST.format(node=node_service))
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"):
        devstack.env.pop(name, None)
    run = devstack.start("up")
    out = run.wait_for("service(s) up", timeout=60)
    match = re.search(r"proxy listening on https://localhost:(\d+)", out)
    assert match, out
    return int(match.group(1)), node


def test_a_python_service_calls_its_peer_through_the_proxy(stack: tuple[int, bool]) -> None:
    port, _ = stack
    assert port != 0
    result = fetch_json(f"https://localhost:{port}/python/", client_context())
    assert result == {
        "url": f"https://localhost:{port}/peer/from-python",
        "status": 200,
        "body": "peer saw /from-python",
    }


def test_a_node_service_calls_its_peer_through_the_proxy(stack: tuple[int, bool]) -> None:
    port, node = stack
    if not node:
        pytest.skip("node is not installed")
    result = fetch_json(f"https://localhost:{port}/node/", client_context())
    assert result == {
        "url": f"https://localhost:{port}/peer/from-node",
        "status": 200,
        "body": "peer saw /from-node",
    }
