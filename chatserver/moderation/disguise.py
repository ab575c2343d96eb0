"""Text written backwards or in base64: the views the rules also read, only when a
message looks like one (issue 13), so ordinary lines cost a set lookup, not a scan.

* **reversed**: "moc.liamg ta 4321nyrab" or "5423 009 00770 no em txet". A line looks
  reversed when more of its words are common words read backwards than read forwards.
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
    """The texts a disguised message may carry: its reversal, its base64 runs decoded
    (at most a few). Empty for an ordinary message."""
    views: list[str] = []
    if _looks_reversed(folded):
        views.append(original[::-1])
    for match in _B64.finditer(original):
        if not any(ch.isdigit() or ch.isupper() for ch in match.group()):
            continue  # a long plain word ("supercalifragilistic") is not base64
        text = _decoded(match.group())
        if text is not None:
            views.append(text)
            if len(views) > _MAX_DECODED:
                break
    return views
