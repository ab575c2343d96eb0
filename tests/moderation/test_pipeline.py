"""How the two stages combine (moderation/pipeline.py), with the committed heads."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from chatserver.config import ModelConfig
from chatserver.moderation.classifier import Encoder, FloatArray
from chatserver.moderation.engine import RuleSet
from chatserver.moderation.pipeline import Moderator
from chatserver.moderation.rules import Action
from tests.conftest import classifier

# Lines written for these tests (not in the corpus): a helper's reply that names suicide,
# an indirect disclosure no rule lists, and a line only a rule catches.
HELPER_REPLY = "if ur feeling suicidal tonight pls ring samaritans 116 123, we want u here x"
INDIRECT = "gave my console to my little brother today. wont be needing it after friday"
PHONE = "text me on 07700 900 417 later"
# A forum-length post: an ordinary day told at length, then what matters, past the 600
# characters the heads read at a time.
DAY = ("ok long one sorry. started the morning late because the alarm didnt go off, "
       "missed the 7.40 bus and had to wait in the rain for the next one with a woman "
       "who kept telling me about her allotment. college was fine, media studies then a "
       "free period where we sat in the library pretending to revise and mostly argued "
       "about which greggs is best. afternoon was english, "
       "we're doing an inspector calls again, which i actually quite like. got home, fed "
       "the dog, helped my little brother with his spellings and burnt the fish fingers "
       "a bit but nobody complained. ")
LONG_GOODBYE = DAY + ("so yeah. ive written everyone their letters and put them in my drawer. "
                      "tonights the night, im done with all of it")
LONG_BETTER = DAY + ("so yeah. honestly a normal boring day and im grateful for it, thanks for "
                     "always listening lot")


@pytest.fixture(scope="module")
def moderator(rules: RuleSet) -> Moderator:
    return Moderator(rules, classifier(), ModelConfig())


def test_a_supportive_reply_a_rule_would_hold_is_cleared(moderator: Moderator) -> None:
    assert moderator.ruleset.check(HELPER_REPLY).action == Action.HOLD
    v = moderator.check(HELPER_REPLY)
    assert (v.action, v.stage) == (Action.ALLOW, "model")
    assert [h.rule.id for h in v.cleared] == ["risk.suicidal-intent"]
    # Released at once, the safety net kept: signposted, and facilitators still told.
    assert v.alerts == ("risk",) and v.signpost and v.hits == ()


def test_an_indirect_disclosure_the_rules_miss_is_held_with_signpost(
        moderator: Moderator) -> None:
    assert moderator.ruleset.check(INDIRECT).action == Action.ALLOW
    v = moderator.check(INDIRECT)
    assert (v.action, v.stage) == (Action.HOLD, "model")
    assert "risk" in v.alerts and v.signpost and v.notice
    assert v.scores["risk"] >= v.thresholds["risk"]


def test_what_a_rule_blocks_stays_blocked_whatever_the_model_says(rules: RuleSet) -> None:
    eager = Moderator(rules, classifier(), ModelConfig(thresholds={"support": 0.0}))
    v = eager.check(PHONE)
    assert (v.action, v.stage) == (Action.BLOCK, "rules")


def test_clearing_needs_the_rule_to_allow_it(rules: RuleSet) -> None:
    strict = Moderator(rules, classifier(), ModelConfig(clear=False))
    assert strict.check(HELPER_REPLY).action == Action.HOLD


def test_shadow_mode_scores_and_records_but_never_acts(rules: RuleSet) -> None:
    shadow = Moderator(rules, classifier(), ModelConfig(mode="shadow"))
    v = shadow.check(INDIRECT)
    assert v.action == Action.ALLOW
    assert "model.risk" in [h.rule.id for h in v.shadow]
    assert v.scores and v.model_version == classifier().version
    one = Moderator(rules, classifier(), ModelConfig(shadow_heads=("risk",)))
    assert one.check(INDIRECT).action == Action.ALLOW


def test_room_profile_thresholds_win(rules: RuleSet) -> None:
    cfg = ModelConfig(profile_thresholds={"adult": {"risk": 1.0, "method": 1.0}})
    m = Moderator(rules, classifier(), cfg)
    assert m.check(INDIRECT, profile="default").action == Action.HOLD
    assert m.check(INDIRECT, profile="adult").action == Action.ALLOW


def test_staff_lines_are_not_second_guessed(moderator: Moderator) -> None:
    v = moderator.check(INDIRECT, role="facilitator")
    assert v.action == Action.ALLOW and v.scores == {}


def test_rules_alone_when_the_model_is_switched_off(rules: RuleSet) -> None:
    off = Moderator(rules, classifier(), ModelConfig(enabled=False))
    assert off.check(INDIRECT).action == Action.ALLOW
    assert off.check(HELPER_REPLY).action == Action.HOLD


def test_a_reload_keeps_the_heads(moderator: Moderator) -> None:
    again = moderator.with_rules(moderator.ruleset)
    assert again.classifier is moderator.classifier
    assert dataclasses.asdict(again.config) == dataclasses.asdict(moderator.config)


def test_a_short_line_needs_a_near_certain_score_to_be_held_by_the_model(
        rules: RuleSet) -> None:
    """A few words carry little evidence: a model-only hold of a short line needs
    pipeline.SHORT_BAR on risk or method, and never comes from the other heads."""
    low = Moderator(rules, classifier(), ModelConfig(thresholds={"risk": 0.0}))
    assert low.check(INDIRECT).action == Action.HOLD  # long: the threshold applies
    v = low.check("see u later")
    assert v.action == Action.ALLOW and v.scores["risk"] < 0.985
    eager = Moderator(rules, classifier(), ModelConfig(thresholds={"contact": 0.0}))
    assert eager.check("hello 9 from 2").action == Action.ALLOW


def test_the_same_line_in_flight_twice_finds_its_vector_both_times(rules: RuleSet) -> None:
    """Two people send one line at once: the shell prepares it twice, then both checks
    run; neither computes the sentence vector inline (on the event loop), and both get
    the verdict of a line checked alone."""
    clf = classifier()
    moderator = Moderator(rules, clf, ModelConfig())
    alone = Moderator(rules, clf, ModelConfig()).check(INDIRECT)
    folded = [moderator.needs_vector(INDIRECT), moderator.needs_vector(INDIRECT)]
    assert folded[0] is not None and folded == [folded[0]] * 2
    vector = clf.embed(folded[0])
    moderator.remember(INDIRECT, "participant", vector)
    moderator.remember(INDIRECT, "participant", vector)
    inline: list[object] = []
    encoder = clf.encoder
    try:
        clf.encoder = _Counting(encoder, inline)
        first, second = moderator.check(INDIRECT), moderator.check(INDIRECT)
    finally:
        clf.encoder = encoder
    assert inline == []
    assert first == second == alone


def test_what_a_long_post_says_after_its_first_600_characters_is_read(
        moderator: Moderator) -> None:
    """The heads read a long message in windows: a goodbye after a long ordinary story
    is held and signposted, where reading only the start let it through; the same story
    ending well is delivered."""
    assert LONG_GOODBYE.index("tonights the night") > 600
    assert moderator.ruleset.check(LONG_GOODBYE).action == Action.ALLOW
    v = moderator.check(LONG_GOODBYE)
    assert (v.action, v.stage) == (Action.HOLD, "model") and v.signpost
    assert "risk" in v.alerts
    assert moderator.check(LONG_BETTER).action == Action.ALLOW


def test_the_shell_prepares_every_window_of_a_long_post(rules: RuleSet) -> None:
    """The server's path for a long message: the pre-pass asks for one vector a window,
    the check then computes none on the event loop and gives the inline verdict."""
    clf = classifier()
    moderator = Moderator(rules, clf, ModelConfig())
    alone = Moderator(rules, clf, ModelConfig()).check(LONG_GOODBYE)
    folded = moderator.needs_vector(LONG_GOODBYE)
    assert folded is not None and len(folded) == 2 and folded[-1].endswith("all of it")
    moderator.remember(LONG_GOODBYE, "participant", clf.embed(folded))
    inline: list[object] = []
    encoder = clf.encoder
    try:
        clf.encoder = _Counting(encoder, inline)
        served = moderator.check(LONG_GOODBYE)
    finally:
        clf.encoder = encoder
    assert inline == [] and served == alone


class _Counting:
    """The real encoder, counting its calls."""

    def __init__(self, encoder: Encoder, calls: list[object]) -> None:
        self.encoder, self.calls = encoder, calls

    def encode(self, folded: Sequence[str]) -> FloatArray:
        self.calls.append(list(folded))
        return self.encoder.encode(folded)
