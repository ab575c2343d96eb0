"""Library-backed detectors for contact details, named by rules (``detector = "phone"``).

A rule in ``chatserver/moderation_rules/contact.toml`` may name a detector instead of (or
beside) its patterns; ops still own its action, alert and notice, and the engine runs the
detector on the message's views (``normalize.py``). Each detector returns spans of the ``folded``
view, with a flag saying the span was disguised (number words, letters for digits,
spaced or reversed spelling).

* ``phone``: a *digits view* (digits of every script are already ASCII in ``folded``;
  number words, "double"/"treble", and letters standing for digits inside digit runs
  become digits; any separator is ignored), then ``phonenumbers.PhoneNumberMatcher``
  (Google's libphonenumber) over every run, plus a digit-run rule for what it cannot
  validate (reserved ranges, a number inside a longer run). Public helplines are
  allow-listed (``HELPLINES``, a rule's ``allow`` and the config's ``[[resources]]``).
* ``email``: addresses with ``@`` or "at"/"dot" spelt out, spaced out or reversed.
* ``handle``: app names and nicknames ("sc", "the ghost app", 👻, misspellings) asked
  for or given with a name, gamer tags ``name#1234``, "search me on …".
* ``postcode``: UK postcodes, written or spelt out letter by letter ("em one one ay ee").
* ``address``: street addresses, UK ("flat 3, 12 oak road") and international
  ("calle mayor 5", "12 rue de la paix", "hauptstrasse 5", "po box 12").
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import phonenumbers
from rapidfuzz import process
from rapidfuzz.distance import OSA

from chatserver.moderation.normalize import Normalized

__all__ = [
    "DETECTORS", "DETECTOR_NAMES", "HELPLINES", "Span", "digits_of", "digits_view",
    "find_addresses", "find_emails", "find_handles", "find_phones", "find_postcodes",
    "helpline_digits",
]

Span = tuple[int, int, bool]
"""``(start, end, disguised)`` in ``folded`` coordinates."""

HELPLINES: Final = frozenset({
    "08001111",      # Childline
    "116123",        # Samaritans
    "85258",         # Shout (text)
    "999", "112",    # emergency
    "111",           # NHS 111
    "116111",        # the European child helpline number
    "08088005000",   # NSPCC
    "08000684141",   # PAPYRUS HOPELINE247
    "08088025544",   # Young Minds parents' helpline
    "88247",         # PAPYRUS HOPELINE247 (text)
    "0800585858",    # CALM (Campaign Against Living Miserably)
    "08088084994",   # The Mix
    "03001233393",   # Mind infoline
    "03003047000",   # SANEline
    "08088010677",   # Beat (eating disorders)
    "03003300630",   # Switchboard LGBT+
    "08082000247",   # Refuge, national domestic abuse helpline
    "08081689111",   # Victim Support
    "08088082008",   # Muslim Youth Helpline
    "03444775774",   # Anxiety UK
    # Wales, Scotland, Northern Ireland
    "0800132737",    # C.A.L.L. (Community Advice and Listening Line, Wales)
    "08088023456",   # Meic (under-25s, Wales)
    "08081640123",   # Samaritans Welsh-language line
    "0800838587",    # Breathing Space (Scotland)
    "08088088000",   # Lifeline (Northern Ireland)
    # Ireland
    "1800247247",    # Pieta
    "1800666666",    # Childline Ireland (ISPCC)
    "50808",         # 50808 text line
    # a young person abroad
    "988",           # US Suicide & Crisis Lifeline
    "741741",        # Crisis Text Line (US)
    "18002221222",   # Poison Control (US)
    "18004224453",   # Childhelp National Child Abuse Hotline (US)
    "18006686868",   # Kids Help Phone (Canada)
    "686868",        # Kids Help Phone (text, Canada)
    "131114",        # Lifeline (Australia)
    "1800551800",    # Kids Helpline (Australia)
    "1737",          # Need to talk? (New Zealand)
    "08001110111", "08001110222",  # TelefonSeelsorge (Germany)
    "3114",          # numéro national de prévention du suicide (France)
    "14416",         # Tele-MANAS (India)
})
"""Public helpline numbers as digits: never reported, so signposting is never blocked."""
PHONE_REGIONS: Final = ("GB", "IE", "US")
"""Where libphonenumber reads a number without a country code from (issue 13 § 1)."""
MIN_RUN_DIGITS: Final = 7
"""Shorter runs are ages, times, scores; the matcher is not asked about them."""
LONG_RUN_DIGITS: Final = 10
"""A run this long is treated as a phone number even when libphonenumber cannot
validate it (reserved drama ranges, a number hidden inside a longer run)."""
MAX_RUNS: Final = 16
"""At most this many digit runs per message are given to the matcher (F-15 budget)."""

# ------------------------------------------------------------------------ digits view

_UNITS: Final = {
    "zero": "0", "oh": "0", "o": "0", "nought": "0", "nil": "0", "one": "1", "two": "2",
    "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8",
    "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13",
    "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17",
    "eighteen": "18", "nineteen": "19",
    # common misspellings and text-speak
    "fiv": "5", "sevn": "7", "nien": "9", "zer0": "0", "won": "1", "tree": "3",
}
_TENS: Final = {"twenty": "2", "thirty": "3", "forty": "4", "fourty": "4", "fifty": "5",
                "sixty": "6", "seventy": "7", "eighty": "8", "ninety": "9"}
_POWERS: Final = {"hundred": "00", "thousand": "000"}
_REPEAT: Final = {"double": 2, "dbl": 2, "treble": 3, "triple": 3}
_LETTER_DIGITS: Final = str.maketrans({"o": "0", "l": "1", "i": "1", "|": "1", "z": "2",
                                       "s": "5", "b": "8", "g": "9"})
"""Letters standing for digits, read so only inside a token that has digits in it."""
_LOOK_ALIKE_WORD: Final = frozenset("oli|")
"""A token of letters alone is read as digits after a digit only when made of these
(O for 0, l or I for 1): "is", "so" and "go" are words ("HOPELINE247 is 0800 068 4141"
is a helpline, not one long number)."""
_TOKEN: Final = re.compile(r"[a-z0-9|]+|\+")
_NUMBER_WORDS: Final = frozenset({*_UNITS, *_TENS})
_DIGIT: Final = re.compile(r"\d")
_LETTERS: Final = re.compile(r"[a-z]+")
_DIGITS_ONLY_RUN: Final = re.compile(r"\d(?:[^0-9A-Za-z+]*\d)*")
"""Digits with only separators between them (no letter or number word)."""
_PLAIN_RUN: Final = re.compile(r"\+?\d(?:[^0-9+]*\d)?(?:[^0-9+]*\d)*")
_NON_DIGIT: Final = re.compile(r"\D+")
_CANDIDATE: Final = re.compile(
    r"(?:(?:\+|(?<![a-z])(?:[olizsbg|]*\d[olizsbg|\d]*|" + "|".join(
        sorted({*_UNITS, *_TENS, *_POWERS, *_REPEAT, "plus"}, key=len, reverse=True))
    + r"|[olizsbg|]{1,3})(?![a-z]))[^a-z0-9+]*)+")
"""Stretches of digit-like tokens (digits, number words, letters for digits)."""


def _has_digitish(folded: str) -> bool:
    """A digit or a number word anywhere (a set lookup per word: cheap on any text)."""
    return _DIGIT.search(folded) is not None or \
        not _NUMBER_WORDS.isdisjoint(_LETTERS.findall(folded))


@dataclass(frozen=True, slots=True)
class DigitRun:
    """Consecutive digit tokens with only separators between them."""

    digits: str
    start: int
    end: int
    plus: bool
    disguised: bool


def _token_digits(tok: str, prev_digit: bool) -> tuple[str, bool] | None:
    """Digits a token stands for, and whether it was disguised; None: not digits."""
    if tok.isdigit():
        return tok, False
    if tok in _UNITS:
        if tok == "o" and not prev_digit:
            return "0", True  # "o seven..." still starts a run
        return _UNITS[tok], True
    if any(c.isdigit() for c in tok):
        mapped = tok.translate(_LETTER_DIGITS)
        if mapped.isdigit():
            return mapped, True
        return None
    if prev_digit and len(tok) <= 3 and set(tok) <= _LOOK_ALIKE_WORD:
        mapped = tok.translate(_LETTER_DIGITS)
        return (mapped, True) if mapped.isdigit() else None
    return None


def digits_view(folded: str) -> list[DigitRun]:
    """The digit runs of a ``folded`` text, read as a person would say them.

    "oh seven nine one one, one two three" → ``0791 1123``; "double seven" → ``77``;
    "O7700 9OO l23" → ``07700900123``; "0/7_7·0,0" → ``07700``. Runs are broken by any
    word that is not a number; separators between digit tokens are ignored.
    """
    if not _has_digitish(folded):
        return []
    if _LETTERS.search(folded) is None:
        # Digits and separators only: one C-speed pass (F-15: bounded work).
        return _plain_runs(folded, 0)
    runs: list[DigitRun] = []
    # Only stretches made of digit-like tokens are read token by token.
    for seg in _CANDIDATE.finditer(folded):
        text = seg.group()
        if len(text) < MIN_RUN_DIGITS:
            continue  # too short to spell a phone number, and ages or times are short
        if _LETTERS.search(text) is None:
            runs += _plain_runs(text, seg.start())
        else:
            runs += _spoken_runs(text, seg.start())
    return runs


def _plain_runs(text: str, offset: int) -> list[DigitRun]:
    return [DigitRun(_NON_DIGIT.sub("", m.group()), offset + m.start(), offset + m.end(),
                     m.group().startswith("+"), False) for m in _PLAIN_RUN.finditer(text)]


def _spoken_runs(folded: str, offset: int) -> list[DigitRun]:
    """Digit runs of a stretch with number words or letters for digits in it."""
    runs: list[DigitRun] = []
    cur: list[str] = []
    start = end = 0
    plus = disguised = False
    repeat = 1
    tens: str | None = None
    plus_next = False

    def flush() -> None:
        nonlocal cur, plus, disguised, tens
        if tens is not None:
            cur.append(tens + "0")
            tens = None
        if cur:
            runs.append(DigitRun("".join(cur), offset + start, offset + end, plus, disguised))
        cur, plus, disguised = [], False, False

    for m in _TOKEN.finditer(folded):
        tok = m.group()
        if tok in ("+", "plus"):
            flush()
            plus_next = True
            continue
        if tok in _REPEAT:
            repeat = _REPEAT[tok]
            continue
        if tok in _TENS:
            if tens is not None:
                cur.append(tens + "0")
            if not cur:
                start, plus = m.start(), plus_next
            tens, disguised, end = _TENS[tok], True, m.end()
            continue
        if tok in _POWERS and (cur or tens is not None):
            if tens is not None:
                cur.append(tens + "0")
                tens = None
            cur.append(_POWERS[tok])
            disguised, end = True, m.end()
            continue
        read = _token_digits(tok, bool(cur) or tens is not None)
        if read is None:
            flush()
            plus_next = False
            repeat = 1
            continue
        digits, was_disguised = read
        if tens is not None:
            if len(digits) == 1 and was_disguised:
                digits = tens + digits
            else:
                cur.append(tens + "0")
            tens = None
        if not cur:
            start, plus = m.start(), plus_next
        plus_next = False
        if repeat > 1:
            digits = digits[0] * repeat + digits[1:]
            was_disguised = True
            repeat = 1
        cur.append(digits)
        disguised = disguised or was_disguised
        end = m.end()
    flush()
    return runs


def digits_of(number: str) -> str:
    """A phone number as its national digits: ``+44 800 1111`` → ``08001111``."""
    d = "".join(c for c in number if c.isdigit())
    if d.startswith("0044"):
        d = "0" + d[4:]
    elif d.startswith("44") and (number.lstrip().startswith("+") or len(d) > 10):
        d = "0" + d[2:]
    return d


def helpline_digits(numbers: Iterable[str]) -> frozenset[str]:
    """Digits of every phone or text number in ``numbers`` (e.g. ``[[resources]]``
    ``phone`` and ``text`` entries: "Text SHOUT to 85258" → ``85258``)."""
    out: set[str] = set()
    for text in numbers:
        for part in re.findall(r"\+?\d[\d\s\-]*\d|\d", text):
            out.add(digits_of(part))
    return frozenset(d for d in out if d)


def _trivial(d: str) -> bool:
    """Counting ("one two three … ten") or one digit a few times is not a phone number;
    a very long run is reported whatever it holds (it could hide anything)."""
    return len(d) < 16 and (len(set(d)) <= 1 or d in "012345678910111213"
                            or d in "109876543210")


def _beside_helpline(digits: str, allowed: frozenset[str]) -> bool:
    """A helpline run together with a few digits that cannot be a number themselves:
    "samaritans are 24/7, 116 123, i rang" reads as the one run 2471161231 (the "i"
    after digits is a 1); the digits beside the helpline are fewer than a number's."""
    for number in allowed:
        if len(number) >= 5 and number in digits \
                and len(digits) - len(number) < MIN_RUN_DIGITS:
            return True
    return False


