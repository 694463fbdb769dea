"""A contender serving its own copy of a subject, and one edit measured through its proxy.

- :func:`devstack_stack`: ``devstack up --port 0`` on a manifest with the subject as its one
  service and one route ``/`` to it;
- :func:`baseline_stack`: watchfiles' CLI restarting the subject, Caddy in front of it;
- :func:`edit_and_wait`: a save (:mod:`bench.edit`), then a keep-alive client through the proxy
  asking every 5 ms until the edit's token answers; meanwhile :class:`ChildWatch` notes when the
  old process went away and the new one appeared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procfs
from bench.contender import (
    FrontDoor,
    devstack_ca,
    start_caddy,
    start_devstack,
    start_watchfiles,
    stop_devstack,
    write_manifest,
)
from bench.edit import Subject, edited, save, token
from bench.errors import BenchError
from bench.launcher import Launched, Launcher
from bench.load import Answer, Poller
from bench.poll import wait_until
from bench.ports import free_port

DEVSTACK = "devstack"
DEVSTACK_BLUE_GREEN = "devstack blue-green"
BASELINE = "watchfiles+caddy"
EDIT_SECONDS = 30.0
"""Deadline for a new version to answer after a save; past it the bench stops and says so."""
START_SECONDS = 30.0
EDIT_INTERVAL_SECONDS = 1.0
"""The least time from an edit's new answer to the next save of the same file: a person's pace.
Saving again the moment a service is back reads, to devstack's reload-loop detector, as the
service writing into its own watch set; three in a row and it stops reloading on that file."""
WATCHED = ["*.py"]
"""What devstack watches in the edit figures, as watchfiles' CLI does with ``--filter python``."""


@dataclass
class Stack:
    """One contender running one copy of a subject, reached through its proxy."""

    name: str
    door: FrontDoor
    service_dir: Path
    """The copy this contender runs, the one its edits go to."""
    programs: tuple[Launched, ...]
    """Whose output to show when it fails; the first one starts the service's processes."""
    poller: Poller
    edits: int = 0
    answered_at: float = -math.inf
    """When its last edit was answered (``time.monotonic()``)."""

    def tails(self) -> str:
        return "\n".join(f"  {p.name} ({p.log}):\n{p.tail()}" for p in self.programs)


@dataclass(frozen=True)
class Reload:
    seconds: float
    """From the end of the save until the first answer carrying the new token."""
    failures: int
    """Answers to the poller meanwhile that were not 2xx/3xx, or socket errors."""
    gone_seconds: float | None
    """From the end of the save until the old process was gone (the change seen, the old
    process stopped); ``None`` when not seen (blue-green: it outlives the new one's answer)."""
    spawned_seconds: float | None
    """From the end of the save until the new process appeared; what follows is the service's
    own start, then the proxy's first answer from it."""


@contextlib.contextmanager
def devstack_stack(launcher: Launcher, folder: Path, home: Path, subject: Subject,
                   service_dir: Path, *, watch: list[str] | None = None,
                   blue_green: bool = False) -> Iterator[Stack]:
    """``devstack up`` on a manifest with the subject (in ``service_dir``) as its one service
    and one route ``/`` to it; ``watch`` as in the manifest (``None``: the default, everything
    under the service's folder); ``blue_green``: ``reload: blue-green`` (named
    :data:`DEVSTACK_BLUE_GREEN`)."""
    service: dict[str, Any] = {"command": subject.command, "cwd": str(service_dir)}
    if watch is not None:
        service["watch"] = watch
    if blue_green:
        service["reload"] = "blue-green"
    name = DEVSTACK_BLUE_GREEN if blue_green else DEVSTACK
    if subject.health is not None:
        service["health"] = subject.health
    manifest = write_manifest(
        folder,
        {"services": {subject.name: service},
         "routes": [{"path": "/", "service": subject.name}]},
    )
    launched, port = start_devstack(launcher, manifest, home, proxy=True)
    try:
        launched.remember_descendants()
        door = FrontDoor(name, f"https://localhost:{port}{subject.path}", devstack_ca(home),
                         launched)
        with _polled(door) as poller:
            yield _checked(Stack(name, door, service_dir, (launched,), poller))
    finally:
        stop_devstack(launcher, launched)


