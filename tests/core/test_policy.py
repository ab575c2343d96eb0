"""The HTTP routes' decisions, pure: a join's name and room, a new room, the case list."""

from __future__ import annotations

import pytest

from chatserver.config import RoomsConfig
from chatserver.core.commands import Urgency
from chatserver.core.effects import CaseRecord
from chatserver.core.errors import ChatError, ErrorCode
from chatserver.core.ids import CaseId, ParticipantId, RoomId
from chatserver.core.policy import (
    admit_join,
    check_display_name,
    check_room_fields,
    check_staff_display_name,
    group_room,
    room_profile,
    staff_shown_name,
)
from chatserver.core.roles import Role
from chatserver.core.room import Room
from chatserver.core.session import Identity
from chatserver.core.views import visible_cases
from chatserver.core.vocabulary import CaseStatus
from chatserver.moderation.engine import RuleSet

ROOMS = RoomsConfig()


@pytest.mark.parametrize(("name", "code"), [
    ("Ana", None),
    ("Chi1dline", ErrorCode.BAD_REQUEST),      # a helpline, look-alike spelt (SG-21)
    ("M0d team", ErrorCode.BAD_REQUEST),
    ("sn4p jsmith", ErrorCode.BAD_REQUEST),    # a social handle (SG-05)
    ("oh seven seven 123", ErrorCode.BAD_REQUEST),  # six digits, some spelt out
    ("a" * 25, ErrorCode.BAD_REQUEST),
    ("<b>", ErrorCode.BAD_REQUEST),
    ("Facilitator Sam", ErrorCode.BAD_REQUEST),  # staff's role words are staff's
    ("Sam the mod", ErrorCode.BAD_REQUEST),    # a short reserved word, as a word
    ("Modern Sam", None),                      # ...but not inside another word
])
def test_display_names(rules: RuleSet, name: str, code: ErrorCode | None) -> None:
    if code is None:
        check_display_name(name, rules)
        return
    with pytest.raises(ChatError) as e:
        check_display_name(name, rules)
    assert e.value.code == code


STAFF_NAMES_REFUSED = [
    "Childline", "Chi1dline Sam", "ChildIine", "Samaritans volunteer", "Shout 85258",
    "Mod team", "M0d team", "Sam the mod", "Moderator Sam", "Admin", "System", "NSPCC",
    "Papyrus Sam", "Official Support", "NHS 111 Help", "CAMHS Team",  # organisations
    "Sam 07700 900123", "Sam oh seven seven oh oh nine", "sam@example.org",
    "snap sam_j", "insta samj",                     # numbers, addresses, handles (SG-05)
    "sam at gmail dot com", "www.sam.com",          # what the message rules would mask
    "Facilitator <b>", "a" * 33,
]


@pytest.mark.parametrize("name", ["Facilitator Sam", "Sam (facilitator)", "Counsellor Jo",
                                  "Support team", "Staff", "Sam O'Neil", "Dr. Amara Okafor",
                                  "Facilitator Sam 2", "Modern Sam"])
def test_staff_may_use_the_role_words_young_people_may_not(rules: RuleSet,
                                                           name: str) -> None:
    check_staff_display_name(name, rules)
    assert staff_shown_name(name, "Facilitator", rules) == name


@pytest.mark.parametrize("name", STAFF_NAMES_REFUSED)
def test_no_staff_name_impersonates_a_helpline_or_carries_contact_details(
        rules: RuleSet, name: str) -> None:
    with pytest.raises(ChatError) as e:
        check_staff_display_name(name, rules)
    assert e.value.code == ErrorCode.BAD_REQUEST
    # One stored before the rule, or by hand, shows as the role's name.
    assert staff_shown_name(name, "Facilitator", rules) == "Facilitator"


def test_the_staff_refusals_say_which_rule(rules: RuleSet) -> None:
    said = {}
    for name in ("Chi1dline Sam", "Sam 07700 900123", "sam@example.org", "snap sam_j"):
        with pytest.raises(ChatError) as e:
            check_staff_display_name(name, rules)
        said[name] = e.value.message
    assert "helpline" in said["Chi1dline Sam"] and "Facilitator Sam" in said["Chi1dline Sam"]
    assert {said[n] for n in ("Sam 07700 900123", "sam@example.org", "snap sam_j")} == {
        "A staff display name must not carry a phone number, an email address or a social "
        "media handle."}


