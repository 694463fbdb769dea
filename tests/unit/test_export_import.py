"""``devstack import caddy``: a Caddyfile's routes as a manifest; the round trip of an export
gives back the same routes, and what is not mapped is listed, never dropped silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.errors import ManifestError
from devstack.export.caddy_import import import_caddyfile
from devstack.export.document import joined
from devstack.export.formats import render
from devstack.export.options import ExportOptions
from devstack.export.sites import sites
from devstack.manifest import loader
from devstack.manifest.spec import StackSpec
from tests.unit.export_manifests import MANIFESTS, load_manifest

FOREIGN = """\
{
\temail ops@example.com
}

example.com, www.example.com {
\tencode gzip
\treverse_proxy /api/* localhost:9000
\thandle_path /docs/* {
\t\troot * /srv/site/docs
\t\tfile_server browse
\t}
\thandle {
\t\troot * /srv/site/public
\t\tfile_server
\t}
}

api.example.com {
\treverse_proxy http://backend:8000 backend2:8000 {
\t\tlb_policy first
\t}
}
"""


def routed(spec: StackSpec) -> list[tuple[str | None, list[tuple[object, ...]]]]:
    """What devstack does with each host: its routes in the order they are tried."""
    return [(site.host, [(r.prefix, r.service, r.static, r.strips) for r in site.routes])
            for site in sites(spec)]


@pytest.mark.parametrize("name", list(MANIFESTS))
def test_import_of_an_export_gives_back_the_same_routes(name: str, tmp_path: Path) -> None:
    spec = load_manifest(name, tmp_path)
    root = "/srv/project"
    exported = joined(render("caddy", spec, ExportOptions(root=root)))
    result = import_caddyfile(exported, Path("Caddyfile"), root=root)
    assert result.unmapped == ()
    again = loader.load_text(result.manifest, spec.root / "devstack.imported.yaml").spec
    assert routed(again) == routed(spec)
    for service in again.services.values():
        assert service.port == spec.services[service.name].port or spec.services[
            service.name].port is None


def test_import_maps_the_subset_and_lists_the_rest() -> None:
    result = import_caddyfile(FOREIGN, Path("Caddyfile"), root="/srv/site")
    routes = {(r.host, r.path): (r.service, r.static, r.strip_prefix) for r in result.routes}
    assert routes == {
        (None, "/api"): ("api", None, False),
        (None, "/docs"): (None, "docs", False),
        (None, "/"): (None, "public", False),
        ("api.localhost", "/"): ("backend", None, False),
    }
    assert result.services == {"api": "localhost:9000", "backend": "backend:8000"}
    unmapped = "\n".join(result.unmapped)
    for expected in ("Caddyfile:1: {...} (global options): not mapped",
                     "Caddyfile:5: example.com, www.example.com {...}: not mapped (only its "
                     "first address (example.com) is read)",
                     "Caddyfile:6: encode gzip: not mapped",
                     "Caddyfile:10: file_server browse: not mapped",
                     "Caddyfile:19: reverse_proxy http://backend:8000 backend2:8000 {...}: not "
                     "mapped (only its first upstream (http://backend:8000) is used)",
                     "Caddyfile:20: lb_policy first: not mapped"):
        assert expected in unmapped
    assert len(result.unmapped) == 6
    for line in result.unmapped:
        assert f"#   {line}" in result.manifest


def test_a_static_handle_that_keeps_its_prefix_serves_that_folder_under_root() -> None:
    text = "example.com {\n\thandle /files/* {\n\t\troot * /srv/site\n\t\tfile_server\n\t}\n}\n"
    [route] = import_caddyfile(text, Path("Caddyfile"), root="/srv/site").routes
    assert (route.path, route.static) == ("/files", "files")


def test_the_imported_manifest_loads_with_placeholder_services(tmp_path: Path) -> None:
    for folder in ("docs", "public"):
        (tmp_path / folder).mkdir()
    result = import_caddyfile(FOREIGN, Path("Caddyfile"), root="/srv/site")
    spec = loader.load_text(result.manifest, tmp_path / "devstack.yaml").spec
    assert spec.services["api"].port == 9000
    assert spec.services["backend"].port is None
    assert "still to be written" in spec.services["backend"].command


@pytest.mark.parametrize("text, line, message", [
    ("example.com {\n\treverse_proxy x:1\n", 1, "this '{' is never closed"),
    ("example.com {\n}\n}\n", 3, "'}' closes no block"),
    ('example.com {\n\trespond "open\n}\n', 2, "quote is never closed"),
    ("# nothing here\n", None, "no site block"),
])
def test_caddyfile_syntax_errors_name_the_line(text: str, line: int | None,
                                                message: str) -> None:
    with pytest.raises(ManifestError, match=message) as caught:
        import_caddyfile(text, Path("Caddyfile"))
    assert caught.value.line == line
    assert str(caught.value).startswith("Caddyfile")
