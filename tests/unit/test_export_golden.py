"""Golden files: what `devstack export` writes for examples/devstack.yaml, format by format,
byte for byte (``tests/data/golden/``). A deliberate change rewrites them with
``DEVSTACK_UPDATE_GOLDEN=1`` (then read the diff)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devstack.export.document import joined
from devstack.export.formats import FORMATS, render
from devstack.export.options import ExportOptions
from devstack.manifest import loader

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "data" / "golden"
OPTIONS = ExportOptions(
    domain="example.com",
    images={"simon": "registry.example.com/simon:1.0",
            "startup": "registry.example.com/startup:1.0"},
)
NAMES = {"caddy": "Caddyfile", "k8s": "k8s.yaml", "compose": "compose.yaml",
         "systemd": "systemd.txt", "supervisord": "supervisord.conf"}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_the_example_exports_as_its_golden_file(fmt: str) -> None:
    spec = loader.load(ROOT / "examples" / "devstack.yaml").spec
    text = joined(render(fmt, spec, OPTIONS))
    golden = GOLDEN / NAMES[fmt]
    if os.environ.get("DEVSTACK_UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert golden.read_text(encoding="utf-8") == text, (
        f"{golden.relative_to(ROOT)} differs from the export; if the change is meant, rerun with "
        "DEVSTACK_UPDATE_GOLDEN=1 and read the diff")
