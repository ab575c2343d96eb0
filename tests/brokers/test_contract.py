"""One contract suite for each port, over every implementation: ``Broker`` (memory,
the embedded one; Redis, the cluster's) and ``ClusterState`` (likewise).

Redis runs at 127.0.0.1:6379; tests use database 9 and a key prefix of their own, and
delete their keys after. Without Redis the redis cases skip with a reason, or fail in CI.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator

import pytest

from chatserver.brokers.memory import MemoryBroker
from chatserver.brokers.memory_state import SWEEP_EVERY, MemoryClusterState
from chatserver.brokers.redis import RedisBroker
from chatserver.brokers.redis_state import RedisClusterState
from chatserver.core.effects import ALL_ROOMS, Audience
from chatserver.core.events import Event, Message, Notice, Person
from chatserver.core.ids import MessageId, ParticipantId, RoomId
from chatserver.core.roles import Role
from chatserver.core.sync import Sync
from chatserver.ports import Allowance, Broker, BrokerError, ClusterState, Envelope
from tests.conftest import forget_redis_prefix, redis_up, require
from tests.faults.test_restart import free_port

REDIS_URL = os.environ.get("CHATSERVER_TEST_REDIS", "redis://127.0.0.1:6379/9")
R = RoomId("room-1")
ALEX = Person(ParticipantId("p_alex"), "Alex", Role.PARTICIPANT)


def msg(seq: int, room: RoomId = R) -> Message:
    return Message(room, seq, MessageId(f"m{seq}"), ALEX, f"hello {seq}", 1000 + seq)


def seqs(envelopes: list[Envelope]) -> list[int | None]:
    return [getattr(e.event, "seq", None) for e in envelopes]


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
    prefix = f"t{secrets.token_hex(4)}"
    rb = RedisBroker(REDIS_URL, history=5, prefix=prefix)
    await rb.start(inbox)
    await rb.follow(R)  # this node has members in R: it hears R's traffic
    yield rb, inbox
    await rb.close()
    await forget_redis_prefix(REDIS_URL, prefix)


@pytest.fixture(params=["memory", "redis"])
async def counts(request: pytest.FixtureRequest) -> AsyncIterator[ClusterState]:
    if request.param == "memory":
        state: ClusterState = MemoryClusterState()
        yield state
        await state.close()
        return
    require(await redis_up(REDIS_URL), f"Redis is not reachable at {REDIS_URL}")
    prefix = f"t{secrets.token_hex(4)}"
    state = RedisClusterState(REDIS_URL, prefix=prefix)
    yield state
    await state.close()
    await forget_redis_prefix(REDIS_URL, prefix)


# ============================================================== Broker
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
        # UNSUBSCRIBE is sent, not yet confirmed: wait until Redis counts no subscriber
        # on the room's channel (a publish before that may still reach b).
        for _ in range(500):  # polling Redis itself: there is no event to wait on
            if not (await a.redis.pubsub_numsub(b._channel(other)))[0][1]:
                break
            await asyncio.sleep(0.01)
        await a.publish(Envelope(other, msg(2, other), Audience.MEMBERS, node="a"))
        await a.publish(Envelope(ALL_ROOMS, Sync(), Audience.MEMBERS, node="a"))
        got = await there.wait_for(3)
        assert [type(e.event).__name__ for e in got[2:]] == ["Sync"]
    finally:
        await a.close()
        await b.close()
        await forget_redis_prefix(REDIS_URL, prefix)


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


async def test_started_it_is_ready_and_answers(broker: tuple[Broker, Inbox]) -> None:
    b, _ = broker
    assert b.ready() and await b.ping()
    assert b.shared == isinstance(b, RedisBroker)  # only a cluster has other nodes


async def test_the_last_messages_without_a_resume_point(broker: tuple[Broker, Inbox]) -> None:
    b, inbox = broker
    for seq in (1, 2, 3, 4):
        await b.publish(Envelope(R, msg(seq), Audience.MEMBERS))
    await inbox.wait_for(4)
    last, gap = await b.history(R, None, 2)
    assert [m.seq for m in last] == [3, 4] and not gap
    assert await b.history(RoomId("room-never-used"), None, 5) == ([], False)


async def test_a_late_seq_takes_its_place_in_history_and_is_delivered(
        broker: tuple[Broker, Inbox]) -> None:
    """A node fills a hole from the store (its first node died between commit and
    publish) after later seqs went out: the late one is still delivered and kept."""
    b, inbox = broker
    for seq in (1, 3, 2):
        await b.publish(Envelope(R, msg(seq), Audience.MEMBERS))
    assert seqs(await inbox.wait_for(3)) == [1, 3, 2]  # the node's Sequencer reorders
    assert [m.seq for m in (await b.history(R, None, 10))[0]] == [1, 2, 3]


async def test_a_seq_older_than_a_full_history_is_neither_kept_nor_delivered(
        broker: tuple[Broker, Inbox]) -> None:
    b, inbox = broker
    for seq in (3, 4, 5, 6, 7, 2):
        await b.publish(Envelope(R, msg(seq), Audience.MEMBERS))
    await b.publish(Envelope(R, Notice("marker", "end"), Audience.MEMBERS))
    assert seqs(await inbox.wait_for(6)) == [3, 4, 5, 6, 7, None]
    assert [m.seq for m in (await b.history(R, None, 10))[0]] == [3, 4, 5, 6, 7]


async def test_control_envelopes_reach_the_node_tagged_with_their_sender(
        broker: tuple[Broker, Inbox]) -> None:
    b, inbox = broker
    await b.publish(Envelope(ALL_ROOMS, Sync(full=True), Audience.MEMBERS, None, "n2"))
    await b.publish(Envelope(ALL_ROOMS, Notice("all", "to every room"), Audience.STAFF,
                             None, "n2"))
    first, second = await inbox.wait_for(2)
    assert first == Envelope(ALL_ROOMS, Sync(full=True), Audience.MEMBERS, None, "n2")
    assert second.room == ALL_ROOMS and second.audience == Audience.STAFF
    assert isinstance(second.event, Event) and second.node == "n2"


async def test_following_a_room_twice_is_following_it_once(
        broker: tuple[Broker, Inbox]) -> None:
    """``follow`` is True only when the room is newly heard: a cluster node hears only
    the rooms it follows; one process hears every room already (never newly)."""
    b, inbox = broker
    other = RoomId("room-2")
    assert await b.follow(other) == b.shared
    assert not await b.follow(other)
    await b.publish(Envelope(other, msg(1, other), Audience.MEMBERS))
    assert seqs(await inbox.wait_for(1)) == [1]
    await b.unfollow(other)
    await b.unfollow(other)  # unfollowing what is not followed is nothing
    assert await b.follow(other) == b.shared  # heard again (a cluster: from now on)


async def test_after_resubscribing_every_followed_room_is_heard(
        broker: tuple[Broker, Inbox]) -> None:
    b, inbox = broker
    if isinstance(b, RedisBroker):
        reset = asyncio.Event()
        b.on_reset = reset.set  # the server resyncs here: the subscription is back
        await b.resubscribe()
        await asyncio.wait_for(reset.wait(), 5)
    else:
        await b.resubscribe()
    assert b.ready()
    await b.publish(Envelope(R, msg(1), Audience.MEMBERS))
    await b.publish(Envelope(ALL_ROOMS, Sync(), Audience.MEMBERS))
    assert seqs(await inbox.wait_for(2)) == [1, None]


async def test_seeding_more_than_history_holds_keeps_the_newest_and_tells_a_gap(
        broker: tuple[Broker, Inbox]) -> None:
    b, inbox = broker
    other = RoomId("room-2")
    await b.seed(other, [msg(seq, other) for seq in range(1, 9)])
    kept, gap = await b.history(other, 1, 100)
    assert [m.seq for m in kept] == [4, 5, 6, 7, 8] and gap
    kept, gap = await b.history(other, 3, 100)
    assert [m.seq for m in kept] == [4, 5, 6, 7, 8] and not gap
    await b.seed(other, [])
    assert inbox.got == []  # seeding publishes nothing


async def test_a_redis_outage_raises_instead_of_dropping() -> None:
    """Nothing listens at the address (Redis down): every call that needs Redis raises
    ``BrokerError`` at once, and nothing claims to be ready."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    b = RedisBroker(url, timeout_s=0.5)
    state = RedisClusterState(url, timeout_s=0.5)
    try:
        assert not b.ready() and not await b.ping()
        for call in (b.publish(Envelope(R, msg(1), Audience.MEMBERS)),
                     b.publish(Envelope(ALL_ROOMS, Sync(), Audience.MEMBERS)),
                     b.history(R, None, 5), b.history(R, 1, 5), b.redact(R, 1),
                     b.seed(R, [msg(1)]),
                     state.take_attempts([Allowance("k", 1, 1000)], 0),
                     state.settle_attempts(["k"], []),
                     state.take_budget("p", "m1", 5, 1000, 0),
                     state.count_socket("n1", "p", 1, 1000), state.keep_sockets("n1", 1000),
                     state.sockets_elsewhere("p", ["n2"])):
            with pytest.raises(BrokerError):
                await call
        assert await b.follow(R)  # taken when the subscriber reconnects
    finally:
        await b.close()
        await state.close()


