"""RuleSet + text + role → Verdict, with one hyperscan database per rule-set version.

Every pattern of every rule (and every ``unless`` exception) is compiled into one
database; a message is scanned once, over ``folded + "\\n" + words`` (see
``normalize.py``), and each hit maps back to its rule and to a span of the original.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import hashlib
import itertools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Final

import hyperscan

from chatserver.moderation import contact
from chatserver.moderation.contact import DETECTORS, HELPLINES, helpline_digits
from chatserver.moderation.disguise import hidden_views
from chatserver.moderation.normalize import (
    Normalized,
    disguised_within,
    normalize,
    words_view,
)
from chatserver.moderation.rules import Action, Rule, RuleLoadError, RuleProblem, parse_rule_files

__all__ = ["Hit", "RuleSet", "Verdict", "compile_rules", "letters_pattern", "load_rules",
           "resource_numbers", "rules_version"]

# No HS_FLAG_SOM_LEFTMOST: start-of-match tracking made compiling 4x slower (7 s vs 1.7 s
# for the shipped rules, measured). Hyperscan gives the end of a match; the rare message
# that matches finds its start with Python's ``re`` on the same pattern (``_start``).
_FLAGS: Final = hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_CASELESS
MAX_SPAN: Final = 200
"""Longest match whose start is searched for, for an unbounded pattern (F-15: a match's
start is found by trying ``re`` backwards from its end; unbounded, a 2,000-character
digit run took 420 ms)."""
_LOCAL_MISSES: Final = 8
"""Matches of one view whose start is looked for among nearby word starts only; past
this many, every word start of the view is listed once."""
_MEMO_CHARS: Final = 32
"""How far back from a match's end ``RuleSet._start`` keys what it found (a word or
phrase's start nearer than this is remembered for the rest of the message)."""
MASK_CHAR: Final = "*"
"""Masked spans keep their length so the sentence still reads naturally."""


def letters_pattern(text: str) -> str | None:
    """Compile a word or phrase into a pattern over the ``words`` view.

    Letters may be separated by spaces (``k i l l``, ``kill.your.self`` once dots are
    spaces) and stretched (``kiiiill``); a doubled letter in the phrase must stay
    doubled, so "ass" never matches "as" and "class" never matches "ass" (whole words).
    """
    body = _letters_body(text)
    return None if body is None else rf"\b{body}\b"


def _letters_body(text: str) -> str | None:
    """Letters may repeat (``x+``) and be split by one space (``k i l l``); words may be
    run together or spaced by any number of spaces."""
    words = words_view(normalize(text).folded).split()
    if not words:
        return None
    out = []
    for word in words:
        groups = []
        for ch, run in itertools.groupby(word):
            n = len(list(run))
            c = re.escape(ch)
            groups.append(f"{c} ?" * (n - 1) + c + "+")
        out.append(" ?".join(groups))
    return " *".join(out)


def combine_pattern(slots: tuple[tuple[str, ...], ...]) -> str | None:
    """One pattern for a ``combine`` table: a slot is an alternation of letter
    patterns, optional when it lists ``""``; slots follow each other, spaces optional."""
    pieces: list[str] = []
    for slot in slots:
        # Longest first; ties by text, so the pattern is the same in every process (a
        # set's order is not: the compiled matcher is cached by its patterns).
        alts = sorted({b for b in (_letters_body(w) for w in slot if w.strip()) if b},
                      key=lambda b: (-len(b), b))
        if not alts:
            continue
        group = "(?:" + "|".join(alts) + ")"
        sep = " *" if pieces else ""
        optional = any(not w.strip() for w in slot)
        pieces.append(f"(?:{sep}{group})?" if optional else f"{sep}{group}")
    return rf"\b{''.join(pieces)}\b" if pieces else None


_APOSTROPHES: Final = re.compile(r"['`´ʼ’‘]")
_EDGE_PUNCTUATION: Final = re.compile(r"(?:(?<=\s)|^)[^\w\s]+|[^\w\s]+(?=\s|$)")
_SPLIT_WORD: Final = re.compile(r"\w[^\w\s]+\w|(?:\b\w\b ){2}\b\w\b")
_WORD_HYPHEN: Final = re.compile(r"(?<=\w\w)-(?=\w\w)")
_WORD_START: Final = re.compile(r"\b\w")
_MATCH_START: Final = re.Match.start


