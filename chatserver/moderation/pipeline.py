"""Both stages, one verdict: rules first, then the learned heads.

How they combine, in the order a reader of an audit entry needs:

1. **Rules decide first** (instant, editable by ops). What a rule blocks stays blocked.
2. **The model may clear a hold** that every acting rule allows it to clear
   (``model_may_clear = true``): when the ``support`` head scores at or over its
   threshold and no acting head does, the line is delivered at once. This is how a
   helper's "please ring Samaritans if you feel suicidal" reaches the person who asked.
   Clearing never silences the safety net: the sender is still signposted and
   facilitators are still alerted, so a disclosure the model misreads is still seen.
3. **The model catches what rules missed**: when rules would allow (or only mask) a
   line, each acting head at or over its threshold adds a hit ``model.<head>``. A
   model never blocks: it *holds* for a facilitator, so a false positive costs a
   moment's review, not a lost message; risk and method also signpost the sender.
4. The heads come in two tiers (``classifier.py``): fast n-gram heads score every
   line; the USE heads (the slow part) only lines past a fast gate or that a rule acts
   on. Below every gate the line is everyday and the scores say so (no thresholds). A
   message over 600 characters is read in windows (``features.windows``), its scores
   combined (``classifier.combine``).
5. Heads in shadow (``moderation.model.mode = "shadow"`` or ``shadow_heads``) are
   scored and audited, never acted on.

Every verdict says which stage decided (``stage``), each head's score and threshold,
and the model's version beside the rules'.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Final

from chatserver.moderation.classifier import Classifier, FloatArray, NGrams, combine
from chatserver.moderation.engine import Hit, RuleSet, Verdict
from chatserver.moderation.features import windows
from chatserver.moderation.normalize import Normalized, normalize
from chatserver.moderation.rules import Action, Rule
from chatserver.settings import ModelConfig

__all__ = ["ACTING_HEADS", "Moderator", "clear_score"]

ACTING_HEADS: Final = ("method", "risk", "grooming", "contact", "abuse")
"""Heads that can hold a line, most severe first (the first notice wins)."""
SHORT_WORDS: Final = 5
"""Lines of fewer words than this are held by the model only for risk or method, and
only at ``SHORT_BAR``."""
SHORT_BAR: Final = 0.985
PREPARED: Final = 256
"""Lines prepared ahead by the shell and kept for the core's check (each used once)."""
_ALERT: Final = {"risk": "risk", "method": "risk", "grooming": "grooming",
                 "contact": "contact", "abuse": "abuse"}


@dataclasses.dataclass(slots=True)
class _Prepared:
    """What the shell's pre-pass computed for a line, so the core's check (inline, on
    the event loop) does not compute it again: the folded text (one window, or several
    for a long message), the fast heads' scores, the rules' verdict (with no category
    disabled) and, once ready, the sentence vectors (one a window)."""
    folded: tuple[str, ...]
    grams: tuple[NGrams, ...]
    fast: dict[str, float]
    rules: Verdict
    vectors: Sequence[FloatArray] | FloatArray | None = None
    """One row a window."""
    uses: int = 1
    """Checks still to come for it: the same line in flight twice (two people sending
    one copy-paste) shares one preparation, and the second check still finds it."""


def _model_rule(head: str, notice: str | None) -> Rule:
    return Rule(id=f"model.{head}", category=head, action=Action.HOLD, file="model",
                alert=_ALERT[head], signpost=head in ("risk", "method"), notice=notice)


