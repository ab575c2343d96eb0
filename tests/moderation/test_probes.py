"""Reworded and disguised messages written for issue 13 (made up here, none copied from
any dataset) that reached the room before the rules and views they name were added:
each is now held or blocked by the rules alone, so the model is not what catches it."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings, strategies as st

from chatserver.moderation.engine import RuleSet
from chatserver.moderation.rules import Action

CAUGHT = [
    # grooming: short checks that a child is alone or unsupervised
    ("grooming", "are u alone?"),
    ("grooming", "parents home?"),
    ("grooming", "u home alone?"),
    ("grooming", "r ur parents around"),
    ("grooming", "mum n dad out?"),
    ("grooming", "where r ur parents?"),
    ("grooming", "anyone watching ur screen"),
    ("grooming", "is ur door locked"),
    ("grooming", "ur parents not home?"),
    ("grooming", "who else is home rn"),
    # grooming: secrecy in text-speak
    ("grooming", "keep it secret ok"),
    ("grooming", "u have to keep it a secret"),
    ("grooming", "dnt tell any1"),
    ("grooming", "dont tell no1 ok"),
    ("grooming", "delete after reading"),
    # grooming: gifts in game currency, moving the chat elsewhere
    ("grooming", "ill gift u vbucks"),
    ("grooming", "i'll send you a nitro"),
    ("grooming", "this app is rubbish, whatsapp me"),
    # method: plurals misspelt, mixing household chemicals
    ("method", "how many pillz"),
    ("method", "how manny tabs would do it"),
    ("method", "mixing bleach and ammonia will it kill me"),
    ("method", "whats the least painful way to go"),
    # a street address with the house number in words
    ("contact", "i live at nine acacia avenue"),
    ("contact", "im at twenty two oak close"),
    # contact: a handle asked for by its sign alone
    ("contact", "what's ur @"),
    # written backwards
    ("abuse", "flesruoy llik"),
    ("method", "og ot yaw lufniap tsael"),
    # a phone number in base64
    ("contact", "MDc3MDAgOTAwIDMxMg=="),
]

STILL_ALLOWED = [
    "i was home alone and got scared",
    "my parents home is in wales",
    "where are your parents from originally? mine are from ghana",
    "never mix bleach and ammonia when you clean",
    "i got sc tomorrow",  # a signal at most, never held alone
    "if someone online says keep it secret thats a red flag. tell an adult",
    "i can't keep it a secret if you're in danger, but i'll stay with you",
    # street types that are ordinary words, without a house number
    "im on my way",
    "im in a dark place rn",
    "im on the way home now",
    "it's been one long road but im ok",
    # a helpline run together with other digits
    "samaritans are 24/7, 116 123, i rang at 4am once and someone picked up",
]


@pytest.mark.parametrize(("category", "text"), CAUGHT)
def test_issue13_probe_is_held_or_blocked(rules: RuleSet, category: str, text: str) -> None:
    v = rules.check(text)
    assert v.action >= Action.HOLD, (text, v.hits)
    assert category in v.categories, (text, v.categories)


@pytest.mark.parametrize("text", STILL_ALLOWED)
def test_the_same_words_in_ordinary_talk_are_not_held(rules: RuleSet, text: str) -> None:
    v = rules.check(text)
    assert v.action < Action.HOLD, (text, [h.rule.id for h in v.hits])
    assert "evasion" not in v.alerts


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 999), st.sampled_from(["", " ", "-", "."]),
       st.sampled_from(["{}", "text me {}", "{} ok"]))
def test_a_fictional_number_in_base64_is_caught(rules: RuleSet, n: int, sep: str,
                                                 carrier: str) -> None:
    number = f"07700{sep}900{sep}{n:03d}"
    encoded = base64.b64encode(number.encode()).decode()
    v = rules.check(carrier.format(encoded))
    assert v.action >= Action.HOLD and "contact" in v.categories, encoded
    assert "evasion" in v.alerts


@pytest.mark.parametrize("text", [
    "i think my cousin is self harming, she wears long sleeves",
    "If you are self-harming, you are not bad or attention-seeking.",
    "7 months no self harm today!!",
])
def test_ordinary_spellings_that_two_patterns_read_raise_no_evasion(rules: RuleSet,
                                                                     text: str) -> None:
    # "self harm" is also "selfharm" split by a space: one pattern reads it as written.
    assert "evasion" not in rules.check(text).alerts


@pytest.mark.parametrize("text", ["ring 07700 900123 116123", "0800 1111 07700 900 312",
                                  "116123 07700 900 312 call me"])
def test_a_number_beside_a_helpline_is_still_caught(rules: RuleSet, text: str) -> None:
    assert rules.check(text).action == Action.BLOCK


@pytest.mark.parametrize(("text", "evasion"), [
    ("what's your insta", False),       # an apostrophe read as a space
    ("where abouts are you", False),    # "whereabouts" written as two words
    ("we should meet up sometime", False),
    ("jo smith at gmail dot com", True),  # "at ... dot com" is a disguise
    ("whats ur sn4p", True),
    ("add me on s.n.a.p", True),
])
def test_evasion_is_raised_for_disguises_only(rules: RuleSet, text: str, evasion: bool) -> None:
    v = rules.check(text)
    assert v.action >= Action.HOLD
    assert ("evasion" in v.alerts) == evasion, (text, v.alerts)
