"""Text written backwards, upside down or in base64: the views the rules also read, only
when a message looks like one (issue 13), so ordinary lines cost a set lookup, not a scan.

* **reversed**: "moc.liamg ta 4321nyrab" or "5423 009 00770 no em txet". A line looks
  reversed when more of its words are common words read backwards than read forwards.
* **upside down**: "ʇɐɥɔdɐus uo ǝɯ ppɐ", the letters turned over (and the line reversed,
  so that it reads on a phone held upside down). A line looks upside down when it has at
  least two distinct turned letters that no language writes on their own (``_TURNED``);
  the view turns them back and reads the line in both orders.
* **base64**: a run of 12 or more base64 characters that decodes (standard library) to
  printable UTF-8 text with letters in it, or with a phone number's worth of digits.

What a rule finds in such a view is reported over the whole message, as evasion.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import Counter
from typing import Final

__all__ = ["hidden_views"]

_COMMON: Final = frozenset((
    "the", "and", "you", "your", "to", "me", "my", "is", "it", "at", "in", "of",
    "for", "with", "add", "text", "call", "ring", "number", "snap", "insta", "com",
    "gmail", "hotmail", "outlook", "dot", "phone", "whatsapp", "discord", "tiktok", "this",
    "that", "are", "was", "im", "not", "how", "many", "pills", "kill", "myself", "die",
    "want", "would", "take", "much", "end", "life", "do", "can", "what", "where", "when",
    "yourself", "urself", "hate", "stupid", "ugly", "will", "alone", "home", "parents",
    "tell", "anyone", "secret", "pics", "send", "go", "way", "least", "painful", "painless",
    "jump", "bridge", "cut",
))
"""Words that are not a common word read backwards ("on", whose reversal "no" is, left out)."""
_WORD: Final = re.compile(r"[a-z]+")
_B64: Final = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{12,}={0,2}(?![A-Za-z0-9+/=])")
_MAX_DECODED: Final = 4
_MIN_DIGITS: Final = 7
"""A decoded run of digits this long may be a phone number ("MDc3MDAgOTAwIDMxMg==")."""


_TURNED: Final = {
    "ɐ": "a", "ɔ": "c", "ǝ": "e", "ɟ": "f", "ƃ": "g", "ᵷ": "g", "ɥ": "h", "ᴉ": "i", "ı": "i",
    "ɾ": "j", "ʞ": "k", "ꞁ": "l", "ɯ": "m", "ɹ": "r", "ʇ": "t", "ʌ": "v", "ʍ": "w", "ʎ": "y",
    "Ɩ": "1", "ᄅ": "2", "Ɛ": "3", "ㄣ": "4", "ϛ": "5", "ㄥ": "7", "˙": ".", "¿": "?", "¡": "!",
}
"""Turned letters (the usual upside-down text generators' table; the Unicode names say
"turned" or "inverted"), to what they stand for: the mark that a line is upside down."""
_TURN_BACK: Final = str.maketrans({
    **_TURNED, "b": "q", "q": "b", "d": "p", "p": "d", "n": "u", "u": "n", "6": "9", "9": "6",
    "'": ",", ",": "'"})
"""Turned back: the turned letters, and the letters that are each other turned over."""


def _looks_upside_down(original: str) -> bool:
    # Most lines are ASCII (``isascii`` reads a flag, no scan): no set built for them.
    return not original.isascii() and len(set(original).intersection(_TURNED)) >= 2


def _looks_reversed(folded: str) -> bool:
    words = _WORD.findall(folded)
    if len(words) < 2:
        return False
    counts = Counter(words)  # each distinct word looked up once (a long line repeats)
    forwards = sum(n for w, n in counts.items() if w in _COMMON)
    backwards = sum(n for w, n in counts.items() if w[::-1] in _COMMON)
    return backwards >= 2 and backwards > forwards


def _decoded(token: str) -> str | None:
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if not text.isprintable() or (sum(ch.isalpha() for ch in text) < 4
                                   and sum(ch.isdigit() for ch in text) < _MIN_DIGITS):
        return None
    return text


def hidden_views(folded: str, original: str) -> list[str]:
    """The texts a disguised message may carry: its reversal, the line turned back
    from upside down, its base64 runs decoded (at most a few). Empty for an ordinary
    message."""
    views: list[str] = []
    if _looks_reversed(folded):
        views.append(original[::-1])
    if _looks_upside_down(original):
        turned = original.translate(_TURN_BACK)
        views += [turned[::-1], turned]
    for match in _B64.finditer(original):
        if not any(ch.isdigit() or ch.isupper() for ch in match.group()):
            continue  # a long plain word ("supercalifragilistic") is not base64
        text = _decoded(match.group())
        if text is not None:
            views.append(text)
            if len(views) > _MAX_DECODED:
                break
    return views
