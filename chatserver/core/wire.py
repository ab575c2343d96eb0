"""The edge: untrusted frames in, typed commands out; typed events in, bytes out.

All validation happens here (CONTRIBUTING.md § Style): past this module only typed objects flow.
Frames are parsed strictly (docs/protocol.md § Conventions): duplicate keys, NaN/Infinity,
a boolean where a number is expected, lone surrogates and NUL characters are all
``bad_request``. Unknown fields are ignored; a missing required field is an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Final

import orjson

from chatserver.core import commands as c
from chatserver.core.errors import ChatError, ErrorCode
from chatserver.core.events import Encoded, Event
from chatserver.core.ids import AlertId, CaseId, HeldId, MessageId, ParticipantId, RoomId

__all__ = ["MAX_ID_CHARS", "MAX_JSON_DEPTH", "SEND_ID", "decode_object", "encode", "parse",
           "parse_decimal", "parse_frame"]

MAX_ID_CHARS: Final = 64
"""Ids (rooms, messages, participants, cases) are short opaque strings."""
SEND_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A `send` id: an opaque client token (docs/protocol.md), never free text for peers."""
MAX_NOTE_CHARS: Final = 2000
"""Reasons, notes and outcomes: the same bound as message text (docs/protocol.md § Limits)."""

MAX_JSON_DEPTH: Final = 32
"""Default nesting bound of a frame or body (``limits.max_json_depth``): the deepest
frame of docs/protocol.md is 3 levels; Python's recursive decoders fail near 1,000."""
DECIMAL: Final = re.compile(r"[0-9]{1,16}")
"""A query or body integer: ASCII digits only (no sign, space, ``²`` or ``①``)."""

Obj = dict[str, object]


def _has_nul(value: object) -> bool:
    """A NUL in a string, or in a string inside arrays (objects inside are checked by
    their own pair hook call). Arrays nest at most ``max_depth``: bounded recursion."""
    if isinstance(value, str):
        return "\x00" in value
    return isinstance(value, list) and any(_has_nul(item) for item in value)


def _reject_duplicates(pairs: list[tuple[str, object]]) -> Obj:
    obj: Obj = {}
    for key, value in pairs:
        if key in obj:
            raise ChatError(ErrorCode.BAD_REQUEST, f"Duplicate key {key[:32]!r}.")
        if "\x00" in key or _has_nul(value):
            raise ChatError(ErrorCode.BAD_REQUEST, "NUL characters are not allowed.")
        obj[key] = value
    return obj


_STRICT_DECODER: Final = json.JSONDecoder(object_pairs_hook=_reject_duplicates)


def _too_deep(value: object, limit: int) -> bool:
    """Whether a decoded value nests more than ``limit`` arrays/objects (iteratively: no
    recursion to exhaust)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else \
            item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))
    return False


def decode_object(data: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Obj:
    """Decode one JSON object strictly.

    orjson rejects NaN/Infinity, invalid UTF-8, lone surrogates and nesting past its own
    1,024; it keeps the last of duplicate keys, so a second pass with the stdlib
    decoder's pair hook finds those (and NUL characters) without any hand-written
    parsing. That pass recurses, so nesting is bounded first (``max_depth``; the
    object itself is depth 1).

    Raises:
        ChatError: ``bad_request`` for anything that is not one strict JSON object.
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ChatError(ErrorCode.BAD_REQUEST, "The frame is not valid JSON.") from None
    if not isinstance(value, dict):
        raise ChatError(ErrorCode.BAD_REQUEST, "A frame must be a JSON object.")
    if _too_deep(value, max_depth):
        raise ChatError(ErrorCode.BAD_REQUEST,
                        f"JSON may nest at most {max_depth} levels deep.")
    text = data if isinstance(data, str) else data.decode()
    checked = _STRICT_DECODER.decode(text)
    assert isinstance(checked, dict)
    return checked


