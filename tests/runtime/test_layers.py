"""The layers import downwards only: core < runtime < transport (README § Layout).

The core decides and never does I/O, so it imports neither the runtime nor a shell;
the runtime runs effects and never reaches up into the HTTP and WebSocket handlers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "chatserver"
FORBIDDEN = {
    "core": ("chatserver.runtime", "chatserver.transport", "chatserver.stores",
             "chatserver.brokers"),
    "runtime": ("chatserver.transport",),
}


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(layer: str) -> None:
    modules = sorted((PACKAGE / layer).rglob("*.py"))
    assert modules, f"no modules under chatserver/{layer}/"
    upward = [f"{path.relative_to(PACKAGE)}: {name}" for path in modules for name in _imports(path)
              if name.startswith(FORBIDDEN[layer])]
    assert upward == []
