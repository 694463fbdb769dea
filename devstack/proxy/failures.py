"""What can go wrong on the way to a service and back, and the one place low-level errors are
translated into it.

    ForwardError            a request could not be forwarded; ``service`` names where it went
    +-- ServiceUnavailable  not running, or still not ready after ``proxy.wait_seconds``
    +-- UpstreamRefused     nothing accepted the connection on the service's port
    +-- UpstreamTimeout     the service accepted the request but did not answer in time
    +-- UpstreamBroken      the service reset or closed the connection, or its answer is not HTTP
    +-- ClientGone          the client went away before the answer was delivered

    ConnectionLost          low level, from the upstream connection: it ended before the whole
                            answer was in (``cause`` says how); :func:`failure_for` maps it

:func:`failure_for` turns what sockets, asyncio, httptools and aiohttp raise into one of these,
by the stage it happened at (:class:`Stage`), and writes every message; each lane and the
upstream pool call it instead of wording failures themselves.
:func:`devstack.proxy.pages.status_for` is the one place a failure becomes a status.
"""

from __future__ import annotations

import enum
import errno

import httptools

from devstack.status import ServiceStatus


class ForwardError(Exception):
    """A request could not be forwarded; ``service`` names where it was going."""

    def __init__(self, service: str, detail: str) -> None:
        super().__init__(f"{service}: {detail}")
        self.service = service
        self.detail = detail


class ServiceUnavailable(ForwardError):
    """The service is not serving: not running (crashed, failed, stopped, done) or still not
    ready after ``proxy.wait_seconds``."""

    def __init__(self, status: ServiceStatus, detail: str) -> None:
        super().__init__(status.name, detail)
        self.status = status


class UpstreamRefused(ForwardError):
    """Nothing accepted the connection on the service's port."""


class UpstreamTimeout(ForwardError):
    """The service accepted the request but did not answer in time."""


class UpstreamBroken(ForwardError):
    """The service closed the connection or answered with something that is not HTTP."""


class ClientGone(ForwardError):
    """The client went away before the answer was delivered."""


class ConnectionLost(Exception):
    """The connection to the service ended before its whole answer arrived: ``cause`` is what
    the transport or the parser reported (``None``: the service closed it). Low level: the
    upstream connection raises it, :func:`failure_for` maps it to :class:`UpstreamBroken`."""

    def __init__(self, cause: BaseException | None = None) -> None:
        super().__init__(_broken_detail(cause))
        self.cause = cause


class Stage(enum.Enum):
    """Where a low-level error happened, which decides what it means."""

    CONNECTING = "connecting to the service"
    ANSWERING = "waiting for or reading the service's answer"
    DELIVERING = "writing the answer to the client"


def failure_for(
    error: BaseException, service: str, stage: Stage, *, port: int = 0, limit: float = 0.0
) -> ForwardError:
    """The failure ``error`` means at ``stage`` of forwarding to ``service`` (on ``port``, with
    ``limit`` seconds to answer):

    - a :class:`ForwardError` already: itself
    - delivering to the client, anything (reset, broken pipe): :class:`ClientGone`
    - refused (``ConnectionRefusedError``, ``ECONNREFUSED`` wrapped by aiohttp), or no
      connection within the connect timeout: :class:`UpstreamRefused`
    - another ``OSError`` while connecting: :class:`UpstreamRefused`, with the error
    - ``TimeoutError`` while waiting for the answer: :class:`UpstreamTimeout`
    - anything else while answering (reset, cut short, a malformed answer, :class:`ConnectionLost`,
      aiohttp's client errors): :class:`UpstreamBroken`
    """
    if isinstance(error, ForwardError):
        return error
    if stage is Stage.DELIVERING:
        return ClientGone(service, "the client closed the connection")
    is_timeout = isinstance(error, TimeoutError)
    if _is_refused(error) or (is_timeout and stage is Stage.CONNECTING):
        return UpstreamRefused(service, f"nothing accepts connections on port {port}")
    if stage is Stage.CONNECTING:
        return UpstreamRefused(service, f"cannot connect to port {port}: {error}")
    if is_timeout:
        return UpstreamTimeout(service, f"no answer within {limit:g} s")
    if isinstance(error, ConnectionLost):
        return UpstreamBroken(service, str(error))
    return UpstreamBroken(service, _broken_detail(error))


def _is_refused(error: BaseException) -> bool:
    return isinstance(error, ConnectionRefusedError) or (
        isinstance(error, OSError) and error.errno == errno.ECONNREFUSED
    )


def _broken_detail(cause: BaseException | None) -> str:
    """How an answer broke, in words: the one place these messages are written."""
    if cause is None:
        return "the service closed the connection before its answer was complete"
    if isinstance(cause, httptools.HttpParserError):
        return f"malformed answer: {cause}"
    if isinstance(cause, ConnectionResetError):
        return "the service reset the connection"
    if isinstance(cause, ConnectionLost):
        return str(cause)
    return str(cause) or type(cause).__name__
