"""The compiled matcher is kept on disk between processes, and a bad copy is never
trusted over compiling."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest

from chatserver.config import read_rule_files
from chatserver.moderation import engine
from chatserver.moderation.rules import Action

# Each test compiles the hyperscan database at least once (about 4 s): make test runs
# them, make check does not.
pytestmark = pytest.mark.slow

RULES = read_rule_files(str(importlib.resources.files("chatserver") / "moderation_rules"))


def _fresh_load() -> engine.RuleSet:
    engine._CACHE.clear()  # what a new process has: nothing compiled in memory
    return engine.load_rules(RULES)


def test_a_restart_loads_the_compiled_rules_and_they_still_decide(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSERVER_RULES_CACHE", str(tmp_path))
    first = _fresh_load()
    kept = sorted(tmp_path.glob("hs-*.db"))
    assert kept, "nothing was kept"
    second = _fresh_load()
    assert second is not first
    assert sorted(tmp_path.glob("hs-*.db")) == kept  # the same file, found again
    assert second.check("add me on snapchat").action == Action.BLOCK
    assert second.check("see you at lunch").action == Action.ALLOW


def test_a_damaged_copy_is_compiled_again(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSERVER_RULES_CACHE", str(tmp_path))
    _fresh_load()
    for kept in tmp_path.glob("hs-*.db"):
        kept.write_bytes(b"not a database")
    rules = _fresh_load()
    assert rules.check("add me on snapchat").action == Action.BLOCK
