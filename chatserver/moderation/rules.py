"""The rule format (CONTRIBUTING.md § Changing the moderation rules): TOML → ``Rule``.

Parsing validates everything it can without running the matcher (unknown keys,
duplicate ids, unknown actions, alerts or roles, missing examples, bad regex
syntax) and returns **every** problem with its file and rule id, never just the first.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from chatserver.moderation.contact import DETECTOR_NAMES

__all__ = [
    "ALERT_KINDS", "ROLES", "SIGNALS", "Action", "Rule", "RuleLoadError", "RuleProblem",
    "parse_rule_files",
]


class Action(IntEnum):
    """Delivery actions, least to most severe: the most severe match wins."""

    ALLOW = 0
    MASK = 1
    HOLD = 2
    BLOCK = 3

    @property
    def label(self) -> str:
        return self.name.lower()


ALERT_KINDS: Final = frozenset({"risk", "grooming", "contact", "abuse", "evasion"})
"""Alert kinds a rule may raise (docs/protocol.md `alert` kinds the filter produces)."""
ROLES: Final = frozenset({"participant", "facilitator", "counsellor", "ops"})
SIGNALS: Final = frozenset({
    "age", "location", "alone", "secrecy", "platform", "gifts", "photos", "video", "meeting",
    "flattery",
})
"""Grooming signals a rule may name (``signal = "secrecy"``): distinct ones a sender
gives within ``moderation.grooming_window_s`` add up (``moderation/context.py``)."""
_KEYS: Final = frozenset({
    "id", "category", "action", "alert", "signpost", "notice", "applies_to", "mode",
    "words", "phrases", "regex", "unless", "examples", "message", "description", "combine",
    "detector", "allow", "model_may_clear", "signal", "reported",
})
_REPORTED_KEYS: Final = frozenset({"when", "action", "alert", "notice", "model_may_clear",
                                   "examples", "like"})
MAX_COMBINATIONS: Final = 100_000
"""A sanity bound on what one ``combine`` table may mean."""
_ID: Final = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)+$")


@dataclass(frozen=True, slots=True)
class Rule:
    """One moderation rule, as written by ops."""

    id: str
    category: str
    action: Action
    file: str
    alert: str | None = None
    signpost: bool = False
    notice: str | None = None
    applies_to: frozenset[str] = frozenset({"participant"})
    shadow: bool = False
    words: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    regex: tuple[str, ...] = ()
    combine: tuple[tuple[str, ...], ...] = ()
    unless: tuple[str, ...] = ()
    examples_match: tuple[str, ...] = ()
    examples_no_match: tuple[str, ...] = ()
    detector: str | None = None
    """A library-backed detector the engine runs (``contact.py``: phone, email, ...)."""
    allow: tuple[str, ...] = ()
    """Numbers the detector never reports (helplines), beside ``contact.HELPLINES``."""
    model_may_clear: bool = False
    """The learned stage may let a line this rule would hold through, when it scores the
    line as supportive (a helper's reply that says "suicide"). Only for ``hold`` rules:
    what a rule blocks (contact details, method) stays blocked whatever a model says."""
    reports: str | None = None
    """For ``<id>-reported``: the rule it stands in for. Both match the same words; where
    that rule did not stand aside (no report marker), its own hit is the one reported."""
    signal: str | None = None
    """The grooming signal a match counts as (``SIGNALS``), whatever the rule's action:
    an ``allow`` rule may be a signal alone (issue 13: lines that pass one by one)."""


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """One thing wrong with the rules, located for the person who must fix it."""

    file: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.rule}: {self.message}"


class RuleLoadError(Exception):
    """Raised with every problem found; the caller keeps its running rules."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        super().__init__(f"{len(problems)} problem(s) in the moderation rules")
        self.problems = problems


def _strings(raw: Mapping[str, object], key: str, where: RuleProblem,
             problems: list[RuleProblem]) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(RuleProblem(where.file, where.rule, f"{key!r} must be a list of "
                                                           "non-empty strings"))
        return ()
    return tuple(value)


def _combine(raw: Mapping[str, object], where: RuleProblem,
             problems: list[RuleProblem]) -> tuple[tuple[str, ...], ...]:
    """``combine = [["you", "u"], ["are", ""], ["stupid", "an idiot"]]``: one from each
    list, in order (``""`` makes a slot optional). Compiled like phrases, so it tolerates
    spacing, stretching and leetspeak, which regex does not; one pattern per rule."""
    value = raw.get("combine")
    if value is None:
        return ()
    if not isinstance(value, list) or not value or not all(
            isinstance(part, list) and part and all(isinstance(w, str) for w in part)
            for part in value):
        problems.append(RuleProblem(where.file, where.rule,
                                    "'combine' must be a list of lists of strings"))
        return ()
    total = 1
    for part in value:
        total *= len(part)
    if total > MAX_COMBINATIONS:
        problems.append(RuleProblem(where.file, where.rule,
                                    f"'combine' makes {total} phrases (at most "
                                    f"{MAX_COMBINATIONS})"))
        return ()
    return tuple(tuple(part) for part in value)


def _reported(raw: Mapping[str, object], rule: Rule, problems: list[RuleProblem],
              siblings: Mapping[str, object]) -> list[Rule]:
    """A rule's ``[rule.reported]`` table: the same words said *about* rather than *to*
    someone ("someone told me to kys", "got called a f@g at work", "if an adult asks u
    to keep secrets, that's a red flag"). Where one of ``when`` is in the message, the
    rule stands aside (its ``unless``) and ``<id>-reported``, matching exactly what the
    rule matches, decides instead with a lighter action (mask or hold; a hold the model
    may clear). One list of words serves both, so a report can never carry a word the
    lighter rule would not see.

    ``like = "<id>"``: everything but the examples from that rule's table, in the same
    file (``siblings``: id → its table), so rules that share markers list them once."""
    table = raw.get("reported")
    if table is None:
        return [rule]
    rid = f"{rule.id}-reported"
    here = RuleProblem(rule.file, rule.id, "")
    before = len(problems)

    def bad(message: str) -> None:
        problems.append(RuleProblem(rule.file, rule.id, f"reported: {message}"))

    if not isinstance(table, dict):
        bad("must be a table with 'when', 'action' and 'examples'")
        return []
    for key in sorted(set(table) - _REPORTED_KEYS):
        bad(f"unknown key {key!r}")
    like = table.get("like")
    if like is not None:
        base = siblings.get(like) if isinstance(like, str) else None
        if not isinstance(base, dict) or "like" in base:
            bad(f"'like' must name a rule of this file with a table of its own: {like!r}")
            return []
        table = {**{k: v for k, v in base.items() if k != "examples"}, **table}
    when = _strings(table, "when", here, problems)
    if not when:
        bad("'when' must list the phrases that mark a report")
    try:
        action = Action[str(table.get("action")).upper()]
    except KeyError:
        action = Action.BLOCK
    may_clear = table.get("model_may_clear", False)
    # Lighter: a milder action, or the same hold that the model may now clear.
    clearer = action == rule.action == Action.HOLD and may_clear is True \
        and not rule.model_may_clear
    if not (Action.ALLOW < action < rule.action or clearer):
        bad("'action' must be lighter than the rule's own (or a hold the model may "
            "clear), and not allow")
    alert = table.get("alert")
    if alert is not None and alert not in ALERT_KINDS:
        bad(f"unknown alert kind {alert!r}")
    notice = table.get("notice")
    if notice is not None and not isinstance(notice, str):
        bad("'notice' must be a string")
    if not isinstance(may_clear, bool) or (may_clear and action != Action.HOLD):
        bad("'model_may_clear' is true or false, and only for a hold")
    examples = table.get("examples", [])
    if not isinstance(examples, list) or not examples or not all(
            isinstance(e, str) and e for e in examples):
        bad("'examples' must list reports it holds or masks")
        examples = []
    if len(problems) > before:
        return []
    lighter = dataclasses.replace(
        rule, id=rid, action=action, alert=alert if isinstance(alert, str) else None,
        notice=notice if isinstance(notice, str) else None, model_may_clear=may_clear is True,
        signal=None, reports=rule.id, examples_match=tuple(examples), examples_no_match=())
    # Each example is proved twice: the lighter rule decides it, the rule stands aside.
    return [dataclasses.replace(rule, unless=rule.unless + when,
                                examples_no_match=rule.examples_no_match + tuple(examples)),
            lighter]


def _parse_rule(raw: Mapping[str, object], file: str, problems: list[RuleProblem],
                siblings: Mapping[str, object]) -> list[Rule]:
    rid = raw.get("id")
    if not isinstance(rid, str) or not _ID.match(rid):
        problems.append(RuleProblem(file, str(rid), "'id' must be dotted lower-case, "
                                                    "like 'contact.phone-uk'"))
        return []
    here = RuleProblem(file, rid, "")
    before = len(problems)

    def bad(message: str) -> None:
        problems.append(RuleProblem(file, rid, message))

    for key in sorted(set(raw) - _KEYS):
        bad(f"unknown key {key!r}")
    category = raw.get("category")
    if not isinstance(category, str) or not category:
        bad("'category' is required")
        category = ""
    action_raw = raw.get("action")
    try:
        action = Action[str(action_raw).upper()]
    except KeyError:
        bad(f"unknown action {action_raw!r} (allow, mask, hold or block)")
        action = Action.HOLD
    alert = raw.get("alert")
    if alert is not None and alert not in ALERT_KINDS:
        bad(f"unknown alert kind {alert!r} ({', '.join(sorted(ALERT_KINDS))})")
    signpost = raw.get("signpost", False)
    if not isinstance(signpost, bool):
        bad("'signpost' must be true or false")
    notice = raw.get("notice")
    if notice is not None and not isinstance(notice, str):
        bad("'notice' must be a string")
    mode = raw.get("mode", "live")
    if mode not in ("live", "shadow"):
        bad("'mode' must be 'live' or 'shadow'")
    applies = _strings(raw, "applies_to", here, problems) if "applies_to" in raw \
        else ("participant",)
    for role in applies:
        if role not in ROLES:
            bad(f"unknown role {role!r} in 'applies_to'")
    words = _strings(raw, "words", here, problems)
    phrases = _strings(raw, "phrases", here, problems)
    combine = _combine(raw, here, problems)
    regex = _strings(raw, "regex", here, problems)
    unless = _strings(raw, "unless", here, problems)
    allow = _strings(raw, "allow", here, problems)
    detector = raw.get("detector")
    if detector is not None and detector not in DETECTOR_NAMES:
        bad(f"unknown detector {detector!r} ({', '.join(sorted(DETECTOR_NAMES))})")
    if allow and detector is None:
        bad("'allow' needs a 'detector'")
    may_clear = raw.get("model_may_clear", False)
    if not isinstance(may_clear, bool):
        bad("'model_may_clear' must be true or false")
    elif may_clear and action != Action.HOLD:
        bad("'model_may_clear' is only for hold rules (a block is never cleared)")
    signal = raw.get("signal")
    if signal is not None and signal not in SIGNALS:
        bad(f"unknown signal {signal!r} ({', '.join(sorted(SIGNALS))})")
    if not (words or phrases or regex or combine or detector):
        bad("a rule needs at least one of 'words', 'phrases', 'combine', 'regex' or "
            "'detector'")
    for pattern in regex:
        try:
            re.compile(pattern)
        except re.error as e:
            bad(f"bad regex {pattern!r}: {e}")
    examples = raw.get("examples", {})
    if not isinstance(examples, dict):
        bad("'examples' must be a table with 'match' and 'no_match'")
        examples = {}
    ex_match = _strings(examples, "match", here, problems)
    ex_no = _strings(examples, "no_match", here, problems)
    if not ex_match or not ex_no:
        bad("every rule needs examples.match and examples.no_match")
    if len(problems) > before:
        return []
    return _reported(raw, Rule(
        id=rid, category=category, action=action, file=file,
        alert=alert if isinstance(alert, str) else None, signpost=bool(signpost),
        notice=notice if isinstance(notice, str) else None, applies_to=frozenset(applies),
        shadow=mode == "shadow", words=words, phrases=phrases, regex=regex, combine=combine,
        unless=unless,
        examples_match=ex_match, examples_no_match=ex_no,
        detector=detector if isinstance(detector, str) else None, allow=allow,
        model_may_clear=may_clear is True,
        signal=signal if isinstance(signal, str) else None,
    ), problems, siblings)


def parse_rule_files(files: Mapping[str, str]) -> tuple[list[Rule], list[RuleProblem]]:
    """Parse rule files (name → TOML text), returning the rules and every problem.

    Args:
        files: file name → contents, e.g. ``{"contact.toml": "..."}``.

    Returns:
        The rules that parsed, and all problems; the caller must refuse the set when
        the problem list is not empty.
    """
    rules: list[Rule] = []
    problems: list[RuleProblem] = []
    seen: dict[str, str] = {}
    for file in sorted(files):
        try:
            doc = tomllib.loads(files[file])
        except tomllib.TOMLDecodeError as e:
            problems.append(RuleProblem(file, "-", f"not valid TOML: {e}"))
            continue
        for key in sorted(set(doc) - {"rule"}):
            problems.append(RuleProblem(file, "-", f"unknown top-level key {key!r}"))
        entries = doc.get("rule", [])
        if not isinstance(entries, list):
            problems.append(RuleProblem(file, "-", "rules must be [[rule]] tables"))
            continue
        # Each rule's `reported` table by id, for another's `like`.
        siblings = {raw["id"]: raw["reported"] for raw in entries if isinstance(raw, dict)
                    and isinstance(raw.get("id"), str) and "reported" in raw}
        for raw in entries:
            rid = raw.get("id") if isinstance(raw, dict) else None
            if isinstance(rid, str) and rid in seen:
                # Reported even when the rule has other problems: every problem at once.
                problems.append(RuleProblem(file, rid, f"duplicate id (also in {seen[rid]})"))
            elif isinstance(rid, str):
                seen[rid] = file
            for rule in _parse_rule(raw, file, problems, siblings):
                if rule.id != rid and rule.id in seen:  # "<id>-reported" written twice
                    problems.append(RuleProblem(file, rule.id, "duplicate id (also in "
                                                               f"{seen[rule.id]})"))
                    continue
                seen.setdefault(rule.id, file)
                if seen.get(rule.id) == file and not any(r.id == rule.id for r in rules):
                    rules.append(rule)
    return rules, problems