# ============================================================== ClusterState
# ------------------------------------------------ attempt budgets (issue 14)
async def test_attempts_are_all_or_nothing_and_end_with_their_window(
        counts: ClusterState) -> None:
    b = counts
    tight, wide = Allowance("k:tight", 2, 1000), Allowance("k:wide", 10, 5000)
    assert await b.take_attempts([tight, wide], 0)
    assert await b.take_attempts([tight, wide], 10)
    assert not await b.take_attempts([tight, wide], 20)  # tight is spent...
    assert await b.take_attempts([Allowance("k:wide", 3, 5000)], 30)  # ...wide counted 2
    assert not await b.take_attempts([Allowance("k:wide", 3, 5000)], 40)
    assert await b.take_attempts([tight], 1000)  # a new window, in the caller's clock


async def test_settling_clears_one_key_and_refunds_another(counts: ClusterState) -> None:
    b = counts
    acct, addr = Allowance("s:acct", 1, 60_000), Allowance("s:addr", 1, 60_000)
    assert await b.take_attempts([acct, addr], 0)
    assert not await b.take_attempts([acct], 1)
    await b.settle_attempts(["s:acct"], ["s:addr", "s:never-seen"])
    assert await b.take_attempts([acct, addr], 2)


async def test_parallel_attempts_never_pass_the_limit(counts: ClusterState) -> None:
    b = counts
    got = await asyncio.gather(*[b.take_attempts([Allowance("p:k", 5, 60_000)], 0)
                                 for _ in range(40)])
    assert got.count(True) == 5


