"""The README's commands are the ones CI runs, so the two cannot drift apart."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> dict[str, str]:
    """The README's "Two commands" block: each comment line and the command under it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Two commands", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "README.md: no ```sh block under '## Two commands'"
    commands: dict[str, str] = {}
    comment = ""
    for line in block.group(1).splitlines():
        if line.startswith("#"):
            comment = line.lstrip("# ").strip()
        elif line.strip():
            commands[comment] = line.strip()
    return commands


def test_ci_runs_the_readme_test_command_word_for_word() -> None:
    commands = readme_commands()
    test_command = next(cmd for comment, cmd in commands.items() if "tests" in comment)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci, f".ci/run does not run the README's test command: {test_command}"


def test_both_commands_install_through_the_script_that_makes_a_virtual_environment() -> None:
    commands = readme_commands()
    assert len(commands) == 2, commands
    for command in commands.values():
        assert command.startswith("./install.sh"), command
    script = ROOT / "install.sh"
    assert os.access(script, os.X_OK), "install.sh must be executable"
    assert "-m venv .venv" in script.read_text(encoding="utf-8")