def _matches(digits: str, plus: bool) -> bool:
    text = ("+" if plus else "") + digits
    for region in PHONE_REGIONS:
        for _ in phonenumbers.PhoneNumberMatcher(text, region,
                                                 leniency=phonenumbers.Leniency.VALID):
            return True
    return False


def _plainly_a_number(text: str, plus: bool) -> bool:
    """A number already written in plain digits inside a run that words extend
    ("rang 0800 800 150 THREE times"): the number was not disguised, so no evasion."""
    for m in _DIGITS_ONLY_RUN.finditer(text):
        digits = _NON_DIGIT.sub("", m.group())
        if len(digits) >= MIN_RUN_DIGITS and (
                len(digits) >= LONG_RUN_DIGITS or _matches(digits[:20], plus)):
            return True
    return False


def find_phones(norm: Normalized, allowed: frozenset[str] = HELPLINES) -> list[Span]:
    """Phone numbers in any spelling; helplines in ``allowed`` (digits) are skipped."""
    found: list[Span] = []
    runs = [r for r in digits_view(norm.folded) if len(r.digits) >= MIN_RUN_DIGITS]
    for run in runs[:MAX_RUNS]:
        national = digits_of(("+" if run.plus else "") + run.digits) if run.plus \
            else run.digits
        if national in allowed or run.digits in allowed or _beside_helpline(run.digits, allowed):
            continue
        if _trivial(run.digits):
            continue
        if len(run.digits) >= LONG_RUN_DIGITS or _matches(run.digits[:20], run.plus):
            found.append((run.start, run.end, run.disguised and not _plainly_a_number(
                norm.folded[run.start:run.end], run.plus)))
    return found