@functools.lru_cache(maxsize=4096)
def _ordinary(text: str) -> str:
    """Text as ordinary spelling writes it: apostrophes gone (``don't`` = ``dont``),
    punctuation at the edges of words gone (``no, one``), a hyphen between two words a
    space (``self-harm``). What is left that differs from the pattern is an evasion:
    ``k.i.l.l``, ``k i l l``, ``k1ll`` (issue 13 § 5: a signal without noise).

    Cached: a line that repeats one masked word asks this about the same few spans
    hundreds of times (F-15: bounded work per message)."""
    if text.isalnum():
        return text
    text = _APOSTROPHES.sub("", text)
    text = _WORD_HYPHEN.sub(" ", _EDGE_PUNCTUATION.sub(" ", text))
    return " ".join(text.split())


def _severity(h: Hit) -> tuple[int, str]:
    """Hits most severe first, then by rule id (the first notice wins)."""
    return -h.rule.action, h.rule.id


def _char_ends(view: str) -> list[int]:
    """``[0, end of the 1st character, end of the 2nd, …]`` in ``view.encode()``: found
    once per view, so mapping each match's byte offset back is a bisection, not a decode
    of everything before it (F-15: hundreds of matches in a 2,000-character line)."""
    return list(itertools.accumulate(map(len, map(str.encode, view)), initial=0))


@dataclass(frozen=True, slots=True)
class Hit:
    """One rule that matched, with the first span it matched in the original text."""

    rule: Rule
    span: tuple[int, int]
    spans: tuple[tuple[int, int], ...]
    evasive: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    """What happens to one message, and why."""

    action: Action
    text_out: str
    hits: tuple[Hit, ...]
    shadow: tuple[Hit, ...]
    alerts: tuple[str, ...]
    signpost: bool
    notice: str | None
    normalized: str
    """The folded text the regex rules read (what ops see as "normalized")."""
    words: str
    """The words view: leetspeak and symbols mapped, punctuation as spaces."""
    version: str
    stage: str = "none"
    """Which stage decided: ``rules``, ``model`` (caught or cleared), or ``none``."""
    scores: Mapping[str, float] = field(default_factory=dict)
    """Each learned head's score (empty when the second stage did not run)."""
    thresholds: Mapping[str, float] = field(default_factory=dict)
    model_version: str | None = None
    cleared: tuple[Hit, ...] = ()
    """Rule hits the model cleared (a supportive line a rule would have held)."""

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(sorted({h.rule.category for h in self.hits}))


@dataclass(frozen=True)  # no slots: ``width`` is cached on the instance
class _Pattern:
    rule: int
    unless: bool
    plain: str | None
    """The pattern's own text (``_ordinary``), to tell an evasive spelling; None: compare
    the views; "": a regex."""
    source: str = ""
    every: bool = True
    """Report every match (a masking rule masks each one); otherwise the first is enough
    to decide, and hyperscan stops reporting the pattern (``HS_FLAG_SINGLEMATCH``)."""
    word_start: bool = False
    """Every match begins a word (``\\b`` then a letter: a word or phrase of a rule),
    so its start is looked for only where a word starts (``RuleSet._start``)."""
    lead: str = ""
    """The letter such a match begins with (lower case), when it is ASCII: a word that
    begins with another ASCII character cannot be its start."""

    @property
    def flags(self) -> int:
        return _FLAGS if self.every else _FLAGS | hyperscan.HS_FLAG_SINGLEMATCH

    @functools.cached_property
    def width(self) -> int:
        """The most characters one match can span (``MAX_SPAN`` if unbounded)."""
        try:
            widest = int(re._parser.parse(self.source, re.IGNORECASE).getwidth()[1])  # type: ignore[attr-defined]
        except (re.error, ValueError, AttributeError):
            return MAX_SPAN
        return min(widest, MAX_SPAN)


