"""systemd reads the units `devstack export systemd` writes (`systemd-analyze verify`: the unit
syntax, known settings, an absolute executable), for every manifest of the tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from devstack.export.formats import render
from devstack.export.options import ExportOptions
from tests.unit.export_manifests import MANIFESTS, load_manifest

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="needs systemd-analyze")

VERIFY_SECONDS = 30


@pytest.mark.parametrize("name", list(MANIFESTS))
def test_systemd_accepts_every_export(name: str, tmp_path: Path) -> None:
    spec = load_manifest(name, tmp_path / "manifest")
    units = tmp_path / "units"
    units.mkdir()
    for document in render("systemd", spec, ExportOptions()):
        (units / document.name).write_text(document.text)
    services = sorted(str(p) for p in units.glob("*.service"))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", *services], cwd=units,
                          capture_output=True, text=True, timeout=VERIFY_SECONDS, check=False)
    assert done.returncode == 0, done.stderr
    assert "Ignoring" not in done.stderr and "Invalid" not in done.stderr, done.stderr
