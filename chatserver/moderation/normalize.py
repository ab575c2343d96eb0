"""Text → views the matcher scans, with a map back to the original for masking.

Two views of equal length are built:

* ``folded``: every character reduced to its confusable skeleton with the Unicode
  confusables data as ``decancer`` carries it (UTS #39, plus small capitals, regional
  indicators, circled, enclosed and mathematical letters, Cyrillic/Greek look-alikes),
  digits of every script as ASCII digits, combining marks (strikethrough overlays) and
  format characters (zero-width joiners, soft hyphens, bidi overrides) removed,
  casefolded. Regex rules (phone numbers, emails) read this one.
* ``words``: ``folded`` with leetspeak and symbols mapped to letters (``sn4p`` →
  ``snap``, ``$`` → ``s``) and every other non-letter turned into a space. It has the
  same length as ``folded``, so one index map serves both. Word and phrase rules
  are compiled (``engine.py``) to tolerate spaces and repeats between letters, which
  is how spaced (``k i l l``), dotted (``s.n.a.p``), split (``kill.your.self``) and
  stretched (``kiiiill``) forms are caught without collapsing the text itself.

ASCII text, most chat, takes a fast path: lower-casing plus one ``bytes.translate``.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import decancer_py

__all__ = ["HOMOGLYPHS", "Normalized", "disguised_within", "normalize", "words_view"]

HOMOGLYPHS: Final[dict[str, str]] = {
    # Where the confusables data reads a letter differently from how it is meant in chat:
    # "ß" is "ss" to a reader, not the "b" it resembles.
    "ß": "ss",
}
"""Overrides of the confusables skeleton (``decancer``) for a few characters."""
_FOREIGN_SCRIPTS: Final = frozenset({
    "ARABIC", "HEBREW", "CJK", "HIRAGANA", "KATAKANA", "HANGUL", "DEVANAGARI", "BENGALI",
    "THAI", "TAMIL", "TELUGU", "GUJARATI", "GURMUKHI", "KANNADA", "MALAYALAM", "SINHALA",
    "ETHIOPIC", "GEORGIAN", "ARMENIAN", "KHMER", "LAO", "MYANMAR", "TIBETAN", "SYRIAC",
    "THAANA", "YI", "BOPOMOFO", "ORIYA",
})
"""Scripts people write in (not look-alikes of Latin): their letters are kept as they are,
never read as the Latin letters the confusables data says they resemble."""
_OVERLAYS: Final = frozenset(range(0x0334, 0x0339)) | frozenset(range(0x20D2, 0x20DD))
"""Combining strikethrough, slash and enclosing overlays drawn over Latin letters."""

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
_NON_ASCII_CHAR: Final = re.compile(r"[^\x00-\x7f]")


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


class _WordsTable(dict[int, str]):
    """``str.translate`` table for the ``words`` view of any character, filled as
    characters are first seen (one C-level lookup per character after that, instead of a
    Python call; F-15: bounded work per message). At most ``_WORDS_CACHED`` entries are
    kept, so text in every script cannot grow it without bound."""

    def __missing__(self, code: int) -> str:
        out = _words_char(chr(code))
        if len(self) < _WORDS_CACHED:
            self[code] = out
        return out


_WORDS_CACHED: Final = 65_536
_WORDS_TABLE: Final = _WordsTable()


def words_view(folded: str) -> str:
    """The ``words`` view of already-folded text (also used to normalize patterns)."""
    if folded.isascii():
        return folded.encode("ascii").translate(_ASCII_WORDS).decode("ascii")
    return folded.translate(_WORDS_TABLE)


@functools.lru_cache(maxsize=8192)
def _fold_char(ch: str) -> tuple[str, bool]:
    """Fold one non-ASCII character; the flag says it looked like an evasion.

    Order: digits of any script (Arabic-Indic, Devanagari, mathematical, circled,
    superscript) become ASCII digits; format characters, combining marks and controls are
    dropped; letters and letter-like symbols take their confusable skeleton from
    ``decancer`` (Unicode confusables plus small capitals, regional indicators, enclosed
    and mathematical letters), except letters of scripts people write in.
    """
    cat = unicodedata.category(ch)
    if cat in ("Mn", "Me", "Cf", "Cc", "Cs", "Co", "Cn"):
        # Zero-width joiners, bidi overrides, soft hyphens and overlays are dropped; the
        # emoji variation selector and the keycap mark are ordinary emoji spelling.
        return "", (cat == "Cf" and ch != "\ufe0f") or ord(ch) in _OVERLAYS
    digit = unicodedata.digit(ch, None)
    if digit is not None:
        return str(digit), True
    if cat[0] == "Z":
        return " ", False
    if ch in HOMOGLYPHS:
        return HOMOGLYPHS[ch], False
    name = unicodedata.name(ch, "")
    letterish = cat[0] in "LN" or "LETTER" in name
    if letterish and name.split(" ", 1)[0] not in _FOREIGN_SCRIPTS:
        cured = str(decancer_py.parse(ch))
        if cured.isascii() and cured.strip():
            cured = cured.lower()
            # Accented Latin letters (é → e) are ordinary spelling; look-alikes from
            # other blocks (small capitals, Cyrillic, math, circled) look deliberate.
            return cured, cured.isalnum() and ord(ch) > 0x24F
    out: list[str] = []
    for part in unicodedata.normalize("NFKD", ch):
        if unicodedata.category(part) in ("Mn", "Me", "Cf", "Cc"):
            continue
        out.append(part.casefold())
    if cat[0] == "P" and not "".join(out).isascii():
        # Curly quotes and dashes read as their ASCII forms (’ → ', – → -).
        cured = str(decancer_py.parse(ch))
        if cured.isascii() and len(cured) == 1:
            return cured, False
    return "".join(out), False


_ASCII_LOWER: Final = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
"""``str.translate`` table lower-casing ASCII letters (as ``str.lower`` does them)."""


def disguised_within(norm: Normalized, spans: Iterable[tuple[int, int]]) -> bool:
    """Whether a character that folded as a disguise (a look-alike letter, an invisible
    separator) lies inside one of ``spans`` (original coordinates): a kaomoji or an
    emoji elsewhere in the line says nothing about how a matched word was written
    ("1 year clean from self harm (ﾉ◕ヮ◕)ﾉ" is not an evasion)."""
    if not norm.obfuscated:
        return False
    return any(_fold_char(ch)[1] for start, end in spans
               for ch in norm.original[start:end] if not ch.isascii())


def normalize(text: str) -> Normalized:
    """Build the views of ``text``; never raises on any Unicode string.

    Each character folds on its own (``_fold_char``), so a line is folded by one
    ``str.translate`` over a table of its distinct characters, and the map back to the
    original is built only when a character folds to none or to several (F-15: bounded
    work, not a Python step per character of a 2,000-character line)."""
    if text.isascii():
        folded = text.lower()
        return Normalized(text, folded, words_view(folded), None, 0)
    table: dict[int, int | str] = dict(_ASCII_LOWER)
    obfuscated = 0
    same_length = True
    for ch in set(_NON_ASCII_CHAR.findall(text)):
        folded_ch, evasive = _fold_char(ch)
        table[ord(ch)] = folded_ch
        if evasive:
            obfuscated += text.count(ch)
        same_length = same_length and len(folded_ch) == 1
    folded = text.translate(table)
    index: tuple[int, ...] | None = None
    if not same_length:
        widths = {chr(code): len(f) for code, f in table.items() if isinstance(f, str)}
        index = tuple(itertools.chain.from_iterable(map(
            itertools.repeat, range(len(text)),
            map(widths.get, text, itertools.repeat(1)))))
    return Normalized(text, folded, words_view(folded), index, obfuscated)
