"""One contract suite for every Store: SQLite (embedded) and PostgreSQL (cluster).

PostgreSQL runs at 127.0.0.1:5432 (database `test`); each test gets a schema of its own
and drops it. Without PostgreSQL the postgres cases skip with a reason, or fail in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatserver.core.audit import AuditAction
from chatserver.core.commands import Urgency
from chatserver.core.effects import (
    AlertRecord,
    AuditEntry,
    CaseRecord,
    HeldDecided,
    HeldRecord,
    RedactRecord,
    RoomRecord,
)
from chatserver.core.events import Message, Person
from chatserver.core.ids import AlertId, CaseId, HeldId, MessageId, ParticipantId, RoomId
from chatserver.core.roles import Role
from chatserver.core.vocabulary import AlertStatus, CaseStatus, RoomKind
from chatserver.ports import Store, StoreError, UserRow
from chatserver.stores.postgres import PostgresStore
from chatserver.stores.sqlite import SqliteStore
from tests.conftest import require

PG_DSN = os.environ.get("CHATSERVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
ALEX = Person(ParticipantId("p_alex"), "Alex", Role.PARTICIPANT)


def room(rid: str) -> RoomRecord:
    return RoomRecord(RoomId(rid), rid.title(), ("16-17",), "default", RoomKind.GROUP, False, 0, {},
                      (), True)


def audit(action: str = "message.allow", room_id: str = "a", ts: int = 1) -> AuditEntry:
    return AuditEntry(ts, RoomId(room_id), "p_alex", AuditAction(action), None, {"rules": []}, "v1")


async def _pg_available() -> bool:
    import asyncpg
    try:
        conn = await asyncio.wait_for(asyncpg.connect(PG_DSN), 3)
    except Exception:
        return False
    await conn.close()
    return True


async def _open(kind: str, tmp_path: Path, schema: str) -> Store:
    if kind == "sqlite":
        store: Store = SqliteStore(tmp_path / "chat.db")
    else:
        store = PostgresStore(PG_DSN, schema)
    await store.open()
    return store


@pytest.fixture(params=["sqlite", "postgres"])
async def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        require(await _pg_available(), f"PostgreSQL is not reachable at {PG_DSN}")
    return str(request.param)


@pytest.fixture
async def store(kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    schema = f"t_{secrets.token_hex(6)}"
    s = await _open(kind, tmp_path, schema)
    await s.apply([room("a"), room("b")])
    yield s
    await s.close()
    if kind == "postgres":
        import asyncpg
        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def test_seq_is_per_room_consecutive_and_idempotent(store: Store) -> None:
    seqs = [await store.append_message(RoomId("a"), ALEX, MessageId(f"m{i}"), "hi", i,
                                       audit()) for i in range(3)]
    assert seqs == [(1, True), (2, True), (3, True)]
    assert await store.append_message(RoomId("b"), ALEX, MessageId("m0"), "hi", 9,
                                      audit(room_id="b")) == (1, True)
    # The same sender resending the same id gets the original seq, and nothing new.
    assert await store.append_message(RoomId("a"), ALEX, MessageId("m1"), "hi", 5,
                                      audit()) == (2, False)
    msgs = await store.recent_messages(RoomId("a"), 10)
    assert [m.seq for m in msgs] == [1, 2, 3]
    entries = await store.audit("a", 0, 100)
    assert [e.detail["seq"] for e in entries] == [1, 2, 3]


async def test_concurrent_senders_get_unique_consecutive_seqs(store: Store) -> None:
    people = [Person(ParticipantId(f"p{i}"), f"P{i}", Role.PARTICIPANT) for i in range(20)]
    results = await asyncio.gather(*(
        store.append_message(RoomId("a"), p, MessageId("x"), "hi", 1, audit())
        for p in people))
    assert sorted(seq for seq, _ in results) == list(range(1, 21))


async def test_a_resend_racing_its_original_gets_the_same_seq(store: Store) -> None:
    first, again = await asyncio.gather(
        store.append_message(RoomId("a"), ALEX, MessageId("x"), "hi", 1, audit()),
        store.append_message(RoomId("a"), ALEX, MessageId("x"), "hi", 1, audit()))
    assert {first, again} == {(1, True), (1, False)}
    assert len(await store.recent_messages(RoomId("a"), 10)) == 1


@contextlib.asynccontextmanager
async def _two_nodes() -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one schema, as two nodes of a cluster see PostgreSQL."""
    require(await _pg_available(), f"PostgreSQL is not reachable at {PG_DSN}")
    schema = f"t_{secrets.token_hex(6)}"
    a, b = PostgresStore(PG_DSN, schema), PostgresStore(PG_DSN, schema)
    await a.open()
    await b.open()
    try:
        await a.apply([room("a"), room("b")])
        yield a, b
    finally:
        await a.close()
        await b.close()
        import asyncpg
        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def test_nodes_starting_together_on_a_fresh_schema_all_open() -> None:
    """A cluster's nodes start at once: creating the schema must not deadlock one of
    them (it did: "deadlock detected", and that node never served)."""
    require(await _pg_available(), f"PostgreSQL is not reachable at {PG_DSN}")
    schema = f"t_{secrets.token_hex(6)}"
    stores = [PostgresStore(PG_DSN, schema) for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        await stores[0].apply([room("a")])
        assert [len(await s.recent_messages(RoomId("a"), 10)) for s in stores] == [0] * 4
    finally:
        for s in stores:
            await s.close()
        import asyncpg
        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


async def test_two_nodes_on_one_postgresql_share_seq_and_one_audit_chain() -> None:
    """The cluster: two stores (two nodes) append to the same rooms at once."""
    from chatserver.auditchain import verify
    async with _two_nodes() as (a, b):
        people = [Person(ParticipantId(f"p{i}"), f"P{i}", Role.PARTICIPANT) for i in range(40)]
        results = await asyncio.gather(*(
            (a if i % 2 else b).append_message(RoomId("ab"[i % 4 // 2]), p, MessageId("x"),
                                               "hi", i, audit(room_id="ab"[i % 4 // 2]))
            for i, p in enumerate(people)))
        assert all(new for _, new in results)
        for rid in ("a", "b"):
            seqs = [m.seq for m in await a.recent_messages(RoomId(rid), 100)]
            assert seqs == list(range(1, 21))
        chain = await b.audit_chain()
        assert len(chain) == 40 and verify(chain) == (40, None)


async def test_the_same_send_reaching_two_nodes_at_once_fails_nobody_else() -> None:
    """One participant's resend lands on two nodes at the same instant, each in a batch
    with other people's messages: every send is stored once, none is refused."""
    async with _two_nodes() as (a, b):
        others = [Person(ParticipantId(f"p{i}"), f"P{i}", Role.PARTICIPANT) for i in range(8)]
        for round_ in range(5):
            mid = MessageId(f"dup{round_}")
            results = await asyncio.gather(
                a.append_message(RoomId("a"), ALEX, mid, "hi", 1, audit()),
                b.append_message(RoomId("a"), ALEX, mid, "hi", 1, audit()),
                *((a if i % 2 else b).append_message(RoomId("a"), p, mid, "x", 1, audit())
                  for i, p in enumerate(others)))
            first, again = results[0], results[1]
            assert first[0] == again[0] and {first[1], again[1]} == {True, False}
            assert all(new for _, new in results[2:])
        seqs = [m.seq for m in await a.recent_messages(RoomId("a"), 1000)]
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == 5 * 9


async def test_seq_is_never_reused_after_reopening(kind: str, tmp_path: Path) -> None:
    schema = f"t_{secrets.token_hex(6)}"
    first = await _open(kind, tmp_path, schema)
    await first.apply([room("a")])
    for i in range(3):
        await first.append_message(RoomId("a"), ALEX, MessageId(f"m{i}"), "hi", i, audit())
    await first.close()
    again = await _open(kind, tmp_path, schema)
    try:
        seq, _ = await again.append_message(RoomId("a"), ALEX, MessageId("n"), "hi", 9,
                                            audit())
        assert seq == 4
    finally:
        await again.close()


async def test_records_round_trip(store: Store) -> None:
    held = HeldRecord(HeldId("h1"), RoomId("a"), ALEX, MessageId("m1"), "how old are you",
                      (("grooming.age", "grooming"),), 5)
    case = CaseRecord(CaseId("c1"), RoomId("a"), ALEX.id, "Alex", Urgency.URGENT, CaseStatus.OPEN,
                      "note", 6,
                      "u_fac")
    muted = RoomRecord(RoomId("a"), "A", ("16-17",), "default", RoomKind.GROUP, True, 30,
                       {"p_x": 99}, ("p_y",), True)
    await store.apply([held, case, muted])
    assert await store.held() == [held]
    assert await store.cases() == [case]
    rooms = {r.id: r for r in await store.rooms()}
    assert rooms[RoomId("a")] == muted
    await store.apply([HeldDecided(HeldId("h1"))])
    assert await store.held() == []


FAC = Person(ParticipantId("u_fac"), "Sam", Role.FACILITATOR)


def alert_record(ts: int, alert_id: str = "al_1") -> AlertRecord:
    return AlertRecord(AlertId(alert_id), RoomId("a"), "risk", ALEX.id, "Alex",
                       "i want to end it", (("risk.intent", "risk"),), ts,
                       held=HeldId("h1"), message=MessageId("m1"))


async def test_alerts_are_kept_until_resolved_with_who_acknowledged_them(
        store: Store) -> None:
    """Issue 16: the backlog survives a restart; resolved alerts leave it."""
    first, second = alert_record(5), alert_record(3, "al_0")
    await store.apply([first, second])
    assert await store.alerts() == [second, first]  # oldest first
    acked = dataclasses.replace(first, status=AlertStatus.ACKNOWLEDGED, acknowledged_by=FAC,
                                acknowledged_ts=9, seq=4)
    await store.apply([acked, audit("alert_ack")])
    assert await store.alerts() == [second, acked]
    await store.apply([dataclasses.replace(second, status=AlertStatus.RESOLVED, resolved_by=FAC,
                                           resolved_ts=10)])
    assert await store.alerts() == [acked]


async def test_a_case_is_claimed_once(store: Store) -> None:
    """Two counsellors on two nodes claim at once: the second claim is refused, and
    nothing of its transaction is written."""
    from chatserver.ports import StoreConflict
    case = CaseRecord(CaseId("c1"), RoomId("a"), ALEX.id, "Alex", Urgency.URGENT, CaseStatus.OPEN,
                      "", 6,
                      "u_fac")
    await store.apply([case])
    first = dataclasses.replace(case, status=CaseStatus.CLAIMED, counsellor=ParticipantId("u_one"),
                                private_room=RoomId("c1-room"))
    await store.apply([first, audit("claim")])
    second = dataclasses.replace(first, counsellor=ParticipantId("u_two"))
    with pytest.raises(StoreConflict):
        await store.apply([room("c1-room"), second, audit("claim")])
    assert await store.cases() == [first]
    assert [e.action for e in await store.audit(None, 0, 10)] == ["claim"]
    assert RoomId("c1-room") not in {r.id for r in await store.rooms()}


async def test_redacted_messages_leave_history(store: Store) -> None:
    for i in range(3):
        await store.append_message(RoomId("a"), ALEX, MessageId(f"m{i}"), f"t{i}", i, audit())
    await store.apply([RedactRecord(RoomId("a"), 2)])
    assert [m.text for m in await store.recent_messages(RoomId("a"), 10)] == ["t0", "t2"]


async def test_messages_between_fills_a_hole_oldest_first(store: Store) -> None:
    for i in range(5):
        await store.append_message(RoomId("a"), ALEX, MessageId(f"m{i}"), f"t{i}", i, audit())
    await store.apply([RedactRecord(RoomId("a"), 3)])
    between = await store.messages_between(RoomId("a"), 1, 5)
    assert [(m.seq, m.text) for m in between] == [(2, "t1"), (4, "t3")]
    assert await store.messages_between(RoomId("b"), 0, 10) == []


async def test_audit_is_oldest_first_filtered_and_limited(store: Store) -> None:
    await store.apply([audit("mute", "a", 10), audit("pause", "b", 20),
                       audit("resume", "a", 30)])
    assert [e.action for e in await store.audit(None, 0, 10)] == ["mute", "pause", "resume"]
    assert [e.action for e in await store.audit("a", 0, 10)] == ["mute", "resume"]
    assert [e.action for e in await store.audit(None, 15, 10)] == ["pause", "resume"]
    assert [e.action for e in await store.audit(None, 0, 1)] == ["mute"]
    # By action (GET /api/audit?action=, GET /api/feedback), with room and since too.
    assert [e.ts for e in await store.audit(None, 0, 10, action="resume")] == [30]
    assert [e.ts for e in await store.audit("b", 0, 10, action="mute")] == []
    assert [e.ts for e in await store.audit("a", 15, 10, action="resume")] == [30]


async def test_users(store: Store) -> None:
    await store.add_user(UserRow("u1", "sam", "facilitator", "hash", False))
    assert (await store.user("sam")) == UserRow("u1", "sam", "facilitator", "hash", False)
    assert (await store.user_by_id("u1")) is not None
    assert await store.set_disabled("sam", True)
    assert (await store.user("sam")).disabled  # type: ignore[union-attr]
    assert not await store.set_disabled("nobody", True)
    assert [u.username for u in await store.users()] == ["sam"]


async def test_sqlite_disk_full_rolls_back_everything_and_recovers(tmp_path: Path) -> None:
    """SECURITY.md F-10: SQLITE_FULL fails the write whole; raising the limit recovers."""
    store = SqliteStore(tmp_path / "chat.db")
    await store.open()
    try:
        await store.apply([room("a")])
        await store.append_message(RoomId("a"), ALEX, MessageId("m0"), "before", 1, audit())
        [(pages,)] = await store.execute("PRAGMA page_count")
        assert isinstance(pages, int)
        await store.execute(f"PRAGMA max_page_count={pages + 1}")
        with pytest.raises(StoreError):
            for i in range(200):
                await store.append_message(RoomId("a"), ALEX, MessageId(f"big{i}"),
                                           "x" * 2000, 2, audit())
        msgs = await store.recent_messages(RoomId("a"), 1000)
        entries = await store.audit("a", 0, 1000)
        assert len(msgs) == len(entries)  # every message has its audit entry, nothing half
        await store.execute("PRAGMA max_page_count=1073741823")
        seq, new = await store.append_message(RoomId("a"), ALEX, MessageId("after"), "ok", 3,
                                              audit())
        assert new and seq == len(msgs) + 1  # no seq lost or reused by the failed writes
        assert await store.execute("PRAGMA integrity_check") == [("ok",)]
    finally:
        await store.close()



@pytest.mark.parametrize(("setting", "pragma"), [("normal", 1), ("full", 2)])
async def test_sqlite_synchronous_is_the_configured_one(tmp_path: Path, setting: str,
                                                        pragma: int) -> None:
    """``store.sqlite_synchronous``: what the connection that commits actually runs with."""
    store = SqliteStore(tmp_path / "chat.db", synchronous=setting)
    await store.open()
    try:
        assert await store.execute("PRAGMA synchronous") == [(pragma,)]
        assert await store.execute("PRAGMA journal_mode") == [("wal",)]
    finally:
        await store.close()
    with pytest.raises(ValueError, match="off"):
        SqliteStore(tmp_path / "chat.db", synchronous="off")


async def test_retention_purges_each_class_and_keeps_the_chain_whole(store: Store) -> None:
    """SG-09/SG-24 with an injected clock: before its cutoff a record stays, after it the
    text (or the record) goes; dry runs change nothing; `audit verify` still passes."""
    from chatserver.auditchain import verify
    from chatserver.ports import Cutoffs

    day = 86_400_000
    blocked = AuditEntry(10 * day, RoomId("a"), "p_alex", AuditAction.MESSAGE_BLOCK, "m9",
                         {"rules": ["contact.phone"]}, "v1", text="call me on 07700 900 123")
    await store.append_message(RoomId("a"), ALEX, MessageId("old"), "old news", 10 * day,
                               audit())
    await store.append_message(RoomId("a"), ALEX, MessageId("new"), "recent", 100 * day,
                               audit())
    held = HeldRecord(HeldId("h1"), RoomId("a"), ALEX, MessageId("m1"), "how old are you",
                      (("grooming.age", "grooming"),), 10 * day)
    closed = CaseRecord(CaseId("c1"), RoomId("a"), ALEX.id, "Alex", Urgency.URGENT,
                        CaseStatus.CLOSED, "n",
                        10 * day, "u_fac", outcome="referred")
    resolved = dataclasses.replace(alert_record(10 * day), status=AlertStatus.RESOLVED,
                                   resolved_by=FAC, resolved_ts=10 * day)
    still_open = alert_record(10 * day, "al_open")
    await store.apply([blocked, held, HeldDecided(HeldId("h1")), closed, resolved,
                       still_open])
    assert [r.text for r in await store.audit_chain() if r.text] == [blocked.text]

    early = Cutoffs(messages=5 * day, audit_text=5 * day, cases=5 * day)
    assert await store.purge(early, dry_run=False) == {
        "messages": 0, "audit_text": 0, "held": 0, "cases": 0, "alerts": 0}
    late = Cutoffs(messages=50 * day, audit_text=50 * day, cases=50 * day)
    planned = await store.purge(late, dry_run=True)
    assert planned == {"messages": 1, "audit_text": 1, "held": 1, "cases": 1, "alerts": 1}
    assert len(await store.recent_messages(RoomId("a"), 10)) == 2  # dry run: unchanged
    assert await store.purge(late, dry_run=False) == planned
    assert [m.text for m in await store.recent_messages(RoomId("a"), 10)] == ["recent"]
    assert await store.cases() == []
    assert await store.alerts() == [still_open]  # an unresolved alert is never purged
    chain = await store.audit_chain()
    assert all(r.text is None for r in chain)
    assert any(r.action == "message.block" for r in chain)  # the entry itself stays
    assert verify(chain) == (len(chain), None)
    # A seq is never reused, even after the history that held it is gone.
    assert (await store.append_message(RoomId("a"), ALEX, MessageId("n3"), "x", 101 * day,
                                       audit()))[0] == 3


async def test_audit_verify_catches_edited_text(store: Store) -> None:
    from chatserver.auditchain import verify

    await store.apply([AuditEntry(1, RoomId("a"), "p_alex", AuditAction.MESSAGE_HOLD, "m1", {},
                                  "v1",
                                  text="the original words")])
    chain = await store.audit_chain()
    assert verify(chain)[1] is None
    import dataclasses
    tampered = [dataclasses.replace(r, text="edited") if r.text else r for r in chain]
    assert verify(tampered)[1] is not None


async def test_an_approval_is_decided_and_delivered_in_one_write(store: Store) -> None:
    held = HeldRecord(HeldId("h1"), RoomId("a"), ALEX, MessageId("m1"), "how old are you",
                      (("grooming.age", "grooming"),), 5)
    await store.apply([held])
    approve = AuditEntry(6, RoomId("a"), "u_fac", AuditAction.APPROVE, ALEX.id, {"held": "h1"},
                         "v1")
    seq, new = await store.append_message(RoomId("a"), ALEX, MessageId("m1"), held.text, 6,
                                          approve, also=[HeldDecided(HeldId("h1"))])
    assert (seq, new) == (1, True)
    assert await store.held() == []
    assert [m.text for m in await store.recent_messages(RoomId("a"), 10)] == [held.text]


# ------------------------------------------------------------------------------------
# Every Store method, on both stores. The cases marked "drift" once behaved differently
# on SQLite and PostgreSQL.


async def test_ping_is_true_while_open_and_false_once_closed(kind: str,
                                                             tmp_path: Path) -> None:
    schema = f"t_{secrets.token_hex(6)}"
    store = await _open(kind, tmp_path, schema)
    assert await store.ping()
    await store.close()
    assert not await store.ping()


async def test_reopening_keeps_every_record(kind: str, tmp_path: Path) -> None:
    """open/close: what was durable when a write returned is there after a restart."""
    schema = f"t_{secrets.token_hex(6)}"
    held = HeldRecord(HeldId("h1"), RoomId("a"), ALEX, MessageId("m1"), "how old are you",
                      (("grooming.age", "grooming"),), 5)
    case = CaseRecord(CaseId("c1"), RoomId("a"), ALEX.id, "Alex", Urgency.URGENT, CaseStatus.OPEN,
                      "n", 6,
                      "u_fac")
    alert = alert_record(7)
    user = UserRow("u1", "sam", "facilitator", "hash", False, display_name="Sam")
    first = await _open(kind, tmp_path, schema)
    await first.apply([room("a"), held, case, alert, audit("mute", ts=8)])
    await first.append_message(RoomId("a"), ALEX, MessageId("m0"), "hello", 9, audit(ts=9))
    await first.add_user(user)
    chain = await first.audit_chain()
    await first.close()
    again = await _open(kind, tmp_path, schema)
    try:
        assert await again.rooms() == [room("a")]
        assert await again.held() == [held]
        assert await again.cases() == [case]
        assert await again.alerts() == [alert]
        assert [m.text for m in await again.recent_messages(RoomId("a"), 10)] == ["hello"]
        assert await again.users() == [user]
        assert await again.audit_chain() == chain
        # The chain goes on from where it was: a restart starts no new chain.
        await again.apply([audit("pause", ts=10)])
        from chatserver.auditchain import verify
        assert verify(await again.audit_chain()) == (3, None)
    finally:
        await again.close()
        if kind == "postgres":
            import asyncpg
            conn = await asyncpg.connect(PG_DSN)
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
            await conn.close()


async def test_recent_messages_are_the_last_ones_oldest_first(store: Store) -> None:
    for i in range(5):
        await store.append_message(RoomId("a"), ALEX, MessageId(f"m{i}"), f"t{i}", 10 + i,
                                   audit())
    recent = await store.recent_messages(RoomId("a"), 2)
    assert recent == [Message(RoomId("a"), 4, MessageId("m3"), ALEX, "t3", 13),
                      Message(RoomId("a"), 5, MessageId("m4"), ALEX, "t4", 14)]
    assert await store.recent_messages(RoomId("b"), 10) == []


async def test_a_stored_resend_keeps_the_original_text_and_writes_no_audit(
        store: Store) -> None:
    await store.append_message(RoomId("a"), ALEX, MessageId("m1"), "first", 1, audit())
    again = await store.append_message(RoomId("a"), ALEX, MessageId("m1"), "changed", 2,
                                       audit("message.mask"))
    assert again == (1, False)
    assert [m.text for m in await store.recent_messages(RoomId("a"), 10)] == ["first"]
    assert [e.action for e in await store.audit(None, 0, 10)] == ["message.allow"]


async def test_a_message_and_everything_with_it_are_one_write(store: Store) -> None:
    """``also`` is in the message's transaction: a refused claim in it stores nothing of
    the message, its seq or its audit entries."""
    from chatserver.ports import StoreConflict
    case = CaseRecord(CaseId("c1"), RoomId("a"), ALEX.id, "Alex", Urgency.URGENT,
                      CaseStatus.CLOSED, "", 6,
                      "u_fac")
    await store.apply([case])
    claim = dataclasses.replace(case, status=CaseStatus.CLAIMED, counsellor=ParticipantId("u_one"))
    with pytest.raises(StoreConflict):
        await store.append_message(RoomId("a"), ALEX, MessageId("m1"), "hi", 1, audit(),
                                   also=[audit("claim"), claim])
    assert await store.recent_messages(RoomId("a"), 10) == []
    assert await store.audit(None, 0, 10) == []
    assert await store.cases() == [case]
    assert await store.append_message(RoomId("a"), ALEX, MessageId("m2"), "hi", 2,
                                      audit()) == (1, True)


async def test_rerecording_a_room_keeps_its_seq(kind: str, tmp_path: Path) -> None:
    """A room's record changes (paused, muted): its seq counter is not reset, not even
    after a restart."""
    schema = f"t_{secrets.token_hex(6)}"
    store = await _open(kind, tmp_path, schema)
    try:
        await store.apply([room("a")])
        await store.append_message(RoomId("a"), ALEX, MessageId("m0"), "hi", 1, audit())
        paused = dataclasses.replace(room("a"), paused=True)
        await store.apply([paused])
        assert await store.rooms() == [paused]
        assert (await store.append_message(RoomId("a"), ALEX, MessageId("m1"), "hi", 2,
                                           audit()))[0] == 2
        await store.close()
        store = await _open(kind, tmp_path, schema)
        await store.apply([room("a")])
        assert (await store.append_message(RoomId("a"), ALEX, MessageId("m2"), "hi", 3,
                                           audit()))[0] == 3
    finally:
        await store.close()
        if kind == "postgres":
            import asyncpg
            conn = await asyncpg.connect(PG_DSN)
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
            await conn.close()


async def test_cases_keep_their_latest_record(store: Store) -> None:
    case = CaseRecord(CaseId("c1"), RoomId("a"), ALEX.id, "Alex", Urgency.URGENT, CaseStatus.OPEN,
                      "", 6,
                      "u_fac")
    other = dataclasses.replace(case, id=CaseId("c2"), urgency=Urgency.ROUTINE)
    await store.apply([case, other])
    closed = dataclasses.replace(case, status=CaseStatus.CLOSED, outcome="referred")
    await store.apply([closed])
    assert sorted(await store.cases(), key=lambda c: c.id) == [closed, other]


async def test_the_audit_shows_only_what_the_scope_allows_before_the_limit(
        store: Store) -> None:
    from chatserver.core.scopes import AuditScope
    await store.apply([
        audit("mute", "a", 1), audit("claim", "a", 2), audit("pause", "b", 3),
        AuditEntry(4, None, "u_ops", AuditAction.LOGIN, None, {}, "v1"), audit(AuditAction.RESUME,
                                                                               "a", 5)])
    facilitator = AuditScope(rooms=frozenset({"a"}), hidden_actions=frozenset({AuditAction.CLAIM}))
    assert [e.action for e in await store.audit(None, 0, 2, scope=facilitator)] == [
        "mute", "resume"]
    nobody = AuditScope(rooms=frozenset())
    assert await store.audit(None, 0, 10, scope=nobody) == []
    hide_login = AuditScope(hidden_actions=frozenset({AuditAction.LOGIN, AuditAction.CLAIM}))
    assert [e.action for e in await store.audit(None, 0, 10, scope=hide_login)] == [
        "mute", "pause", "resume"]
    everything = await store.audit(None, 0, 10, scope=AuditScope())
    assert [(e.room, e.action) for e in everything] == [
        ("a", "mute"), ("a", "claim"), ("b", "pause"), (None, "login"), ("a", "resume")]
    assert [e.id for e in everything] == sorted(e.id for e in everything)


async def test_audit_rows_carry_detail_and_a_digest_of_the_text_never_the_text(
        store: Store) -> None:
    held_text = AuditEntry(1, RoomId("a"), "p_alex", AuditAction.MESSAGE_HOLD, "m1",
                           {"rules": ["risk.intent"]}, "v1", text="the held words")
    await store.apply([held_text])
    await store.append_message(RoomId("a"), ALEX, MessageId("m2"), "hi", 2, audit(ts=2))
    first, second = await store.audit(None, 0, 10)
    assert (first.ts, first.room, first.actor, first.action, first.target) == (
        1, "a", "p_alex", "message.hold", "m1")
    from chatserver.auditchain import text_digest
    assert first.detail == {"rules": ["risk.intent"],
                            "text_sha256": text_digest("the held words")}
    assert second.detail == {"rules": [], "seq": 1}
    chain = await store.audit_chain()
    assert [r.text for r in chain] == ["the held words", None]
    assert [r.version for r in chain] == ["v1", "v1"]


async def test_a_reset_user_keeps_its_id_and_loses_its_sessions(store: Store) -> None:
    await store.add_user(UserRow("u1", "sam", "facilitator", "old", False))
    await store.add_user(UserRow("u_other", "sam", "ops", "new", True, display_name="S"))
    assert await store.user("sam") == UserRow("u1", "sam", "ops", "new", True, 1, "S")
    assert await store.user_by_id("u_other") is None
    assert await store.user("nobody") is None


async def test_users_are_listed_by_username(store: Store) -> None:
    for uid, name in (("u1", "zoe"), ("u2", "amir"), ("u3", "mo")):
        await store.add_user(UserRow(uid, name, "facilitator", "hash", False))
    assert [u.username for u in await store.users()] == ["amir", "mo", "zoe"]
    assert await store.user_by_id("u3") == UserRow("u3", "mo", "facilitator", "hash", False)


async def test_disabling_and_enabling_each_move_the_version(store: Store) -> None:
    await store.add_user(UserRow("u1", "sam", "facilitator", "hash", False))
    assert await store.set_disabled("sam", True)
    assert await store.set_disabled("sam", False)
    user = await store.user("sam")
    assert user is not None and not user.disabled and user.version == 2


async def test_bumping_the_version_ends_the_sessions_of_one_account(store: Store) -> None:
    await store.add_user(UserRow("u1", "sam", "facilitator", "hash", False))
    await store.add_user(UserRow("u2", "kim", "facilitator", "hash", False))
    assert await store.bump_version("u1")
    assert await store.bump_version("u1")
    assert not await store.bump_version("nobody")
    assert [(u.username, u.version) for u in await store.users()] == [("kim", 0), ("sam", 2)]


async def test_drift_storing_a_held_message_again_keeps_its_decision(store: Store) -> None:
    """Drift: SQLite's INSERT OR REPLACE put a decided held message back in the queue
    (PostgreSQL kept the decision). A decision once made is never silently undone."""
    held = HeldRecord(HeldId("h1"), RoomId("a"), ALEX, MessageId("m1"), "how old are you",
                      (("grooming.age", "grooming"),), 5)
    await store.apply([held, HeldDecided(HeldId("h1"))])
    await store.apply([held])
    assert await store.held() == []
    # And it is purged as a decided one.
    from chatserver.ports import Cutoffs
    assert (await store.purge(Cutoffs(10, 10, 10), dry_run=True))["held"] == 1


async def test_drift_a_records_columns_follow_its_latest_version(store: Store) -> None:
    """Drift: PostgreSQL kept the first ``ts`` of a case, alert or held message in the
    columns that order and purge them, while the record moved on (SQLite followed the
    record). The columns are the record's index: they always agree with it."""
    from chatserver.ports import Cutoffs
    day = 86_400_000
    case = CaseRecord(CaseId("c1"), RoomId("a"), ALEX.id, "Alex", Urgency.URGENT,
                      CaseStatus.CLOSED, "",
                      10 * day, "u_fac")
    held = HeldRecord(HeldId("h1"), RoomId("a"), ALEX, MessageId("m1"), "how old are you",
                      (("grooming.age", "grooming"),), 10 * day)
    await store.apply([case, held, HeldDecided(held.id)])
    await store.apply([dataclasses.replace(case, ts=60 * day),
                       dataclasses.replace(held, ts=60 * day)])
    counts = await store.purge(Cutoffs(50 * day, 50 * day, 50 * day), dry_run=True)
    assert (counts["cases"], counts["held"]) == (0, 0)
    first, second = alert_record(5, "al_1"), alert_record(6, "al_2")
    await store.apply([first, second])
    later = dataclasses.replace(first, ts=7)
    await store.apply([later])
    assert await store.alerts() == [second, later]  # oldest first, by the record's ts


async def test_drift_a_message_for_an_unknown_room_is_refused_alone(store: Store) -> None:
    """Drift: SQLite stored a message in a room it had no record of (its seq counter
    lived only in memory, so seqs restarted at 1 after a restart), PostgreSQL refused
    it along with every other message in its batch. Now: refused, nothing of it written,
    and only it."""
    refused, stored = await asyncio.gather(
        store.append_message(RoomId("nowhere"), ALEX, MessageId("m1"), "hi", 1,
                             audit(room_id="nowhere")),
        store.append_message(RoomId("a"), ALEX, MessageId("m1"), "hi", 1, audit()),
        return_exceptions=True)
    assert isinstance(refused, StoreError)
    assert stored == (1, True)
    assert await store.recent_messages(RoomId("nowhere"), 10) == []
    assert [e.room for e in await store.audit(None, 0, 10)] == ["a"]
