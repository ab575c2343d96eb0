"""The confusable skeleton (issue 13 § 3): look-alike spellings fold to the plain word."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings, strategies as st

from chatserver.moderation.corpus import Corpus
from chatserver.moderation.engine import RuleSet
from chatserver.moderation.normalize import normalize
from chatserver.moderation.rules import Action

SMALL_CAPS = dict(zip("abcdefghijklmnoprstuvwyz", "ᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢ", strict=True))
CYRILLIC = {"a": "а", "c": "с", "e": "е", "o": "о", "p": "р", "x": "х", "y": "у", "i": "і",
            "s": "ѕ", "j": "ј", "h": "һ"}


def regional(ch: str) -> str:
    return chr(0x1F1E6 + ord(ch) - ord("a"))


def circled(ch: str) -> str:
    return chr(0x24D0 + ord(ch) - ord("a"))


def math_bold(ch: str) -> str:
    return chr(0x1D41A + ord(ch) - ord("a"))


def fullwidth(ch: str) -> str:
    return chr(0xFF41 + ord(ch) - ord("a"))


STYLES: dict[str, Callable[[str], str]] = {
    "small caps": lambda c: SMALL_CAPS.get(c, c),
    "cyrillic": lambda c: CYRILLIC.get(c, c),
    "regional": regional,
    "circled": circled,
    "math": math_bold,
    "fullwidth": fullwidth,
    "strike": lambda c: c + "\u0336",
    "slash": lambda c: c + "\u0338",
    "soft hyphen": lambda c: c + "\u00ad",
    "zero width": lambda c: c + "\u200b",
    "word joiner": lambda c: c + "\u2060",
}


@st.composite
def disguised(draw: st.DrawFn, word: str) -> str:
    return "".join(STYLES[draw(st.sampled_from(sorted(STYLES)))](c) for c in word)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["stupid", "pathetic", "snapchat", "worthless", "idiot"]).flatmap(
    lambda w: st.tuples(st.just(w), disguised(w))))
def test_every_style_folds_to_the_plain_word(case: tuple[str, str]) -> None:
    word, form = case
    assert normalize(form).folded == word, form


@pytest.mark.parametrize("style", sorted(STYLES))
def test_abuse_in_every_style_is_still_blocked_and_raises_evasion(rules: RuleSet,
                                                                   style: str) -> None:
    insult = "".join(STYLES[style](c) for c in "pathetic")
    v = rules.check(f"you are so {insult}")
    assert v.action == Action.BLOCK, (style, v.normalized)
    assert "evasion" in v.alerts, style


@pytest.mark.parametrize("text", [
    "don't tell anyone", "don’t tell anyone", "you're so pathetic", "you’re so pathetic",
    "kill yourself.", "Kill yourself!!", "no one likes you, honestly",
])
def test_ordinary_apostrophes_and_punctuation_raise_no_evasion(rules: RuleSet,
                                                               text: str) -> None:
    v = rules.check(text)
    assert v.action >= Action.HOLD
    assert "evasion" not in v.alerts, text


@pytest.mark.parametrize("text", ["k i l l yourself", "k.i.l.l yourself", "k1ll yourself",
                                  "ｋｉｌｌ yourself", "you are so p.a.t.h.e.t.i.c"])
def test_heavy_obfuscation_still_raises_evasion(rules: RuleSet, text: str) -> None:
    v = rules.check(text)
    assert v.action == Action.BLOCK
    assert "evasion" in v.alerts, text


def test_must_allow_corpus_raises_no_evasion(rules: RuleSet) -> None:
    from tests.conftest import ROOT
    lines = (ROOT / "tests/moderation/corpus/allow.txt").read_text().splitlines()
    noisy = [t for t in lines if t.strip() and rules.check(t).alerts]
    assert noisy == []


@pytest.mark.slow
def test_no_must_allow_line_of_any_corpus_author_raises_evasion(
        rules: RuleSet, corpus: Corpus) -> None:
    """Issue 13: evasion stays a signal. Self-censored swearing ("f*ck", "fuckkk") is
    masked without it, a slur quoted in a report ("got called a f@g") is masked, and a
    number written in plain digits is no disguise whatever words follow it."""
    from chatserver.moderation.evaluation import ALLOWED
    noisy = [(r.author, r.text) for r in (*corpus.train, *corpus.test)
             if r.label in ALLOWED and "evasion" in rules.check(r.text).alerts]
    assert noisy == []


@pytest.mark.parametrize(("text", "shown"), [
    ("got called a f@g at work today, still shaky", "got called a *** at work today, still shaky"),
    ("someone called me a t0welhead on the bus", "someone called me a ********* on the bus"),
])
def test_a_slur_quoted_in_a_report_is_masked_and_the_rest_is_sent(
        rules: RuleSet, text: str, shown: str) -> None:
    v = rules.check(text)
    assert (v.action, v.text_out, v.alerts) == (Action.MASK, shown, ())


def test_a_slur_aimed_at_someone_is_still_blocked_as_evasion(rules: RuleSet) -> None:
    v = rules.check("ur a f@g")
    assert v.action == Action.BLOCK and {"abuse", "evasion"} <= set(v.alerts)


def test_scripts_people_write_in_are_kept() -> None:
    assert normalize("مرحبا").folded == "مرحبا"
    assert normalize("こんにちは").folded == "こんにちは"
    assert normalize("straße").folded == "strasse"
    assert normalize("café").folded == "cafe"
    assert normalize("café").obfuscated == 0


@pytest.mark.parametrize("text", [
    "a year clean from self harm today (ﾉ◕ヮ◕)ﾉ*:･ﾟ✧",
    "i want to die this ship is so cute (⁄ ⁄•⁄ω⁄•⁄ ⁄)",
    "the pride flag 🏳️‍🌈 fell off my wall and i want to die 😭 so embarrassing",
])
def test_a_kaomoji_or_emoji_away_from_the_match_is_no_evasion(rules: RuleSet,
                                                             text: str) -> None:
    v = rules.check(text)
    assert v.hits, text  # a rule still reads the words
    assert "evasion" not in v.alerts, (text, v.alerts)
