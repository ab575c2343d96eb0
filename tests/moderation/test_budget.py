"""SECURITY.md F-15: moderating one message is bounded work, whatever its text.

Hyperscan scans in linear time; finding where a match starts (``re`` tried backwards
from its end) is the part that could grow with the text. These tests count that work
instead of timing it: a 2,000-character digit run once cost a million ``re`` calls
(420 ms of a stalled event loop).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from chatserver.moderation.engine import _WORD_START, MAX_SPAN, RuleSet
from chatserver.moderation.normalize import normalize
from chatserver.moderation.rules import Action


class Counting:
    """A compiled pattern that counts its ``match`` calls."""

    calls = 0

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern

    def match(self, *args: Any) -> re.Match[str] | None:
        Counting.calls += 1
        return self.pattern.match(*args)


ADVERSARIAL = [
    "0 " * 1000,                        # spaced digits fold into one 1,000-digit run
    "07700 900 123 " * 140,             # a phone number, 140 times
    ("k1ll mys3lf " * 170)[:2000],      # an evasive risk phrase, repeated
    "fuck " * 400,                      # a masked word, 400 times: every one is masked
    ("f.u.c.k " * 250)[:2000],
    "x@example.com " * 140,
    "how old are you " * 125,
    ("f u c k 😂 " * 200)[:2000],        # spaced letters: every letter starts a word
    ("f u c k s h i t " * 130)[:2000],  # two masked words spaced out, overlapping
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=lambda t: repr(t[:14]))
def test_finding_match_starts_is_bounded_per_match(rules: RuleSet, text: str) -> None:
    saved = dict(rules._py)
    rules._py.update({pid: Counting(re.compile(p.source, re.IGNORECASE))  # type: ignore[misc]
                      for pid, p in enumerate(rules._patterns)})
    try:
        before = Counting.calls
        verdict = rules.check(text, "participant")
        calls = Counting.calls - before
    finally:
        rules._py.clear()
        rules._py.update(saved)
    assert verdict.action >= Action.MASK
    # A masked word is searched once per occurrence, never further back than its width.
    occurrences = max(1, sum(len(h.spans) for h in verdict.hits))
    assert calls <= occurrences * MAX_SPAN, (calls, occurrences)
    assert calls <= 20_000, calls


SPELLINGS = ["what the f u c k", "f.u.c.k off", "fuuuck it", "a s s", "you ass hole",
             "k i l l  m y s e l f", "kill.your.self", "shit shit", "sh1t", "fuck fuck",
             "f u c k 😂 f u c k", "\uff46\uff55\uff43\uff4b", "oh f u c k s", "x" * 300 + " fuck"]


@pytest.mark.parametrize("text", SPELLINGS)
def test_a_word_is_found_from_its_start_as_by_trying_every_position(rules: RuleSet,
                                                                    text: str) -> None:
    # The word-start search (one ``re`` call per word) gives the same start as trying
    # every character back from the end, for every word and phrase pattern that matched.
    norm = normalize(text)
    tried = 0
    for view in (norm.folded, norm.words):
        words = [m.start() for m in _WORD_START.finditer(view)]
        for pid, pat in enumerate(rules._patterns):
            if not pat.word_start:
                continue
            py = re.compile(pat.source, re.IGNORECASE)
            for m in py.finditer(view):
                tried += 1
                assert rules._start(pid, view, m.end(), words) == \
                    rules._start(pid, view, m.end()), (pat.source, m)
    assert tried > 0