class RuleSet:
    """Compiled rules of one version; ``check`` is the hot path."""

    def __init__(self, rules: tuple[Rule, ...], version: str,
                 patterns: list[_Pattern] | None = None,
                 allowed: frozenset[str] = HELPLINES) -> None:
        self.rules = rules
        self.version = version
        self._patterns = patterns or []
        self._db: object = None
        self._py: dict[int, re.Pattern[str]] = {}
        # Detector rules, each with the numbers it never reports (helplines: its own
        # ``allow``, HELPLINES and the config's [[resources]]).
        self._detectors = tuple(
            (idx, rule.detector, allowed | helpline_digits(rule.allow))
            for idx, rule in enumerate(rules) if rule.detector)
        self._carry = frozenset(idx for idx, rule in enumerate(rules)
                                if rule.action >= Action.HOLD or rule.signal)
        """Rules a conversation's joined text is read for (``reaching``): those that hold
        or block, or count as a grooming signal."""

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"RuleSet(version={self.version!r}, rules={len(self.rules)})"

    def _start(self, pid: int, view: str, end: int, words: list[int] | None = None,
               memo: dict[tuple[int, str], int] | None = None) -> int:
        """Where the leftmost match of pattern ``pid`` that ends at ``end`` begins.

        ``match(view, pos, end)`` sees the text before ``pos``, so ``\\b`` holds as in
        hyperscan. Runs only for a message that matched: cheap where it matters.
        ``words``: where the words of ``view`` start (``_WORD_START``), for a pattern
        whose matches begin a word (``_Pattern.word_start``). ``memo``: answers already
        found in this message, by pattern and the ``_MEMO_CHARS`` characters before
        ``end`` (see below).
        """
        py = self._py.get(pid)
        if py is None:
            py = self._py[pid] = re.compile(self._patterns[pid].source, re.IGNORECASE)
        # No further back than the widest match: bounded work per match (F-15).
        low = max(0, end - self._patterns[pid].width)
        if words is not None:
            # Only a word start can begin such a match, and the one nearest the end that
            # does is the answer the loop below gives too (the character before a word
            # start is not part of a word, so the loop stops there): one ``re`` call per
            # word tried, instead of one per character.
            # The answer depends only on the text from the character before it to
            # ``end`` (which positions start a word, and what ``re`` sees from each), so
            # a start found within the last ``_MEMO_CHARS`` characters is the answer
            # wherever the same characters end a match of the same pattern: a line that
            # repeats one masked word looks for it once, not hundreds of times (F-15).
            key = (pid, view[max(0, end - _MEMO_CHARS):end])
            if memo is not None and (back := memo.get(key)) is not None:
                return end - back
            lead = self._patterns[pid].lead
            at = bisect.bisect_left(words, end) - 1
            while at >= 0 and words[at] >= low:
                first = view[words[at]]
                # Under IGNORECASE an ASCII character matches an ASCII letter only as
                # its other case ("f u c k": three of every four word starts skipped).
                if not lead or not first.isascii() or first.lower() == lead:
                    m = py.match(view, words[at], end)
                    if m is not None and m.end() == end:
                        if memo is not None and end - words[at] < _MEMO_CHARS:
                            memo[key] = end - words[at]
                        return words[at]
                at -= 1
            return max(0, end - 1)
        best: int | None = None
        for start in range(end - 1, low - 1, -1):
            m = py.match(view, start, end)
            if m is not None and m.end() == end:
                best = start
            elif best is not None and not view[start].isalnum():
                break  # past the word the match began in
        return best if best is not None else max(0, end - 1)

    def _scan(self, norm: Normalized, reach: int | None = None, matched: set[int] | None = None
              ) -> tuple[dict[int, list[tuple[int, int, bool]]], set[int],
                         set[tuple[int, int, int]]]:
        """Return rule index → [(start, end, evasive)] in ``folded`` coordinates, the
        rules an ``unless`` suppressed, and (rule, start, end) of every span a word,
        phrase or combine matched as ordinary spelling (a regex or a detector says
        nothing about that: only whether its own match was disguised).

        ``reach`` (``reaching``): only rules in ``_carry``, and only their matches that
        end past this offset of the original text; each rule that matched at all is
        added to ``matched`` (what a full scan would have reported it for). A match that
        ends before is not placed (``_start``, the costly step), as nothing it finds
        can reach the new message."""
        folded_b = norm.folded.encode()
        data = folded_b + b"\n" + norm.words.encode()
        boundary = len(folded_b)
        raw: list[tuple[int, int, int]] = []

        def on_match(pid: int, start: int, end: int, _flags: int, _ctx: object) -> None:
            raw.append((pid, start, end))

        if self._db is not None:
            self._db.scan(data, match_event_handler=on_match)  # type: ignore[attr-defined]
        hits: dict[int, list[tuple[int, int, bool]]] = {}
        suppressed: set[int] = set()
        for idx, name, allowed in self._detectors:
            if reach is not None and idx not in self._carry:
                continue
            found = DETECTORS[name](norm, allowed)
            if found:
                hits.setdefault(idx, []).extend(found)
                if matched is not None:
                    matched.add(idx)
        plain_spans: set[tuple[int, int, int]] = set()
        if not raw:
            return hits, suppressed, plain_spans
        ascii_text = boundary == len(norm.folded)
        # Where words start in each view, found once per message for every match of a
        # word or phrase (``_start``); None until a match needs it.
        word_starts: dict[bool, list[int]] = {}
        char_ends: dict[bool, list[int]] = {}
        """Per view (not ASCII only), the byte offset where each character ends."""
        # The views are often the same text (letters and spaces only): then a word or
        # phrase matches the words view exactly where it matched the folded one, with the
        # same span and the same evasion, so that second half of the hits is skipped (a
        # regex is still read in both: a hit in the words view counts as evasive).
        same = norm.words == norm.folded
        # Where each word or phrase matched in the folded view, by (pattern, end): a match
        # of the words view ending there repeats it when the two views agree over the
        # match and the character before it (the same ``_start``, span and evasion),
        # as each spaced-out word beside an emoji does ("f u c k 😂", F-15).
        starts: dict[tuple[int, int], int] = {}
        memo: dict[tuple[int, str], int] = {}
        misses = {False: 0, True: 0}
        index = norm.index
        for pid, _, end in raw:
            pat = self._patterns[pid]
            if end == boundary + 1:
                continue  # ends on the separator between the two views
            if pat.unless:
                suppressed.add(pat.rule)
                continue
            if reach is not None and pat.rule not in self._carry:
                continue
            in_words = end > boundary
            if in_words and same and pat.plain != "":
                continue
            if in_words:
                end = end - boundary - 1
                view = norm.words
            else:
                view = norm.folded
            if not ascii_text:
                # hyperscan reports byte offsets; the views are indexed by character:
                # the characters that end at or before the byte offset.
                offsets = char_ends.get(in_words)
                if offsets is None:
                    offsets = char_ends[in_words] = _char_ends(view)
                end = bisect.bisect_right(offsets, end) - 1
            if reach is not None and matched is not None:
                matched.add(pat.rule)
                if (end if index is None or end == 0 else index[end - 1] + 1) <= reach:
                    continue
            if pat.plain != "" and in_words:
                seen = starts.get((pid, end))
                if seen is not None:
                    before = max(0, seen - 1)
                    if norm.words[before:end] == norm.folded[before:end]:
                        continue
            words = None
            if pat.word_start:
                words = word_starts.get(in_words)
                if words is None and (pid, view[max(0, end - _MEMO_CHARS):end]) not in memo:
                    if misses[in_words] < _LOCAL_MISSES:
                        # The word starts of the few characters a match can span: a line
                        # that repeats one word needs them only for its first match.
                        misses[in_words] += 1
                        low = max(0, end - pat.width)
                        words = list(map(_MATCH_START, _WORD_START.finditer(view, low, end)))
                    else:
                        words = word_starts[in_words] = list(
                            map(_MATCH_START, _WORD_START.finditer(view)))
                words = words or []
            start = self._start(pid, view, end, words, memo)
            if pat.plain != "" and not in_words:
                starts[(pid, end)] = start
            plain = _ordinary(norm.folded[start:end])
            if pat.plain is None or (pat.plain == "" and in_words):
                # combine, or a regex that only the words view sees: symbols or digits
                # standing in for letters, a symbol inside a word, or letters spaced out
                # one by one (an apostrophe read as a space is ordinary: "what's ur")
                evasive = any(f != w != " " for f, w in
                              zip(norm.folded[start:end], norm.words[start:end], strict=True)) \
                    or _SPLIT_WORD.search(plain) is not None
            else:
                # A regex in the folded view is as written.
                evasive = False if not pat.plain else plain != pat.plain
            hits.setdefault(pat.rule, []).append((start, end, evasive))
            if not evasive and pat.plain != "":
                plain_spans.add((pat.rule, start, end))
        return hits, suppressed, plain_spans

    def matching_rules(self, text: str) -> set[str]:
        """Ids of rules (live or shadow) whose patterns match ``text`` after ``unless``."""
        hits, suppressed, _ = self._scan(normalize(text))
        return {self.rules[i].id for i in hits if i not in suppressed}

    def check(self, text: str, role: str = "participant",
              disabled: frozenset[str] = frozenset(), norm: Normalized | None = None
              ) -> Verdict:
        """Decide what happens to ``text`` sent by ``role``.

        Args:
            text: the message as the sender typed it.
            role: the sender's role; a rule applies only to roles in its ``applies_to``.
            disabled: categories the room's profile switches off (e.g. ``profanity``).
            norm: ``normalize(text)`` when the caller already has it (the pipeline
                shares one with the learned heads' ``prepared``).
        """
        if norm is None or norm.original != text:
            norm = normalize(text)
        live, shadow = self._hits(norm, role, disabled)
        live.sort(key=_severity)
        action = live[0].rule.action if live else Action.ALLOW
        alerts = {h.rule.alert for h in live if h.rule.alert}
        # A self-censored swear word ("f*ck", "sh1t", "fuckkk") is masked anyway and is
        # politeness, not a dodge: evasion is for a disguised match of a rule that
        # holds, blocks or alerts (a slur, a handle, a method question).
        if any(h.evasive and (h.rule.action >= Action.HOLD or h.rule.alert) for h in live):
            alerts.add("evasion")
        notice = next((h.rule.notice for h in live if h.rule.notice), None)
        text_out = text
        if action == Action.MASK:
            chars = list(text)
            for h in live:
                if h.rule.action == Action.MASK:
                    for s, e in h.spans:
                        chars[s:e] = MASK_CHAR * (e - s)
            text_out = "".join(chars)
        return Verdict(
            action=action, text_out=text_out, hits=tuple(live), shadow=tuple(shadow),
            alerts=tuple(sorted(alerts)), signpost=any(h.rule.signpost for h in live),
            notice=notice, normalized=norm.folded, words=norm.words, version=self.version,
        )

    def reaching(self, text: str, reach: int, role: str = "participant",
                 disabled: frozenset[str] = frozenset()) -> tuple[Hit, ...]:
        """The live hits ``check(text, role, disabled)`` would report for rules that
        hold, block or count as a grooming signal, each with only its spans that end
        past ``reach`` (a conversation's joined text, ``reach`` where the new message
        begins: ``core/conversations.py`` keeps a hit only if a span crosses into it).
        The same scan, without placing the matches that end before (each found by
        ``re`` backwards from its end) or building a verdict; a hit's ``evasive`` is
        judged on the spans kept."""
        live, _ = self._hits(normalize(text), role, disabled, reach)
        return tuple(sorted(live, key=_severity))

    def _hits(self, norm: Normalized, role: str, disabled: frozenset[str],
              reach: int | None = None) -> tuple[list[Hit], list[Hit]]:
        """Live and shadow hits of ``norm.original`` (``check``; ``reaching``)."""
        text = norm.original
        matched: set[int] | None = set() if reach is not None else None
        found, suppressed, plain_spans = self._scan(norm, reach, matched)
        live: list[Hit] = []
        shadow: list[Hit] = []
        for idx, spans in found.items():
            rule = self.rules[idx]
            if idx in suppressed or role not in rule.applies_to or rule.category in disabled:
                continue
            if reach is not None:
                spans = [sp for sp in spans if norm.to_original(sp[0], sp[1])[1] > reach]
                if not spans:
                    continue
            orig = tuple(sorted({norm.to_original(s, e) for s, e, _ in spans}))
            # A span is not evasive when a word or phrase of the same rule matched it as
            # written: "self harm" is also "selfharm" split by a space (issue 13 § 5: no
            # noise). A regex or detector hit vouches for nothing: "jo at gmail dot
            # com" stays evasive though a regex of the rule reads it too.
            evasive = disguised_within(norm, orig) or any(
                ev and (idx, s, e) not in plain_spans for s, e, ev in spans)
            (shadow if rule.shadow else live).append(Hit(rule, orig[0], orig, evasive))
        seen = {h.rule.id for h in live} | {h.rule.id for h in shadow}
        if matched is not None:  # rules a full scan reports, whatever their spans' ends
            seen |= {self.rules[idx].id for idx in matched if idx not in suppressed
                     and role in self.rules[idx].applies_to
                     and self.rules[idx].category not in disabled}
        for view in hidden_views(norm.folded, text):
            # Written backwards or in base64: what a holding or blocking rule finds there
            # is reported over the whole message, as evasion (masking a span of a
            # decoded view would mask nothing the reader sees).
            found_v, suppressed_v, _ = self._scan(normalize(view))
            for idx in found_v:
                rule = self.rules[idx]
                if idx in suppressed_v or rule.id in seen or rule.action < Action.HOLD \
                        or role not in rule.applies_to or rule.category in disabled:
                    continue
                seen.add(rule.id)
                whole = (0, len(text))
                (shadow if rule.shadow else live).append(Hit(rule, whole, (whole,), True))
        # "<id>-reported" matches what <id> matches: beside <id>'s own hit (no report
        # marker, so <id> did not stand aside) it would only tell staff of a report that
        # is not there.
        if any(h.rule.reports for h in live):
            standing = {h.rule.id for h in live}
            live = [h for h in live if h.rule.reports not in standing]
        return live, shadow


