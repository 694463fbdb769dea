from __future__ import annotations

import io

from devstack.run.output import LineSplitter, Printer, should_colour


def split(chunks: list[bytes], max_line: int = 16) -> list[bytes]:
    lines: list[bytes] = []
    splitter = LineSplitter(lines.append, max_line=max_line)
    for chunk in chunks:
        splitter.feed(chunk)
    splitter.close()
    return lines


def test_lines_split_across_chunks_are_joined() -> None:
    assert split([b"hel", b"lo\nwor", b"ld\n"]) == [b"hello", b"world"]


def test_output_without_final_newline_is_flushed_at_close() -> None:
    assert split([b"a\nno newline"]) == [b"a", b"no newline"]


def test_crlf_line_endings_are_trimmed() -> None:
    assert split([b"dos\r\n"]) == [b"dos"]


def test_absurd_lines_are_cut_into_pieces_without_losing_bytes() -> None:
    data = b"x" * 40
    lines = split([data[:10], data[10:], b"\n"], max_line=16)
    assert b"".join(lines) == data
    assert all(len(line) <= 16 for line in lines)


def test_empty_lines_survive() -> None:
    assert split([b"\n\n"]) == [b"", b""]


def test_printer_prefixes_every_line_with_time_and_padded_name(tmp_path: object) -> None:
    stream = io.BytesIO()
    printer = Printer(["web", "worker"], stream=stream, colour=False, clock=lambda: 0.0)
    printer.lines("web", [b"one", b"two"])
    printer.system("hello")
    out = stream.getvalue().decode().splitlines()
    assert [line[9:] for line in out] == [
        "web      | one",
        "web      | two",
        "devstack | hello",
    ]
    assert out[0][2] == ":" and out[0][5] == ":"


class RecordingStream(io.BytesIO):
    """A stream that remembers each write it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes.append(bytes(data))
        return super().write(data)


def test_lines_go_out_in_one_write_so_nothing_lands_between_them() -> None:
    """What the start-up summary relies on (a table whose rows stay together)."""
    stream = RecordingStream()
    printer = Printer(["web"], stream=stream, colour=False, clock=lambda: 0.0)
    printer.lines("devstack", [b"1 service(s) up", b"  service  state", b"open https://x"])
    assert len(stream.writes) == 1
    assert stream.writes[0].count(b"\n") == 3


def test_printer_colours_names_only_when_asked() -> None:
    stream = io.BytesIO()
    Printer(["web"], stream=stream, colour=True).line("web", b"x")
    assert b"\x1b[" in stream.getvalue()


def test_no_color_wins_over_a_terminal() -> None:
    assert should_colour(io.BytesIO(), {"NO_COLOR": "1", "FORCE_COLOR": "1"}) is False
    assert should_colour(io.BytesIO(), {}) is False  # not a terminal
    assert should_colour(io.BytesIO(), {"FORCE_COLOR": "1"}) is True


def test_printer_writes_per_service_logs(tmp_path: object) -> None:
    from pathlib import Path

    logs = Path(str(tmp_path)) / "logs"
    printer = Printer(["web"], stream=io.BytesIO(), colour=True, logs_dir=logs)
    printer.line("web", b"to the log")
    printer.close()
    text = (logs / "web.log").read_text()
    assert text.endswith(" to the log\n") and "\x1b[" not in text