def _room(**fields: object) -> Room:
    room = Room(RoomId("r"), "Room", ("16-17",))
    for key, value in fields.items():
        setattr(room, key, value)
    return room


@pytest.mark.parametrize(("room", "band", "code"), [
    (None, "16-17", ErrorCode.NOT_FOUND),
    (_room(closed=True), "16-17", ErrorCode.NOT_FOUND),
    (_room(kind="case"), "16-17", ErrorCode.NOT_FOUND),
    (_room(), "99-100", ErrorCode.BAD_REQUEST),
    (_room(), "13-15", ErrorCode.FORBIDDEN),
])
def test_a_join_is_refused(room: Room | None, band: str, code: ErrorCode) -> None:
    with pytest.raises(ChatError) as e:
        admit_join(room, "Ana", band, ROOMS.age_bands, None)
    assert e.value.code == code


def test_a_removed_token_cannot_join_again_under_a_new_name() -> None:
    room = _room()
    room.remove(ParticipantId("p1"))
    old = Identity(ParticipantId("p1"), "Ana", Role.PARTICIPANT, RoomId("r"), "16-17")
    assert admit_join(room, "Bea", "16-17", ROOMS.age_bands, None) is room
    with pytest.raises(ChatError) as e:
        admit_join(room, "Bea", "16-17", ROOMS.age_bands, old)
    assert e.value.code == ErrorCode.FORBIDDEN


def test_only_an_adults_only_room_runs_the_adult_profile() -> None:
    assert room_profile(("18-25",)) == "adult"
    assert room_profile(("16-17", "18-25")) == "default"
    bands = check_room_fields("Evening", ["18-25"], ROOMS)
    record = group_room("evening", "Evening", bands, ROOMS, {})
    assert (record.profile, record.age_bands) == ("adult", ("18-25",))


@pytest.mark.parametrize(("title", "bands", "rid", "code"), [
    ("", ["16-17"], "ok", ErrorCode.BAD_REQUEST),
    ("T" * 81, ["16-17"], "ok", ErrorCode.BAD_REQUEST),
    ("Title", [], "ok", ErrorCode.BAD_REQUEST),
    ("Title", ["40-50"], "ok", ErrorCode.BAD_REQUEST),
    ("Title", "16-17", "ok", ErrorCode.BAD_REQUEST),
    ("Title", ["16-17"], "Not An Id", ErrorCode.BAD_REQUEST),
    ("Title", ["16-17"], "taken", ErrorCode.CONFLICT),
])
def test_a_new_room_is_refused(title: str, bands: object, rid: str, code: ErrorCode) -> None:
    with pytest.raises(ChatError) as e:
        group_room(rid, title, check_room_fields(title, bands, ROOMS), ROOMS, {"taken"})
    assert e.value.code == code


def _case(cid: str, urgency: str, ts: int, status: str = "open",
          counsellor: str | None = None) -> CaseRecord:
    return CaseRecord(CaseId(cid), RoomId("r"), ParticipantId("p"), "Ana", Urgency(urgency),
                      CaseStatus(status),
                      "note", ts, "f", ParticipantId(counsellor) if counsellor else None)


def test_the_case_list_is_ranked_and_scoped_as_the_socket_path_is() -> None:
    cases = [_case("routine", "routine", 1), _case("urgent", "urgent", 3),
             _case("mine", "emergency", 4, "closed", "me"),
             _case("theirs", "emergency", 2, "claimed", "them")]
    me = ParticipantId("me")
    assert [v.id for v in visible_cases(cases, Role.COUNSELLOR, me)] == \
        ["mine", "urgent", "routine"]
    assert [v.id for v in visible_cases(cases, Role.OPS, me)] == \
        ["theirs", "mine", "urgent", "routine"]
    assert [v.id for v in visible_cases(cases, Role.OPS, me, "open")] == ["urgent", "routine"]
    assert visible_cases(cases, Role.FACILITATOR, me) == []
    shown = visible_cases(cases, Role.COUNSELLOR, me)[0].body()
    assert (shown["name"], shown["counsellor"], shown["context"]) == ("Ana", "me", [])
