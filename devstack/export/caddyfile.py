"""A Caddyfile read into blocks: the syntax only (tokens, lines, nesting, comments), for
``devstack import caddy``; what the directives mean is :mod:`devstack.export.caddy_import`'s.

The rules kept from Caddy's lexer: tokens are separated by white space; ``"..."`` and
```...``` quote (a backslash escapes a quote inside ``"...``); ``#`` at the start of a token
begins a comment to the end of the line; a ``{`` that ends a line opens a block and a ``}`` alone
closes it; a line that ends with ``\\`` continues on the next. Placeholders such as
``{$DOMAIN:localhost}`` are ordinary tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from devstack.errors import ManifestError


@dataclass
class Directive:
    """One line of a Caddyfile and the block it opens, if any: ``name args... {`` ."""

    name: str
    args: list[str]
    line: int
    block: list[Directive] | None = None
    comments: list[str] = field(default_factory=list)
    """The comment lines right above it, without their ``#``."""

    @property
    def text(self) -> str:
        """The line as written, in short (for messages)."""
        opened = " {...}" if self.block is not None else ""
        if self.name == "{":
            return "{...} (global options)"
        return " ".join([self.name, *self.args]) + opened


@dataclass
class _Line:
    number: int
    tokens: list[str]
    comment: str | None = None


def parse(text: str, path: Path) -> list[Directive]:
    """The top-level entries (site blocks, the global options block as a directive named
    ``{``, snippets); raises :class:`ManifestError` naming the file and line of a syntax error."""
    lines = _lines(text, path)
    entries, position = _block(lines, 0, path, top=True)
    assert position == len(lines)
    return entries


def _block(lines: list[_Line], start: int, path: Path, *, top: bool = False,
           opened_at: int | None = None) -> tuple[list[Directive], int]:
    entries: list[Directive] = []
    comments: list[str] = []
    position = start
    while position < len(lines):
        line = lines[position]
        position += 1
        if not line.tokens:
            if line.comment is not None:
                comments.append(line.comment)
            else:
                comments = []
            continue
        if line.tokens == ["}"]:
            if top:
                raise ManifestError("'}' closes no block", path=path, line=line.number)
            return entries, position
        tokens = line.tokens
        opens = tokens[-1] == "{"
        if opens:
            tokens = tokens[:-1]
        if "{" in tokens or "}" in tokens:
            raise ManifestError("a '{' must end its line and a '}' stand alone on its line",
                                path=path, line=line.number)
        directive = Directive(tokens[0] if tokens else "{", tokens[1:], line.number,
                              comments=comments)
        comments = []
        if opens:
            directive.block, position = _block(lines, position, path, opened_at=line.number)
        entries.append(directive)
    if not top:
        raise ManifestError("this '{' is never closed", path=path, line=opened_at)
    return entries, position


def _lines(text: str, path: Path) -> list[_Line]:
    lines: list[_Line] = []
    pending: _Line | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        tokens, comment, continued = _tokens(raw, path, number)
        if pending is not None:
            pending.tokens += tokens
            pending.comment = pending.comment or comment
        else:
            pending = _Line(number, tokens, comment)
        if not continued:
            lines.append(pending)
            pending = None
    if pending is not None:
        lines.append(pending)
    return lines


def _tokens(raw: str, path: Path, number: int) -> tuple[list[str], str | None, bool]:
    """The tokens of one line, its comment, and whether it continues on the next."""
    tokens: list[str] = []
    position = 0
    length = len(raw)
    while position < length:
        char = raw[position]
        if char.isspace():
            position += 1
        elif char == "#":
            return tokens, raw[position + 1 :].strip(), False
        elif char == "\\" and not raw[position + 1 :].strip():
            return tokens, None, True
        elif char in "\"`":
            token, position = _quoted(raw, position, path, number)
            tokens.append(token)
        else:
            end = position
            while end < length and not raw[end].isspace():
                end += 1
            tokens.append(raw[position:end])
            position = end
    return tokens, None, False


def _quoted(raw: str, start: int, path: Path, number: int) -> tuple[str, int]:
    quote = raw[start]
    value: list[str] = []
    position = start + 1
    while position < len(raw):
        char = raw[position]
        if quote == '"' and char == "\\" and position + 1 < len(raw) and raw[position + 1] == '"':
            value.append('"')
            position += 2
            continue
        if char == quote:
            return "".join(value), position + 1
        value.append(char)
        position += 1
    raise ManifestError(f"this {quote} quote is never closed (quotes do not span lines here)",
                        path=path, line=number)