# ------------------------------------------------------------------------ email

_PROVIDER_NAMES: Final = (
    "gmail", "googlemail", "gmial", "gmal", "gamil", "gmaill", "hotmail", "hotmial",
    "hotmale", "hotmal", "outlook", "outlok", "yahoo", "yahooo", "yaho", "icloud", "iclod",
    "protonmail", "btinternet", "ymail",
)
"""Mail providers that are an address on their own ("jo at gmail")."""
_WEAK_PROVIDERS: Final = ("live", "aol", "proton", "msn", "sky", "mail", "me")
"""Providers that are ordinary words too: an address only with its ".com" spelt out."""


def _loose(names: Iterable[str]) -> str:
    """Alternation of names, also spelt with dots or spaces between letters."""
    return "|".join(r"[\s._\-]?".join(re.escape(c) for c in name)
                    for name in sorted(names, key=len, reverse=True))


_TLDS: Final = "com|co|uk|net|org|me|io|ie|info|edu|gov|ac|us|de|fr"
_AT: Final = r"\s*(?:@|[(\[{<]\s*at\s*[)\]}>]|\bat\b)\s*"
_DOT: Final = r"\s*(?:\.|[(\[{<]\s*dot\s*[)\]}>]|\bdot\b)\s*"
_EMAIL_PLAIN: Final = re.compile(
    r"[a-z0-9][a-z0-9._%+\-]*@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.(?:[a-z]{2,})")
