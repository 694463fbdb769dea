"""The proxy's own answers: error pages in HTML for browsers and JSON for API clients, and
:func:`status_for`, the one place where a failure becomes a status.

    ServiceUnavailable (crashed, failed, stopped, done)   -> 502 with the service's last lines
    ServiceUnavailable (still starting after the wait)    -> 503
    UpstreamRefused, UpstreamBroken                       -> 502
    UpstreamTimeout                                       -> 504
    ClientGone                                            -> no response, a debug line
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from devstack.proxy.failures import (
    ClientGone,
    ForwardError,
    ServiceUnavailable,
    UpstreamBroken,
    UpstreamRefused,
    UpstreamTimeout,
)
from devstack.proxy.routing import RouteTable
from devstack.status import ServiceState

if TYPE_CHECKING:  # the fast lane renders pages without aiohttp; the full proxy has it
    from aiohttp import web

_GONE_STATES = frozenset(
    {ServiceState.CRASHED, ServiceState.FAILED, ServiceState.STOPPED, ServiceState.DONE}
)

_STYLE = (
    "body{font:15px/1.5 system-ui,sans-serif;max-width:52rem;margin:3rem auto;padding:0 1rem;"
    "color:#222}h1{font-size:1.4rem}code,pre{background:#f4f4f4;border-radius:4px}"
    "pre{padding:.8rem;overflow:auto}table{border-collapse:collapse}"
    "td,th{padding:.2rem .8rem;text-align:left;border-bottom:1px solid #ddd}"
    ".muted{color:#777}"
)

JsonValue = str | int | float | bool | None | Sequence["JsonValue"] | Mapping[str, "JsonValue"]


def status_for(failure: BaseException) -> int | None:
    """The status a failure is answered with; ``None`` when nobody is left to answer."""
    match failure:
        case ClientGone():
            return None
        case ServiceUnavailable(status=status) if status.state in _GONE_STATES:
            return 502
        case ServiceUnavailable():
            return 503
        case UpstreamTimeout():
            return 504
        case UpstreamRefused() | UpstreamBroken():
            return 502
        case _:
            return 500


def wants_json(request: web.BaseRequest) -> bool:
    """API clients ask for JSON; browsers (and anything that accepts HTML) get a page."""
    return accepts_json(request.headers.get("Accept", ""))


def accepts_json(accept: str) -> bool:
    return "json" in accept and "text/html" not in accept


def failure_page(
    request: web.BaseRequest, failure: ForwardError, *, tail: str = ""
) -> web.Response | None:
    """The page for a failure; ``tail`` ends an HTML page's body (the live-reload script, so
    the page reloads by itself once the service is ready)."""
    status = status_for(failure)
    if status is None:
        return None
    facts = _failure_facts(failure, status)
    content_type, text = page_content(status, *facts, as_json=wants_json(request), tail=tail)
    from aiohttp import web

    return web.Response(status=status, text=text, content_type=content_type, headers=PAGE_HEADERS)


def failure_answer(
    failure: ForwardError, accept: str, *, tail: str = ""
) -> tuple[int, str, bytes] | None:
    """The failure page as ``(status, content type, body)``, for the fast lane, which writes its
    own bytes; ``accept`` is the request's Accept header. ``None`` when nobody is left to answer."""
    status = status_for(failure)
    if status is None:
        return None
    facts = _failure_facts(failure, status)
    content_type, text = page_content(status, *facts, as_json=accepts_json(accept), tail=tail)
    return status, content_type, text.encode()


def _failure_facts(failure: ForwardError, status: int) -> tuple[str, str, dict[str, JsonValue]]:
    facts: dict[str, JsonValue] = {"service": failure.service, "error": failure.detail}
    lines: tuple[str, ...] = ()
    if isinstance(failure, ServiceUnavailable):
        service = failure.status
        facts |= {
            "state": str(service.state),
            "exit_code": service.exit_code,
            "reason": service.reason,
            "restarts": service.restarts,
        }
        lines = service.last_lines
        facts["last_lines"] = list(lines)
    title = _TITLES.get(status, "Proxy error")
    hint = _HINTS.get(status, "")
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in facts.items()
        if k != "last_lines" and v is not None
    )
    body = f"<table>{rows}</table><p>{html.escape(hint)}</p>"
    if lines:
        body += "<h2>Last lines of output</h2><pre>" + html.escape("\n".join(lines)) + "</pre>"
    return f"{title}: {failure.service}", body, facts


