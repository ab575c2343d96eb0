"""The complaints route (issue 15 § 4): what the "Tell us" page sends, and what ops read.

A young person who thinks we got something wrong (a message not sent, a facilitator's
decision, anything) writes to us here. The text is read by the same moderator as a
chat message before it is kept: contact details are masked, what a rule blocks is
refused with the rule's kind words, a risk disclosure is kept readable (ops must
understand it) and the writer is shown crisis support at once. Each piece of feedback
is one ``feedback`` audit entry (chained like every other), read by ops with
``GET /api/feedback`` or ``GET /api/audit?action=feedback``. Nobody is identified: no
token is needed and none is recorded, and the address only counts against the budget.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Final

from aiohttp import web

from chatserver.core.audit import AuditAction
from chatserver.core.effects import AuditEntry
from chatserver.core.errors import ChatError, ErrorCode
from chatserver.core.session import Identity
from chatserver.core.wire import decode_object
from chatserver.moderation.engine import MASK_CHAR, Hit
from chatserver.moderation.rules import Action
from chatserver.observability import log
from chatserver.ports import BrokerError
from chatserver.transport.keys import APP_KEY
from chatserver.transport.throttle import THROTTLE_KEY, client_address

__all__ = ["ACTION", "list_feedback", "mask", "post_feedback"]

ACTION: Final = AuditAction.FEEDBACK
"""The audit action a piece of feedback is kept under (``GET /api/audit?action=``)."""
PII: Final = frozenset({"contact"})
"""Categories whose blocks are masked in feedback rather than refused: telling us "they
wouldn't let me share my number 07..." is feedback, the number is not kept."""
_NEXT_WORD: Final = re.compile(r"\s*\S+")
ANONYMOUS: Final = "anonymous"
"""The actor of a feedback entry: the writer is not identified."""


def mask(text: str, hits: Sequence[Hit]) -> tuple[str, list[str]]:
    """Contact details (which a message's rules block) and what a rule masks, replaced
    by ``*``: a blocked detail may follow the word that named it ("add me on snap" and
    the handle), so the next word goes too, as in a report's reason (issue 13 § 4).

    Returns:
        The text to keep, and the ids of the rules that masked it.
    """
    chars = list(text)
    used = set()
    for h in hits:
        if not (h.rule.action == Action.MASK or
                (h.rule.action == Action.BLOCK and h.rule.category in PII)):
            continue
        used.add(h.rule.id)
        for start, end in h.spans:
            if h.rule.action == Action.BLOCK:
                m = _NEXT_WORD.match(text, end)
                end = m.end() if m else end
            chars[start:end] = MASK_CHAR * (end - start)
    return "".join(chars), sorted(used)


