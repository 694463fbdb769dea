"""Edits to a running stack's manifest (devstack/reload/manifest.py): reported, never applied."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from devstack.manifest import loader
from devstack.manifest.spec import StackSpec
from devstack.reload.manifest import (
    describe,
    differences,
    followed_files,
    identity,
    watch_manifest,
)

RUNNING = """\
services:
  web:
    command: python3 -m http.server $PORT
    port: 3000
  api:
    command: python3 -m http.server $PORT
routes:
  - path: /api
    service: api
  - path: /
    service: web
"""


def write(folder: Path, text: str) -> Path:
    path = folder / "devstack.yaml"
    path.write_text(text)
    return path


def running_from(folder: Path) -> StackSpec:
    return loader.load(write(folder, RUNNING)).spec


@asynccontextmanager
async def watching(running: StackSpec) -> AsyncIterator[asyncio.Queue[tuple[str, bool]]]:
    """:func:`watch_manifest` on ``running``, polling every 10 ms, once it knows what runs; what
    it reports arrives in the queue yielded."""
    reported: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
    started = asyncio.Event()
    task = asyncio.create_task(watch_manifest(
        running, lambda line, error: reported.put_nowait((line, error)),
        poll_seconds=0.01, started=started,
    ))  # fmt: skip
    try:
        await asyncio.wait_for(started.wait(), 10)
        yield reported
    finally:
        task.cancel()


def test_a_comment_or_key_order_changes_nothing_in_effect(tmp_path: Path) -> None:
    running = running_from(tmp_path)
    edited = "# a comment\n" + RUNNING.replace(
        "    command: python3 -m http.server $PORT\n    port: 3000\n",
        "    port: 3000\n    command: python3 -m http.server $PORT\n",
    )
    write(tmp_path, edited)
    assert differences(running, loader.load(tmp_path / "devstack.yaml").spec) == []
    lines, is_error = describe(running, "devstack.yaml")
    assert lines == ["devstack.yaml changed; nothing in effect differs from the running stack"]
    assert not is_error


def test_services_added_removed_and_changed_and_routes_are_named(tmp_path: Path) -> None:
    running = running_from(tmp_path)
    edited = RUNNING.replace("port: 3000", "port: 3001").replace(
        "  api:\n    command: python3 -m http.server $PORT\n",
        "  jobs:\n    command: sleep 1000\n  mail:\n    command: sleep 1000\n",
    ).replace("service: api", "service: jobs")
    write(tmp_path, edited)
    found = differences(running, loader.load(tmp_path / "devstack.yaml").spec)
    assert found == [
        "services jobs, mail added", "service api removed", "service web changed", "routes changed"
    ]
    lines, is_error = describe(running, "devstack.yaml")
    assert not is_error and len(lines) == 1
    assert lines[0].startswith("devstack.yaml changed: services jobs, mail added; service api")
    assert lines[0].endswith("stop devstack and start it again to apply the edit")


def test_an_edit_that_does_not_load_is_reported_with_its_errors(tmp_path: Path) -> None:
    running = running_from(tmp_path)
    write(tmp_path, RUNNING.replace("command:", "comand:", 1))
    lines, is_error = describe(running, "devstack.yaml")
    assert is_error
    assert lines[0] == (
        "devstack.yaml changed and the manifest does not load; the stack keeps running as it "
        "started:"
    )
    assert any(
        line.endswith(":3: services.web.comand: unknown key; did you mean 'command'?")
        for line in lines[1:]
    ), lines


def test_a_save_within_the_same_second_and_a_rename_over_the_file_change_its_identity(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, RUNNING)
    first = identity(path)
    os.utime(path, ns=(0, 0))
    stamped = identity(path)
    assert stamped != first
    other = tmp_path / "new.yaml"
    other.write_text(RUNNING)
    os.utime(other, ns=(0, 0))
    other.replace(path)  # as editors that save through a temporary file do
    assert identity(path) != stamped
    path.unlink()
    assert identity(path) is None


def test_each_saved_version_is_reported_once(tmp_path: Path) -> None:
    running = running_from(tmp_path)
    path = tmp_path / "devstack.yaml"

    async def main() -> list[tuple[str, bool]]:
        async with watching(running) as reported:
            path.write_text(RUNNING + "# edited\n")
            seen = [await asyncio.wait_for(reported.get(), 10)]
            path.write_text("services: [\n")
            seen.append(await asyncio.wait_for(reported.get(), 10))
            seen.append(await asyncio.wait_for(reported.get(), 10))
            assert reported.empty()
            return seen

    seen = asyncio.run(main())
    assert seen[0] == ("devstack.yaml changed; nothing in effect differs from the running stack",
                       False)  # fmt: skip
    assert seen[1] == (
        "devstack.yaml changed and the manifest does not load; the stack keeps running as it "
        "started:", True
    )
    assert "invalid YAML" in seen[2][0] and seen[2][1]


def test_the_env_files_the_services_read_are_followed_too(tmp_path: Path) -> None:
    (tmp_path / "web.env").write_text("GREETING=hello\n")
    with_env_file = RUNNING.replace("    port: 3000\n", "    port: 3000\n    env_file: web.env\n")
    path = write(tmp_path, with_env_file)
    running = loader.load(path).spec
    assert followed_files(running) == (path.absolute(), (tmp_path / "web.env").absolute())

    async def main() -> tuple[str, bool]:
        async with watching(running) as reported:
            (tmp_path / "web.env").write_text("GREETING=bonjour\n")
            return await asyncio.wait_for(reported.get(), 10)

    line, is_error = asyncio.run(main())
    assert line.startswith("web.env changed: service web changed. The running stack keeps")
    assert not is_error
