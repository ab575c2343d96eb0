"""One contract suite for every Broker: in-memory (embedded) and Redis (cluster).

Redis runs at 127.0.0.1:6379; tests use database 9 and a key prefix of their own, and
delete their keys after. Without Redis the redis cases skip with a reason, or fail in CI.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator

import msgpack
import pytest

from chatserver.brokers.memory import ATTEMPT_SWEEP, MemoryBroker
from chatserver.brokers.redis import RedisBroker, decode_envelope, encode_envelope
from chatserver.core.effects import (
    ALL_ROOMS,
    AlertRecord,
    Audience,
    CaseRecord,
    HeldDecided,
    HeldRecord,
    RoomRecord,
)
from chatserver.core.events import Encoded, Event, Message, Notice, Person
from chatserver.core.ids import AlertId, CaseId, HeldId, MessageId, ParticipantId, RoomId
from chatserver.core.sync import Sync
from chatserver.ports import Allowance, Broker, Envelope
from tests.conftest import redis_up, require

REDIS_URL = os.environ.get("CHATSERVER_TEST_REDIS", "redis://127.0.0.1:6379/9")
R = RoomId("room-1")
ALEX = Person(ParticipantId("p_alex"), "Alex", "participant")


def msg(seq: int, room: RoomId = R) -> Message:
    return Message(room, seq, MessageId(f"m{seq}"), ALEX, f"hello {seq}", 1000 + seq)


class Inbox:
    def __init__(self) -> None:
        self.got: list[Envelope] = []
        self.changed = asyncio.Condition()

    async def __call__(self, env: Envelope) -> None:
        async with self.changed:
            self.got.append(env)
            self.changed.notify_all()

    async def wait_for(self, n: int) -> list[Envelope]:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: len(self.got) >= n), 5)
        return self.got


@pytest.fixture(params=["memory", "redis"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Broker, Inbox]]:
    inbox = Inbox()
    if request.param == "memory":
        b: Broker = MemoryBroker(history=5)
        await b.start(inbox)
        await b.follow(R)
        yield b, inbox
        await b.close()
        return
    require(await redis_up(REDIS_URL), f"Redis is not reachable at {REDIS_URL}")
    rb = RedisBroker(REDIS_URL, history=5, prefix=f"t{secrets.token_hex(4)}")
    await rb.start(inbox)
    await rb.follow(R)  # this node has members in R: it hears R's traffic
    yield rb, inbox
    await rb.flush_for_tests()
    await rb.close()


async def test_a_node_hears_only_rooms_it_follows_and_every_control_message() -> None:
    """Redis: a node subscribes to the rooms it has members in, and always to control
    messages (room state, presence), so N nodes do not each receive every room."""
    require(await redis_up(REDIS_URL), f"Redis is not reachable at {REDIS_URL}")
    prefix = f"t{secrets.token_hex(4)}"
    here, there = Inbox(), Inbox()
    a = RedisBroker(REDIS_URL, prefix=prefix)
    b = RedisBroker(REDIS_URL, prefix=prefix)
    await a.start(here)
    await b.start(there)
    try:
        other = RoomId("room-2")
        assert await b.follow(other) and not await b.follow(other)
        await a.publish(Envelope(R, msg(1), Audience.MEMBERS, node="a"))  # nobody follows R
        await a.publish(Envelope(other, msg(1, other), Audience.MEMBERS, node="a"))
        await a.publish(Envelope(ALL_ROOMS, Sync(full=True), Audience.MEMBERS, node="a"))
        got = await there.wait_for(2)
        assert [(e.room, type(e.event).__name__) for e in got] == [
            (other, "Message"), (ALL_ROOMS, "Sync")]
        await b.unfollow(other)
        await a.publish(Envelope(other, msg(2, other), Audience.MEMBERS, node="a"))
        await a.publish(Envelope(ALL_ROOMS, Sync(), Audience.MEMBERS, node="a"))
        got = await there.wait_for(3)
        assert [type(e.event).__name__ for e in got[2:]] == ["Sync"]
    finally:
        await a.flush_for_tests()
        await a.close()
        await b.close()


async def test_published_messages_arrive_in_order_and_fill_history(
        broker: tuple[Broker, Inbox]) -> None:
    b, inbox = broker
    for seq in (1, 2, 3):
        await b.publish(Envelope(R, msg(seq), Audience.MEMBERS, node="n1"))
    got = await inbox.wait_for(3)
    assert [getattr(e.event, "seq", None) for e in got] == [1, 2, 3]
    assert got[0].event == msg(1) and got[0].node == "n1"
    history, gap = await b.history(R, None, 10)
    assert [m.seq for m in history] == [1, 2, 3] and not gap
    after, gap = await b.history(R, 1, 10)
    assert [m.seq for m in after] == [2, 3] and not gap


async def test_other_events_arrive_encoded_once(broker: tuple[Broker, Inbox]) -> None:
    b, inbox = broker
    notice = Notice("muted", "You're muted for now.", R)
    await b.publish(Envelope(R, notice, Audience.PARTICIPANT, ParticipantId("p_x"), "n1"))
    (env,) = await inbox.wait_for(1)
    assert env.audience == Audience.PARTICIPANT and env.target == "p_x"
    assert isinstance(env.event, Event) and env.event.to_wire() == notice.to_wire()


async def test_history_is_capped_and_an_old_resume_point_is_a_gap(
        broker: tuple[Broker, Inbox]) -> None:
    b, inbox = broker
    for seq in range(1, 9):
        await b.publish(Envelope(R, msg(seq), Audience.MEMBERS))
    await inbox.wait_for(8)
    kept, _ = await b.history(R, None, 100)
    assert [m.seq for m in kept] == [4, 5, 6, 7, 8]
    missed, gap = await b.history(R, 1, 100)
    assert gap  # seqs 2 and 3 are gone: the client must be told
    assert [m.seq for m in missed] == [4, 5, 6, 7, 8]
    recent, gap = await b.history(R, 5, 100)
    assert [m.seq for m in recent] == [6, 7, 8] and not gap


async def test_publishing_a_message_again_delivers_it_once(
        broker: tuple[Broker, Inbox]) -> None:
    """A node republishes what it is unsure of (a retried send after its first node
    died, a hole filled from the store): nobody may see it twice."""
    b, inbox = broker
    for seq in (1, 2, 2, 1, 3):
        await b.publish(Envelope(R, msg(seq), Audience.MEMBERS))
    await b.publish(Envelope(R, Notice("marker", "end"), Audience.MEMBERS))
    got = await inbox.wait_for(4)
    assert [getattr(e.event, "seq", None) for e in got] == [1, 2, 3, None]
    assert [m.seq for m in (await b.history(R, None, 10))[0]] == [1, 2, 3]


async def test_redact_and_seed(broker: tuple[Broker, Inbox]) -> None:
    b, inbox = broker
    for seq in (1, 2, 3):
        await b.publish(Envelope(R, msg(seq), Audience.MEMBERS))
    await inbox.wait_for(3)
    await b.redact(R, 2)
    assert [m.seq for m in (await b.history(R, None, 10))[0]] == [1, 3]
    other = RoomId("room-2")
    await b.seed(other, [msg(7, other), msg(8, other)])
    assert [m.seq for m in (await b.history(other, 7, 10))[0]] == [8]
    # Seeding again after an outage merges by seq: nothing doubled, nothing published.
    await b.seed(other, [msg(6, other), msg(7, other), msg(8, other)])
    assert [m.seq for m in (await b.history(other, None, 10))[0]] == [6, 7, 8]
    assert len(inbox.got) == 3


async def test_ping(broker: tuple[Broker, Inbox]) -> None:
    assert await broker[0].ping()


def test_envelopes_decode_strictly() -> None:
    env = Envelope(R, msg(1), Audience.MEMBERS, None, "n1")
    assert decode_envelope(encode_envelope(env)) == env
    held = HeldRecord(HeldId("h1"), R, ALEX, MessageId("m1"), "how old are you",
                      (("grooming.age", "grooming"),), 5)
    case = CaseRecord(CaseId("c1"), R, ALEX.id, "Alex", "urgent", "claimed", "note", 6, "u_f",
                      ParticipantId("u_c"), RoomId("c1-room"), None, (msg(1),))
    room = RoomRecord(R, "Room", ("16-17",), "default", "group", True, 30, {"p_x": 99},
                      ("p_y",), True)
    alert = AlertRecord(AlertId("al_1"), R, "risk", ALEX.id, "Alex", "excerpt",
                        (("risk.intent", "risk"),), 7, 3, HeldId("h1"), MessageId("m1"),
                        "acknowledged", Person(ParticipantId("u_f"), "Sam", "facilitator"), 8)
    sync = Sync((room, held, HeldDecided(HeldId("h1")), case, alert), ((R, (ALEX,)),), True,
                (R,), True)
    env = Envelope(ALL_ROOMS, sync, Audience.MEMBERS, None, "n2")
    assert decode_envelope(encode_envelope(env)) == env
    other = decode_envelope(encode_envelope(Envelope(R, Notice("x", "y"), Audience.STAFF)))
    assert other is not None and isinstance(other.event, Encoded)
    for bad in (b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"v": 2}),
                msgpack.packb({"v": 1, "room": 1, "node": "n", "aud": "members",
                               "target": None, "type": "x", "frame": b"{}", "msg": None}),
                msgpack.packb({"v": 1, "room": "r", "node": "n", "aud": "everyone",
                               "target": None, "type": "x", "frame": b"{}", "msg": None}),
                b"\x80" * 300_000,
                msgpack.packb({"v": 1, "room": "r", "node": "n", "aud": "members",
                               "target": None, "type": "sync", "frame": b"", "msg": None,
                               "sync": [[["room", "{}"]], [], False, [], False]}),
                msgpack.packb({"v": 1, "room": "r", "node": "n", "aud": "members",
                               "target": None, "type": "sync", "frame": b"", "msg": None,
                               "sync": [[], [["r", [[1, "n", "participant"]]]], True, [], False]}),
                msgpack.packb({"v": 1, "room": "r", "node": "n", "aud": "members",
                               "target": None, "type": "sync", "frame": b"", "msg": None,
                               "sync": [[], [], False, [], "yes"]})):
        assert decode_envelope(bad) is None


# ------------------------------------------------ attempt budgets (issue 14)
async def test_attempts_are_all_or_nothing_and_end_with_their_window(
        broker: tuple[Broker, Inbox]) -> None:
    b, _ = broker
    tight, wide = Allowance("k:tight", 2, 1000), Allowance("k:wide", 10, 5000)
    assert await b.take_attempts([tight, wide], 0)
    assert await b.take_attempts([tight, wide], 10)
    assert not await b.take_attempts([tight, wide], 20)  # tight is spent...
    assert await b.take_attempts([Allowance("k:wide", 3, 5000)], 30)  # ...wide counted 2
    assert not await b.take_attempts([Allowance("k:wide", 3, 5000)], 40)
    assert await b.take_attempts([tight], 1000)  # a new window, in the caller's clock


async def test_settling_clears_one_key_and_refunds_another(
        broker: tuple[Broker, Inbox]) -> None:
    b, _ = broker
    acct, addr = Allowance("s:acct", 1, 60_000), Allowance("s:addr", 1, 60_000)
    assert await b.take_attempts([acct, addr], 0)
    assert not await b.take_attempts([acct], 1)
    await b.settle_attempts(["s:acct"], ["s:addr", "s:never-seen"])
    assert await b.take_attempts([acct, addr], 2)


async def test_parallel_attempts_never_pass_the_limit(broker: tuple[Broker, Inbox]) -> None:
    b, _ = broker
    got = await asyncio.gather(*[b.take_attempts([Allowance("p:k", 5, 60_000)], 0)
                                 for _ in range(40)])
    assert got.count(True) == 5


async def test_memory_attempt_counters_stay_bounded_under_random_keys() -> None:
    b = MemoryBroker()
    for i in range(50_000):
        await b.take_attempts([Allowance(f"flood:{i}", 5, 1000)], i)
    assert b.attempt_keys() <= 2 * ATTEMPT_SWEEP