class Moderator:
    """A rule set and (optionally) the learned heads, with the config that joins them."""

    def __init__(self, ruleset: RuleSet, classifier: Classifier | None = None,
                 config: ModelConfig | None = None) -> None:
        self.ruleset = ruleset
        self.classifier = classifier
        self.config = config or ModelConfig()
        notices = {}
        for rule in ruleset.rules:
            if rule.notice and rule.category not in notices:
                notices[rule.category] = rule.notice
        self._rules = {h: _model_rule(h, notices.get(h) or notices.get(_ALERT[h]))
                       for h in ACTING_HEADS}
        self._prepared: OrderedDict[tuple[str, str], _Prepared] = OrderedDict()
        """Lines the shell prepared ahead (``needs_vector``), by (text, role)."""

    @property
    def version(self) -> str:
        return self.ruleset.version

    @property
    def model_version(self) -> str | None:
        return self.classifier.version if self.classifier else None

    def with_rules(self, ruleset: RuleSet) -> Moderator:
        """The same heads with a reloaded rule set (hot reload swaps the whole object)."""
        return Moderator(ruleset, self.classifier, self.config)

    @property
    def waiting(self) -> int:
        """Lines the shell prepared that no ``check`` has read yet."""
        return len(self._prepared)

    def thresholds(self, profile: str = "default") -> dict[str, float]:
        """Training's thresholds, then config's, then the room profile's."""
        out = dict(self.classifier.info.thresholds) if self.classifier else {}
        out.update(self.config.thresholds)
        out.update(self.config.profile_thresholds.get(profile, {}))
        return out

    def _live(self, head: str) -> bool:
        return self.config.mode == "live" and head not in self.config.shadow_heads

    def _active(self, role: str) -> Classifier | None:
        if self.classifier is None or not self.config.enabled or role != "participant":
            return None
        return self.classifier

    def needs_vector(self, text: str, role: str = "participant") -> tuple[str, ...] | None:
        """The prepared text (its windows: one for any but a long message) if this line
        needs the slow tier (its fast scores pass a gate, or a rule acts on it), else
        None. The shell asks this before handing the line to the core, computes the
        vectors off the loop and ``remember``s them; what this pass computed is kept, so
        the core's ``check`` does not repeat it."""
        clf = self._active(role)
        if clf is None:
            return None
        key = (text, role)
        ready = self._prepared.get(key)
        if ready is not None:
            # Its twin is in flight: one entry for both (the first check used to take
            # it, and the second computed the sentence vector inline, on the loop).
            ready.uses += 1
        else:
            norm = normalize(text)  # once, for both stages
            ready = self._prepare(clf, norm, self.ruleset.check(text, role, norm=norm))
            self._prepared[key] = ready
        self._prepared.move_to_end(key)
        while len(self._prepared) > PREPARED:
            self._prepared.popitem(last=False)
        return ready.folded if clf.past_gate(ready.fast) or self._clearable(ready.rules) \
            else None

    @staticmethod
    def _prepare(clf: Classifier, norm: Normalized, rules: Verdict) -> _Prepared:
        folded = windows(norm)
        grams = tuple(clf.ngrams(w) for w in folded)
        return _Prepared(folded, grams, combine(
            [clf.fast_scores(w, g) for w, g in zip(folded, grams, strict=True)]), rules)

    def _clearable(self, v: Verdict) -> bool:
        """A hold the model may clear: only then do the full heads matter to a line
        every fast gate let go."""
        return v.action == Action.HOLD and self.config.clear and all(
            h.rule.model_may_clear for h in v.hits if h.rule.action == Action.HOLD)

    def remember(self, text: str, role: str,
                 vectors: Sequence[FloatArray] | FloatArray) -> None:
        """The sentence vectors the shell computed (off the loop) for a prepared line,
        one row a window."""
        ready = self._prepared.get((text, role))
        if ready is not None and len(vectors) == len(ready.folded):
            ready.vectors = vectors

    def _scores(self, clf: Classifier, ready: _Prepared,
                clearable: bool) -> tuple[dict[str, float], bool]:
        if not clearable and not clf.past_gate(ready.fast):
            return ready.fast, False
        vectors = ready.vectors
        if vectors is None:  # not prepared ahead (rules try, tests): computed here
            vectors = clf.embed(ready.folded)
        return combine([clf.full_scores(w, v, g) for w, v, g in zip(
            ready.folded, vectors, ready.grams, strict=True)]), True

    def check(self, text: str, role: str = "participant",
              disabled: frozenset[str] = frozenset(), profile: str = "default") -> Verdict:
        clf = self._active(role)
        ready = self._prepared.get((text, role))
        if ready is not None:
            ready.uses -= 1
            if ready.uses <= 0:
                del self._prepared[(text, role)]
        norm = None
        if ready is not None and not disabled:
            v = ready.rules
        else:
            norm = normalize(text) if ready is None and clf is not None else None
            v = self.ruleset.check(text, role, disabled, norm=norm)
        stage = "rules" if v.action > Action.ALLOW else "none"
        if clf is None:
            return dataclasses.replace(v, stage=stage)
        if ready is None:
            ready = self._prepare(clf, norm or normalize(text), v)
        scores, full = self._scores(clf, ready, self._clearable(v))
        th = self.thresholds(profile) if full else {}
        bar = dict(th)
        if len(text.split()) < SHORT_WORDS:
            # A few words carry little evidence ("after the fault", "let me in",
            # "hello 9 from 2" were held): a model-only hold of a short line needs a
            # near-certain risk or method score, and contact, abuse and grooming are
            # left to the rules, whose handles, slurs and age questions are strong on
            # short lines.
            bar.update({h: max(t, SHORT_BAR) if h in ("risk", "method") else 1.1
                        for h, t in th.items() if h in ACTING_HEADS})
        firing = [h for h in ACTING_HEADS if h not in disabled and scores[h] >= bar.get(h, 1.1)]
        live = [h for h in firing if self._live(h)]
        shadow = tuple(Hit(self._rules[h], (0, len(text)), ((0, len(text)),), False)
                       for h in firing if not self._live(h))
        v = dataclasses.replace(v, scores=scores, thresholds=th, shadow=v.shadow + shadow,
                                model_version=clf.version)
        # Clearing reads the better of support and everyday: a helper's reply and a
        # joke ("kms i forgot my pe kit 💀") are both safe talk a risk rule would hold.
        supportive = clear_score(scores) >= th.get("support", 1.1)
        if self._clearable(v) and supportive and not live and self._live("support"):
            # Released to the room at once, the safety net kept: the sender still sees
            # crisis support and facilitators are still alerted (the audit says cleared).
            return dataclasses.replace(
                v, action=Action.ALLOW, text_out=text, hits=(), notice=None, stage="model",
                cleared=v.hits)
        if v.action >= Action.HOLD or not live:
            return dataclasses.replace(v, stage=stage)
        hits = tuple(Hit(self._rules[h], (0, len(text)), ((0, len(text)),), False)
                     for h in live)
        return dataclasses.replace(
            v, action=Action.HOLD, text_out=text, hits=v.hits + hits,
            alerts=tuple(sorted(set(v.alerts) | {_ALERT[h] for h in live})),
            signpost=v.signpost or any(h.rule.signpost for h in hits),
            notice=v.notice or next((h.rule.notice for h in hits if h.rule.notice), None),
            stage="model")


def clear_score(scores: Mapping[str, float]) -> float:
    """What clearing compares with the ``support`` threshold (training chose it on the
    same score, ``training.py``): the higher of the support and everyday heads."""
    return max(scores["support"], scores.get("everyday", 0.0))


def describe(v: Verdict) -> Mapping[str, object]:
    """What an audit entry and ``rules try`` record of the second stage."""
    out: dict[str, object] = {"stage": v.stage}
    if v.model_version is not None:
        out["model"] = v.model_version
        out["scores"] = dict(v.scores)
        if v.cleared:
            out["cleared"] = [h.rule.id for h in v.cleared]
    return out