def parse_decimal(raw: str, key: str, *, low: int = 0, high: int = 2**53) -> int:
    """A non-negative integer from text (a query parameter, a form field): ASCII digits
    only, within ``[low, high]``. ``str.isdigit`` and ``int`` accept other scripts'
    digits, superscripts, signs, spaces and underscores; this accepts none of them.

    Raises:
        ChatError: ``bad_request`` naming ``key`` and the range.
    """
    if not DECIMAL.fullmatch(raw) or not low <= int(raw) <= high:
        raise ChatError(ErrorCode.BAD_REQUEST,
                        f"{key!r} must be a whole number from {low} to {high}, in digits 0-9.")
    return int(raw)


def _str(obj: Mapping[str, object], key: str, *, limit: int = MAX_ID_CHARS,
         required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        what = "missing" if value is None else "not a string"
        raise ChatError(ErrorCode.BAD_REQUEST, f"Field {key!r} is {what}.")
    if required and not value:
        raise ChatError(ErrorCode.BAD_REQUEST, f"Field {key!r} is empty.")
    if len(value) > limit:
        raise ChatError(ErrorCode.BAD_REQUEST, f"Field {key!r} is too long.")
    return value


def _int(obj: Mapping[str, object], key: str, *, required: bool = True,
         low: int = 0, high: int = 2**53) -> int | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    # bool is a subclass of int: docs/protocol.md says a boolean is not a number.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ChatError(ErrorCode.BAD_REQUEST, f"Field {key!r} must be an integer.")
    if not low <= value <= high:
        raise ChatError(ErrorCode.BAD_REQUEST, f"Field {key!r} is out of range.")
    return value


def _req_int(obj: Mapping[str, object], key: str, *, low: int = 0, high: int = 2**53) -> int:
    value = _int(obj, key, low=low, high=high)
    assert value is not None
    return value


def _room(o: Obj) -> RoomId:
    return RoomId(_str(o, "room"))


def _pid(o: Obj) -> ParticipantId:
    return ParticipantId(_str(o, "participant"))


def _note(o: Obj, key: str) -> str:
    return _str(o, key, limit=MAX_NOTE_CHARS, required=False).strip()


def _hello(o: Obj) -> c.Hello:
    token = _str(o, "token", limit=4096)
    resume_raw = o.get("resume")
    resume: list[tuple[RoomId, int]] = []
    if resume_raw is not None:
        if not isinstance(resume_raw, dict) or len(resume_raw) > 64:
            raise ChatError(ErrorCode.BAD_REQUEST, "Field 'resume' must be {room: seq}.")
        for room, seq in resume_raw.items():
            if len(room) > MAX_ID_CHARS or not isinstance(seq, int) or isinstance(seq, bool) \
                    or seq < 0:
                raise ChatError(ErrorCode.BAD_REQUEST, "Field 'resume' must be {room: seq}.")
            resume.append((RoomId(room), seq))
    return c.Hello(token=token, resume=tuple(resume))


def _send(o: Obj) -> c.Send:
    # The text limit (code points after trimming) is a config value checked by the
    # core, which answers it with `ack rejected too_large`; the frame limit bounds it here.
    text = o.get("text")
    if not isinstance(text, str):
        raise ChatError(ErrorCode.BAD_REQUEST, "Field 'text' must be a string.")
    msg_id = _str(o, "id")
    # The id reaches peers in `message.id`: an opaque token, never a second text field
    # the filter does not read (issue 13 § 4; docs/protocol.md).
    if not SEND_ID.fullmatch(msg_id):
        raise ChatError(ErrorCode.BAD_REQUEST, "Field 'id' must be 1 to 64 letters, digits, "
                                               "'-' or '_'.")
    return c.Send(room=_room(o), id=MessageId(msg_id), text=text)


def _urgency(o: Obj) -> c.Urgency:
    value = _str(o, "urgency")
    try:
        return c.Urgency(value)
    except ValueError:
        raise ChatError(ErrorCode.BAD_REQUEST,
                        "Urgency must be routine, urgent or emergency.") from None


def _minutes(o: Obj) -> int | None:
    return _int(o, "minutes", required=False, low=1, high=60 * 24 * 30)


def _close_case(o: Obj) -> c.CloseCase:
    outcome = _note(o, "outcome")
    if not outcome:
        # SECURITY.md SG-15: a case is never closed without its recorded outcome.
        raise ChatError(ErrorCode.BAD_REQUEST, "Closing a case needs an 'outcome'.")
    return c.CloseCase(case=CaseId(_str(o, "case")), outcome=outcome)


_PARSERS: Final[dict[str, Callable[[Obj], c.Command]]] = {
    "hello": _hello,
    "join": lambda o: c.Join(room=_room(o)),
    "leave": lambda o: c.Leave(room=_room(o)),
    "send": _send,
    "report": lambda o: c.Report(room=_room(o), seq=_req_int(o, "seq", low=1),
                                 reason=_note(o, "reason")),
    "ignore": lambda o: c.Ignore(room=_room(o), participant=_pid(o)),
    "unignore": lambda o: c.Unignore(room=_room(o), participant=_pid(o)),
    "mute": lambda o: c.Mute(room=_room(o), participant=_pid(o), minutes=_minutes(o),
                             reason=_note(o, "reason")),
    "unmute": lambda o: c.Unmute(room=_room(o), participant=_pid(o)),
    "pause": lambda o: c.Pause(room=_room(o), reason=_note(o, "reason")),
    "resume": lambda o: c.Resume(room=_room(o)),
    "slow_mode": lambda o: c.SlowMode(room=_room(o),
                                      seconds=_req_int(o, "seconds", high=3600)),
    "remove": lambda o: c.Remove(room=_room(o), participant=_pid(o),
                                 reason=_note(o, "reason")),
    "escalate": lambda o: c.Escalate(room=_room(o), participant=_pid(o),
                                     urgency=_urgency(o), note=_note(o, "note")),
    "claim": lambda o: c.Claim(case=CaseId(_str(o, "case"))),
    "close_case": _close_case,
    "redact": lambda o: c.Redact(room=_room(o), seq=_req_int(o, "seq", low=1),
                                 reason=_note(o, "reason")),
    "approve": lambda o: c.Approve(room=_room(o), held=HeldId(_str(o, "held"))),
    "reject": lambda o: c.Reject(room=_room(o), held=HeldId(_str(o, "held")),
                                 reason=_note(o, "reason")),
    # Issue 16 (docs/protocol.md § Alerts and asking for support).
    "alert_ack": lambda o: c.AlertAck(room=_room(o), alert=AlertId(_str(o, "alert"))),
    "alert_resolve": lambda o: c.AlertResolve(room=_room(o), alert=AlertId(_str(o, "alert"))),
    "request_support": lambda o: c.RequestSupport(room=_room(o), note=_note(o, "note")),
}


def frame_ref(obj: Mapping[str, object]) -> str | None:
    """The client's id on a frame, echoed as ``ref`` in an error about it."""
    ref = obj.get("id")
    if isinstance(ref, str) and len(ref) <= MAX_ID_CHARS:
        return ref
    return None


def parse(obj: Obj) -> c.Command:
    """Turn a decoded frame into a typed command.

    Raises:
        ChatError: ``bad_request`` (missing/mistyped field) or ``unknown_type``.
    """
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ChatError(ErrorCode.BAD_REQUEST, "Every frame needs a string 'type'.")
    parser = _PARSERS.get(kind)
    if parser is None:
        raise ChatError(ErrorCode.UNKNOWN_TYPE, f"Unknown frame type {kind[:32]!r}.")
    return parser(obj)


def parse_frame(data: str | bytes) -> c.Command:
    """``decode_object`` then ``parse``: one text frame to one command."""
    return parse(decode_object(data))


def encode(event: Event) -> bytes:
    """Encode an event once; the same bytes go to every recipient."""
    if isinstance(event, Encoded):
        return event.frame
    return orjson.dumps(event.to_wire())
