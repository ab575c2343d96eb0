"""The wire parser (core/wire.py), the edge every client frame crosses.

docs/protocol.md § Conventions is the contract: one strict JSON object per frame,
unknown fields ignored, a missing or mistyped field `bad_request`, an unknown `type`
`unknown_type`. Whatever bytes arrive, the parser answers with a command or a
``ChatError`` carrying one of those two codes: nothing else ever escapes it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import orjson
import pytest
from hypothesis import example, given, settings, strategies as st

from chatserver.core import commands as c
from chatserver.core.errors import HTTP_STATUS, ChatError, ErrorCode
from chatserver.core.events import Ack, AckStatus, Encoded, ErrorEvent, Message, Person, Redacted
from chatserver.core.ids import AlertId, CaseId, HeldId, MessageId, ParticipantId, RoomId
from chatserver.core.roles import Role
from chatserver.core.wire import (
    MAX_ID_CHARS,
    MAX_JSON_DEPTH,
    MAX_NOTE_CHARS,
    decode_object,
    encode,
    frame_ref,
    parse_decimal,
    parse_frame,
)

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

untimed = settings(deadline=None)
"""Properties are judged on what they find, not how fast: the machine is shared."""

PARSER_CODES = frozenset({ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_TYPE})
"""The only codes the parser answers with (docs/protocol.md § Conventions)."""

WIRE_TYPE: dict[type[c.Command], str] = {
    c.Hello: "hello", c.Join: "join", c.Leave: "leave", c.Send: "send", c.Report: "report",
    c.Ignore: "ignore", c.Unignore: "unignore", c.Mute: "mute", c.Unmute: "unmute",
    c.Pause: "pause", c.Resume: "resume", c.SlowMode: "slow_mode", c.Remove: "remove",
    c.Escalate: "escalate", c.Claim: "claim", c.CloseCase: "close_case",
    c.Redact: "redact", c.Approve: "approve", c.Reject: "reject",
    c.AlertAck: "alert_ack", c.AlertResolve: "alert_resolve",
    c.RequestSupport: "request_support",
}


def to_frame(command: c.Command) -> dict[str, object]:
    """What a well-behaved client sends for ``command`` (the parser's inverse): field
    names are the wire's keys; an optional field left at its default is omitted."""
    frame: dict[str, object] = {"type": WIRE_TYPE[type(command)]}
    for f in dataclasses.fields(command):
        value = getattr(command, f.name)
        if f.name == "resume":
            if value:
                frame["resume"] = dict(value)
        elif value != f.default:
            frame[f.name] = value.value if isinstance(value, c.Urgency) else value
    return frame


def refused(data: str | bytes, code: ErrorCode = ErrorCode.BAD_REQUEST) -> ChatError:
    with pytest.raises(ChatError) as caught:
        parse_frame(data)
    assert caught.value.code == code, caught.value.message
    assert caught.value.close is None  # the transport decides what a bad frame closes
    return caught.value


def frame(**fields: object) -> bytes:
    return orjson.dumps(fields)


# ---- strategies: well-formed commands

# Lone surrogates and NUL are refused by the contract (tested on their own below).
_chars = st.characters(codec="utf-8", blacklist_characters="\x00")
ids = st.text(_chars, min_size=1, max_size=MAX_ID_CHARS)
rooms = ids.map(RoomId)
people = ids.map(ParticipantId)
# A note is trimmed by the parser; these are already trimmed, so they come back equal.
notes = st.text(_chars, max_size=MAX_NOTE_CHARS).map(str.strip)
seqs = st.integers(min_value=1, max_value=2**53)

commands: st.SearchStrategy[c.Command] = st.one_of(
    st.builds(c.Hello, token=st.text(_chars, min_size=1, max_size=4096),
              resume=st.dictionaries(st.text(_chars, max_size=MAX_ID_CHARS),
                                     st.integers(0, 2**53), max_size=64)
              .map(lambda d: tuple((RoomId(k), v) for k, v in d.items()))),
    st.builds(c.Join, room=rooms),
    st.builds(c.Leave, room=rooms),
    st.builds(c.Send, room=rooms, id=st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z").map(MessageId),
              text=st.text(_chars, max_size=3000)),
    st.builds(c.Report, room=rooms, seq=seqs, reason=notes),
    st.builds(c.Ignore, room=rooms, participant=people),
    st.builds(c.Unignore, room=rooms, participant=people),
    st.builds(c.Mute, room=rooms, participant=people,
              minutes=st.none() | st.integers(1, 60 * 24 * 30), reason=notes),
    st.builds(c.Unmute, room=rooms, participant=people),
    st.builds(c.Pause, room=rooms, reason=notes),
    st.builds(c.Resume, room=rooms),
    st.builds(c.SlowMode, room=rooms, seconds=st.integers(0, 3600)),
    st.builds(c.Remove, room=rooms, participant=people, reason=notes),
    st.builds(c.Escalate, room=rooms, participant=people,
              urgency=st.sampled_from(c.Urgency), note=notes),
    st.builds(c.Claim, case=ids.map(CaseId)),
    st.builds(c.CloseCase, case=ids.map(CaseId), outcome=notes.filter(bool)),
    st.builds(c.Redact, room=rooms, seq=seqs, reason=notes),
    st.builds(c.Approve, room=rooms, held=ids.map(HeldId)),
    st.builds(c.Reject, room=rooms, held=ids.map(HeldId), reason=notes),
    st.builds(c.AlertAck, room=rooms, alert=ids.map(AlertId)),
    st.builds(c.AlertResolve, room=rooms, alert=ids.map(AlertId)),
    st.builds(c.RequestSupport, room=rooms, note=notes),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(_chars, max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(_chars, max_size=8),
                                                                inner, max_size=4),
    max_leaves=6)
"""Any JSON value, for fields of the wrong type and for unknown fields."""

KNOWN_KEYS = ("token", "resume", "room", "id", "text", "seq", "reason", "participant",
              "minutes", "seconds", "urgency", "note", "case", "outcome", "held", "alert")


def test_every_command_has_a_wire_type() -> None:
    # By name: a slotted dataclass replaces its class, and the first stays a subclass.
    assert {k.__name__ for k in WIRE_TYPE} == {k.__name__ for k in c.Command.__subclasses__()}


# ---- round trips


@given(commands)
@settings(untimed, max_examples=150)
def test_a_well_formed_frame_parses_to_its_command(command: c.Command) -> None:
    data = orjson.dumps(to_frame(command))
    assert parse_frame(data) == command
    assert parse_frame(data.decode()) == command  # a text frame as aiohttp hands it over


@given(commands, st.dictionaries(st.text(_chars, min_size=1, max_size=12)
                                 .filter(lambda k: k not in (*KNOWN_KEYS, "type")),
                                 json_values, max_size=3))
@untimed
def test_unknown_fields_are_ignored(command: c.Command, extra: dict[str, object]) -> None:
    assert parse_frame(orjson.dumps({**extra, **to_frame(command)})) == command


@given(commands)
@untimed
def test_the_stdlib_encoding_parses_the_same(command: c.Command) -> None:
    """Escaped non-ASCII (``json.dumps``' default) is the same frame."""
    assert parse_frame(json.dumps(to_frame(command))) == command


def test_notes_are_trimmed() -> None:
    assert parse_frame(frame(type="pause", room="r", reason="  too fast \n")) == \
        c.Pause(RoomId("r"), "too fast")


@pytest.mark.parametrize("event", [
    Message(RoomId("r"), 7, MessageId("m1"), Person(ParticipantId("p1"), "Ana", Role.PARTICIPANT),
            "hi \u2028 \U0001f600 </script>", 1_700_000_000_000),
    Ack("m1", AckStatus.SENT, seq=7, room=RoomId("r")),
    Ack("m2", AckStatus.REJECTED, code=ErrorCode.RATE_LIMITED.value),
    Redacted(RoomId("r"), 7),
    ErrorEvent(ErrorCode.BAD_REQUEST.value, "Field 'room' is missing."),
])
def test_an_event_encodes_to_its_wire_form(event: object) -> None:
    assert isinstance(event, Message | Ack | Redacted | ErrorEvent)
    assert orjson.loads(encode(event)) == event.to_wire()
    assert b"null" not in encode(event)  # an absent optional field is left out, not null


def test_a_pre_encoded_event_is_sent_as_it_is() -> None:
    raw = b'{"type":"message","room":"r","seq":1}'
    assert encode(Encoded("message", raw)) is raw


# ---- nothing but the documented error, whatever arrives


def _outcome(data: str | bytes) -> c.Command | ChatError:
    try:
        return parse_frame(data)
    except ChatError as e:
        return e


def _parses_or_refuses(data: str | bytes) -> None:
    """Anything else raised (KeyError, RecursionError, ValueError …) fails the test."""
    outcome = _outcome(data)
    if isinstance(outcome, ChatError):
        assert outcome.code in PARSER_CODES, (outcome.code, outcome.message)
        assert outcome.close is None
    else:
        assert isinstance(outcome, c.Command)


@given(st.binary(max_size=512))
@example(b"\xff\xfe")  # invalid UTF-8
@example(b"\xed\xa0\x80")  # a UTF-8-encoded surrogate
@example(b"\xef\xbb\xbf{}")  # a byte-order mark
@example(b"")
@untimed
def test_any_bytes_parse_or_are_refused(data: bytes) -> None:
    _parses_or_refuses(data)


@given(st.text(max_size=512))
@example("\ud800")
@example('{"type":"hello","token":"\udfff"}')
@untimed
def test_any_text_parses_or_is_refused(data: str) -> None:
    _parses_or_refuses(data)


@given(st.fixed_dictionaries({"type": st.sampled_from(sorted(WIRE_TYPE.values()))},
                             optional=dict.fromkeys(KNOWN_KEYS, json_values)))
@settings(untimed, max_examples=100)
def test_any_field_of_any_type_parses_or_is_refused(obj: dict[str, object]) -> None:
    """Every command's fields with values of every JSON type: the typed branches."""
    _parses_or_refuses(json.dumps(obj))


@given(json_values)
@untimed
def test_any_json_value_parses_or_is_refused(value: object) -> None:
    _parses_or_refuses(json.dumps(value))


# ---- each documented refusal

VALID_SEND = {"type": "send", "room": "r", "id": "m1", "text": "hi"}


@pytest.mark.parametrize("data", [
    pytest.param(b"not json", id="not-json"),
    pytest.param(b'{"type": "send",', id="truncated"),
    pytest.param(b'["send"]', id="an-array"),
    pytest.param(b'"send"', id="a-string"),
    pytest.param(b"null", id="null"),
    pytest.param(b'{"type":"send","type":"send","room":"r","id":"m1","text":"hi"}',
                 id="duplicate-key"),
    pytest.param(b'{"type":"hello","token":"t","resume":{"r":1,"r":2}}',
                 id="duplicate-key-nested"),
    pytest.param(b'{"type":"report","room":"r","seq":NaN}', id="nan"),
    pytest.param(b'{"type":"report","room":"r","seq":Infinity}', id="infinity"),
    pytest.param(b'{"type":"report","room":"r","seq":-Infinity}', id="minus-infinity"),
    pytest.param(b'{"type":"report","room":"r","seq":1e999}', id="overflowing-number"),
    pytest.param(b'{"type":"send","room":"r","id":"m1","text":"\\ud800"}',
                 id="escaped-lone-surrogate"),
    pytest.param('{"type":"send","room":"r","id":"m1","text":"\ud800"}',
                 id="raw-lone-surrogate"),
    pytest.param(b'{"type":"send","room":"r","id":"m1","text":"a\\u0000b"}', id="nul-in-value"),
    pytest.param(b'{"type":"send","room":"r","id":"m1","text":"hi","x\\u0000":1}',
                 id="nul-in-key"),
    pytest.param(b'{"type":"send","room":"r","id":"m1","text":"hi","x":["\\u0000"]}',
                 id="nul-in-an-array"),
    pytest.param(b'{"type":"send","room":"r","id":"m1","text":"hi","x":[[{"y":"\\u0000"}]]}',
                 id="nul-deep-inside"),
    pytest.param(b'{"type":"send","room":"r","id":"m1","text":"a\x00b"}', id="raw-nul"),
    pytest.param(b'\xff{"type":"send"}', id="invalid-utf8"),
])
def test_frames_that_are_not_one_strict_json_object_are_bad_request(data: bytes | str) -> None:
    refused(data)


@pytest.mark.parametrize(("frame_", "field"), [
    ({"type": "send", "room": "r", "id": "m1"}, "text"),
    ({"type": "send", "room": "r", "text": "hi"}, "id"),
    ({"type": "send", "id": "m1", "text": "hi"}, "room"),
    ({"type": "hello"}, "token"),
    ({"type": "report", "room": "r"}, "seq"),
    ({"type": "mute", "room": "r"}, "participant"),
    ({"type": "slow_mode", "room": "r"}, "seconds"),
    ({"type": "escalate", "room": "r", "participant": "p"}, "urgency"),
    ({"type": "claim"}, "case"),
    ({"type": "close_case", "case": "k"}, "outcome"),
    ({"type": "approve", "room": "r"}, "held"),
    ({"type": "alert_ack", "room": "r"}, "alert"),
])
def test_a_missing_required_field_is_bad_request(frame_: dict[str, object],
                                                 field: str) -> None:
    assert field in refused(orjson.dumps(frame_)).message


@pytest.mark.parametrize(("change", "why"), [
    ({"room": 7}, "a number for a string"),
    ({"room": ["r"]}, "an array for a string"),
    ({"room": None}, "null for a string"),
    ({"room": ""}, "an empty id"),
    ({"id": {"a": 1}}, "an object for the id"),
    ({"text": 5}, "a number for the text"),
    ({"text": None}, "null for the text"),
    ({"id": "has space"}, "an id peers would read as text"),
    ({"id": "dots.and@"}, "an id with other characters"),
    ({"id": "é"}, "an id in another script"),
    ({"type": 1}, "a number for the type"),
    ({"type": None}, "null for the type"),
])
def test_a_send_with_a_wrong_field_type_is_bad_request(change: dict[str, object],
                                                       why: str) -> None:
    refused(orjson.dumps({**VALID_SEND, **change}))


@pytest.mark.parametrize("frame_", [
    {"type": "report", "room": "r", "seq": True},  # a boolean is not a number
    {"type": "report", "room": "r", "seq": 1.0},
    {"type": "report", "room": "r", "seq": "1"},
    {"type": "report", "room": "r", "seq": 0},  # seqs start at 1
    {"type": "report", "room": "r", "seq": -1},
    {"type": "report", "room": "r", "seq": 2**53 + 1},
    {"type": "slow_mode", "room": "r", "seconds": False},
    {"type": "slow_mode", "room": "r", "seconds": 3601},
    {"type": "mute", "room": "r", "participant": "p", "minutes": 0},
    {"type": "mute", "room": "r", "participant": "p", "minutes": True},
    {"type": "escalate", "room": "r", "participant": "p", "urgency": "soon"},
    {"type": "escalate", "room": "r", "participant": "p", "urgency": 1},
    {"type": "close_case", "case": "k", "outcome": "   "},
    {"type": "hello", "token": "t", "resume": []},
    {"type": "hello", "token": "t", "resume": {"r": True}},
    {"type": "hello", "token": "t", "resume": {"r": -1}},
    {"type": "hello", "token": "t", "resume": {"r": 1.5}},
    {"type": "hello", "token": "t", "resume": {"r": "1"}},
    {"type": "report", "room": "r", "seq": 1, "reason": 5},
])
def test_a_wrong_field_type_or_range_is_bad_request(frame_: dict[str, object]) -> None:
    refused(orjson.dumps(frame_))


@pytest.mark.parametrize("kind", ["", "SEND", "send ", "welcome", "message", "ack", "error",
                                  "__class__", "x" * 10_000])
def test_an_unknown_type_is_unknown_type(kind: str) -> None:
    error = refused(orjson.dumps({"type": kind, "room": "r"}), ErrorCode.UNKNOWN_TYPE)
    assert len(error.message) < 100  # the client's text is cut short in the answer


# ---- oversized frames and fields


@pytest.mark.parametrize(("frame_", "field"), [
    ({**VALID_SEND, "room": "r" * (MAX_ID_CHARS + 1)}, "room"),
    ({**VALID_SEND, "id": "m" * (MAX_ID_CHARS + 1)}, "id"),
    ({"type": "mute", "room": "r", "participant": "p" * (MAX_ID_CHARS + 1)}, "participant"),
    ({"type": "claim", "case": "k" * (MAX_ID_CHARS + 1)}, "case"),
    ({"type": "hello", "token": "t" * 4097}, "token"),
    ({"type": "pause", "room": "r", "reason": "x" * (MAX_NOTE_CHARS + 1)}, "reason"),
    ({"type": "request_support", "room": "r", "note": "x" * (MAX_NOTE_CHARS + 1)}, "note"),
])
def test_a_field_over_its_bound_is_bad_request(frame_: dict[str, object], field: str) -> None:
    assert field in refused(orjson.dumps(frame_)).message


def test_ids_and_notes_at_their_bound_are_accepted() -> None:
    assert parse_frame(orjson.dumps({**VALID_SEND, "room": "r" * MAX_ID_CHARS,
                                     "id": "m" * MAX_ID_CHARS})) == \
        c.Send(RoomId("r" * MAX_ID_CHARS), MessageId("m" * MAX_ID_CHARS), "hi")
    assert parse_frame(frame(type="pause", room="r", reason="x" * MAX_NOTE_CHARS)) == \
        c.Pause(RoomId("r"), "x" * MAX_NOTE_CHARS)


def test_a_long_text_is_left_to_the_core() -> None:
    """The text's bound (code points after trimming) is config, answered by the core
    with ``ack rejected too_large``; the frame's size bounds it here."""
    text = "\U0001f600" * 50_000
    assert parse_frame(frame(**{**VALID_SEND, "text": text})) == \
        c.Send(RoomId("r"), MessageId("m1"), text)


def test_a_resume_of_more_than_64_rooms_is_bad_request() -> None:
    ok = {f"r{i}": i for i in range(64)}
    hello = parse_frame(frame(type="hello", token="t", resume=ok))
    assert isinstance(hello, c.Hello) and len(hello.resume) == 64
    refused(frame(type="hello", token="t", resume={**ok, "r64": 1}))
    refused(frame(type="hello", token="t", resume={"r" * (MAX_ID_CHARS + 1): 1}))


def _nested(depth: int) -> str:
    """An object ``depth`` levels deep, the frame itself included."""
    return '{"type":"leave","room":"r","x":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def test_nesting_is_bounded() -> None:
    assert parse_frame(_nested(MAX_JSON_DEPTH)) == c.Leave(RoomId("r"))
    refused(_nested(MAX_JSON_DEPTH + 1))
    refused(_nested(5_000))  # past orjson's own limit and Python's recursion limit
    refused("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ChatError):
        decode_object(_nested(4), max_depth=3)
    assert decode_object(_nested(3), max_depth=3)["room"] == "r"


def test_a_large_frame_of_many_fields_is_parsed_once() -> None:
    """Size is aiohttp's to bound (``limits.max_frame_bytes``, close 1009); a frame under
    it with thousands of unknown fields is still just the command."""
    big = {f"k{i}": "v" * 8 for i in range(3_000)}
    assert parse_frame(orjson.dumps({**big, **VALID_SEND})) == \
        c.Send(RoomId("r"), MessageId("m1"), "hi")


# ---- the error answer


@pytest.mark.parametrize(("obj", "ref"), [
    ({"id": "m1"}, "m1"),
    ({"id": "m" * MAX_ID_CHARS}, "m" * MAX_ID_CHARS),
    ({"id": "m" * (MAX_ID_CHARS + 1)}, None),  # not echoed: we cannot trust it
    ({"id": 5}, None),
    ({}, None),
])
def test_an_error_names_the_frame_by_its_id_when_it_has_a_sane_one(
        obj: dict[str, object], ref: str | None) -> None:
    assert frame_ref(obj) == ref


def test_every_documented_error_code_is_an_error_code_with_a_status() -> None:
    """docs/protocol.md § Conventions lists the codes; the enum is exactly that list."""
    text = PROTOCOL.read_text()
    line = re.search(r"^\s*Error codes: (.+?)\.$", text, re.MULTILINE | re.DOTALL)
    assert line is not None, "docs/protocol.md lost its 'Error codes:' sentence"
    documented = set(re.findall(r"`([a-z_]+)`", line.group(1)))
    assert documented == {code.value for code in ErrorCode}
    assert set(HTTP_STATUS) == set(ErrorCode)
    assert all(400 <= ErrorCode(code).http_status <= 599 for code in documented)


# ---- integers in queries and form fields


@given(st.integers(0, 2**53))
@untimed
def test_decimal_digits_in_range_parse(n: int) -> None:
    assert parse_decimal(str(n), "limit") == n


@pytest.mark.parametrize("raw", ["", "-1", "+1", " 1", "1 ", "1_000", "1.0", "0x10",
                                 "\u0663", "\uff11", "\u00b2", "\u2460", "1" * 17])
def test_anything_but_ascii_digits_is_bad_request(raw: str) -> None:
    with pytest.raises(ChatError) as caught:
        parse_decimal(raw, "since")
    assert caught.value.code == ErrorCode.BAD_REQUEST
    assert "'since'" in caught.value.message


@given(st.text(max_size=20))
@untimed
def test_parse_decimal_accepts_only_what_is_digits(raw: str) -> None:
    if re.fullmatch(r"[0-9]{1,16}", raw) and int(raw) <= 1000:
        assert parse_decimal(raw, "limit", high=1000) == int(raw)
    else:
        with pytest.raises(ChatError):
            parse_decimal(raw, "limit", high=1000)
