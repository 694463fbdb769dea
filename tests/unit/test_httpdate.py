"""HTTP dates (devstack/proxy/httpdate.py): written as email.utils writes them, read back."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from devstack.proxy.httpdate import format_http_date, parse_http_date


@pytest.mark.parametrize(
    "timestamp",
    [0, 0.999, 784111777, 951782400, 1709164800.5, 1_800_000_000, 4_102_444_799, 253_402_300_799],
)
def test_dates_are_written_as_email_utils_writes_them(timestamp: float) -> None:
    assert format_http_date(timestamp) == formatdate(timestamp, usegmt=True)


def test_every_day_of_a_leap_year_is_written_as_email_utils_writes_it() -> None:
    start = 1704067200  # 2024-01-01T00:00:00Z
    for day in range(366):
        timestamp = start + day * 86400 + 3723
        assert format_http_date(timestamp) == formatdate(timestamp, usegmt=True)


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # RFC 850
        "Sun Nov  6 08:49:37 1994",  # asctime
    ],
)
def test_the_three_forms_are_read(value: str) -> None:
    assert parse_http_date(value) == 784111777


@pytest.mark.parametrize(
    "value", ["", "yesterday", "Sun, 06 Nov 1994", "Sun, 99 Nov 1994 08:49:37 GMT"]
)
def test_what_is_not_a_date_reads_as_none(value: str) -> None:
    assert parse_http_date(value) is None


def test_a_written_date_reads_back() -> None:
    assert parse_http_date(format_http_date(1_800_000_000.7)) == 1_800_000_000
