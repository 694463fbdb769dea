"""The formats ``devstack export`` writes, each a module with ``render(spec, options)``; a
format's module is imported only when it is asked for (systemd's loads honcho's templates)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from devstack.export.document import Document
from devstack.export.options import ExportOptions
from devstack.manifest.spec import StackSpec

FORMATS = {
    "caddy": "devstack.export.caddy",
    "k8s": "devstack.export.kubernetes",
    "compose": "devstack.export.compose",
    "systemd": "devstack.export.process_manager",
    "supervisord": "devstack.export.process_manager",
}

Renderer = Callable[[StackSpec, ExportOptions], tuple[Document, ...]]


def render(name: str, spec: StackSpec, options: ExportOptions) -> tuple[Document, ...]:
    """The files of format ``name`` (a key of :data:`FORMATS`) for ``spec``."""
    module = importlib.import_module(FORMATS[name])
    renderer: Renderer = getattr(module, f"render_{name}", None) or module.render
    return renderer(spec, options)
