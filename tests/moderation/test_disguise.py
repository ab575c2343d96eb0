"""Text written backwards, upside down or in base64 is read too, only when a message looks
like it."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, strategies as st

from chatserver.moderation.disguise import hidden_views
from chatserver.moderation.engine import RuleSet
from chatserver.moderation.normalize import normalize
from chatserver.moderation.rules import Action

DISGUISED = [
    "add me on snapchat"[::-1],
    "text me on 07700 900461 tonight"[::-1],
    "my email is barny1234 at gmail dot com"[::-1],
    "Ɩ9ㄣ006 00ㄥㄥ0 uo ǝɯ ʇxǝʇ",  # "text me on 07700 900461", turned upside down
    "ʎlʇsǝuoɥ sʎʞ plnoɥs noʎ",
    "uɹ ǝuolɐ ǝɯoɥ noʎ ǝɹɐ",
    "ɹǝqɯnu ʎɯ sᴉ 19ㄣ006 00ㄥㄥ0"[::-1],  # turned over but not reversed
    base64.b64encode(b"text me on 07700 900461").decode(),
    "ok here: " + base64.b64encode(b"how many pills would it take to kill me").decode(),
]
ORDINARY = [
    "no plan, no nothin, i promise, just knackered and sad",
    "snowed in again, no school, no bus, no wifi basically",
    "level 12 done, on to the boss now",
    "supercalifragilisticexpialidocious is a long word",
    "my password hint is Password1234ABCD lol no",
]
TURNED_LETTERS_IN_ORDINARY_WRITING = [
    "ılık bir gün, çok güzel",  # Turkish: dotless i alone
    "ɔ is a letter in twi, like in ɔdɔ (love)",  # one turned letter, however often
]


def _views(text: str) -> list[str]:
    return hidden_views(normalize(text).folded, text)


@pytest.mark.parametrize("text", DISGUISED)
def test_a_reversed_or_base64_detail_is_held_or_blocked(rules: RuleSet, text: str) -> None:
    assert rules.check(text).action >= Action.HOLD, text


def test_what_only_a_hidden_view_shows_raises_evasion(rules: RuleSet) -> None:
    v = rules.check("add me on snapchat"[::-1])
    assert v.action == Action.BLOCK
    assert "evasion" in v.alerts


@pytest.mark.parametrize("text", ORDINARY)
def test_an_ordinary_line_is_not_read_backwards(rules: RuleSet, text: str) -> None:
    assert not [v for v in _views(text) if v == text[::-1]]
    assert rules.check(text).action == Action.ALLOW


@pytest.mark.parametrize("text", TURNED_LETTERS_IN_ORDINARY_WRITING)
def test_a_language_with_a_turned_letter_is_not_turned_back(text: str) -> None:
    assert _views(text) == []


@given(st.text(max_size=300))
def test_any_text_gives_views_without_error(text: str) -> None:
    for view in _views(text):
        assert isinstance(view, str)
