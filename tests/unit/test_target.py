"""The request-target and Host rules both lanes share (devstack/proxy/target.py), as tables."""

from __future__ import annotations

import pytest

from devstack.proxy.target import (
    MAX_REQUEST_LINE_BYTES,
    BadRequest,
    BodyPace,
    check_framing,
    parse_host,
    parse_target,
)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ("/", "/"),
        ("/api/x", "/api/x"),
        ("/api/../api/admin/x", "/api/admin/x"),
        ("/api/%2e%2e/api/admin/x", "/api/admin/x"),
        ("/api/%2E%2e/admin", "/admin"),
        ("/api/admin/../../startup/x", "/startup/x"),
        ("/startup/../api/x", "/api/x"),
        ("/a/./b/.", "/a/b/"),
        ("/a/b/..", "/a/"),
        ("/a//../b", "/a/b"),
        ("/%7euser/%41", "/~user/A"),
        ("/api%2fadmin/x", "/api%2Fadmin/x"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("//docs", "/docs"),
        ("///evil.example/x", "/evil.example/x"),
    ],
)
def test_paths_are_normalized_once_for_routing_and_forwarding(raw: str, path: str) -> None:
    assert parse_target("GET", raw).path == path


@pytest.mark.parametrize(
    "raw", ["/..", "/../x", "/a/../../x", "/%2e%2e/x", "/a/%2E%2E/%2e%2e/etc/passwd"]
)
def test_a_path_climbing_above_the_root_is_refused(raw: str) -> None:
    with pytest.raises(BadRequest, match="climbs above the root") as refused:
        parse_target("GET", raw)
    assert refused.value.status == 400


@pytest.mark.parametrize("raw", ["/a%zz", "/a%2", "/a b", "/a\x00b", "/a\\b", "/a#frag"])
def test_malformed_paths_are_refused(raw: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_target("GET", raw)
    assert refused.value.status == 400


def test_the_query_is_passed_on_untouched() -> None:
    target = parse_target("GET", "/a/../b?x=%2e%2e&y=/../|")
    assert (target.path, target.query, target.path_qs) == (
        "/b",
        "x=%2e%2e&y=/../|",
        "/b?x=%2e%2e&y=/../|",
    )
    assert parse_target("GET", "/b?").query == ""
    assert parse_target("GET", "/b").query is None


def test_the_absolute_form_names_the_host_and_becomes_origin_form() -> None:
    target = parse_target("GET", "http://LocalHost:8443/api/../x?q=1")
    assert (target.host, target.path_qs) == ("localhost", "/x?q=1")
    assert parse_target("GET", "https://app.localhost").path == "/"
    assert parse_target("GET", "http://localhost?x=1").path_qs == "/?x=1"


@pytest.mark.parametrize(
    "raw", ["ftp://localhost/x", "http://user@localhost/x", "http://evil .example/", "x/y"]
)
def test_other_targets_are_refused(raw: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_target("GET", raw)
    assert refused.value.status == 400


def test_connect_is_refused_with_405_and_allow() -> None:
    with pytest.raises(BadRequest) as refused:
        parse_target("CONNECT", "evil.example:443")
    assert refused.value.status == 405
    assert refused.value.allow is not None and "GET" in refused.value.allow


def test_the_asterisk_is_for_options_alone() -> None:
    assert parse_target("OPTIONS", "*").is_asterisk
    with pytest.raises(BadRequest):
        parse_target("GET", "*")


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("localhost", "localhost"),
        ("LocalHost:8443", "localhost"),
        ("app.localhost.", "app.localhost"),
        ("127.0.0.1:1", "127.0.0.1"),
        ("[::1]:8443", "[::1]"),
        ("[::1]", "[::1]"),
        ("my_host.test", "my_host.test"),
    ],
)
def test_hosts_are_host_and_optional_port(value: str, host: str) -> None:
    assert parse_host(value) == host


@pytest.mark.parametrize(
    "value",
    [
        "",
        "localhost:8443@attacker.example",
        "attacker.example/.localhost",
        "attacker.example#.localhost",
        "localhost:8443 evil",
        "localhost:",
        "localhost:99999",
        "localhost:84a",
        "[::1",
        "[evil]:80",
        "::1",
        "-x.localhost",
        "a b",
    ],
)
def test_anything_else_in_host_is_refused(value: str) -> None:
    with pytest.raises(BadRequest, match="invalid Host header") as refused:
        parse_host(value)
    assert refused.value.status == 400


def test_a_request_line_over_the_limit_is_a_414() -> None:
    longest = "/" + "x" * (MAX_REQUEST_LINE_BYTES - len("GET / HTTP/1.1"))
    assert parse_target("GET", longest).path == longest  # "GET <target> HTTP/1.1" is the limit
    with pytest.raises(BadRequest) as refused:
        parse_target("GET", longest + "x")
    assert refused.value.status == 414


def test_http_1_0_with_transfer_encoding_is_refused() -> None:
    check_framing((1, 1), has_transfer_encoding=True)
    check_framing((1, 0), has_transfer_encoding=False)
    with pytest.raises(BadRequest) as refused:
        check_framing((1, 0), has_transfer_encoding=True)
    assert refused.value.status == 400


def test_a_body_may_pause_for_idle_seconds_and_must_keep_the_minimum_rate() -> None:
    pace = BodyPace(idle_seconds=10, min_bytes_per_second=100)
    assert pace.wait_limit(waited=0, received=0) == 10
    assert pace.wait_limit(waited=5, received=0) == 5  # the allowance is running out
    assert pace.wait_limit(waited=5, received=10_000) == 10  # fast enough: idle is the limit
    assert pace.wait_limit(waited=20, received=100) <= 0  # 5 bytes/s: too slow
