"""Issue 15 § 5 in the pure core: the safeguarding measurements (``Measure`` effects)
and the waiting snapshot behind the alert rules, with explicit time."""

from __future__ import annotations

from chatserver.core import commands as c
from chatserver.core.effects import Measure, Measurement, RoomRecord
from chatserver.core.events import Message, Person
from chatserver.core.ids import CaseId, HeldId, MessageId, ParticipantId, RoomId
from chatserver.core.roles import Role
from chatserver.core.vocabulary import RoomKind
from chatserver.moderation.engine import RuleSet
from tests.core.harness import RoomHarness

R = RoomId("r")
S = 1000


def _of(h: RoomHarness, what: Measurement) -> list[Measure]:
    return [m for m in h.measured if m.what is what]


def test_held_decisions_are_timed_from_the_hold_and_labelled_only_by_profile_and_decision(
        rules: RuleSet) -> None:
    h = RoomHarness(rules)
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    first = h.say(ana, "i want to kill myself", "r1", now=10 * S)
    second = h.say(ana, "how old are you?", "g1", now=20 * S)
    assert (first["status"], second["status"]) == ("held", "held")
    waiting = h.core.waiting(100 * S)
    assert waiting.held == {"default": (2, 90.0)}
    h.send(fac, c.Approve(R, HeldId(str(first["held"]))), now=100 * S)
    # A clock that stepped back never makes a negative wait (F-14).
    h.send(fac, c.Reject(R, HeldId(str(second["held"])), reason="age"), now=5 * S)
    assert _of(h, Measurement.HELD_DECIDED) == [
        Measure(Measurement.HELD_DECIDED, "default", 90.0, "approve"),
        Measure(Measurement.HELD_DECIDED, "default", 0.0, "reject")]
    assert h.core.waiting(200 * S).held == {"default": (0, 0.0)}
    # Shown crisis support, once, for the risk line.
    assert _of(h, Measurement.SIGNPOSTED) == [Measure(Measurement.SIGNPOSTED, "default")]


def test_a_claim_is_timed_from_the_escalation_and_unclaimed_cases_wait_by_urgency(
        rules: RuleSet) -> None:
    h = RoomHarness(rules)
    fac = h.connect("Fac", Role.FACILITATOR)
    h.connect("Ana")
    cou = h.connect("Cou", Role.COUNSELLOR)
    h.send(fac, c.Escalate(R, ParticipantId("id-Ana"), c.Urgency.EMERGENCY, "said goodbye"),
           now=30 * S)
    case = CaseId(str(h.of(cou, "case")[-1]["case"]["id"]))
    unclaimed = h.core.waiting(75 * S).unclaimed
    assert unclaimed[("default", "emergency")] == (1, 45.0)
    assert unclaimed[("default", "routine")] == (0, 0.0)
    h.send(cou, c.Claim(case), now=75 * S)
    assert _of(h, Measurement.CASE_CLAIMED) == [
        Measure(Measurement.CASE_CLAIMED, "default", 45.0, "emergency")]
    assert h.core.waiting(80 * S).unclaimed[("default", "emergency")] == (0, 0.0)


def test_an_unanswered_post_is_counted_once_with_or_without_a_facilitator(
        rules: RuleSet) -> None:
    h = RoomHarness(rules, unanswered_s=120)
    ana = h.connect("Ana")
    h.say(ana, "is anyone there?", "a1", now=0)
    h.say(ana, "hello?", "a2", now=10 * S)  # the same run of posts: one unanswered post
    h.tick(119 * S)
    assert _of(h, Measurement.UNANSWERED) == []
    h.tick(120 * S)
    h.tick(300 * S)
    assert _of(h, Measurement.UNANSWERED) == [Measure(Measurement.UNANSWERED, "default")]
    # Answered by someone else in time: not counted.
    ben = h.connect("Ben")
    h.say(ana, "anyone?", "a3", now=400 * S)
    h.say(ben, "yes, me", "b1", now=410 * S)
    h.tick(600 * S)
    assert len(_of(h, Measurement.UNANSWERED)) == 1


def test_in_a_cluster_only_the_node_that_delivered_a_post_counts_it(rules: RuleSet) -> None:
    """Every node serving the room observes the post and times it out; one counts it."""
    h = RoomHarness(rules, unanswered_s=120)
    ana = h.connect("Ana")
    ack = h.say(ana, "is anyone there?", "a1", now=0)
    other = RoomHarness(rules, unanswered_s=120)  # another node of the cluster
    other.core.add_room(RoomRecord(R, "Room", ("16-17",), "default", RoomKind.GROUP, False, 0, {},
                                   (),
                                   False))
    other.core.observe(Message(R, int(str(ack["seq"])), MessageId("a1"),
                               Person(ParticipantId("id-Ana"), "Ana", Role.PARTICIPANT),
                               "is anyone there?", 0))
    other.tick(121 * S)
    h.tick(121 * S)
    assert _of(other, Measurement.UNANSWERED) == []
    assert _of(h, Measurement.UNANSWERED) == [Measure(Measurement.UNANSWERED, "default")]