_EMAIL_WORDS: Final = re.compile(
    rf"[a-z0-9._\-]{{2,}}{_AT}(?:(?:{_loose(_PROVIDER_NAMES)})\b(?:{_DOT}(?:{_TLDS})\b)?|"
    rf"(?:{_loose(_WEAK_PROVIDERS)}){_DOT}(?:{_TLDS})\b)")
_KNOWN_TLD_END: Final = re.compile(rf"\.(?:{_TLDS})$")
_SPACED_OUT: Final = re.compile(r"(?<!\S)(?:\S\s+){3,}\S(?!\S)")
_SQUASH: Final = re.compile(r"[\s._\-]+")
_NON_SPACE: Final = re.compile(r"\S")
_MATCH_START: Final = re.Match.start
_EMAIL_HINTS: Final = (*_PROVIDER_NAMES, "dot", "moc", "liam", "(at)", "[at]", "{at}", "<at>")
"""Without one of these (or an ``@``), a message holds no email address: skip the rest."""


def _collapsed(folded: str) -> tuple[str, Sequence[int]]:
    """``folded`` with the spaces between single characters removed ("j o @ g m a i l"
    → "jo@gmail"), with the map back; other spaces stay, so words do not run together.
    Built a run at a time (the characters kept inside a spaced-out run are its ``\\S``
    matches), not a Python step per character (F-15)."""
    keep: list[int] = []
    pos = 0
    for m in _SPACED_OUT.finditer(folded):
        start, end = m.span()
        keep.extend(range(pos, start))
        keep.extend(map(_MATCH_START, _NON_SPACE.finditer(folded, start, end)))
        pos = end
    if not pos:
        return folded, range(len(folded))
    keep.extend(range(pos, len(folded)))
    return "".join(map(folded.__getitem__, keep)), keep


def find_emails(norm: Normalized, allowed: frozenset[str] = HELPLINES) -> list[Span]:
    """Email addresses, also spaced out, spelt "at … dot com", or written backwards."""
    folded = norm.folded
    squashed = _SQUASH.sub("", folded)
    if "@" not in folded and not any(hint in squashed for hint in _EMAIL_HINTS):
        return []
    joined, keep = _collapsed(folded)
    found: list[Span] = []
    spaced = joined != folded
    # A written address has an "@" and a dot after it: without both (forwards or
    # backwards) its pattern is not run over the line (F-15).
    patterns = (_EMAIL_PLAIN, _EMAIL_WORDS) if "@" in joined and "." in joined \
        else (_EMAIL_WORDS,)
    for pattern in patterns:
        for m in pattern.finditer(joined):
            s, e = keep[m.start()], keep[m.end() - 1] + 1
            plain = "@" in m.group() and folded[s:e] == m.group()
            found.append((s, e, (spaced and not plain) or "@" not in m.group()))
    if not found:
        backwards = joined[::-1]
        n = len(joined)
        for pattern in patterns:
            for m in pattern.finditer(backwards):
                if pattern is _EMAIL_PLAIN and _KNOWN_TLD_END.search(m.group()) is None:
                    # "lukas.becker@schule" read backwards ends in ".sakul": an
                    # address written backwards still ends in a real domain.
                    continue
                s, e = keep[n - m.end()], keep[n - 1 - m.start()] + 1
                found.append((s, e, True))
    return found


# ------------------------------------------------------------------------ handles

APPS: Final = (
    r"snap\s?chat|snap|snp|snapchta|snpachat|snapchatt|snapp|sc|the\s+ghost\s+app|ghost\s+app|"
    r"yellow\s+app|👻|insta\s?gram|insta|instaa|intsa|instagarm|instagrm|ig|the\s+gram|gram|"
    r"discord|discrod|dicord|disc|dc|tik\s?tok|tiktoc|tictoc|tt|whats\s?app|whatsap|watsapp|"
    r"watsap|whatapp|wa|kik|telegram|telegarm|tg|signal|wickr|threads|bereal|be\s+real|roblox|"
    r"fortnite|minecraft|xbox|xbl|psn|playstation|steam|twitch|youtube|yt|facebook|fb|"
    r"messenger|twitter|skype|omegle|wizz|yubo|reddit|tumblr|viber|wechat|line\s+app|"
    r"monkey\s+app|hoop|amino"
)
"""App names, nicknames and common misspellings (issue 13 § 1), as one alternation."""
_APP_WORDS: Final = (frozenset(re.split(r"[^a-z👻]+", APPS.replace(r"\s", " ")))
                     | {"snapchat", "instagram", "tiktok", "whatsapp"}) \
    - {"", "the", "be", "app", "line", "chat", "s"}
"""Every word of every app name: a message with none of them names no app."""
_VERBS: Final = (r"add|follow|dm|pm|message|msg|text|txt|snap|find|search|look|hmu|hit|ping|"
                 r"call|chat|talk|reach|contact|friend|sub|subscribe|inbox|slide|facetime")
_NOUN_BEFORE: Final = re.compile(
    r"\b(?:a|an|the|my|his|her|our|your|ur|their|this|that)[\s\"']*$")
"""A determiner just before a request verb makes it a noun: "she has a friend on
fortnite", "my message on insta" ask nobody for anything."""
_NOT_A_HANDLE: Final = (
    r"(?!(?:so|such|a|an|just|still|always|never|not|full|down|broken|dead|literally|"
    r"really|very|too|off|up|old|private|public|deleted|hacked|banned|gone|"
    r"laggy|rubbish|trash|mint|different|better|worse)\b|[a-z]{2,}ing\s+[a-z])")
