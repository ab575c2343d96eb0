"""``rules eval``: how each stage, and the whole, does on labelled lines.

A harmful line is *caught* when it is held or blocked (masking does not stop it); a
must-allow line (``support``, ``everyday``, or the rule corpus's ``allow``) is a *false
positive* when it is held or blocked. Each stage is measured alone (rules only; the
model only, with its thresholds) and the two together as the server runs them.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field

from chatserver.moderation.engine import Verdict
from chatserver.moderation.pipeline import ACTING_HEADS, Moderator
from chatserver.moderation.rules import Action

__all__ = ["ALLOWED", "Report", "StageReport", "evaluate", "predicted"]

ALLOWED = frozenset({"allow", "support", "everyday", "profanity"})
"""Labels of lines that must reach peers (profanity is masked, not held)."""
STAGES = ("rules", "model", "whole")


def predicted(v: Verdict) -> str:
    """The category a verdict puts a line in: 'allow' when nothing holds or blocks."""
    acting = [h for h in v.hits if h.rule.action >= Action.HOLD]
    return acting[0].rule.category if acting else "allow"


@dataclass
class StageReport:
    caught: collections.Counter[str] = field(default_factory=collections.Counter)
    right: collections.Counter[str] = field(default_factory=collections.Counter)
    """Caught *as* its own category."""
    confusion: collections.Counter[tuple[str, str]] = field(
        default_factory=collections.Counter)
    false_positives: int = 0
    misses: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class Report:
    totals: collections.Counter[str]
    stages: dict[str, StageReport]

    @property
    def allow_n(self) -> int:
        return sum(n for label, n in self.totals.items() if label in ALLOWED)

    def recall(self, stage: str, category: str) -> float:
        n = self.totals[category]
        return self.stages[stage].caught[category] / n if n else 0.0

    def false_positive_rate(self, stage: str) -> float:
        return self.stages[stage].false_positives / self.allow_n if self.allow_n else 0.0

    def categories(self) -> list[str]:
        return sorted(c for c in self.totals if c not in ALLOWED)

    def as_dict(self) -> dict[str, object]:
        return {
            stage: {"categories": {c: {"n": self.totals[c],
                                       "recall": round(self.recall(stage, c), 4)}
                                   for c in self.categories()},
                    "allow_n": self.allow_n,
                    "false_positive_rate": round(self.false_positive_rate(stage), 4),
                    "confusion": {f"{a}->{b}": n for (a, b), n in
                                  sorted(self.stages[stage].confusion.items())}}
            for stage in STAGES}


def _model_only(m: Moderator, v: Verdict, profile: str) -> str:
    th = m.thresholds(profile)
    firing = [h for h in ACTING_HEADS if v.scores.get(h, 0.0) >= th.get(h, 1.1)]
    return firing[0] if firing else "allow"


def _label(label: str) -> str:
    return "risk" if label == "method" else label


def evaluate(moderator: Moderator, rows: Sequence[dict[str, str]],
             profile: str = "default") -> Report:
    totals: collections.Counter[str] = collections.Counter()
    stages = {s: StageReport() for s in STAGES}
    for row in rows:
        label, text = row["label"], row["text"]
        totals[label] += 1
        rules_v = moderator.ruleset.check(text, "participant")
        whole = moderator.check(text, "participant", profile=profile)
        preds = {"rules": predicted(rules_v), "whole": predicted(whole),
                 "model": _model_only(moderator, whole, profile)}
        for stage, pred in preds.items():
            rep = stages[stage]
            rep.confusion[(label, pred)] += 1
            if label in ALLOWED:
                if pred != "allow":
                    rep.false_positives += 1
                    rep.misses.append((label, pred, text))
            elif pred != "allow":
                rep.caught[label] += 1
                rep.right[label] += _label(pred) == _label(label)
            else:
                rep.misses.append((label, pred, text))
    return Report(totals, stages)