# ------------------------------------------------ send budgets (FL-03)
async def test_the_send_budget_is_a_sliding_window_and_a_resend_is_free(
        counts: ClusterState) -> None:
    b = counts
    assert [await b.take_budget("p_a", f"m{i}", 3, 1000, t)
            for i, t in enumerate((0, 10, 20, 30))] == [True, True, True, False]
    assert await b.take_budget("p_a", "m1", 3, 1000, 40)  # already counted: free
    assert await b.take_budget("p_b", "m0", 3, 1000, 40)  # another person's own budget
    assert not await b.take_budget("p_a", "m4", 3, 1000, 999)
    assert await b.take_budget("p_a", "m4", 3, 1000, 1000)  # m0 (at 0) has left
    assert not await b.take_budget("p_a", "m5", 3, 1000, 1000)


async def test_parallel_sends_never_pass_the_budget(counts: ClusterState) -> None:
    got = await asyncio.gather(*[counts.take_budget("p_x", f"m{i}", 5, 10_000, 0)
                                 for i in range(40)])
    assert got.count(True) == 5


# ------------------------------------------------ sockets per person (SEC-19)
async def test_socket_counts_are_per_node_and_summed_over_the_nodes_asked(
        counts: ClusterState) -> None:
    b, expiry = counts, 60_000
    await b.count_socket("n1", "p_a", 1, expiry)
    await b.count_socket("n1", "p_a", 1, expiry)
    await b.count_socket("n2", "p_a", 1, expiry)
    await b.count_socket("n2", "p_b", 1, expiry)
    assert await b.sockets_elsewhere("p_a", ["n1"]) == 2
    assert await b.sockets_elsewhere("p_a", ["n1", "n2", "n3"]) == 3
    assert await b.sockets_elsewhere("p_a", []) == 0
    await b.keep_sockets("n1", expiry)  # a heartbeat keeps every count
    await b.count_socket("n1", "p_a", -2, expiry)
    assert await b.sockets_elsewhere("p_a", ["n1", "n2"]) == 1
    await b.count_socket("n2", "p_b", -2, expiry)  # one too many closes: never below 0
    await b.count_socket("n2", "p_b", 1, expiry)
    assert await b.sockets_elsewhere("p_b", ["n2"]) == 1


async def test_redis_socket_counts_expire_with_their_node_unless_kept() -> None:
    """A killed node sends no heartbeat: its counts go once ``expiry_ms`` passes. Read
    from the key's time to live, so nothing waits for it."""
    require(await redis_up(REDIS_URL), f"Redis is not reachable at {REDIS_URL}")
    prefix = f"t{secrets.token_hex(4)}"
    state = RedisClusterState(REDIS_URL, prefix=prefix)
    try:
        await state.count_socket("n1", "p_a", 1, 60_000)
        assert 0 < await state.redis.pttl(f"{prefix}:socks:n1") <= 60_000
        await state.keep_sockets("n1", 600_000)
        assert 60_000 < await state.redis.pttl(f"{prefix}:socks:n1") <= 600_000
        await state.count_socket("n1", "p_a", -1, 600_000)
        assert await state.redis.exists(f"{prefix}:socks:n1") == 0  # nobody left
    finally:
        await state.close()
        await forget_redis_prefix(REDIS_URL, prefix)


async def test_memory_windows_stay_bounded_under_random_keys() -> None:
    b = MemoryClusterState()
    for i in range(50_000):
        await b.take_attempts([Allowance(f"flood:{i}", 5, 1000)], i)
        await b.take_budget(f"p_{i}", "m", 5, 1000, i)
    stats = b.statistics()
    assert stats.attempt_windows <= 2 * SWEEP_EVERY and stats.send_windows <= 2 * SWEEP_EVERY