"""What follows "my xbox is" when no handle does: "my xbox is updating again", "my insta
is private", "my snap is so dry" describe an app and give nobody a name."""
_HANDLE_PATTERNS: Final = (
    # "add me on sc", "search me up on the ghost app", "hmu on 👻"
    re.compile(rf"\b(?:{_VERBS})\s*(?:me|us|him|her)?\s+(?:up\s+)?"
               rf"(?:on|at|via|thru|through|"
               rf"in|@)\s*(?:my\s+)?(?:{APPS})(?![a-z])"),
    # "my sc is jess", "his insta: x", "👻 - coolkid"; "my snapchat is" ending a message
    # announces the next one (conversation context joins them)
    re.compile(rf"\b(?:my|his|her|our)\s+(?:{APPS})\s*(?:name|user\s?name|handle|tag|@|id)?\s*"
               rf"(?:is|=|:|-|its|it s)\s*(?:{_NOT_A_HANDLE}@?[a-z0-9_.]+|[\W_]*$)"),
    re.compile(r"👻\s*(?:is|=|:|-)?\s*@?[a-z][a-z0-9_.]{2,}|\bghost\s+app\s*(?:(?:is|=|:|-)"
               r"\s*@?[a-z0-9_.]{3,}|\s+@?[a-z0-9_.]*[0-9_.][a-z0-9_.]*)"),
    # "what's ur snap", "wats yo discord"
    re.compile(rf"\b(?:what|whats|wats|wat|wots|what\s+is)\s*(?:s\s+)?(?:your|ur|yo|you)\s+"
               rf"(?:{APPS})(?![a-z])"),
    # "i'm jess_07 on discord", "im coolkid99 on snap"
    re.compile(rf"\b(?:i\s?m|i\s+am|i s m)\s+@?[a-z0-9_.]*[0-9_.][a-z0-9_.]*\s+on\s+"
               rf"(?:{APPS})(?![a-z])"),
    # "search jess_07 on tiktok", "look up coolkid99 on insta", "add ruby.sky.w on ig"
    re.compile(rf"\b(?:search|look\s+up|find|add)\s+@?[a-z0-9_]*(?:[0-9_]|\.[a-z0-9_])"
               rf"[a-z0-9_.]*\s+(?:on|in)\s+(?:{APPS})(?![a-z])"),
    # gamer tags: "coolkid#1234", "jess # 0420"
    re.compile(r"\b[a-z][a-z0-9_.]{2,31}\s?#\s?\d{4,5}\b"),
    # "sc: jess_07", "discord - coolkid99"
    re.compile(rf"(?<![a-z])(?:{APPS})\s*(?::|=|-|is)\s*@?[a-z0-9_.]*[0-9_.][a-z0-9_.]*"),
    # a whole message that is an app and a name: "snap: elliebxx", "ig - jessrose"
    re.compile(rf"^\W*(?:{APPS})\s*(?::|=|-)\s*@?[a-z][a-z0-9_.]{{3,29}}[\W_]*$"),
)
_REQUEST: Final = _HANDLE_PATTERNS[0]
_HANDLE_NEEDS: Final[tuple[tuple[str, ...], ...]] = (
    (), ("my", "his", "her", "our"), ("👻", "ghost"), ("what", "wat", "wot"), ("on",),
    ("search", "look", "find", "add"), ("#",), (), (),
)
"""Text each of ``_HANDLE_PATTERNS`` cannot match without (one of these substrings):
a pattern whose words are absent is not run (F-15: each is an alternation of app names
tried at every word of a long line)."""


def _apps_spelt_out(folded: str, words: str) -> str:
    """``folded`` with each app name written in leetspeak spelt out ("sn4p: ellie.b.o.o" →
    "snap: ellie.b.o.o"): the words view reads the app but drops the colon and the dots
    that make the rest a handle. The views are aligned character by character."""
    out = folded
    if len(words) != len(folded):  # never, today: each character maps to one
        return out
    for m in re.finditer(r"\S+", words):
        if m.group() in _APP_WORDS and folded[m.start():m.end()] != m.group():
            out = out[:m.start()] + m.group() + out[m.end():]
    return out


SPELLED_APPS: Final = ("snapchat", "instagram", "whatsapp", "telegram", "discord", "tiktok",
                       "facebook", "twitter", "roblox", "fortnite", "minecraft", "messenger")
"""Apps whose names are long enough that one slip (a letter wrong, missing, added, or two
swapped: "snapchst", "instagam", "whatsaap", "tiktk") still names only them: any word one
such edit away (optimal string alignment, rapidfuzz) reads as the app (issue 13 § 1)."""
_NOT_APPS: Final = frozenset({"discard", "titter"})
"""English words one edit from an app's name."""
_EDGES: Final = (frozenset(a[:2] for a in SPELLED_APPS), frozenset(a[-2:] for a in SPELLED_APPS))
"""Each app's first two letters and its last two (``_misspelt_app``'s first look)."""


@functools.lru_cache(maxsize=8192)
def _misspelt_app(word: str) -> str | None:
    """The app ``word`` misspells, if any (kept per word: chat vocabulary repeats)."""
    if not 5 <= len(word) <= 10 or word in _APP_WORDS or word in _NOT_APPS:
        return None
    # One edit leaves a name of 5 or more letters its first two or its last two: most
    # words are ruled out here, before the edit distance (a post of 2,000 characters of
    # words never seen before took 0.8 ms without this, 0.1 ms with it).
    if word[:2] not in _EDGES[0] and word[-2:] not in _EDGES[1]:
        return None
    found = process.extractOne(word, SPELLED_APPS, scorer=OSA.distance, score_cutoff=1)
    return None if found is None else str(found[0])


