"""Evasion: a phrase and its obfuscated forms get the same verdict; nothing crashes."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from chatserver.moderation.engine import RuleSet
from chatserver.moderation.normalize import normalize
from chatserver.moderation.rules import Action

PHRASES = [
    ("kill yourself", Action.BLOCK),
    ("go hang urself", Action.BLOCK),
    ("i want to kill myself", Action.HOLD),
    ("send me a pic", Action.HOLD),
    ("add me on snapchat", Action.BLOCK),
    ("you are so pathetic", Action.BLOCK),
]
HOMOGLYPHS = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "y": "у", "x": "х",
              "i": "і", "s": "ѕ", "k": "κ"}
LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]


@st.composite
def obfuscated(draw: st.DrawFn, phrase: str) -> str:
    out = []
    for ch in phrase:
        if ch == " ":
            out.append(draw(st.sampled_from([" ", "  ", ".", " . ", "_", "-"])))
            continue
        how = draw(st.sampled_from(["plain", "upper", "homoglyph", "leet", "zw", "repeat",
                                    "fullwidth"]))
        if how == "upper":
            ch = ch.upper()
        elif how == "homoglyph":
            ch = HOMOGLYPHS.get(ch, ch)
        elif how == "leet" and ch in LEET:
            ch = LEET[ch]
        elif how == "zw":
            ch = ch + draw(st.sampled_from(ZERO_WIDTH))
        elif how == "repeat":
            ch = ch * draw(st.integers(2, 4))
        elif how == "fullwidth":
            ch = chr(ord(ch) + 0xFEE0) if "a" <= ch <= "z" else ch
        out.append(ch)
    return "".join(out)


@st.composite
def phrase_and_form(draw: st.DrawFn) -> tuple[str, Action, str]:
    phrase, action = draw(st.sampled_from(PHRASES))
    return phrase, action, draw(obfuscated(phrase))


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(phrase_and_form())
def test_obfuscated_forms_are_never_treated_more_leniently(
        rules: RuleSet, case: tuple[str, Action, str]) -> None:
    # At least as severe: "send.me" also looks like a link, which is blocked.
    phrase, action, form = case
    assert rules.check(phrase).action == action
    assert rules.check(form).action >= action, (form, rules.check(form).normalized)


@settings(max_examples=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_arbitrary_unicode_never_crashes_and_masks_keep_length(rules: RuleSet,
                                                               text: str) -> None:
    v = rules.check(text)
    assert len(v.text_out) == len(text)
    for hit in v.hits:
        start, end = hit.span
        assert 0 <= start <= end <= len(text)


@given(st.text(max_size=200))
def test_normalized_views_have_equal_length_and_map_into_the_original(text: str) -> None:
    n = normalize(text)
    assert len(n.folded) == len(n.words)
    if n.index is not None:
        assert len(n.index) == len(n.folded)
        assert all(0 <= i < len(text) for i in n.index)
