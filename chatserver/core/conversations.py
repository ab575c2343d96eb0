"""Issue 13 § 2, a participant's message in its conversation: the sender's recent
messages and this one checked as one text by the rules (a detail split over several
messages is held or blocked as its rule says, and the fragments it covers are
redacted for everyone), and their grooming signals added up over a longer window.

``Conversations`` is the only owner of each sender's recent messages and signals
(``moderation.context.Conversation``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

from chatserver.core.alerting import EXCERPT_CHARS, HIDDEN_CATEGORIES, Alerting
from chatserver.core.audit import AuditAction
from chatserver.core.effects import (
    AuditEntry,
    Effect,
    Persist,
    Publish,
    RedactRecord,
    StoreOp,
)
from chatserver.core.events import Person, Redacted, RuleRef
from chatserver.core.ids import HeldId, MessageId, ParticipantId, RoomId
from chatserver.core.notices import Notices
from chatserver.core.roles import Role
from chatserver.core.room import Room
from chatserver.core.screening import Screening
from chatserver.core.tokens import SplitRedacted
from chatserver.moderation.context import MODEL_SIGNAL, Conversation, Fragment, Grooming
from chatserver.moderation.engine import Hit, Verdict
from chatserver.moderation.rules import Action, Rule
from chatserver.settings import ModerationConfig

__all__ = ["Conversations", "InContext"]

_GROOMING_RULE: Final = Rule(
    id="context.grooming", category="grooming", action=Action.HOLD, file="context",
    alert="grooming")
"""Issue 13 § 2: grooming signals that add up over a conversation hold the line."""


@dataclass(frozen=True, slots=True)
class InContext:
    """What a message's conversation adds to its own verdict (``Conversations.read``)."""

    split: tuple[Hit, ...] = ()
    """Rule hits of the joined window that reach into this message (held or blocked)."""
    fragments: tuple[Fragment, ...] = ()
    """Earlier fragments those hits cover: redacted for everyone."""
    joined: str = ""
    grooming: Grooming | None = None

    def detail(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.split:
            out["split"] = {"rules": [h.rule.id for h in self.split],
                            "fragments": [f.msg_id for f in self.fragments]}
        g = self.grooming
        if g is not None and (g.reached or g.after):
            out["grooming"] = {"signals": list(g.signals), "after_alert": g.after}
        return {"context": out} if out else {}


class Conversations:
    """Every participant's recent messages, read together with each new one."""

    def __init__(self, config: ModerationConfig, screening: Screening, notices: Notices,
                 alerting: Alerting) -> None:
        self.config = config
        self.screening = screening
        self.notices = notices
        self.alerting = alerting
        self.context = Conversation(config.window_messages, config.window_s * 1000,
                                    config.grooming_window_s * 1000, config.grooming_signals,
                                    config.context_senders)

    def read(self, room: Room, pid: ParticipantId, text: str, verdict: Verdict,
             now_ms: int) -> tuple[Verdict, InContext]:
        """The message's verdict in its conversation, and what the conversation added."""
        joined = self.context.joined(room.id, pid, text, now_ms)
        split: list[Hit] = []
        fragments: list[Fragment] = []
        carried = {h.rule.signal for h in (*verdict.hits, *verdict.cleared) if h.rule.signal}
        if joined is not None:
            try:
                # Only what can reach this message: the rules that hold, block or are a
                # signal, and their matches that end inside it (RuleSet.reaching).
                reaching = self.screening.rules.reaching(
                    joined.text, joined.current, Role.PARTICIPANT.value,
                    self.screening.disabled(room))
            except Exception:  # the message's own verdict (same rules) already stands
                reaching = ()
            supportive = bool(verdict.cleared)  # the model read this line as support
            for hit in reaching:
                covered = joined.crossing(hit.spans)
                if not covered:
                    continue
                if hit.rule.signal:
                    carried.add(hit.rule.signal)
                if hit.rule.action >= Action.HOLD and \
                        not (supportive and hit.rule.model_may_clear):
                    split.append(Hit(hit.rule, (0, len(text)), ((0, len(text)),),
                                     hit.evasive))
                    fragments += [f for f in covered if f not in fragments]
        if verdict.scores.get("grooming", 0.0) >= self.config.grooming_score:
            carried.add(MODEL_SIGNAL)
        grooming = self.context.grooming(pid, carried, now_ms)
        extra = list(split)
        if grooming.reached or grooming.after:
            extra.append(Hit(_GROOMING_RULE, (0, len(text)), ((0, len(text)),), False))
        if not extra:
            return verdict, InContext(grooming=grooming)
        acting = max(h.rule.action for h in extra)
        if acting > verdict.action:
            notice = next((h.rule.notice for h in extra if h.rule.notice), None) \
                or (self.notices.text("held") if acting == Action.HOLD else None)
            verdict = dataclasses.replace(verdict, action=acting, text_out=text,
                                          notice=notice, stage="context")
        verdict = dataclasses.replace(
            verdict, hits=verdict.hits + tuple(extra),
            signpost=verdict.signpost or any(h.rule.signpost for h in split))
        return verdict, InContext(tuple(split), tuple(fragments),
                                  joined.text if joined is not None else "", grooming)

    def effects(self, room: Room, sender: Person, ctx: InContext, now_ms: int,
                held: HeldId | None, msg_id: MessageId) -> list[Effect]:
        """Alerts for what the conversation showed, and redaction of a split detail's
        fragments for everyone (as the staff ``redact`` command does, audited
        ``message.redacted_split``)."""
        effects: list[Effect] = []
        if ctx.split:
            hidden = {h.rule.category for h in ctx.split} & HIDDEN_CATEGORIES
            n = len(ctx.fragments) + 1
            excerpt = f"(split over {n} messages; not shown: {', '.join(sorted(hidden))} " \
                "detail)" if hidden else f"(split over {n} messages) " + \
                ctx.joined[:EXCERPT_CHARS] + ("…" if len(ctx.joined) > EXCERPT_CHARS else "")
            rules = tuple(RuleRef(h.rule.id, h.rule.category) for h in ctx.split)
            kinds = sorted({h.rule.alert or h.rule.category for h in ctx.split})
            for kind in kinds:
                effects += self.alerting.raise_alert(room, kind, sender, excerpt, rules,
                                                     now_ms, held=held, message=msg_id)
            because = [h.rule.id for h in ctx.split]
            effects += self._redact_split(
                room, sender.id, self.context.to_redact(ctx.fragments, now_ms, because),
                because, now_ms)
        g = ctx.grooming
        if g is not None and (g.reached or g.after):
            window = self.config.grooming_window_s // 60
            excerpt = (f"Grooming signals together within {window} min: "
                       f"{', '.join(g.signals)}." if g.reached else
                       "Held: the line after a grooming alert.")
            effects += self.alerting.raise_alert(
                room, "grooming", sender, excerpt,
                (RuleRef(_GROOMING_RULE.id, _GROOMING_RULE.category),), now_ms, held=held,
                message=msg_id)
        return effects

    def _redact_split(self, room: Room, pid: ParticipantId, seqs: tuple[int, ...],
                      rules: list[str], now_ms: int) -> list[Effect]:
        if not seqs:
            return []
        gone = set(seqs)
        for msg in [m for m in room.recent if m.seq in gone]:
            room.recent.remove(msg)
        ops: list[StoreOp] = [RedactRecord(room.id, seq) for seq in seqs]
        ops.append(AuditEntry(now_ms, room.id, "system", AuditAction.MESSAGE_REDACTED_SPLIT, pid,
                              {"seqs": list(seqs), "rules": rules},
                              self.screening.rules.version))
        return [Persist(tuple(ops), then=SplitRedacted(room.id, pid, seqs)),
                *(Publish(room.id, Redacted(room.id, seq)) for seq in seqs)]

    def add(self, room: RoomId, pid: ParticipantId, msg_id: MessageId, text: str,
            now_ms: int) -> None:
        """A participant's message on its way to the room: part of their window now."""
        self.context.add(room, pid, msg_id, text, now_ms)

    def delivered(self, room: Room | None, pid: ParticipantId, msg_id: MessageId,
                  seq: int | None) -> list[Effect]:
        """A message got its seq (None: its delivery failed). A fragment of a split
        detail caught before its seq was known is redacted now."""
        late = self.context.delivered(pid, msg_id, seq)
        if late is not None and late.seq is not None and late.redact is not None and \
                room is not None:
            return self._redact_split(room, pid, (late.seq,), list(late.because),
                                      late.redact)
        return []

    def redacted(self, token: SplitRedacted) -> None:
        """The redactions of a split detail are written."""
        self.context.redacted(token.sender, token.seqs)

    def forget(self, pid: ParticipantId) -> None:
        """Nothing of a sender who left or was removed is kept."""
        self.context.forget(pid)

    def prune(self, now_ms: int) -> None:
        self.context.prune(now_ms)
