"""Forum-length posts, as a young person writes a long vent or a helper a long reply:
80 original posts a helper wrote (`longposts.jsonl`, DATA.md; docs/moderation.md § Long
posts). One of them showed a rule miss that was then fixed, so this guards figures of a
development set: a later change may trade one post for another, but a disclosure in a
long post must still reach a facilitator, and no more must-allow posts may be held."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from chatserver.config import ModelConfig
from chatserver.moderation.engine import RuleSet
from chatserver.moderation.pipeline import Moderator
from chatserver.moderation.rules import Action
from tests.conftest import classifier

POSTS = [orjson.loads(line) for line in
         (Path(__file__).parent / "longposts.jsonl").read_text(encoding="utf-8").splitlines()
         if line.strip()]
MUST_ALLOW_HELD_AT_MOST = 4
"""Of the 40 must-allow posts, held today: two about a friend or partner at risk, two
vents that deny risk in the words of risk."""


@pytest.fixture(scope="module")
def moderator(rules: RuleSet) -> Moderator:
    return Moderator(rules, classifier(), ModelConfig())


def test_every_long_post_is_forum_length() -> None:
    assert len(POSTS) == 80
    assert all(len(p["text"]) > 600 for p in POSTS)  # past one window of the heads


def test_a_disclosure_in_a_long_post_reaches_a_facilitator(moderator: Moderator) -> None:
    unseen = []
    for post in (p for p in POSTS if p["label"] == "risk"):
        v = moderator.check(post["text"])
        # Held for a facilitator, or delivered (the model read it as safe) with the
        # facilitator alerted and the sender signposted all the same.
        if not (v.action >= Action.HOLD or ("risk" in v.alerts and v.signpost)):
            unseen.append((post["kind"], post["text"][:80]))
    assert unseen == []


def test_few_long_must_allow_posts_are_held(moderator: Moderator) -> None:
    held = [(p["kind"], p["text"][:80]) for p in POSTS if p["label"] == "support"
            and moderator.check(p["text"]).action >= Action.HOLD]
    assert len(held) <= MUST_ALLOW_HELD_AT_MOST, held