def not_found_page(request: web.BaseRequest, table: RouteTable) -> web.Response:
    routes = table.describe()
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(r[key]) if r[key] is not None else '*')}</td>"
            for key in ("host", "path", "target")
        )
        + "</tr>"
        for r in routes
    )
    where = request.headers.get("Host", "") + request.path
    body = (
        f"<p>No route matches <code>{html.escape(where)}"
        "</code>. These routes exist, tried from top to bottom:</p>"
        f"<table><tr><th>host</th><th>path</th><th>goes to</th></tr>{rows}</table>"
        '<p class="muted">Add a route under <code>routes:</code> in devstack.yaml.</p>'
    )
    facts: dict[str, JsonValue] = {
        "error": f"no route matches {request.path}",
        "routes": [dict(r) for r in routes],
    }
    return page(request, 404, "No route here", body, facts)


def forbidden_host_page(request: web.BaseRequest, host: str) -> web.Response:
    shown = host or "(no Host header)"
    hint = (
        f"To allow it, add it to the manifest: proxy: {{hosts: [{host}]}}"
        if host
        else "Send a Host header."
    )
    body = (
        f"<p>The host <code>{html.escape(shown)}</code> is not one devstack serves, so the "
        "request was not passed to any service. This protects local services from web pages "
        "that point their own DNS name at 127.0.0.1 (DNS rebinding).</p>"
        f"<p>{html.escape(hint)}</p>"
        '<p class="muted">Always allowed: localhost, *.localhost, 127.0.0.1, [::1], '
        "route hosts and proxy.hosts.</p>"
    )
    facts: dict[str, JsonValue] = {"error": f"host not allowed: {shown}", "hint": hint}
    return page(request, 403, "Host not allowed", body, facts)


def file_not_found_page(request: web.BaseRequest) -> web.Response:
    body = f"<p>No file at <code>{html.escape(request.path)}</code>.</p>"
    return page(request, 404, "Not found", body, {"error": f"no file at {request.path}"})


def page(
    request: web.BaseRequest,
    status: int,
    title: str,
    body_html: str,
    facts: Mapping[str, JsonValue],
) -> web.Response:
    """One of the proxy's own answers; never cached, marked as coming from devstack."""
    content_type, text = page_content(status, title, body_html, facts, as_json=wants_json(request))
    # What a page echoes from the request (an Origin, say) may hold header bytes that are not
    # UTF-8, which arrive as lone surrogates: they are written as escapes, never a 500.
    body = text.encode("utf-8", "backslashreplace")
    from aiohttp import web

    return web.Response(status=status, body=body, content_type=content_type, charset="utf-8",
                        headers=PAGE_HEADERS)  # fmt: skip


PAGE_HEADERS = {"Cache-Control": "no-store", "X-Devstack": "proxy"}
"""Sent with every page of the proxy's own."""


def page_content(
    status: int,
    title: str,
    body_html: str,
    facts: Mapping[str, JsonValue],
    *,
    as_json: bool,
    tail: str = "",
) -> tuple[str, str]:
    """A page's content type (without charset) and text: JSON for API clients, else HTML
    (``tail``, trusted HTML, ends its body)."""
    if as_json:
        return "application/json", json.dumps({"status": status, "title": title, **facts})
    text = (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{status} {html.escape(title)}</h1>"
        f'{body_html}<p class="muted">devstack proxy</p>{tail}</body></html>'
    )
    return "text/html", text


_TITLES = {
    502: "Service not answering",
    503: "Service still starting",
    504: "Service took too long",
}
_HINTS = {
    502: "Check the service's output in the devstack terminal; it restarts when its files change.",
    503: "The service did not become ready in time (proxy.wait_seconds); reload to try again.",
    504: "The service accepted the request but sent no answer within "
    "proxy.upstream_timeout_seconds.",
}
