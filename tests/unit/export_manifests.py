"""The manifests every export is checked on: the examples, the e2e tests' small stack, and a few
written here to reach every route kind (nested and stripped prefixes, host routes with their own
paths, static mounts, a worker without a port, shell commands, quotes, spaces and percent signs).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from devstack.manifest import loader
from devstack.manifest.spec import StackSpec
from tests.e2e.conftest import WEB_AND_WORKER

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

EVERY_ROUTE_KIND = """\
services:
  web:
    command: python -m http.server $PORT --bind 127.0.0.1
    port: 8000
    health: /
    image: example/web:1
  api:
    command: ./run-api --listen "127.0.0.1:$PORT" && echo '100% done'
    cwd: api
    port: 9000
    depends_on: [db]
    restart: always
    health: {path: /healthz, interval_seconds: 2, timeout_seconds: 30}
    env: {MODE: "prod", GREETING: "it's $(whoami)"}
    image: example/api:1
  db:
    command: postgres -D data
    port: 5432
    restart: never
    image: postgres:16
  worker:
    command: python worker.py
    health: false
    image: example/worker:1
routes:
  - path: /
    static: public
  - path: /assets
    static: public/assets dir
  - path: /api
    service: api
  - path: /api/v2
    service: web
    strip_prefix: true
  - path: /apix
    service: web
  - path: /old site
    service: web
    strip_prefix: true
  - host: admin.localhost
    path: /tools
    service: api
    strip_prefix: true
  - host: docs.localhost
    static: docs
  - host: myapp.test
    service: web
"""

HOSTS_ONLY = """\
services:
  web:
    command: python -m http.server $PORT
    image: example/web:1
routes:
  - host: app.localhost
    path: /api
    service: web
"""

MANIFESTS = {
    "examples/devstack.yaml": None,
    "examples/Procfile": None,
    "web-and-worker": WEB_AND_WORKER,
    "every-route-kind": EVERY_ROUTE_KIND,
    "hosts-only": HOSTS_ONLY,
}
"""Name -> devstack.yaml text (``None``: the file of that name in the repository)."""


def load_manifest(name: str, tmp_path: Path) -> StackSpec:
    """The manifest ``name`` of :data:`MANIFESTS`, its folders made under ``tmp_path``."""
    text = MANIFESTS[name]
    if text is None:
        return loader.load(ROOT / name).spec
    document = yaml.safe_load(text)
    folder = tmp_path / name
    for service in document["services"].values():
        (folder / service.get("cwd", ".")).mkdir(parents=True, exist_ok=True)
    for route in document.get("routes") or []:
        if "static" in route:
            (folder / route["static"]).mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "devstack.yaml").write_text(text)
    return loader.load(folder / "devstack.yaml").spec
