"""Messages published out of seq order by two nodes reach members in order, once."""

from __future__ import annotations

from chatserver.core.events import Message, Person
from chatserver.core.ids import MessageId, ParticipantId, RoomId
from chatserver.core.roles import Role
from chatserver.core.sequencer import Hole, Sequencer

R = RoomId("r")
ALEX = Person(ParticipantId("p"), "Alex", Role.PARTICIPANT)


def m(seq: int, room: RoomId = R) -> Message:
    return Message(room, seq, MessageId(f"m{seq}"), ALEX, "hi", seq)


def seqs(msgs: list[Message]) -> list[int]:
    return [x.seq for x in msgs]


def test_in_order_messages_pass_straight_through_and_duplicates_are_dropped() -> None:
    s = Sequencer()
    s.start_at(R, 0)
    assert seqs(s.offer(m(1), 0)) == [1]
    assert seqs(s.offer(m(2), 0)) == [2]
    assert s.offer(m(2), 0) == [] and s.offer(m(1), 0) == []


def test_an_early_message_waits_for_the_one_before_it() -> None:
    s = Sequencer()
    s.start_at(R, 4)
    assert s.offer(m(7), 10) == [] and s.offer(m(6), 11) == []
    assert s.offer(m(7), 12) == []  # a duplicate of one that is waiting
    assert seqs(s.offer(m(5), 13)) == [5, 6, 7]
    assert s.pending() == 0 and s.holes(10_000, 100) == []


def test_a_hole_is_reported_after_the_grace_period_and_can_be_filled() -> None:
    s = Sequencer()
    s.start_at(R, 0)
    s.offer(m(1), 0)
    s.offer(m(4), 1000)
    assert s.holes(1099, 100) == []
    assert s.holes(1100, 100) == [Hole(R, 1, 4)]
    # The shell found 2 in the store; 3 was redacted: skip it.
    assert seqs(s.offer(m(2), 1200)) == [2]
    assert seqs(s.skip(Hole(R, 1, 4), 1200)) == [4]
    assert s.holes(99_999, 100) == []
    assert seqs(s.offer(m(5), 1300)) == [5]


def test_a_new_hole_behind_a_filled_one_gets_its_own_grace_period() -> None:
    s = Sequencer()
    s.start_at(R, 0)
    s.offer(m(2), 0)
    s.offer(m(4), 0)
    assert seqs(s.offer(m(1), 500)) == [1, 2]
    assert s.holes(550, 100) == []
    assert s.holes(600, 100) == [Hole(R, 2, 4)]


def test_rooms_are_independent_and_start_never_moves_back() -> None:
    s = Sequencer()
    s.start_at(R, 3)
    s.start_at(R, 1)
    assert s.offer(m(3), 0) == []
    other = RoomId("o")
    assert seqs(s.offer(m(9, other), 0)) == [9]  # unknown room: from what arrives
    assert seqs(s.offer(m(4), 0)) == [4]