@contextlib.contextmanager
def baseline_stack(launcher: Launcher, folder: Path, subject: Subject, service_dir: Path
                   ) -> Iterator[Stack]:
    """watchfiles' CLI running the subject (in ``service_dir``) on a free port, Caddy in front
    of it."""
    port = free_port()
    watcher = start_watchfiles(launcher, subject.command, service_dir, port)
    try:
        caddy = start_caddy(launcher, folder / "caddy", port)
        assert caddy.process is not None
        try:
            door = dataclasses.replace(
                caddy, name=BASELINE, url=caddy.url.rstrip("/") + subject.path
            )
            with _polled(door) as poller:
                yield _checked(
                    Stack(BASELINE, door, service_dir, (watcher, caddy.process), poller)
                )
        finally:
            launcher.stop(caddy.process)
    finally:
        launcher.stop(watcher)


@contextlib.contextmanager
def _polled(door: FrontDoor) -> Iterator[Poller]:
    poller = Poller(door.url, door.cacert)
    try:
        yield poller
    finally:
        poller.close()


def _checked(stack: Stack) -> Stack:
    """The stack, once it answers 200 through its proxy."""
    last = Answer(None)

    def answers() -> bool:
        nonlocal last
        last = stack.poller.get()
        return last.status == 200

    try:
        wait_until(answers, timeout=START_SECONDS, message=f"{stack.name} to answer 200")
    except BenchError as exc:
        raise BenchError(f"{exc} at {stack.door.url}; last: {describe(last)}\n{stack.tails()}"
                         ) from exc
    return stack


def edit_and_wait(stack: Stack, subject: Subject) -> Reload:
    """Save the next edit of the stack's copy and poll through its proxy until the new token
    answers; a save that is never answered stops the bench with what was answered instead.
    Saves of one copy are at least :data:`EDIT_INTERVAL_SECONDS` apart, at a person's pace."""
    pause = stack.answered_at + EDIT_INTERVAL_SECONDS - time.monotonic()
    if pause > 0:
        time.sleep(pause)  # the pace of the edits, part of the method
    stack.edits += 1
    number = stack.edits
    path = stack.service_dir / subject.script
    text = edited(path.read_text(encoding="utf-8"), subject, number)
    expected = token(number).encode()
    failures = 0
    last = Answer(None)

    def new_version_answers() -> bool:
        nonlocal failures, last
        last = stack.poller.get()
        failures += last.is_failure
        return last.status == 200 and expected in last.body

    with ChildWatch(stack.programs[0].pid) as children:
        save(path, text, in_place=number % 2 == 0)
        saved = time.monotonic()
        try:
            wait_until(
                new_version_answers,
                timeout=EDIT_SECONDS,
                message=f"{stack.name} to answer {expected.decode()} at {stack.door.url} after "
                f"edit {number} of {path}",
            )
        except BenchError as exc:
            raise BenchError(f"{exc}; last answer: {describe(last)}\n{stack.tails()}") from exc
        stack.answered_at = time.monotonic()
    return Reload(
        stack.answered_at - saved,
        failures,
        None if children.gone_at is None else children.gone_at - saved,
        None if children.spawned_at is None else children.spawned_at - saved,
    )


class ChildWatch:
    """When one of ``pid``'s children went away and when a new one appeared, from a thread
    reading /proc every 2 ms while the block runs: the poller cannot see either, being held in
    devstack's proxy for the whole reload. (A thread is fine here: this is the bench.)"""

    INTERVAL_SECONDS = 0.002

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._before = procfs.children(pid)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self.gone_at: float | None = None
        self.spawned_at: float | None = None

    def __enter__(self) -> ChildWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while self.spawned_at is None and not self._done.wait(self.INTERVAL_SECONDS):
            now = procfs.children(self._pid)
            if self.gone_at is None and self._before - now:
                self.gone_at = time.monotonic()
            if now - self._before:
                self.spawned_at = time.monotonic()


def describe(answer: Answer) -> str:
    if answer.status is None:
        return answer.error or "nothing yet"
    return f"{answer.status} {answer.body[:120]!r}"
