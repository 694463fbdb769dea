"""The one error the bench raises on purpose: it could not measure, and says why and what to do.

``python -m bench`` prints it as ``error: ...`` and exits with :data:`BenchError.exit_code`;
missed targets are not errors (they are reported in the tables, exit code 1).
"""

from __future__ import annotations


class BenchError(Exception):
    """A contender is missing, did not start, or answered something unexpected."""

    exit_code = 2
