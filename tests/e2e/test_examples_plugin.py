"""The examples' own integration tests (``examples/tests``, written with the pytest plugin as a
user writes theirs) pass, run as a user runs them: ``pytest tests`` in a copy of ``examples/``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("node") is None, reason="the example needs Node.js"),
]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_examples_integration_tests_pass(tmp_path: Path) -> None:
    copy = tmp_path / "examples"
    shutil.copytree(EXAMPLES, copy, ignore=shutil.ignore_patterns(
        "data", ".devstack", "node_modules", "__pycache__", ".pytest_cache"))

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests"],
        cwd=copy, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout
    assert not (copy / ".devstack" / "run.json").exists()  # the session stopped its stack
