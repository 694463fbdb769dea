"""The package's layering, as the contracts in pyproject.toml state it, checked on every run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK_SECONDS = 60
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"


def test_import_contracts_are_kept() -> None:
    # lint-imports caches nothing here (--no-cache) so that a stale graph cannot hide a break.
    result = subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CHECK_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
