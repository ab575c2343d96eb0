"""The running moderator, shared by every part of the core: a message, a report's
reason, a case note and an outcome are all read by the same rules (issue 13 § 4)."""

from __future__ import annotations

import re
from typing import Final

from chatserver.core.roles import Role
from chatserver.core.room import Room
from chatserver.moderation.engine import MASK_CHAR, RuleSet, Verdict
from chatserver.moderation.pipeline import Moderator
from chatserver.moderation.rules import Action
from chatserver.settings import ModerationConfig

__all__ = ["Screening"]

_NEXT_WORD: Final = re.compile(r"\s*\S+")


class Screening:
    """Both moderation stages (rules, then the learned heads): swapped whole."""

    def __init__(self, moderator: Moderator, config: ModerationConfig) -> None:
        self.moderator = moderator
        self.config = config

    @property
    def rules(self) -> RuleSet:
        """The running rule set (its version goes into every audit entry)."""
        return self.moderator.ruleset

    def set_rules(self, rules: RuleSet) -> None:
        """Swap the rule set atomically (hot reload); the learned heads stay."""
        self.moderator = self.moderator.with_rules(rules)

    def disabled(self, room: Room) -> frozenset[str]:
        """The categories the room's profile switches off."""
        return self.config.profiles.get(room.profile, frozenset())

    def message(self, text: str, role: Role, room: Room) -> tuple[Verdict, bool]:
        """A message's own verdict, and whether moderation failed (then it is held:
        fail closed)."""
        try:
            return self.moderator.check(text, role.value, self.disabled(room),
                                        room.profile), False
        except Exception:
            return Verdict(Action.HOLD, text, (), (), (), False, None, "", "", "error"), True

    def free_text(self, text: str) -> tuple[str, list[str], bool]:
        """Issue 13 § 4: a reason or note that reaches another person (staff, the audit
        log, a counsellor's case) is read by the same rules as a participant's message.
        What a rule masks or blocks (contact details, method detail, abuse) is masked;
        what it holds (risk, grooming) stays readable, for staff must understand it.
        Nothing is refused: a report or an escalation always goes through.

        Returns:
            The text to store and show, the ids of the rules that masked it, and whether
            it discloses risk (the writer is shown crisis support).
        """
        if not text:
            return text, [], False
        try:
            v = self.rules.check(text, Role.PARTICIPANT.value)
        except Exception:  # fail closed: nothing unread travels
            return MASK_CHAR * len(text), ["error"], False
        acting = [h for h in v.hits if h.rule.action in (Action.MASK, Action.BLOCK)]
        chars = list(text)
        for h in acting:
            for start, end in h.spans:
                if h.rule.action == Action.BLOCK:
                    # A blocked detail may follow what named it ("add me on snap" +
                    # the handle): the next word goes too.
                    m = _NEXT_WORD.match(text, end)
                    end = m.end() if m else end
                chars[start:end] = MASK_CHAR * (end - start)
        return "".join(chars), sorted({h.rule.id for h in acting}), v.signpost
