"""A red-team suite written by an author outside this project's code (a helper agent
that saw only issue 13's list of kinds, never the rules or the code): 165 reworded and
disguised messages and 35 ordinary ones (`redteam.jsonl`, DATA.md). Run once before any
fix, the whole pipeline held or blocked 159 of the 165 (96.4 %); the misses it showed
and that were mended are in CHANGELOG. It guards the issue's floor, not each line: a
later change may trade one line for another, but not drop under 95 %, and no ordinary
line may be held, blocked or flagged as evasion.

A second suite by another such author (`redteam2.jsonl`, 2026-12-03, DATA.md): 160
disguised messages (15 of them split over several, 15 of them display names) and 60
ordinary lines. Run before any fix, the rules and heads of the day held, blocked or
refused 153 of the 160 (95.6 %) and stopped none of the ordinary lines; four of the
seven misses were mended the same day (a misspelt app before a handle, a what3words
address, mixing cleaning products "to make the gas", game currency "for a favour", an
NHS display name), so it too is a development set now."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from chatserver.config import ModelConfig
from chatserver.core.errors import ChatError
from chatserver.core.policy import check_display_name
from chatserver.moderation.engine import RuleSet
from chatserver.moderation.pipeline import Moderator
from chatserver.moderation.rules import Action
from tests.conftest import classifier


def _suite(name: str) -> list[dict[str, Any]]:
    text = (Path(__file__).parent / name).read_text(encoding="utf-8")
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


SUITE = _suite("redteam.jsonl")
SUITE_2 = _suite("redteam2.jsonl")
FLOOR = 0.95


@pytest.fixture(scope="module")
def moderator(rules: RuleSet) -> Moderator:
    return Moderator(rules, classifier(), ModelConfig())


def _stopped(moderator: Moderator, text: str) -> bool:
    return moderator.check(text).action >= Action.HOLD


def _caught(moderator: Moderator, row: dict[str, Any]) -> bool:
    if row["kind"] == "display_name":  # refused at join (issue 13 § 4)
        with contextlib.suppress(ChatError):
            check_display_name(row["text"], moderator.ruleset)
            return False
        return True
    # A split message: some part of it, or the sender's window joined as the
    # conversation context joins it (rules only), must stop it.
    parts = row.get("messages") or row.get("sequence") or [row["text"]]
    return any(_stopped(moderator, p) or moderator.ruleset.check(
        " ".join(parts[max(0, i - 3):i + 1])).action >= Action.HOLD
        for i, p in enumerate(parts))


@pytest.mark.parametrize(("suite", "size"), [(SUITE, 165), (SUITE_2, 160)],
                         ids=["redteam", "redteam2"])
def test_disguised_messages_are_held_or_blocked(
        moderator: Moderator, suite: list[dict[str, Any]], size: int) -> None:
    attacks = [row for row in suite if row["expect"] == "catch"]
    missed = [row for row in attacks if not _caught(moderator, row)]
    assert len(attacks) == size
    assert 1 - len(missed) / len(attacks) >= FLOOR, missed


@pytest.mark.parametrize(("suite", "size"), [(SUITE, 35), (SUITE_2, 60)],
                         ids=["redteam", "redteam2"])
def test_ordinary_lines_of_the_suite_reach_the_room_without_an_evasion_alert(
        moderator: Moderator, suite: list[dict[str, Any]], size: int) -> None:
    benign = [row["text"] for row in suite if row["expect"] == "allow"]
    assert len(benign) == size
    verdicts = {text: moderator.check(text) for text in benign}
    assert [t for t, v in verdicts.items()
            if v.action != Action.ALLOW or "evasion" in v.alerts] == []
