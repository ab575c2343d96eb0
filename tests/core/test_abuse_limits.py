"""Issue 14, the pure parts: summaries per window, alert coalescing, departed people
forgotten, and the one rule for who sees a case."""

from __future__ import annotations

from chatserver.core.alerts import AlertBook
from chatserver.core.events import Person
from chatserver.core.ids import IdFactory, ParticipantId, RoomId
from chatserver.core.roles import Role
from chatserver.core.room import Member, Room
from chatserver.core.scopes import audit_scope, sees_case
from chatserver.core.summary import AuditSummary
from chatserver.core.vocabulary import CaseStatus

R = RoomId("r")
ANA = Person(ParticipantId("p_ana"), "Ana", Role.PARTICIPANT)


def test_a_burst_is_its_first_entry_then_one_summary_when_the_window_ends() -> None:
    s = AuditSummary(60_000)
    firsts = [s.count("k", "denied", "mute" if i % 2 else "pause", 1_000 + i)
              for i in range(100)]
    assert firsts == [True] + [False] * 99
    assert s.due(30_000) == []  # not ended yet
    (summary,) = s.due(61_000)
    assert (summary.total, summary.names, summary.since) == (100, ("mute", "pause"), 1_000)
    assert s.due(200_000) == [] and len(s) == 0


def test_same_kind_and_participant_within_the_window_is_counted_not_new() -> None:
    book = AlertBook(IdFactory(), coalesce_ms=60_000)
    first, coalesced = book.raise_alert(R, "report", ANA, "x", (), 0)
    assert not coalesced
    for n in range(2, 6):
        again, coalesced = book.raise_alert(R, "report", ANA, "x", (), n * 1000)
        assert coalesced and (again.id, again.count) == (first.id, n)
    other, coalesced = book.raise_alert(R, "risk", ANA, "x", (), 6_000)
    assert not coalesced and other.id != first.id  # another kind is its own alert
    later, coalesced = book.raise_alert(R, "report", ANA, "x", (), 61_000)
    assert not coalesced and later.id != first.id  # the window has passed
    assert len(book.open) == 3


def test_a_departed_person_is_forgotten_after_the_window_but_removal_stays() -> None:
    room = Room(R, "Room", ())
    bob = Person(ParticipantId("p_bob"), "Bob", Role.PARTICIPANT)
    for p in (ANA, bob):
        room.members[p.id] = Member(p)
    room.ignores[ANA.id] = {bob.id}
    room.depart(ANA.id, 0)
    room.depart(bob.id, 0)
    room.remove(bob.id)
    assert room.person(ANA.id) == ANA and not room.members  # still known: staff may act
    assert room.forget_departed(599_000, 600_000, 500) == []
    assert set(room.forget_departed(600_000, 600_000, 500)) == {ANA.id, bob.id}
    assert room.person(ANA.id) is None and ANA.id not in room.ignores
    assert bob.id in room.removed and room.name_removed("bob")


def test_departed_are_capped_oldest_first() -> None:
    room = Room(R, "Room", ())
    for i in range(5):
        p = Person(ParticipantId(f"p_{i}"), f"N{i}", Role.PARTICIPANT)
        room.members[p.id] = Member(p)
        room.depart(p.id, i)
    assert room.forget_departed(10, 600_000, 3) == ["p_0", "p_1"]


def test_one_rule_for_cases_and_audit_scopes_by_role() -> None:
    me, other = ParticipantId("u_me"), ParticipantId("u_other")
    assert sees_case("counsellor", me, CaseStatus.OPEN, None)
    assert sees_case("counsellor", me, CaseStatus.CLAIMED, me)
    assert not sees_case("counsellor", me, CaseStatus.CLAIMED, other)
    assert not sees_case("counsellor", me, CaseStatus.CLOSED, other)
    assert sees_case("ops", me, CaseStatus.CLOSED, other)
    assert not sees_case("facilitator", me, CaseStatus.OPEN, None)
    assert not sees_case("nobody", me, CaseStatus.OPEN, None)
    fac = audit_scope("facilitator", ["lounge"])
    assert fac is not None and fac.rooms == frozenset({"lounge"})
    assert {"close_case", "claim", "request_support"} <= fac.hidden_actions
    ops = audit_scope("ops", ["lounge"])
    assert ops is not None and ops.rooms is None and not ops.hidden_actions
    assert audit_scope("counsellor", ["lounge"]) is None