_SPELLED_LENGTH: Final = re.compile(r"(?<![a-z])[a-z]{5,10}(?![a-z])")
"""Words as long as a misspelt ``SPELLED_APPS`` name can be."""


def _apps_respelt(view: str) -> tuple[str, list[int]] | None:
    """``view`` with each misspelt app name spelt right, and for each character of it
    (and its end) the offset in ``view`` it stands for; None if nothing was misspelt.
    Runs for nearly every message (any without an app's name): its distinct words of
    the right length are looked up first, and the view rebuilt only if one is a slip."""
    slips = {w: app for w in set(_SPELLED_LENGTH.findall(view))
             if (app := _misspelt_app(w)) is not None}
    if not slips:
        return None
    out: list[str] = []
    index: list[int] = []
    last = 0
    for m in _SPELLED_LENGTH.finditer(view):
        app = slips.get(m.group())
        if app is None:
            continue
        out.append(view[last:m.start()])
        index.extend(range(last, m.start()))
        out.append(app)
        index.extend(min(m.start() + k, m.end() - 1) for k in range(len(app)))
        last = m.end()
    out.append(view[last:])
    index.extend(range(last, len(view) + 1))
    return "".join(out), index


_LONE_HANDLE: Final = re.compile(r"\s*(@[a-z0-9_.]{3,30})\s*")


def find_handles(norm: Normalized, allowed: frozenset[str] = HELPLINES) -> list[Span]:
    """App handles and requests for them, in the folded and the words view (``sn4p``).
    A message that is nothing but an ``@handle`` is a handle given (the rule's pattern
    lets one that opens a message through: that addresses someone)."""
    lone = _LONE_HANDLE.fullmatch(norm.folded)
    if lone:
        return [(lone.start(1), lone.end(1), False)]
    if "#" not in norm.folded and _APP_WORDS.isdisjoint(norm.words.split()) \
            and "👻" not in norm.folded:
        # A slip of the thumb ("snapchst: aimee_07") is no disguise: no evasion alert.
        for view in dict.fromkeys((norm.folded.replace("'", " "), norm.words)):
            respelt = _apps_respelt(view)
            if respelt is not None:
                text, index = respelt
                found = _handle_spans([text])
                if found:
                    return [(index[s], index[e - 1] + 1, False) for s, e, _ in found]
        return []
    folded = norm.folded.replace("'", " ")
    views = [folded]
    if norm.words != folded:
        views.append(norm.words)
        apps = _apps_spelt_out(folded, norm.words)
        if apps != folded:
            views.append(apps)
    return _handle_spans(views)


def _handle_spans(views: Sequence[str]) -> list[Span]:
    """The handle patterns' matches in the first of ``views`` that has any (each later
    view is a disguise undone: a match there is ``disguised``)."""
    found: list[Span] = []
    for n, view in enumerate(views):
        for pattern, needs in zip(_HANDLE_PATTERNS, _HANDLE_NEEDS, strict=True):
            if needs and not any(word in view for word in needs):
                continue
            for m in pattern.finditer(view):
                if pattern is _REQUEST and _NOUN_BEFORE.search(
                        view, max(0, m.start() - 8), m.start()):
                    continue
                found.append((m.start(), m.end(), n > 0))
        if found:
            break
    return found


# ------------------------------------------------------------------------ postcodes

_POSTCODE: Final = re.compile(r"(?:[a-z]{1,2}\d[a-z\d]?|gir)\s*\d[abd-hjlnp-uw-z]{2}")
_POSTCODE_FULL: Final = re.compile(r"^(?:[a-z]{1,2}\d[a-z\d]?|gir)\d[abd-hjlnp-uw-z]{2}$")
_LETTER_NAMES: Final = {
    "ay": "a", "bee": "b", "cee": "c", "dee": "d", "ee": "e", "ef": "f", "eff": "f",
    "gee": "g", "aitch": "h", "haitch": "h", "jay": "j", "kay": "k", "el": "l", "em": "m",
    "en": "n", "pee": "p", "cue": "q", "queue": "q", "ar": "r", "ess": "s", "tee": "t",
    "vee": "v", "ex": "x", "zed": "z", "zee": "z", "you": "u", "why": "y", "see": "c",
    "are": "r", "eye": "i", "oh": "0", "o": "0",
    **{w: d for w, d in _UNITS.items() if len(d) == 1},
}
_SPELT: Final = re.compile(r"[a-z0-9]+")
_SPELT_HINT: Final = re.compile(
    r"(?<![a-z0-9])[a-z]{1,6}[\W_]+(?:[a-z]{1,6}[\W_]+){0,2}(?:\d|(?:"
    + "|".join(w for w, d in _UNITS.items() if len(d) == 1) + r")(?![a-z]))")
"""A short word then a digit: the start of every spelt postcode ("s w one", "em one")."""
_DIGIT_WORDS: Final = frozenset(w for w, d in _UNITS.items() if len(d) == 1)
_MIXED: Final = re.compile(r"[a-z]?\d[a-z\d]?")
_POSTCODE_SPELT: Final = re.compile(
    r"(?<![a-z0-9])(?:[a-z]{1,2}\d[a-z\d]?|gir)\d[abd-hjlnp-uw-z]{2}(?![a-z0-9])")