async def _read(request: web.Request, max_bytes: int) -> dict[str, object]:
    """The body, at most ``max_bytes`` (a frame's bound: 2,000 escaped emoji fit).
    A declared length over it is refused before anything is read."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ChatError(ErrorCode.TOO_LARGE, "That's too long for us to take in one go.")
    raw = await request.read()  # aiohttp stops a body without a length at 64 KiB
    if len(raw) > max_bytes:
        raise ChatError(ErrorCode.TOO_LARGE, "That's too long for us to take in one go.")
    return decode_object(raw or b"{}", request.app[APP_KEY].config.limits.max_json_depth)


async def post_feedback(request: web.Request) -> web.Response:
    server = request.app[APP_KEY]
    limits = server.config.limits
    now = server.now()
    try:  # counted before the work it guards (issue 14), on every node together
        allowed = await request.app[THROTTLE_KEY].take("feedback", client_address(request),
                                                       now)
    except BrokerError:
        # Unlike a join, feedback is stored: without the shared count nobody could stop a
        # flood, so it waits for Redis (the page says to try again soon).
        log.warning("feedback_budget_unavailable")
        raise ChatError(ErrorCode.INTERNAL, "We can't take messages just now. Please try "
                                            "again in a few minutes.") from None
    if not allowed:
        raise ChatError(ErrorCode.RATE_LIMITED, "Thank you, we've had a few messages from "
                                                "here just now. Please try again in a few "
                                                "minutes.")
    body = await _read(request, limits.max_frame_bytes)
    text = body.get("text")
    if not isinstance(text, str):
        raise ChatError(ErrorCode.BAD_REQUEST, "Field 'text' must be a string.")
    text = unicodedata.normalize("NFC", text).strip()
    if not text:
        raise ChatError(ErrorCode.BAD_REQUEST, "Please write something first.")
    if len(text) > limits.max_text_chars:
        raise ChatError(ErrorCode.TOO_LARGE, f"Please keep it under {limits.max_text_chars} "
                                             "characters.")
    verdict = await server.moderate(text)
    if verdict.stage == "error":  # the moderator failed: nothing unread is kept
        raise ChatError(ErrorCode.INTERNAL, "We can't take messages just now. Please try "
                                            "again in a few minutes.")
    refusing = [h for h in verdict.hits if h.rule.action == Action.BLOCK
                and h.rule.category not in PII]
    signpost = verdict.signpost
    wire_resources = [r.to_wire() for r in server.config.resources] if signpost else []
    if refusing:
        # Method detail, abuse: refused with the rule's kind words, as a blocked message
        # is, and kept (retention-limited) for safeguarding, never shown.
        await server.store.apply([AuditEntry(
            now, None, ANONYMOUS, AuditAction.FEEDBACK_BLOCKED, None,
            {"rules": sorted({h.rule.id for h in refusing}), "signpost": signpost},
            verdict.version, text)])
        notice = next((h.rule.notice for h in refusing if h.rule.notice), None) \
            or server.config.notices.get("blocked", "")
        return web.json_response(
            {"error": {"code": ErrorCode.BAD_REQUEST.value, "message": notice},
             "signpost": signpost, **({"resources": wire_resources} if signpost else {})},
            status=400)
    kept, masked = mask(text, verdict.hits)
    fid = server.core.ids.new("fb")
    detail: dict[str, object] = {"id": fid, "text": kept}
    if masked:
        detail["masked"] = masked
    flagged = [h for h in verdict.hits if h.rule.action == Action.HOLD]
    if flagged:
        # What would hold a message (risk, grooming) stays readable for ops, flagged.
        detail["flagged"] = sorted({h.rule.id for h in flagged})
        detail["categories"] = sorted({h.rule.category for h in flagged})
    if signpost:
        detail["signpost"] = True
    # The unmasked original only in the retention-limited text (SG-09), as for reports.
    await server.store.apply([AuditEntry(now, None, ANONYMOUS, ACTION, None, detail,
                                         verdict.version, text if masked else None)])
    out: dict[str, object] = {"id": fid, "text": kept,
                              "notice": server.config.notices.get("feedback_received", ""),
                              "signpost": signpost}
    if signpost:
        out["resources"] = wire_resources
        out["signpost_notice"] = server.config.notices.get("signpost", "")
    return web.json_response(out, status=201)


async def list_feedback(request: web.Request, reader: Identity, since: int,
                        limit: int) -> web.Response:
    """What the "Tell us" page received, oldest first; reading it is audited (SG-18)."""
    server = request.app[APP_KEY]
    rows = await server.store.audit(None, since, limit, action=ACTION)
    await server.store.apply([AuditEntry(server.now(), None, reader.id, AuditAction.FEEDBACK_READ,
                                         None,
                                         {"since": since, "limit": limit})])
    return web.json_response({"feedback": [
        {"id": r.detail.get("id"), "ts": r.ts, "text": r.detail.get("text"),
         **{k: r.detail[k] for k in ("masked", "flagged", "categories", "signpost")
            if k in r.detail}}
        for r in rows]})
