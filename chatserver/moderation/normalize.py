"""Text → views the matcher scans, with a map back to the original for masking.

Two views of equal length are built:

* ``folded``: compatibility-decomposed (NFKD, a superset of NFKC's folding),
  combining marks and format characters (zero-width joiners, bidi overrides)
  removed, casefolded, homoglyphs (Cyrillic/Greek look-alikes) folded to Latin.
  Regex rules (phone numbers, emails) read this one.
* ``words``: ``folded`` with leetspeak and symbols mapped to letters (``sn4p`` →
  ``snap``, ``$`` → ``s``) and every other non-letter turned into a space. It has the
  same length as ``folded``, so one index map serves both. Word and phrase rules
  are compiled (``engine.py``) to tolerate spaces and repeats between letters, which
  is how spaced (``k i l l``), dotted (``s.n.a.p``), split (``kill.your.self``) and
  stretched (``kiiiill``) forms are caught without collapsing the text itself.

ASCII text, most chat, takes a fast path: lower-casing plus one ``bytes.translate``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final

__all__ = ["HOMOGLYPHS", "Normalized", "normalize", "words_view"]

HOMOGLYPHS: Final[dict[str, str]] = {
    # Cyrillic lower case (upper case is casefolded first)
    "а": "a", "в": "b", "г": "r", "д": "d", "е": "e", "ё": "e", "з": "3", "и": "u",
    "й": "u", "к": "k", "м": "m", "н": "h", "о": "o", "п": "n", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ь": "b", "ѕ": "s", "і": "i", "ї": "i", "ј": "j",
    "һ": "h", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ү": "y",
    # Greek lower case
    "α": "a", "β": "b", "γ": "y", "δ": "d", "ε": "e", "η": "n", "ι": "i", "κ": "k",
    "μ": "u", "ν": "v", "ο": "o", "ρ": "p", "σ": "o", "τ": "t", "υ": "u", "χ": "x",
    "ω": "w", "ς": "c",
    # Look-alike symbols seen in evasion
    "ℓ": "l", "ı": "i", "ø": "o", "ß": "ss", "æ": "ae", "œ": "oe", "đ": "d", "ł": "l",
}
"""Characters that look like Latin letters; NFKD already folds fullwidth and math letters."""

_LEET: Final = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
                "@": "a", "$": "s", "!": "i", "|": "i", "+": "t", "€": "e", "£": "l"}


def _ascii_words_table() -> bytes:
    table = bytearray(range(256))
    for b in range(128):
        ch = chr(b)
        if not (ch.isalnum() and ch.isascii()):
            table[b] = ord(" ")
    for src, dst in _LEET.items():
        if src.isascii():
            table[ord(src)] = ord(dst)
    return bytes(table)


_ASCII_WORDS: Final = _ascii_words_table()
_NON_ASCII: Final = re.compile(r"[^\x00-\x7f]+")


def _words_char(ch: str) -> str:
    if ch.isascii():
        return chr(_ASCII_WORDS[ord(ch)])
    if ch in _LEET:
        return _LEET[ch]
    return ch if ch.isalnum() else " "


@dataclass(frozen=True, slots=True)
class Normalized:
    """The views of one message, and how to find the original text behind a span."""

    original: str
    folded: str
    words: str
    index: tuple[int, ...] | None
    """``folded[k]`` came from ``original[index[k]]``; ``None`` means the identity."""
    obfuscated: int
    """How many characters looked chosen to evade: format characters, homoglyphs,
    fullwidth or mathematical letters."""

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Map a ``[start, end)`` span of ``folded``/``words`` to ``original``."""
        if self.index is None or end <= start:
            return start, end
        return self.index[start], self.index[end - 1] + 1


def words_view(folded: str) -> str:
    """The ``words`` view of already-folded text (also used to normalize patterns)."""
    if folded.isascii():
        return folded.encode("ascii").translate(_ASCII_WORDS).decode("ascii")
    return "".join(_words_char(ch) for ch in folded)


def _fold_char(ch: str) -> tuple[str, bool]:
    """Fold one non-ASCII character; the flag says it looked like an evasion."""
    out: list[str] = []
    for part in unicodedata.normalize("NFKD", ch):
        cat = unicodedata.category(part)
        if cat in ("Mn", "Me", "Cf", "Cc"):
            continue
        for folded in part.casefold():
            out.append(HOMOGLYPHS.get(folded, folded))
    result = "".join(out)
    if not result:
        # Format characters (zero-width joiners, bidi overrides) are dropped; only
        # invisible ones count as evasion, not the emoji variation selector.
        return "", unicodedata.category(ch) == "Cf" and ch != "\ufe0f"
    # Fullwidth, mathematical and look-alike letters folding to ASCII look deliberate;
    # accented Latin letters (é → e) are ordinary spelling.
    evasive = result.isascii() and result.isalnum() and ord(ch) > 0x24F
    return result, evasive


def normalize(text: str) -> Normalized:
    """Build the views of ``text``; never raises on any Unicode string."""
    if text.isascii():
        folded = text.lower()
        return Normalized(text, folded, words_view(folded), None, 0)
    parts: list[str] = []
    index: list[int] = []
    obfuscated = 0
    pos = 0
    for run in _NON_ASCII.finditer(text):
        start, end = run.span()
        if start > pos:
            parts.append(text[pos:start].lower())
            index.extend(range(pos, start))
        for i in range(start, end):
            folded_ch, evasive = _fold_char(text[i])
            obfuscated += evasive
            if folded_ch:
                parts.append(folded_ch)
                index.extend([i] * len(folded_ch))
        pos = end
    if pos < len(text):
        parts.append(text[pos:].lower())
        index.extend(range(pos, len(text)))
    folded = "".join(parts)
    return Normalized(text, folded, words_view(folded), tuple(index), obfuscated)
