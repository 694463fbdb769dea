"""Which answers get the live-reload tag (:data:`devstack.proxy.live.script.SCRIPT_TAG`), and
how. One rule for both lanes of the proxy and for static files:

- the route (and, for a service, the service) has ``live_reload`` on;
- the request is not ``HEAD``, and the answer is one with a whole body: not 1xx, ``204``,
  ``206`` (a range) or ``304``;
- ``Content-Type`` is ``text/html``;
- the body is identity-encoded (no ``Content-Encoding``, or ``identity``). A compressed page is
  left untouched, with a debug line saying so (``devstack up -v``).

The tag goes after the last byte of the body: browsers run a script that follows ``</html>``
all the same, so nothing is parsed and nothing is buffered. An answer with a Content-Length gets
the tag's length added to it and the tag written after the body; a chunked (or streamed without
length) answer gets the tag as one more chunk before the last.
"""

from __future__ import annotations

import logging

from devstack.proxy.live.script import SCRIPT_TAG

logger = logging.getLogger(__name__)

_WHOLE_BODY_STATUSES = range(200, 600)
_NO_WHOLE_BODY = frozenset({204, 206, 304})
_IDENTITY = (b"", b"identity")


def tag_for(
    status: int, content_type: bytes, content_encoding: bytes, *, is_head: bool, service: str
) -> bytes:
    """The bytes to append to this answer: :data:`SCRIPT_TAG`, or ``b""`` to leave it untouched.
    The caller has checked the route's ``live_reload``; ``content_encoding`` is every
    Content-Encoding value run together (``b""`` without one)."""
    if is_head or status not in _WHOLE_BODY_STATUSES or status in _NO_WHOLE_BODY:
        return b""
    if not is_html(content_type):
        return b""
    if content_encoding.strip().lower() not in _IDENTITY:
        logger.debug("%s sent a page in %s encoding: left without the live-reload script",
                     service, content_encoding.decode("latin-1"))  # fmt: skip
        return b""
    return SCRIPT_TAG


def is_html(content_type: bytes) -> bool:
    media_type = content_type.partition(b";")[0].strip()
    return len(media_type) == 9 and media_type.lower() == b"text/html"
