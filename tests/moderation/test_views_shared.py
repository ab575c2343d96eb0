"""The faster ways of building a line's views give what the plain ways give (issue 13,
acceptance 3: a non-ASCII line folded once, its n-grams counted once per word)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from chatserver.moderation import engine
from chatserver.moderation.engine import RuleSet
from chatserver.moderation.features import (
    CACHED_WORD_CHARS,
    MAX_CHARS,
    MAX_WINDOWS,
    _char_buckets_of,
    _char_grams,
    _ngrams,
    bucket,
    bucket_counts,
    prepare,
    prepared,
    windows,
)
from chatserver.moderation.normalize import _fold_char, normalize

# Letters, digits and separators beside the characters that fold to none (zero-width,
# soft hyphen, overlays), to several ("ß", "ﬁ") or to a look-alike (Cyrillic, fullwidth,
# circled, keycaps, other scripts' digits).
PIECES = st.sampled_from([
    "a", "B", "k", "1", "0", " ", ".", "@", "'", "ß", "ﬁ", "é", "\u200b", "\u00ad", "\u0336",
    "😂", "🇫", "ⓕ", "ᴀ", "к", "ｆ", "٣", "३", "𝟕", "7\ufe0f\u20e3", "İ", "’", "\u202e", "Σ",
])
LINES = st.lists(PIECES, max_size=60).map("".join)


def _fold_by_character(text: str) -> tuple[str, tuple[int, ...]]:
    """The definition: each character folded on its own, ASCII lower-cased."""
    out: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        folded = ch.lower() if ch.isascii() else _fold_char(ch)[0]
        out.append(folded)
        index += [i] * len(folded)
    return "".join(out), tuple(index)


@settings(max_examples=500, deadline=None)
@given(LINES)
def test_one_translate_folds_as_each_character_alone(text: str) -> None:
    folded, index = _fold_by_character(text)
    norm = normalize(text)
    assert norm.folded == folded
    assert (norm.index if norm.index is not None else tuple(range(len(text)))) == index
    assert norm.obfuscated == sum(_fold_char(ch)[1] for ch in text if not ch.isascii())


@settings(max_examples=300, deadline=None)
@given(LINES, st.integers(min_value=0, max_value=MAX_CHARS + 20))
def test_the_heads_read_the_same_text_from_the_rules_views(text: str, pad: int) -> None:
    long = "x" * pad + text  # lines that cross the featurized prefix's end too
    assert prepared(normalize(long)) == prepare(long)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="abc😂 ", min_size=1, max_size=40), max_size=120).map(" ".join))
def test_a_long_message_is_read_at_its_start_and_its_end(text: str) -> None:
    """Every window fits what the heads read at a time; a line that fits is one window
    (as they were trained); a longer one is read from its first word to its last, and
    whole (every word in some window) when it is under 800 characters."""
    norm = normalize(text)
    parts = windows(norm)
    assert all(len(w) <= MAX_CHARS for w in parts) and len(parts) <= MAX_WINDOWS
    if len(text) <= MAX_CHARS:
        assert parts == (prepared(norm),)
        return
    whole = " ".join(norm.folded.split())
    assert whole.startswith(parts[0]) and whole.endswith(parts[-1])
    if len(whole) < 800:
        for word in whole.split():
            assert any(word in w.split() for w in parts), word


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["w:ab", "ab", "1", "22", "😂", "a", "b:a", " ", "  ", "ab" * 13,
                                 "é"]), max_size=40).map("".join))
def test_cached_word_buckets_give_the_vector_hashing_every_n_gram_gives(text: str) -> None:
    # What the heads read must not depend on which words a process has seen before:
    # the buckets of each n-gram, merged in the order each bucket first occurs.
    plain: dict[int, int] = {}
    for gram, n in Counter(_ngrams(text)).items():
        plain[bucket(gram)] = plain.get(bucket(gram), 0) + n
    assert list(bucket_counts(text).items()) == list(plain.items())
    assert len("ab" * 13) > CACHED_WORD_CHARS  # the uncached path is exercised too


@settings(max_examples=500, deadline=None)
@given(st.text(min_size=1, max_size=30).filter(lambda w: not any(c.isspace() for c in w)))
def test_a_words_buckets_hashed_from_its_bytes_are_its_n_grams_buckets(word: str) -> None:
    """An ASCII word is hashed from byte slices, any other one n-gram by n-gram: the
    buckets are the same either way (the heads were trained on these)."""
    assert list(_char_buckets_of(word)) == [bucket(g) for g in _char_grams(word)]


REPEATED = st.lists(st.sampled_from([
    "fuck", "f u c k", "f.u.c.k", "fuuuck", "shit", "s h i t", "😂", "ｆｕｃｋ", "hello", "you",
    "are", "stupid", "k i l l", "yourself", "12", "x@example.com", " ", ", ",
]), min_size=1, max_size=80).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(REPEATED)
def test_remembered_match_starts_give_the_verdict_looking_each_up_gives(
        rules: RuleSet, text: str) -> None:
    remembered = rules.check(text)
    with pytest.MonkeyPatch.context() as mp:  # every start looked up, every time
        mp.setattr(engine, "_MEMO_CHARS", 0)
        mp.setattr(engine, "_LOCAL_MISSES", 0)
        looked_up = rules.check(text)
    assert remembered == looked_up
