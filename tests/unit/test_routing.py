"""Route resolution as a table: (routes, host, path) -> where it goes. Pure, no I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.manifest.spec import ProxySpec, RouteSpec, ServiceSpec, StackSpec
from devstack.proxy.routing import (
    RouteTable,
    certificate_hosts,
    is_allowed_host,
    normalize_host,
    normalize_prefix,
)
from devstack.proxy.target import BadRequest

ROOT = Path("/stack")


def spec(*routes: RouteSpec, services: tuple[str, ...] = ("web", "api", "startup"),
         hosts: tuple[str, ...] = ()) -> StackSpec:  # fmt: skip
    return StackSpec(
        manifest_path=ROOT / "devstack.yaml",
        services={n: ServiceSpec(name=n, command="true", cwd=ROOT) for n in services},
        routes=routes,
        proxy=ProxySpec(hosts=hosts),
    )


EXAMPLE = spec(
    RouteSpec(path="/", static=Path("simon/public")),
    RouteSpec(path="/api", service="api"),
    RouteSpec(path="/api/admin/", service="web"),
    RouteSpec(path="/startup", service="startup", strip_prefix=True),
    RouteSpec(host="startup.localhost", service="startup"),
    RouteSpec(host="Docs.Localhost", path="/v2", service="web"),
)

# host, path -> (service or static root, path sent on, X-Forwarded-Prefix)
CASES = [
    ("localhost:8080", "/", (ROOT / "simon/public", "/", None)),
    ("localhost:8080", "/index.html", (ROOT / "simon/public", "/index.html", None)),
    ("localhost:8080", "/api", ("api", "/api", None)),
    ("localhost:8080", "/api/", ("api", "/api/", None)),
    ("localhost:8080", "/api/scores", ("api", "/api/scores", None)),
    ("localhost:8080", "/apix", (ROOT / "simon/public", "/apix", None)),
    ("localhost:8080", "/api/admin", ("web", "/api/admin", None)),
    ("localhost:8080", "/api/admin/users", ("web", "/api/admin/users", None)),
    ("localhost:8080", "/api/administrator", ("api", "/api/administrator", None)),
    ("localhost:8080", "/startup", ("startup", "/", "/startup")),
    ("localhost:8080", "/startup/", ("startup", "/", "/startup")),
    ("localhost:8080", "/startup/api/ideas", ("startup", "/api/ideas", "/startup")),
    ("localhost:8080", "/startupx", (ROOT / "simon/public", "/startupx", None)),
    ("startup.localhost:8080", "/api/scores", ("startup", "/api/scores", None)),
    ("STARTUP.localhost.", "/", ("startup", "/", None)),
    ("docs.localhost:8443", "/v2/page", ("web", "/v2/page", None)),
    ("docs.localhost:8443", "/v1", (ROOT / "simon/public", "/v1", None)),
    ("api.localhost", "/anything", ("api", "/anything", None)),
    ("127.0.0.1:8080", "/api/x", ("api", "/api/x", None)),
    ("[::1]:8080", "/startup/y", ("startup", "/y", "/startup")),
]


@pytest.mark.parametrize(("host", "path", "expected"), CASES)
def test_resolve(host: str, path: str, expected: tuple[object, str, str | None]) -> None:
    table = RouteTable.from_spec(EXAMPLE)
    match = table.resolve(host, path)
    assert match is not None
    where = match.target.service or match.target.static
    assert (where, match.path, match.stripped_prefix) == expected


def test_nothing_matches_without_a_root_route() -> None:
    table = RouteTable.from_spec(spec(RouteSpec(path="/api", service="api")))
    assert table.resolve("localhost", "/") is None
    assert table.resolve("localhost", "/apix") is None


def test_file_order_does_not_matter() -> None:
    routes = [
        RouteSpec(path="/a", service="web"),
        RouteSpec(path="/a/b/c", service="startup"),
        RouteSpec(path="/a/b", service="api"),
    ]
    for order in (routes, routes[::-1], [routes[1], routes[0], routes[2]]):
        table = RouteTable.from_spec(spec(*order))
        matches = [table.resolve("localhost", p) for p in ("/a/x", "/a/b/x", "/a/b/c", "/b")]
        found = [m.target.service if m else None for m in matches]
        assert found == ["web", "api", "startup", None]


def test_a_manifest_route_beats_the_implicit_name_route_on_the_same_host() -> None:
    table = RouteTable.from_spec(spec(RouteSpec(host="api.localhost", service="web")))
    match = table.resolve("api.localhost", "/")
    assert match is not None and match.target.service == "web"


@pytest.mark.parametrize(
    ("services", "default"), [(("api", "web"), "web"), (("worker", "api"), "worker")]
)
def test_without_routes_every_service_has_its_host_and_web_or_the_first_has_root(
    services: tuple[str, ...], default: str
) -> None:
    table = RouteTable.from_spec(spec(services=services))
    for name in services:
        match = table.resolve(f"{name}.localhost:8080", "/x")
        assert match is not None and match.target.service == name
    match = table.resolve("localhost:8080", "/anything")
    assert match is not None and match.target.service == default
    assert match.path == "/anything"


def test_describe_lists_routes_in_the_order_they_are_tried() -> None:
    described = RouteTable.from_spec(EXAMPLE).describe()
    assert described[0]["host"] == "docs.localhost"
    paths = [d["path"] for d in described if d["host"] is None]
    assert paths == ["/api/admin", "/startup", "/api", "/"]
    assert {"host": None, "path": "/api", "target": "service api"}.items() <= described[
        [d["path"] for d in described].index("/api")
    ].items()


@pytest.mark.parametrize(
    ("host", "normal"),
    [
        ("Example.LOCALHOST:8443", "example.localhost"),
        ("localhost.", "localhost"),
        ("[::1]:8080", "[::1]"),
        ("[::1]", "[::1]"),
        ("::1", "[::1]"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("", ""),
    ],
)
def test_normalize_host(host: str, normal: str) -> None:
    assert normalize_host(host) == normal


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost", True),
        ("localhost:8080", True),
        ("LOCALHOST", True),
        ("anything.localhost:1", True),
        ("a.b.localhost", True),
        ("127.0.0.1:8080", True),
        ("[::1]:8080", True),
        ("startup.localhost", True),
        ("myapp.test", True),
        ("MyApp.Test:8443", True),
        ("evil.example", False),
        ("localhost.evil.example", False),
        ("evil-localhost", False),
        ("127.0.0.2", False),
        ("0.0.0.0", False),
        ("", False),
    ],
)
def test_is_allowed_host(host: str, allowed: bool) -> None:
    table = RouteTable.from_spec(spec(hosts=("myapp.test",)))
    assert is_allowed_host(host, table) is allowed


def test_route_hosts_are_allowed() -> None:
    table = RouteTable.from_spec(spec(RouteSpec(host="shop.test", service="web")))
    assert is_allowed_host("shop.test:8443", table)


def test_certificate_hosts() -> None:
    stack = spec(RouteSpec(host="Shop.Test", service="web"), hosts=("myapp.test", "web.localhost"))
    assert certificate_hosts(stack) == [
        "localhost", "127.0.0.1", "::1",
        "web.localhost", "api.localhost", "startup.localhost",
        "shop.test", "myapp.test",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("prefix", "normal"),
    [("/api/", "/api"), ("api", "/api"), ("/Café", "/Caf%C3%A9"), ("/a%2fb", "/a%2Fb"),
     ("/%7euser", "/~user"), ("/a/./b/../c", "/a/c"), (None, "/")],
)  # fmt: skip
def test_manifest_prefixes_take_the_form_paths_are_matched_in(prefix: str, normal: str) -> None:
    assert normalize_prefix(prefix) == normal


def test_route_checks_target_and_host_then_resolves() -> None:
    table = RouteTable.from_spec(EXAMPLE)
    routed = table.route("GET", "/startup/../api/admin/./x?q=1", "LocalHost:8080")
    assert routed.match is not None and routed.match.target.service == "web"
    assert (routed.host, routed.upstream_path) == ("localhost", "/api/admin/x?q=1")
    stripped = table.route("GET", "/startup/%7e/a%2fb", "localhost")
    assert stripped.upstream_path == "/~/a%2Fb"
    absolute = table.route("GET", "http://startup.localhost:8080/x", "localhost")
    assert absolute.host == "startup.localhost" and absolute.upstream_path == "/x"
    assert not table.route("GET", "http://evil.example/x", "localhost").is_allowed
    assert not table.route("GET", "/x", "evil.example").is_allowed
    star = table.route("OPTIONS", "*", "localhost")
    assert star.target.is_asterisk and star.match is None


@pytest.mark.parametrize(
    ("method", "target", "host", "status"),
    [
        ("GET", "/x", None, 400),
        ("GET", "/x", "localhost@evil.example", 400),
        ("GET", "/../x", "localhost", 400),
        ("CONNECT", "evil.example:443", "evil.example:443", 405),
    ],
)
def test_route_refuses_what_the_proxy_does_not_take(
    method: str, target: str, host: str | None, status: int
) -> None:
    with pytest.raises(BadRequest) as refused:
        RouteTable.from_spec(EXAMPLE).route(method, target, host)
    assert refused.value.status == status