def find_postcodes(norm: Normalized, allowed: frozenset[str] = HELPLINES) -> list[Span]:
    """UK postcodes: written ("sw1a 1aa") or spelt out one character at a time."""
    folded = norm.folded
    found: list[Span] = [(m.start(), m.end(), False) for m in _POSTCODE.finditer(folded)
                         if (m.start() == 0 or not folded[m.start() - 1].isalnum())
                         and (m.end() == len(folded) or not folded[m.end()].isalnum())]
    # Spelt out: a run of single characters and letter or digit names. Each token becomes
    # its character(s) in ``spelt`` (other words a "|"), so one regex search finds them.
    # The hint needs a digit or a digit word after a separator: a cheap test of that
    # first, as the hint's search tries every word start of a long line (F-15).
    tokens = _SPELT.findall(folded)
    if (_DIGIT.search(folded) is None and _DIGIT_WORDS.isdisjoint(tokens)) or \
            _SPELT_HINT.search(folded) is None:
        return found
    chars = [_spelt_char(tok) for tok in tokens]
    doubled = "double" in chars or "dbl" in chars
    if doubled:
        for i in range(len(tokens)):
            if chars[i] not in ("double", "dbl"):
                continue
            chars[i] = ""
            if i + 1 < len(tokens) and chars[i + 1] not in ("double", "dbl", "|"):
                chars[i + 1] = "w" if tokens[i + 1] in ("you", "u") else chars[i + 1] * 2
    spelt = "".join(chars)
    # One character per token (no doubling, no letter-digit mix): a character's index is
    # its token's; otherwise the token a character came from is found by bisection.
    one_each = not doubled and len(spelt) == len(tokens)
    ends = None if one_each else list(itertools.accumulate(map(len, chars)))
    spans: list[tuple[int, int]] | None = None
    for m in _POSTCODE_SPELT.finditer(spelt):
        if ends is None:
            first, last = m.start(), m.end() - 1
        else:
            first, last = bisect.bisect_right(ends, m.start()), \
                bisect.bisect_right(ends, m.end() - 1)
        if first != last:  # one token alone is a written postcode, found above
            if spans is None:
                spans = [t.span() for t in _SPELT.finditer(folded)]
            found.append((spans[first][0], spans[last][1], True))
    return found


def _spelt_char(tok: str) -> str:
    """What a token spells in a postcode: a character, a letter or digit name's
    character, a short letter-digit mix as it is; "double"/"dbl" kept for the caller;
    "space" nothing; any other word "|"."""
    if len(tok) == 1 or tok in ("double", "dbl"):
        return tok
    if tok == "space":  # "b s 1 6 space 4 t q": the gap between the halves, said
        return ""
    char = _LETTER_NAMES.get(tok)
    if char is not None:
        return char
    if len(tok) <= 3 and _MIXED.fullmatch(tok):
        return tok  # "m1", "1a" mixed in with spelt letters
    return "|"


# ------------------------------------------------------------------------ addresses

_STREET_TYPES: Final = (
    r"road|rd|street|st|avenue|ave|av|lane|ln|close|cl|drive|dr|crescent|cres|way|grove|gr|"
    r"terrace|ter|gardens|gdns|place|pl|court|ct|square|sq|mews|row|rise|walk|parade|"
    r"estate|boulevard|blvd|highway|hwy|circle|cir|park\s+road|hill\s+road"
)
_NOT_NAME: Final = (r"(?!(?:on|the|in|to|of|a|an|my|down|up|across|along|over|for|at|and|or|"
                    r"hours?|hrs?|days?|weeks?|minutes?|mins?|times?|years?|months?|miles?|"
                    r"km|mi|metres?|meters?|laps?|more|less|other|different|same|pages?|"
                    r"bus|buses|cars?|people|kids|of|"
                    # "7:45 which is way too early", "£80 one way", "2 all the way"
                    r"which|is|was|one|all|half|each|every|it|its|this|that|no|so|too|very|"
                    r"way|"
                    # "11 till close", "9 until close": a shift, not a cul-de-sac
                    r"till|til|until|past|before|after)\b)")
_NUMBERED_STREET: Final = re.compile(
    rf"\b\d{{1,4}}[a-z]?\s*,?\s+(?:{_NOT_NAME}[a-z]+\s+){{1,3}}(?:{_STREET_TYPES})\b")
"""12 oak road", "12a, high st", "flat 3 12 oak road"."""
_STREET_WORD: Final = re.compile(rf"\b(?:{_STREET_TYPES}|estate|flats|towers?)\b")
_STREET_WORDS: Final = frozenset(
    w for w in _STREET_TYPES.split("|") if "\\" not in w) | {"estate", "flats", "tower", "towers"}
"""The street words as whole words ("park road" and "hill road" end in "road")."""
_WHOLE_WORD: Final = re.compile(r"\w+")
_STRONG_TYPES: Final = (r"road|rd|street|avenue|ave|lane|close|drive|crescent|grove|terrace|"
                        r"gardens|gdns|mews|estate|flats|towers?")
"""Street types that are rarely anything else: "way", "place", "walk", "court" are, so
"im on my way" and "i'm in a dark place" are not addresses without a house number."""
_SPOKEN_NUMBER: Final = (
    r"(?:twenty|thirty|forty|fourty|fifty|sixty|seventy|eighty|ninety)(?:[\s-]+(?:one|two|"
    r"three|four|five|six|seven|eight|nine))?|one|two|three|four|five|six|seven|eight|nine|"
    r"ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen")