def _cache_dir() -> Path:
    """Where compiled matchers are kept between processes (``CHATSERVER_RULES_CACHE``,
    else the user's cache directory)."""
    if where := os.environ.get("CHATSERVER_RULES_CACHE"):
        return Path(where)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "chatserver"


def _hs_compile(expressions: list[bytes], flags: list[int]) -> object:
    """A compiled matcher: hyperscan's compile takes seconds for the shipped rules, so
    the serialized database is kept on disk by a hash of exactly what was compiled (and
    the hyperscan version), and a restart loads it in milliseconds. Any problem reading
    or writing the cache only means compiling; ``load_rules`` still proves every example
    on what it got."""
    key = hashlib.sha256(repr((metadata.version("hyperscan"), expressions, flags)).encode())
    path = _cache_dir() / f"hs-{key.hexdigest()[:32]}.db"
    with contextlib.suppress(OSError, hyperscan.error):
        loaded = hyperscan.loadb(path.read_bytes(), hyperscan.HS_MODE_BLOCK)
        loaded.scratch = hyperscan.Scratch(loaded)  # compile makes one; loadb does not
        return loaded
    db = hyperscan.Database()
    db.compile(expressions=expressions, ids=list(range(len(expressions))),
               elements=len(expressions), flags=flags)
    with contextlib.suppress(OSError, hyperscan.error):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(hyperscan.dumpb(db))
        tmp.replace(path)  # atomic: a concurrent reader sees all of it or nothing
    return db


