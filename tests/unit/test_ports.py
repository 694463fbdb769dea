"""Port assignment and holder lookup without the OS: /proc parsing, messages, the decision
and the sticky file."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable
from pathlib import Path

import pytest

from devstack.manifest.spec import ProxySpec, ServiceSpec, StackSpec
from devstack.netstat.holders import PortHolder, listening_inodes, shorten_command
from devstack.run.ports import (
    PortAssignment,
    PortProbe,
    assign_ports,
    decide_ports,
    load_sticky,
    save_sticky,
)


def row(local: str, state: str, inode: int, remote: str = "00000000:0000") -> str:
    """One line of /proc/net/tcp{,6} as the kernel writes it."""
    return (
        f"   0: {local} {remote} {state} 00000000:00000000 00:00000000 00000000"
        f"  1000        0 {inode} 1 0000000086c79b34 100 0 0 10 0"
    )


HEADER = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout"
)
LOOPBACK6 = "00000000000000000000000001000000"
ANY6 = "0" * 32

TCP = "\n".join(
    [
        HEADER + " inode",
        row("00000000:0BB8", "0A", 1604),  # 0.0.0.0:3000 LISTEN
        row("0100007F:0BB8", "01", 7777, remote="0100007F:C350"),  # established, same port
        row("0100007F:0BB9", "0A", 2001),  # 127.0.0.1:3001 LISTEN
        row("0100007F:0BB8", "06", 0, remote="0100007F:C351"),  # TIME_WAIT: no inode
        "   4: garbage line",
        row("0100007F:ZZZZ", "0A", 3003),
    ]
)

TCP6 = "\n".join(
    [
        HEADER + " inode",
        row(f"{LOOPBACK6}:0BB8", "0A", 4242, remote=f"{ANY6}:0000"),  # [::1]:3000
        row(f"{ANY6}:0BB8", "0A", 4243, remote=f"{ANY6}:0000"),  # [::]:3000
    ]
)


# --- /proc/net/tcp ---------------------------------------------------------------------------


def test_listening_inodes_keeps_only_listen_rows_on_the_port() -> None:
    assert listening_inodes(TCP, 3000) == {1604}
    assert listening_inodes(TCP, 3001) == {2001}


def test_listening_inodes_reads_ipv6_tables() -> None:
    assert listening_inodes(TCP6, 3000) == {4242, 4243}


def test_listening_inodes_is_empty_when_nothing_listens_on_the_port() -> None:
    assert listening_inodes(TCP, 50000) == frozenset()
    assert listening_inodes("", 3000) == frozenset()


# --- what users read -------------------------------------------------------------------------


def test_shorten_command_joins_arguments_on_one_line() -> None:
    assert shorten_command(["node", "server.js"]) == "node server.js"
    assert shorten_command(["python", "-c", "import x\nx.run()"]) == "python -c import x x.run()"


def test_shorten_command_cuts_long_commands_to_the_limit() -> None:
    text = shorten_command(["/usr/bin/python3", "-m", "uvicorn", "app:main", "--port", "3000"] * 3)
    assert len(text) <= 60
    assert text.startswith("/usr/bin/python3 -m uvicorn app:main")
    assert text.endswith("...")


@pytest.mark.parametrize(
    ("holder", "text"),
    [
        (PortHolder(pid=4242, command="node server.js"), "pid 4242 (node server.js)"),
        (PortHolder(pid=4242, command=None), "pid 4242"),
        (PortHolder(pid=None, command=None), "another process"),
    ],
)
def test_holder_reads_as_pid_and_command(holder: PortHolder, text: str) -> None:
    assert str(holder) == text


def test_moved_assignment_names_the_holder_in_one_line() -> None:
    a = PortAssignment("simon", 3000, 49731, PortHolder(4242, "node server.js"))
    assert a.moved
    assert a.message() == "simon: port 3000 is held by pid 4242 (node server.js); using 49731"


def test_moved_assignment_without_a_holder_gives_the_reason() -> None:
    a = PortAssignment("simon", 8080, 49731, reason="is devstack's proxy port")
    assert a.message() == "simon: port 8080 is devstack's proxy port; using 49731"


def test_unmoved_assignments_have_no_message() -> None:
    assert not PortAssignment("simon", 3000, 3000).moved
    assert PortAssignment("simon", 3000, 3000).message() is None
    assert not PortAssignment("simon", None, 49731).moved
    assert PortAssignment("simon", None, 49731).message() is None


# --- the decision, against a scripted OS -----------------------------------------------------


class FakeOS:
    """Ports in ``held`` are taken (by ``holders[port]`` if given); picks come from ``picks``
    in order, skipping any the caller asked to avoid."""

    def __init__(self, held: Iterable[int] = (), picks: Iterable[int] = ()) -> None:
        self.held = set(held)
        self.holders: dict[int, PortHolder] = {}
        self.picks = list(picks)
        self.avoided: list[frozenset[int]] = []

    def is_free(self, port: int) -> bool:
        return port not in self.held

    def holder(self, port: int) -> PortHolder | None:
        return self.holders.get(port)

    def pick(self, avoid: Collection[int]) -> int:
        self.avoided.append(frozenset(avoid))
        for i, port in enumerate(self.picks):
            if port not in avoid:
                del self.picks[i]
                return port
        raise AssertionError(f"FakeOS ran out of picks (avoiding {sorted(avoid)})")

    @property
    def probe(self) -> PortProbe:
        return PortProbe(is_free=self.is_free, holder=self.holder, pick=self.pick)


def ports(result: dict[str, PortAssignment]) -> dict[str, int]:
    return {name: a.port for name, a in result.items()}


def test_a_free_wanted_port_is_given() -> None:
    fake = FakeOS(picks=[50001])
    result = decide_ports({"web": 3000}, {}, reserved={}, probe=fake.probe)
    assert result["web"] == PortAssignment("web", 3000, 3000)
    assert fake.avoided == []


def test_a_held_wanted_port_moves_the_service_and_names_the_holder() -> None:
    fake = FakeOS(held=[3000], picks=[50001])
    fake.holders[3000] = PortHolder(4242, "node server.js")
    result = decide_ports({"simon": 3000}, {}, reserved={}, probe=fake.probe)
    assert result["simon"].port == 50001
    assert result["simon"].message() == (
        "simon: port 3000 is held by pid 4242 (node server.js); using 50001"
    )


def test_a_held_port_without_a_listener_says_it_cannot_be_bound() -> None:
    fake = FakeOS(held=[80], picks=[50001])
    message = decide_ports({"web": 80}, {}, reserved={}, probe=fake.probe)["web"].message()
    assert message is not None
    assert message.startswith("web: port 80 cannot be bound")
    assert message.endswith("; using 50001")


def test_the_previous_pick_is_reused_while_free() -> None:
    fake = FakeOS(held=[3000], picks=[50001])
    result = decide_ports({"simon": 3000}, {"simon": 49731}, reserved={}, probe=fake.probe)
    assert result["simon"].port == 49731
    assert result["simon"].moved
    assert fake.avoided == []


def test_a_taken_previous_pick_is_replaced() -> None:
    fake = FakeOS(held=[3000, 49731], picks=[50001])
    result = decide_ports({"simon": 3000}, {"simon": 49731}, reserved={}, probe=fake.probe)
    assert result["simon"].port == 50001


def test_the_wanted_port_wins_over_the_previous_pick() -> None:
    fake = FakeOS()
    result = decide_ports({"simon": 3000}, {"simon": 49731}, reserved={}, probe=fake.probe)
    assert result["simon"].port == 3000


def test_a_service_without_a_port_keeps_its_pick() -> None:
    fake = FakeOS(picks=[50001])
    assert ports(decide_ports({"worker": None}, {}, reserved={}, probe=fake.probe)) == {
        "worker": 50001
    }
    again = decide_ports({"worker": None}, {"worker": 50001}, reserved={}, probe=fake.probe)
    assert ports(again) == {"worker": 50001}
    assert not again["worker"].moved


def test_picks_avoid_wanted_ports_the_proxy_and_each_other() -> None:
    fake = FakeOS(held=[3000], picks=[8443, 4000, 3000, 50001, 50001, 50002, 50003])
    result = decide_ports(
        {"a": 3000, "b": None, "c": 4000, "d": None},
        {},
        reserved={8443: "is devstack's proxy port"},
        probe=fake.probe,
    )
    assert ports(result) == {"a": 50001, "b": 50002, "c": 4000, "d": 50003}
    assert result["c"].port == 4000
    assigned = [a.port for a in result.values()]
    assert len(set(assigned)) == len(assigned)
    assert {result["a"].port, result["b"].port, result["d"].port}.isdisjoint({3000, 4000, 8443})
    assert all({3000, 4000, 8443} <= avoid for avoid in fake.avoided)


def test_a_previous_pick_that_is_now_someone_s_wanted_port_is_not_reused() -> None:
    fake = FakeOS(picks=[50001])
    result = decide_ports({"a": None, "b": 4000}, {"a": 4000}, reserved={}, probe=fake.probe)
    assert ports(result) == {"a": 50001, "b": 4000}


def test_a_previous_pick_that_is_the_proxy_port_is_not_reused() -> None:
    fake = FakeOS(picks=[50001])
    result = decide_ports({"a": None}, {"a": 8443}, reserved={8443: "proxy"}, probe=fake.probe)
    assert ports(result) == {"a": 50001}


def test_two_services_with_the_same_previous_pick_do_not_share_it() -> None:
    fake = FakeOS(picks=[50001])
    result = decide_ports(
        {"a": None, "b": None}, {"a": 49731, "b": 49731}, reserved={}, probe=fake.probe
    )
    assert ports(result) == {"a": 49731, "b": 50001}


def test_a_service_wanting_the_proxy_port_is_moved() -> None:
    fake = FakeOS(picks=[50001])
    result = decide_ports(
        {"web": 8443}, {}, reserved={8443: "is devstack's proxy port"}, probe=fake.probe
    )
    assert result["web"].message() == "web: port 8443 is devstack's proxy port; using 50001"


def test_two_services_wanting_one_port_the_second_is_moved() -> None:
    fake = FakeOS(picks=[50001])
    result = decide_ports({"a": 3000, "b": 3000}, {}, reserved={}, probe=fake.probe)
    assert result["a"].port == 3000
    assert result["b"].message() == "b: port 3000 is wanted by service 'a' too; using 50001"


def test_results_follow_the_manifest_order() -> None:
    fake = FakeOS(held=[3000], picks=[50001, 50002])
    result = decide_ports({"z": None, "a": 3000, "m": 4000}, {}, reserved={}, probe=fake.probe)
    assert list(result) == ["z", "a", "m"]


# --- the sticky file -------------------------------------------------------------------------


def stack(
    tmp_path: Path, ports: dict[str, int | None], proxy: ProxySpec | None = None
) -> StackSpec:
    services = {
        name: ServiceSpec(name=name, command="x", cwd=tmp_path, port=port)
        for name, port in ports.items()
    }
    return StackSpec(
        manifest_path=tmp_path / "devstack.yaml", services=services, proxy=proxy or ProxySpec()
    )


def test_sticky_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / ".devstack" / "ports.json"
    save_sticky(path, {"simon": 49731, "worker": 50001}, {"simon": 3000, "worker": None})
    assert json.loads(path.read_text()) == {
        "version": 1,
        "services": {
            "simon": {"wanted": 3000, "port": 49731},
            "worker": {"wanted": None, "port": 50001},
        },
    }
    assert load_sticky(path) == {"simon": 49731, "worker": 50001}
    assert [p.name for p in path.parent.iterdir()] == ["ports.json"]


def test_nothing_is_written_when_there_is_nothing_to_remember(tmp_path: Path) -> None:
    path = tmp_path / ".devstack" / "ports.json"
    save_sticky(path, {}, {"web": 3000})
    assert not path.parent.exists()


def test_an_unchanged_file_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "ports.json"
    save_sticky(path, {"a": 49731}, {"a": None})
    before = path.stat().st_ino
    save_sticky(path, {"a": 49731}, {"a": None})
    assert path.stat().st_ino == before


def test_a_missing_file_means_no_picks(tmp_path: Path) -> None:
    assert load_sticky(tmp_path / "nope.json") == {}


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[]",
        '{"version": 2, "services": {}}',
        '{"version": 1, "services": []}',
        "\xff\xfe",
    ],
)
def test_a_corrupt_file_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    path = tmp_path / "ports.json"
    path.write_text(text, encoding="latin-1")
    with caplog.at_level(logging.WARNING, logger="devstack.run.ports"):
        assert load_sticky(path) == {}
    assert str(path) in caplog.text
    assert "ignoring" in caplog.text


def test_bad_entries_are_skipped_and_good_ones_kept(tmp_path: Path) -> None:
    path = tmp_path / "ports.json"
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "services": {
                    "ok": {"wanted": 3000, "port": 49731},
                    "string": {"port": "49732"},
                    "bool": {"port": True},
                    "range": {"port": 70000},
                    "flat": 49733,
                },
            }
        )
    )
    assert load_sticky(path) == {"ok": 49731}


def test_a_state_dir_that_cannot_be_created_is_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / ".devstack").write_text("a file where the folder should be")
    fake = FakeOS(picks=[50001])
    with caplog.at_level(logging.WARNING, logger="devstack.run.ports"):
        result = assign_ports(stack(tmp_path, {"worker": None}), probe=fake.probe)
    assert result["worker"].port == 50001
    assert "cannot save port picks" in caplog.text


def test_assign_ports_remembers_picks_across_runs(tmp_path: Path) -> None:
    spec = stack(tmp_path, {"simon": 3000, "worker": None})
    fake = FakeOS(held=[3000], picks=[49731, 50001, 50002, 50003])

    first = assign_ports(spec, probe=fake.probe)
    assert ports(first) == {"simon": 49731, "worker": 50001}
    assert load_sticky(spec.state_dir / "ports.json") == {"simon": 49731, "worker": 50001}

    fake.held.clear()  # 3000 is free again: simon takes it back, its pick stays on file
    second = assign_ports(spec, probe=fake.probe)
    assert ports(second) == {"simon": 3000, "worker": 50001}
    assert load_sticky(spec.state_dir / "ports.json") == {"simon": 49731, "worker": 50001}

    fake.held.add(3000)  # taken again: the old pick comes back
    third = assign_ports(spec, probe=fake.probe)
    assert ports(third) == {"simon": 49731, "worker": 50001}
    assert fake.picks == [50002, 50003]


def test_services_gone_from_the_manifest_are_forgotten(tmp_path: Path) -> None:
    fake = FakeOS(picks=[49731, 50001])
    assign_ports(stack(tmp_path, {"a": None, "b": None}), probe=fake.probe)
    assign_ports(stack(tmp_path, {"a": None}), probe=fake.probe)
    assert load_sticky(tmp_path / ".devstack" / "ports.json") == {"a": 49731}


def test_the_proxy_port_override_is_avoided(tmp_path: Path) -> None:
    path = tmp_path / ".devstack" / "ports.json"
    save_sticky(path, {"worker": 9443}, {"worker": None})
    fake = FakeOS(picks=[50001])
    result = assign_ports(stack(tmp_path, {"worker": None}), proxy_port=9443, probe=fake.probe)
    assert result["worker"].port == 50001
    assert 9443 in fake.avoided[0]


def test_the_spec_proxy_ports_are_avoided_only_when_the_proxy_is_on(tmp_path: Path) -> None:
    on = ProxySpec(port=9443, http_port=9080)
    fake = FakeOS(picks=[50001, 50002])
    result = assign_ports(stack(tmp_path, {"a": 9443, "b": 9080}, on), probe=fake.probe)
    assert result["a"].reason == "is devstack's proxy port"
    assert result["b"].reason == "is devstack's proxy HTTP port"

    off = ProxySpec(port=9443, http_port=9080, enabled=False)
    result = assign_ports(stack(tmp_path, {"a": 9443, "b": 9080}, off), probe=FakeOS().probe)
    assert ports(result) == {"a": 9443, "b": 9080}
