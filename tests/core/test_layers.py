"""The pure layers' import rules (docs/architecture.md § Layers and their import rules),
checked on every module file, so a module added to either package is held to them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "chatserver"

SHELL: frozenset[str] = frozenset({
    "chatserver.ports", "chatserver.brokers", "chatserver.stores", "chatserver.runtime",
    "chatserver.transport", "chatserver.cli", "chatserver.observability",
})
"""The layers that do I/O: the pure ones never reach into them."""
IO: frozenset[str] = frozenset({
    "asyncio", "aiohttp", "socket", "time", "logging", "structlog", "redis", "asyncpg",
    "aiosqlite", "sqlite3", "subprocess", "uvloop", "prometheus_client",
})
"""What would put a loop, a socket, a clock read or a log line into a pure module."""

FORBIDDEN: dict[str, frozenset[str]] = {
    "core": SHELL | IO | {"threading", "os", "numpy", "hyperscan"},
    # The model loads files and scores in a worker thread; it never calls the core.
    "moderation": SHELL | IO | {"chatserver.core"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _within(name: str, forbidden: frozenset[str]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_pure_layer_imports_no_io_and_no_shell(layer: str) -> None:
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, f"no modules under chatserver/{layer}"
    broken = {f"{path.relative_to(PACKAGE)}: {name}"
              for path in files for name in _imports(path)
              if _within(name, FORBIDDEN[layer])}
    assert not broken, sorted(broken)