def compile_rules(rules: list[Rule], version: str, allowed: frozenset[str] = HELPLINES
                  ) -> tuple[RuleSet, list[RuleProblem]]:
    """Compile rules into one database; problems name each pattern hyperscan refuses.

    Args:
        rules: parsed rules.
        version: the rule-set version (``rules_version``).
        allowed: phone numbers (digits) no detector reports: ``HELPLINES`` plus
            the config's ``[[resources]]`` (``resource_numbers``).
    """
    patterns: list[_Pattern] = []
    expressions: list[bytes] = []
    problems: list[RuleProblem] = []
    for idx, rule in enumerate(rules):
        every = rule.action == Action.MASK
        for text in (*rule.words, *rule.phrases):
            pat = letters_pattern(text)
            if pat is None:
                problems.append(RuleProblem(rule.file, rule.id, f"{text!r} has no letters"))
                continue
            expressions.append(pat.encode())
            lead = words_view(normalize(text).folded).lstrip()[:1]
            patterns.append(_Pattern(idx, False, _ordinary(normalize(text).folded), pat, every,
                                     word_start=True, lead=lead if lead.isascii() else ""))
        for regex in rule.regex:
            expressions.append(regex.encode())
            patterns.append(_Pattern(idx, False, "", regex, every))
        if rule.combine:
            combined = combine_pattern(rule.combine)
            if combined is not None:
                expressions.append(combined.encode())
                patterns.append(_Pattern(idx, False, None, combined, every))
        for text in rule.unless:
            pat = letters_pattern(text)
            if pat is not None:
                expressions.append(pat.encode())
                patterns.append(_Pattern(idx, True, "", pat, False))
    ruleset = RuleSet(tuple(rules), version, patterns, allowed)
    if problems or not expressions:
        return ruleset, problems
    try:
        ruleset._db = _hs_compile(expressions, [p.flags for p in patterns])
    except hyperscan.error:
        # Find every culprit, not just the first: compile each pattern alone.
        for refused, expr in zip(patterns, expressions, strict=True):
            try:
                _hs_compile([expr], [refused.flags])
            except hyperscan.error as e:
                rule = rules[refused.rule]
                problems.append(RuleProblem(rule.file, rule.id,
                                            f"pattern {expr.decode()!r} refused: {e}"))
    return ruleset, problems


