"""Two pure cores as two nodes of a cluster: presence merges the same way on both, and a
staff action on node A reaches a young person connected to node B through the records
A made durable (the shell carries them as ``Sync``)."""

from __future__ import annotations

from collections.abc import Sequence

from chatserver.core import commands as c
from chatserver.core.effects import Close, Effect, Emit, Persist
from chatserver.core.events import Notice, RoomState
from chatserver.core.ids import MessageId, ParticipantId, RoomId
from chatserver.core.roles import Role
from chatserver.core.sync import SYNC_RECORDS, Sync
from chatserver.moderation.engine import RuleSet
from tests.core.harness import RoomHarness

R = RoomId("r")


def records(effects: Sequence[Effect]) -> Sync:
    return Sync(tuple(op for e in effects if isinstance(e, Persist) for op in e.ops
                      if isinstance(op, SYNC_RECORDS)))


def gossip(a: RoomHarness, b: RoomHarness, now: int = 0) -> None:
    """Each node tells the other who is connected to it (a heartbeat)."""
    b.run(b.core.cluster.apply_sync("a", Sync(presence=a.core.cluster.presence(), full=True),
                                    now)[0])
    a.run(a.core.cluster.apply_sync("b", Sync(presence=b.core.cluster.presence(), full=True),
                                    now)[0])


def members(h: RoomHarness) -> list[tuple[str, str]]:
    return [(m.name, m.role) for m in h.core.rooms[R].state(0).members]


def test_member_lists_are_merged_and_ordered_alike_on_both_nodes(rules: RuleSet) -> None:
    a, b = RoomHarness(rules), RoomHarness(rules)
    a.connect("Zoe")
    a.connect("Fran", Role.FACILITATOR)
    b.connect("Ali")
    b.connect("ben")
    gossip(a, b)
    assert members(a) == members(b) == [("Fran", "facilitator"), ("Ali", "participant"),
                                        ("ben", "participant"), ("Zoe", "participant")]


def test_a_mute_on_node_a_silences_a_young_person_on_node_b(rules: RuleSet) -> None:
    a, b = RoomHarness(rules), RoomHarness(rules)
    fac = a.connect("Fran", Role.FACILITATOR)
    kid = b.connect("Kid")
    gossip(a, b)
    effects = a.core.handle(fac, c.Mute(R, ParticipantId("id-Kid"), 5, "calm"), 0)
    assert not [e for e in effects if isinstance(e, Emit) and e.conn == fac]  # no error
    b.run(b.core.cluster.apply_sync("a", records(effects), 0)[0])
    assert b.say(kid, "hello", "m1")["code"] == "muted"
    assert [m.muted for m in b.core.rooms[R].state(0).members if m.name == "Kid"] == [True]


def test_a_removal_on_node_a_closes_the_young_person_on_node_b(rules: RuleSet) -> None:
    a, b = RoomHarness(rules), RoomHarness(rules)
    fac = a.connect("Fran", Role.FACILITATOR)
    kid = b.connect("Kid")
    gossip(a, b)
    effects = a.core.handle(fac, c.Remove(R, ParticipantId("id-Kid"), "abusive"), 0)
    assert ("Kid", "participant") not in members(a)  # gone at once on A
    applied, _ = b.core.cluster.apply_sync("a", records(effects), 0)
    assert any(isinstance(e, Emit) and e.conn == kid and isinstance(e.event, Notice)
               and e.event.kind == "removed" for e in applied)
    assert any(isinstance(e, Close) and e.conn == kid and e.code == 4403 for e in applied)
    assert "id-Kid" not in b.core.rooms[R].members
    assert b.say(kid, "still here?", "m2")["code"] == "forbidden"


def test_a_facilitator_on_another_node_counts_as_present(rules: RuleSet) -> None:
    a, b = RoomHarness(rules, require_facilitator=True), \
        RoomHarness(rules, require_facilitator=True)
    kid = b.connect("Kid")
    assert b.say(kid, "anyone?", "m1")["code"] == "paused"
    a.connect("Fran", Role.FACILITATOR)
    gossip(a, b)
    assert b.say(kid, "hello", "m2")["status"] == "sent"


def test_a_silent_node_leaves_the_member_lists_and_the_lead(rules: RuleSet) -> None:
    a, b = RoomHarness(rules), RoomHarness(rules)
    a.connect("Zoe")
    kid = b.connect("Kid")
    gossip(a, b, now=1000)
    assert not b.core.cluster.leads("b") and a.core.cluster.leads("a")
    assert b.core.cluster.expire_nodes(6999, 6000) == []  # still within the expiry
    effects = b.core.cluster.expire_nodes(7000, 6000)
    states = [e.event for e in effects if isinstance(e, Emit) and e.conn == kid]
    assert len(states) == 1 and isinstance(states[0], RoomState)
    assert [m.name for m in states[0].members] == ["Kid"]
    assert b.core.cluster.leads("b")


def test_held_messages_and_their_resends_are_known_on_every_node(rules: RuleSet) -> None:
    a, b = RoomHarness(rules), RoomHarness(rules)
    kid_a = a.connect("Kid")
    effects = a.core.handle(kid_a, c.Send(R, MessageId("h1"), "how old are you? send pics"), 0)
    sync = records(effects)
    assert sync.records  # the held record travels
    b.core.cluster.apply_sync("a", sync, 0)
    assert len(b.core.rooms[R].held) == 1
    kid_b = b.connect("Kid")  # the same young person, reconnected to node B, resends
    assert b.say(kid_b, "how old are you? send pics", "h1")["status"] == "held"
    assert len(b.core.rooms[R].held) == 1  # not held twice
