"""Real Caddy reads every Caddyfile `devstack export caddy` writes: `caddy adapt --validate`
on the export of every manifest the tests and examples hold, with and without a domain, and
Caddy's own JSON keeps devstack's route order."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devstack.export.document import joined
from devstack.export.formats import render
from devstack.export.options import ExportOptions
from tests.unit.export_manifests import MANIFESTS, load_manifest

CADDY = shutil.which("caddy") or "caddy"

pytestmark = pytest.mark.skipif(shutil.which("caddy") is None,
                                reason="needs Caddy (Debian's caddy)")

ADAPT_SECONDS = 30


def adapt(caddyfile: str, folder: Path) -> dict[str, Any]:
    """Caddy's JSON for ``caddyfile``, after Caddy validated it (modules loaded, provisioned)."""
    path = folder / "Caddyfile"
    path.write_text(caddyfile)
    done = subprocess.run(
        [CADDY, "adapt", "--config", str(path), "--adapter", "caddyfile", "--validate"],
        capture_output=True, text=True, timeout=ADAPT_SECONDS, check=False,
        env={"HOME": str(folder), "XDG_DATA_HOME": str(folder / "data"),
             "XDG_CONFIG_HOME": str(folder / "config")},
    )
    assert done.returncode == 0, f"caddy refused the export:\n{done.stderr}\n{caddyfile}"
    assert "not formatted" not in done.stderr, done.stderr
    config: dict[str, Any] = json.loads(done.stdout.splitlines()[0])
    return config


@pytest.mark.parametrize("domain", [None, "example.com", "localhost:8443"])
@pytest.mark.parametrize("name", list(MANIFESTS))
def test_caddy_accepts_every_export(name: str, domain: str | None, tmp_path: Path) -> None:
    spec = load_manifest(name, tmp_path)
    text = joined(render("caddy", spec, ExportOptions(domain=domain, root="/srv/app")))
    adapt(text, tmp_path)


def test_caddy_keeps_the_route_order_in_its_own_json(tmp_path: Path) -> None:
    spec = load_manifest("examples/devstack.yaml", tmp_path)
    config = adapt(joined(render("caddy", spec, ExportOptions(domain="example.com"))), tmp_path)
    main = next(route for route in config["apps"]["http"]["servers"]["srv0"]["routes"]
                if route["match"] == [{"host": ["example.com"]}])
    routes = main["handle"][0]["routes"][0]["handle"][0]["routes"]
    assert [r.get("match") for r in routes] == [
        [{"path": ["/startup/*"]}], [{"path": ["/startup"]}],
        [{"path": ["/api", "/api/*"]}], None,
    ]