def _example_problems(ruleset: RuleSet) -> list[RuleProblem]:
    problems = []
    for rule in ruleset.rules:
        for example in rule.examples_match:
            if rule.id not in ruleset.matching_rules(example):
                problems.append(RuleProblem(rule.file, rule.id,
                                            f"example should match but does not: {example!r}"))
        for example in rule.examples_no_match:
            if rule.id in ruleset.matching_rules(example):
                problems.append(RuleProblem(rule.file, rule.id,
                                            f"example should not match but does: {example!r}"))
    return problems


_CACHE: dict[str, RuleSet] = {}


_DETECTORS_HASH: Final = hashlib.sha256(Path(contact.__file__).read_bytes()).digest()
"""The detectors are part of what decided: a change to them is a new rule-set version."""


def rules_version(files: Mapping[str, str], allowed: Iterable[str] = ()) -> str:
    """A content hash of the rule files (and the detectors, and any extra allowed
    numbers): the version written into every audit entry."""
    h = hashlib.sha256(_DETECTORS_HASH)
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    for number in sorted(allowed):
        h.update(b"allow\0" + number.encode() + b"\0")
    return h.hexdigest()[:12]


def resource_numbers(resources: Iterable[object]) -> frozenset[str]:
    """Phone and text numbers of the config's ``[[resources]]`` (``phone``/``text``
    attributes), as digits: pass them to ``load_rules(allowed=...)``."""
    texts = [str(v) for r in resources for v in (getattr(r, "phone", None),
                                                 getattr(r, "text", None)) if v]
    return helpline_digits(texts)


def load_rules(files: Mapping[str, str], allowed: Iterable[str] = ()) -> RuleSet:
    """Parse, compile and prove (every example) a set of rule files.

    Compiling is the slow part (seconds for thousands of patterns), so a version is
    compiled once per process and shared.

    Args:
        files: rule file name → TOML text.
        allowed: extra helpline numbers (digits) that no detector reports, beside
            ``contact.HELPLINES``: ``resource_numbers(config.resources)``.

    Raises:
        RuleLoadError: with every problem found; the caller keeps its running set.
    """
    extra = frozenset(allowed) - HELPLINES
    version = rules_version(files, extra)
    cached = _CACHE.get(version)
    if cached is not None:
        return cached
    rules, problems = parse_rule_files(files)
    ruleset, compile_problems = compile_rules(rules, version, HELPLINES | extra)
    problems += compile_problems
    if not problems:
        if not rules:
            problems.append(RuleProblem("-", "-", "no rules found"))
        else:
            problems += _example_problems(ruleset)
    if problems:
        raise RuleLoadError(problems)
    _CACHE[version] = ruleset
    return ruleset
