"""A red-team suite written by an author outside this project's code (a helper agent
that saw only issue 13's list of kinds, never the rules or the code): 165 reworded and
disguised messages and 35 ordinary ones (`redteam.jsonl`, DATA.md). Run once before any
fix, the whole pipeline held or blocked 159 of the 165 (96.4 %); the misses it showed
and that were mended are in CHANGELOG. It guards the issue's floor, not each line: a
later change may trade one line for another, but not drop under 95 %, and no ordinary
line may be held, blocked or flagged as evasion."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from chatserver.config import ModelConfig
from chatserver.moderation.engine import RuleSet
from chatserver.moderation.pipeline import Moderator
from chatserver.moderation.rules import Action
from tests.conftest import classifier

SUITE = [orjson.loads(line) for line in
         (Path(__file__).parent / "redteam.jsonl").read_text(encoding="utf-8").splitlines()
         if line.strip()]
FLOOR = 0.95


@pytest.fixture(scope="module")
def moderator(rules: RuleSet) -> Moderator:
    return Moderator(rules, classifier(), ModelConfig())


def _stopped(moderator: Moderator, text: str) -> bool:
    return moderator.check(text).action >= Action.HOLD


def test_disguised_messages_are_held_or_blocked(moderator: Moderator) -> None:
    attacks = [row for row in SUITE if row["expect"] == "catch"]
    missed = []
    for row in attacks:
        # A split message: some part of it, or the sender's window joined as the
        # conversation context joins it (rules only), must stop it.
        parts = row.get("messages") or [row["text"]]
        if not any(_stopped(moderator, p) or moderator.ruleset.check(
                " ".join(parts[max(0, i - 3):i + 1])).action >= Action.HOLD
                for i, p in enumerate(parts)):
            missed.append(parts)
    assert len(attacks) == 165
    assert 1 - len(missed) / len(attacks) >= FLOOR, missed


def test_ordinary_lines_of_the_suite_reach_the_room_without_an_evasion_alert(
        moderator: Moderator) -> None:
    benign = [row["text"] for row in SUITE if row["expect"] == "allow"]
    assert len(benign) == 35
    verdicts = {text: moderator.check(text) for text in benign}
    assert [t for t, v in verdicts.items()
            if v.action != Action.ALLOW or "evasion" in v.alerts] == []