_MY_ADDRESS: Final = re.compile(r"\bmy\s+(?:home\s+)?address\s*(?:is|=|:)")
_INTERNATIONAL: Final = ("calle", "c/", "avenida", "av.", "rue", "boulevard", "bd", "via",
                         "viale", "piazza", "plaza", "praca", "rua", "ulica", "ul.", "carrer",
                         "strada", "avenue", "allee", "impasse", "chemin", "place")
_COMPOUNDS: Final = ("strasse", "str.", "weg", "gasse", "platz", "allee", "damm", "straat",
                     "laan", "gracht", "gatan", "gade", "vej", "veien", "vagen")
_ADDRESS_PATTERNS: Final[tuple[tuple[re.Pattern[str], bool, bool, tuple[str, ...]], ...]] = (
    # (pattern, needs a digit, needs a street word, one of these words): patterns that
    # cannot match are skipped, so a long message costs a few substring searches
    (_NUMBERED_STREET, True, True, ()),
    # "flat 3", "apartment 4b", "apt 12", "house number 7"
    (re.compile(r"\b(?:flat|apt|apartment|unit|house\s+number|house\s+no|door\s+number)\s*"
                r"(?:no\.?\s*|number\s*)?\d{1,4}[a-z]?\b"), True, False,
     ("flat", "apt", "apartment", "unit", "house", "door")),
    # "i live at number 12 elm street", "im on oak road", "i live at nine acacia avenue"; a
    # name is not a little word ("im on my way") and, without a number, the street type
    # is a strong one ("im in dark place" is not an address)
    (re.compile(rf"\b(?:i\s+live|we\s+live|im|i\s+m|i\s+am)\s+(?:at|on|in)\s+(?:number\s+)?"
                rf"(?:(?:(?:\d{{1,4}}|{_SPOKEN_NUMBER})\s+)(?:{_NOT_NAME}[a-z]+\s+){{1,2}}"
                rf"(?:{_STREET_TYPES}|estate|flats|towers?)|(?:{_NOT_NAME}[a-z]+\s+){{1,2}}"
                rf"(?:{_STRONG_TYPES}))\b"),
     False, True, ("live", "m ", "am ")),
    (re.compile(r"\bp\.?\s*o\.?\s*box\s*\d+"), True, False, ("box",)),
    # international: "calle mayor 5", "rue de la paix 12", "via roma 3", "rua augusta 20"
    (re.compile(r"\b(?:calle|c/|avenida|av\.|rue|boulevard|bd|via|viale|piazza|plaza|praca|"
                r"rua|ulica|ul\.|carrer|strada)\s+(?:(?:de|del|de\s+la|des|du|da|do|dos|"
                r"della)\s+)?[a-z]+(?:\s+[a-z]+)?\s*,?\s*(?:n[o.]?\s*)?\d{1,4}[a-z]?\b"),
     True, False, _INTERNATIONAL),
    # "12 rue de la paix", "5 avenue foch"
    (re.compile(r"\b\d{1,4}\s*,?\s*(?:rue|avenue|boulevard|bd|allee|impasse|chemin|place)\s+"
                r"(?:(?:de|du|des|de\s+la)\s+)?[a-z]{3,}"), True, False, _INTERNATIONAL),
    # German, Dutch, Nordic compounds: "hauptstrasse 5", "kerkstraat 12", "storgatan 3"
    (re.compile(r"\b[a-z]{3,}(?:strasse|str\.|weg|gasse|platz|allee|damm|straat|laan|gracht|"
                r"gatan|gade|vej|veien|vagen)\s*\d{1,4}[a-z]?\b"), True, False, _COMPOUNDS),
)


def find_addresses(norm: Normalized, allowed: frozenset[str] = HELPLINES) -> list[Span]:
    """Street addresses, with number words read as digits ("twelve oak road")."""
    folded = norm.folded
    found: list[Span] = []
    digits = _DIGIT.search(folded) is not None
    # Each street word is one whole word: a set lookup per distinct word finds what
    # ``_STREET_WORD.search`` finds, without trying its alternation at every position.
    street = not _STREET_WORDS.isdisjoint(_WHOLE_WORD.findall(folded))
    for pattern, needs_digit, needs_street, words in _ADDRESS_PATTERNS:
        if (needs_digit and not digits) or (needs_street and not street) or \
                (words and not any(w in folded for w in words)):
            continue
        found += [(m.start(), m.end(), False) for m in pattern.finditer(folded)]
    if not found and "address" in folded:
        found += [(m.start(), m.end(), False) for m in _MY_ADDRESS.finditer(folded)]
    if found or not street:
        return found
    for run in digits_view(folded):
        if not run.disguised or len(run.digits) > 4:
            continue
        # Replace the spelt number by its digits and look again at what follows it.
        candidate = run.digits + folded[run.end:run.end + 60]
        m = _NUMBERED_STREET.match(candidate)
        if m is not None:
            found.append((run.start, min(len(folded), run.end + m.end() - len(run.digits)),
                          True))
    return found


Detector = Callable[[Normalized, frozenset[str]], list[Span]]
DETECTORS: Final[Mapping[str, Detector]] = {
    "phone": find_phones,
    "email": find_emails,
    "handle": find_handles,
    "postcode": find_postcodes,
    "address": find_addresses,
}
"""Detector name (a rule's ``detector``) → function over a message's views."""
DETECTOR_NAMES: Final = frozenset(DETECTORS)
