"""HTTP dates (RFC 9110, section 5.6.7): written in the IMF-fixdate form, read in the forms a
recipient must accept.

Written here rather than with :func:`email.utils.formatdate`: the ``email`` package costs about
25 ms to import, on the way to the first request the fast lane serves. Reading a date (a
conditional request's ``If-Modified-Since``) still uses :mod:`email.utils`, imported then.
"""

from __future__ import annotations

import time

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_http_date(timestamp: float) -> str:
    """``timestamp`` (seconds since the epoch) as ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    t = time.gmtime(timestamp)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def parse_http_date(value: str) -> int | None:
    """An HTTP date (IMF-fixdate, RFC 850 or asctime) as a Unix timestamp, or ``None`` when it is
    not one."""
    from email.utils import parsedate_to_datetime

    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
