"""Figures, their targets and the printed table: ``metric | devstack | <anchor> | ratio | target |
ok?``, one table per section, with notes (anchors, per-round figures) under it.

Ratios are always ``devstack / anchor`` of figures measured side by side in the same run; the
machine is too noisy (+-30 %) for absolute figures from different runs to mean anything.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field


class Bound(enum.Enum):
    AT_MOST = "<="
    BELOW = "<"
    AT_LEAST = ">="


@dataclass(frozen=True)
class Target:
    """What a figure must satisfy: the ratio to the anchor (``on_ratio``) or the value itself,
    bounded by ``limit``."""

    bound: Bound
    limit: float
    on_ratio: bool

    def describe(self, unit: str) -> str:
        if self.on_ratio:
            return f"{self.bound.value} {self.limit:g}x"
        return f"{self.bound.value} {format_value(self.limit, unit)}"

    def is_met(self, ours: float, theirs: float | None) -> bool | None:
        """Whether ``ours`` meets the target; ``None`` when the anchor needed is missing.
        A ratio target compares ``ours`` with ``limit * theirs``, which also reads right when
        the anchor is zero or negative (an added latency lost in the noise)."""
        if self.on_ratio:
            if theirs is None:
                return None
            reference = self.limit * theirs
        else:
            reference = self.limit
        if self.bound is Bound.AT_MOST:
            return ours <= reference
        if self.bound is Bound.BELOW:
            return ours < reference
        return ours >= reference


def ratio_at_most(limit: float) -> Target:
    return Target(Bound.AT_MOST, limit, on_ratio=True)


def ratio_at_least(limit: float) -> Target:
    return Target(Bound.AT_LEAST, limit, on_ratio=True)


def value_below(limit: float) -> Target:
    return Target(Bound.BELOW, limit, on_ratio=False)


def value_at_most(limit: float) -> Target:
    return Target(Bound.AT_MOST, limit, on_ratio=False)


@dataclass(frozen=True)
class Row:
    metric: str
    ours: float | None
    theirs: float | None
    unit: str
    target: Target | None = None

    @property
    def ratio(self) -> float | None:
        """``ours / theirs`` when both are positive, else ``None`` (shown as ``-``)."""
        if self.ours is None or self.theirs is None or self.theirs <= 0 or self.ours < 0:
            return None
        return self.ours / self.theirs

    @property
    def ok(self) -> bool | None:
        if self.target is None or self.ours is None:
            return None
        return self.target.is_met(self.ours, self.theirs)


@dataclass
class Table:
    title: str
    anchor: str
    """Whose figures the ratios are taken against: ``honcho``, ``caddy``."""
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def missed(self) -> list[Row]:
        return [row for row in self.rows if row.ok is False]

    def render(self) -> str:
        header = ("metric", "devstack", self.anchor, "ratio", "target", "ok?")
        cells = [header] + [_cells(row) for row in self.rows]
        widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
        lines = [f"## {self.title}", ""]
        for index, line in enumerate(cells):
            padded = [
                cell.ljust(width) if column == 0 else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(line, widths, strict=True))
            ]
            lines.append("| " + " | ".join(padded) + " |")
            if index == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        if self.notes:
            lines.append("")
            lines.extend(f"- {note}" for note in self.notes)
        return "\n".join(lines)


def _cells(row: Row) -> tuple[str, str, str, str, str, str]:
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
    target = row.target.describe(row.unit) if row.target is not None else "-"
    ok = {True: "yes", False: "NO", None: "-"}[row.ok]
    return (
        row.metric,
        format_value(row.ours, row.unit),
        format_value(row.theirs, row.unit),
        ratio,
        target,
        ok,
    )


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "req/s":
        return f"{value:,.0f} req/s"
    if unit in ("MB/s", "us", "requests", "fds", "processes"):
        return f"{value:,.0f} {unit}"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "%":
        return f"{value:.2f} %"
    return f"{value:.1f} {unit}"


def percentile(values: Sequence[float], percent: float) -> float:
    """The ``percent``-th percentile of ``values``, interpolated between the two nearest ranks
    (numpy's default, "linear"): ``percentile(v, 50)`` is the median, ``100`` the maximum."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be within 0..100, got {percent}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * percent / 100
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def format_rounds(values: Sequence[float], unit: str) -> str:
    """Per-round figures for the notes: ``8,100 / 8,420 / 7,950 req/s``."""
    if not values:
        return "-"
    text = " / ".join(format_value(v, unit).rsplit(" ", 1)[0] for v in values)
    return f"{text} {unit}"
