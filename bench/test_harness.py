"""The bench's own tests: ``python -m pytest bench -q``. Parsing and table logic on fixed inputs,
and the launcher against real processes (a grandchild included) on this machine."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench import procfs, reload
from bench.edit import HELLO, SIMON, Subject, edited, save, token
from bench.errors import BenchError
from bench.launcher import Launcher
from bench.load import Answer, WrkResult, parse_wrk_report
from bench.poll import wait_until
from bench.ports import free_ports, port_accepts
from bench.profile import parse_collapsed
from bench.report import (
    Row,
    Table,
    percentile,
    ratio_at_least,
    ratio_at_most,
    value_at_most,
    value_below,
)
from bench.stack import BASELINE, DEVSTACK, DEVSTACK_BLUE_GREEN, Reload


def test_ratio_targets_compare_with_the_anchor() -> None:
    assert Row("r", 9_000, 8_000, "req/s", ratio_at_least(1.0)).ok is True
    assert Row("r", 5_000, 8_000, "req/s", ratio_at_least(0.7)).ok is False
    assert Row("t", 0.8, 0.9, "s", ratio_at_most(1.0)).ok is True
    assert Row("t", 0.8, 0.9, "s", ratio_at_most(1.0)).ratio == pytest.approx(0.8 / 0.9)


def test_an_anchor_lost_in_the_noise_has_no_ratio_but_still_a_verdict() -> None:
    worse = Row("added latency", 120.0, -30.0, "us", ratio_at_most(1.0))
    better = Row("added latency", -50.0, 10.0, "us", ratio_at_most(1.0))
    assert worse.ratio is None and worse.ok is False
    assert better.ratio is None and better.ok is True


def test_value_targets_and_missing_figures() -> None:
    assert Row("rss", 59.9, None, "MB", value_below(60)).ok is True
    assert Row("rss", 60.0, None, "MB", value_below(60)).ok is False
    assert Row("ratio without anchor", 1.0, None, "s", ratio_at_most(1.0)).ok is None
    assert Row("information", 1.0, 2.0, "us").ok is None


def test_percentile_interpolates_between_ranks() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 5.0 and percentile(values, 0) == 1.0
    assert percentile(values, 95) == pytest.approx(4.8)
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_value_at_most_includes_the_limit() -> None:
    assert Row("failed", 0, 40, "requests", value_at_most(0)).ok is True
    assert Row("failed", 1, 40, "requests", value_at_most(0)).ok is False
    table = Table("t", "x", [Row("f", 0, 3, "requests", value_at_most(0))])
    assert "<= 0 requests" in table.render()


def test_table_renders_every_column_and_lists_what_missed() -> None:
    table = Table("Section", anchor="caddy")
    table.add(Row("req/s", 4_000, 8_000, "req/s", ratio_at_least(1.0)))
    table.add(Row("rss", 50, 40, "MB", value_below(80)))
    table.note("an anchor")
    text = table.render()
    header = [cell.strip() for cell in text.splitlines()[2].strip("|").split("|")]
    assert header == ["metric", "devstack", "caddy", "ratio", "target", "ok?"]
    assert "4,000 req/s" in text and "0.50x" in text and "NO" in text and "yes" in text
    assert text.endswith("- an anchor")
    assert [row.metric for row in table.missed] == ["req/s"]


def test_wrk_report_is_parsed_from_the_lua_hook_line() -> None:
    stdout = (
        "Running 5s test @ https://localhost:1/\n"
        "BENCH-WRK requests=1000 duration_us=2000000 socket_errors=3 bad_status=0 "
        "mean_us=512.5 p50_us=400 p99_us=2100\n"
    )
    result = parse_wrk_report(stdout)
    assert result is not None
    assert result.requests_per_second == 500
    assert (result.socket_errors, result.mean_us, result.p99_us) == (3, 512.5, 2100)
    assert parse_wrk_report("unable to connect to localhost:1 Connection refused") is None


def test_profile_counts_functions_not_lines_and_drops_start_up_frames() -> None:
    raw = (
        "_run_module_as_main (<frozen runpy>:198);Runner.run (asyncio/runners.py:118);"
        "Proxy._handle (devstack/proxy.py:266);StreamWriter._write (aiohttp/http_writer.py:104) 3\n"
        "Proxy._handle (devstack/proxy.py:270);StreamWriter._write (aiohttp/http_writer.py:99) 1\n"
        "Runner.run (asyncio/runners.py:118) 4\n"
    )
    total, own, inclusive = parse_collapsed(raw)
    assert total == 8
    assert own[0] == ("StreamWriter._write (aiohttp/http_writer.py)", 4)
    assert own[1] == ("Runner.run (asyncio/runners.py)", 4)
    assert dict(inclusive) == {
        "Proxy._handle (devstack/proxy.py)": 4,
        "StreamWriter._write (aiohttp/http_writer.py)": 4,
    }


def test_free_ports_are_distinct_and_closed() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert not any(port_accepts(port) for port in ports)


def test_procfs_reads_this_process() -> None:
    memory = procfs.memory(os.getpid())
    assert 0 < memory.rss_kib <= memory.peak_kib
    assert procfs.cpu_seconds(os.getpid()) > 0
    assert procfs.is_alive(os.getpid())


def test_launcher_stops_a_program_and_its_grandchild(tmp_path: Path) -> None:
    script = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " start_new_session=True)\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    with Launcher(tmp_path) as launcher:
        parent = launcher.start("parent", [sys.executable, "-c", script])
        wait_until(lambda: "started" in parent.output(), timeout=10, message="the parent to start")
        below = wait_until(
            parent.remember_descendants, timeout=10, message="the grandchild to appear"
        )
        assert all(procfs.is_same_alive(identity) for identity in below)
    assert parent.has_exited
    wait_until(
        lambda: not any(procfs.is_same_alive(identity) for identity in below),
        timeout=10,
        message="the grandchild, in its own session, to be stopped too",
    )


@pytest.mark.parametrize("subject", [HELLO, SIMON], ids=lambda s: s.name)
def test_each_edit_of_a_subject_replaces_the_previous_token(subject: Subject) -> None:
    source = (subject.source / subject.cwd / subject.script if subject.source.is_dir()
              else subject.source).read_text()
    first = edited(source, subject, 1)
    second = edited(first, subject, 2)
    assert token(1) in first and token(1) not in second and token(2) in second
    assert len(second.splitlines()) == len(source.splitlines())
    compile(second, subject.script, "exec")  # still Python
    assert token(1) not in token(10)


def test_an_edit_that_no_longer_fits_the_source_says_so() -> None:
    with pytest.raises(BenchError, match="expected one match"):
        edited("print('nothing to edit')\n", HELLO, 1)


@pytest.mark.parametrize("in_place", [True, False])
def test_save_writes_the_text_and_leaves_no_sibling(tmp_path: Path, in_place: bool) -> None:
    path = tmp_path / "server.py"
    path.write_text("old\n")
    save(path, "new\n", in_place=in_place)
    assert path.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["server.py"]


def test_answers_that_count_as_failed() -> None:
    assert not Answer(200).is_failure and not Answer(302).is_failure
    assert Answer(502).is_failure and Answer(None, error="ConnectionResetError").is_failure


def test_reload_table_targets_follow_the_own_start_and_stop_times() -> None:
    def reloads(*ms: float) -> list[Reload]:
        return [Reload(m / 1000, 0, m / 4000, m / 2000) for m in ms]

    def wrk(bad: int, socket_errors: int) -> WrkResult:
        return WrkResult(1000, 5.0, socket_errors, bad, 900.0, 800.0, 4000.0)

    hello = reload.SubjectFigures(
        own_starts=[0.200, 0.220, 0.210],
        own_stops=[0.070, 0.060, 0.065],
        reloads={DEVSTACK: reloads(300, 320, 400), DEVSTACK_BLUE_GREEN: reloads(250, 255, 300),
                 BASELINE: reloads(500, 510, 700)},
        under_load={DEVSTACK: [wrk(0, 0)], DEVSTACK_BLUE_GREEN: [wrk(0, 0)],
                    BASELINE: [wrk(30, 2)]},
    )
    idle = reload.Idle(5.0, {DEVSTACK: 0.01, BASELINE: 0.02}, 0.3)
    table = reload.tabulate({"hello": hello}, idle, reload.QUICK)
    rows = {row.metric: row for row in table.rows}
    blue_green = rows["hello, blue-green: edit to new response, median"]
    assert (blue_green.ours, blue_green.theirs, blue_green.ok) == (255, 510, True)
    assert blue_green.target is not None
    assert blue_green.target.limit == pytest.approx(260)  # own start 210 + 50 ms
    restart = rows["hello, restart (the default): edit to new response, median"]
    assert (restart.ours, restart.ok) == (320, True)
    assert restart.target is not None
    assert restart.target.limit == pytest.approx(325)  # own stop 65 + own start 210 + 50 ms
    assert rows["hello, blue-green: edit to new response, p95"].ok is None
    spawned = next(row for metric, row in rows.items() if "new process" in metric)
    assert (spawned.ours, spawned.theirs, spawned.ok) == (127.5, 255, None)
    failed = [row for metric, row in rows.items() if "failed requests" in metric]
    assert [(row.ours, row.theirs, row.ok) for row in failed] == [(0, 32, True)] * 2
    idle_row = next(row for metric, row in rows.items() if "idle CPU" in metric)
    assert idle_row.ours == pytest.approx(0.2) and idle_row.ok is True
    assert table.missed == []


def test_ci_table_takes_each_rounds_own_ready_from_its_time_to_the_command() -> None:
    from bench import ci

    found = ci.Figures(own_ready=[1.0, 1.2, 0.9], own_stop=[0.05, 0.06, 0.04],
                       to_command=[1.08, 1.25, 1.2], teardown=[0.15, 0.12, 0.3],
                       floor_to_command=[1.05, 1.21, 1.0])  # fmt: skip
    table = ci.tabulate({"stack": found}, ci.QUICK)
    rows = {row.metric.split(": ", 1)[1].split(" (")[0]: row for row in table.rows}
    overhead = rows["start overhead"]
    assert overhead.ours == pytest.approx(80)  # per round: 80, 50, 300 ms; the median
    assert overhead.ok is True
    assert rows["the floor's start overhead"].ours == pytest.approx(50)  # 50, 10, 100 ms
    teardown = rows["teardown, CMD's end to every process gone"]
    assert teardown.ours == pytest.approx(150) and teardown.theirs == pytest.approx(50)
    assert teardown.ok is True


def test_soak_table_classifies_failures_and_checks_the_bounds() -> None:
    from bench import soak

    faults = [soak.Fault("kill", 10.0, 12.0), soak.Fault("edit", 20.0, 21.5)]
    failures = [
        soak.Failure("steady", "get", 5.0, 5.1, "ClientOSError: reset"),
        soak.Failure("target", "ws", 9.0, 10.2, "Unexpected: ws: CLOSE"),  # cut by the kill
        soak.Failure("target", "get", 12.5, 12.6, "Unexpected: GET 502"),  # in the grace
        soak.Failure("target", "events", 21.0, 21.1, "Unexpected: events"),  # during the edit
        soak.Failure("target", "upload", 16.0, 16.5, "TimeoutError: "),  # no fault near
        soak.Failure("target", "get", 9.0, 9.9, "Unexpected: GET 500"),  # ended before the kill
    ]
    classes = soak.classify(failures, faults, grace=1.0)
    assert [f.started for f in classes["steady"]] == [5.0]
    assert [(f.kind, f.started) for f in classes["fault"]] == [
        ("ws", 9.0), ("get", 12.5), ("events", 21.0)
    ]
    assert [(f.kind, f.started) for f in classes["other"]] == [("upload", 16.0), ("get", 9.0)]

    tally = soak.Tally(ok=Counter({"steady get": 40, "steady ws": 10, "target upload": 7}),
                       failures=failures, faults=faults)
    result = soak.SoakResult(
        seed=7, seconds=30.0, total_seconds=37.0, tally=tally,
        warm=soak.Sample(fds=40, rss_mb=80.0), end=soak.Sample(fds=58, rss_mb=90.0),
        left=("4242 sleep 4242",),
        trace=(soak.Sample(41, 82.0), soak.Sample(44, 88.4)), warm_up_faults=2,
    )
    table = soak.tabulate(result)
    rows = {row.metric: row for row in table.rows}
    assert rows["requests, both services (all kinds)"].ours == 63
    steady = rows["steady: failed requests"]
    assert (steady.ours, steady.ok) == (1, False)
    assert rows["target: failed, in flight during a fault"].ours == 3
    assert rows["target: failed, outside any fault"].ours == 2
    fds = next(row for metric, row in rows.items() if "descriptors" in metric)
    assert (fds.ours, fds.ok) == (18, False)  # bound +16
    rss = next(row for metric, row in rows.items() if "RSS" in metric)
    assert rss.ours == pytest.approx(10.0) and rss.ok is True  # bound +20 MB
    left = next(row for metric, row in rows.items() if "left" in metric)
    assert (left.ours, left.ok) == (1, False)
    assert {row.metric for row in table.missed} == {
        "steady: failed requests", fds.metric, left.metric
    }
    text = table.render()
    assert "| bound |" in text.splitlines()[2]
    assert "seed 7" in text and "edit 1, restart 0, kill 1 (2 in the warm-up)" in text
    assert "steady: ok get 40, upload 0, events 0, ws 10; failed get 1," in text
    assert "left behind: 4242 sleep 4242" in text
    assert "target, failed during a kill: get 1, upload 0, events 0, ws 1" in text
    assert "target, failed during an edit: get 0, upload 0, events 1, ws 0" in text
    assert "2 samples evenly spaced (traffic on): 41 / 44 fds, 82 / 88 MB RSS" in text
