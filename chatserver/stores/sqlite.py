"""The embedded store: SQLite in WAL mode through aiosqlite, with group commit.

One writer task takes queued writes and commits them together, so a burst of sends
costs one commit, not one each, while every caller still learns only after its own
write is durable (docs/architecture.md invariant 7). ``synchronous=NORMAL`` in WAL mode survives
a process crash (SIGKILL); surviving power loss needs ``FULL`` (config, slower).

The tables, statements and row mapping are PostgreSQL's too (``stores/sql.py``); this
module holds the connection, the writer and each room's seq counter (in memory: one
process owns the file).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Concatenate, Final, ParamSpec, TypeVar, cast

import aiosqlite

from chatserver.auditchain import GENESIS, ChainRow
from chatserver.core.effects import (
    AlertRecord,
    AuditEntry,
    CaseRecord,
    HeldRecord,
    RoomRecord,
    StoreOp,
)
from chatserver.core.events import Message, Person
from chatserver.core.ids import MessageId, RoomId
from chatserver.core.scopes import AuditScope
from chatserver.ports import AuditRow, Cutoffs, StoreConflict, StoreError, UserRow
from chatserver.stores import sql
from chatserver.stores.groupcommit import Append, GroupCommit

__all__ = ["SqliteStore"]

TABLES: Final = sql.Tables(sql.SQLITE)
P = ParamSpec("P")
T = TypeVar("T")
Write = Callable[[sql.Connection], Awaitable[object]]


class _Connection:
    """``sql.Connection`` over aiosqlite: every call is one trip to SQLite's thread."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def execute(self, statement: str, *args: object) -> int:
        async with self.db.execute(statement, args) as cur:
            return cur.rowcount

    async def executemany(self, statement: str, rows: Sequence[Sequence[object]]) -> None:
        await self.db.executemany(statement, rows)

    async def fetch(self, statement: str, *args: object) -> Sequence[sql.Row]:
        return list(await self.db.execute_fetchall(statement, args))


@dataclass(frozen=True, slots=True)
class _Ops:
    ops: tuple[StoreOp, ...]


@dataclass(frozen=True, slots=True)
class _Call:
    fn: Write


@dataclass(frozen=True, slots=True)
class _Probe:
    """Readiness: can the store write a page now? Run in its own transaction."""


_Item = Append | _Ops | _Call | _Probe
PROBE_BYTES: Final = 8192
"""A probe writes (then deletes) this much: more than a page, as a message would need."""


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._writer: GroupCommit[_Item] = GroupCommit(self._commit, "sqlite-writer")
        self._hwm: dict[str, int] = {}
        """Each room's last seq; a room is here once it has a record (``sql.number``)."""
        self._last_hash = GENESIS
        self._write_failed = False
        """The last write failed: readiness probes with a write until one succeeds."""

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        return cls(url.removeprefix("sqlite:///").removeprefix("sqlite://"))

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self._db.executescript(TABLES.schema)
        for table, column, definition in TABLES.migrations:
            async with self._db.execute(f"PRAGMA table_info({table})") as cur:
                names = {row[1] async for row in cur}
            if column not in names:
                await self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        async with self._db.execute("SELECT id, hwm FROM rooms") as cur:
            self._hwm = {row[0]: row[1] async for row in cur}
        async with self._db.execute(TABLES.last_hash) as cur:
            last = await cur.fetchone()
        self._last_hash = last[0] if last else GENESIS
        self._writer.start()

    async def close(self) -> None:
        await self._writer.stop()
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ping(self) -> bool:
        """Reachable and able to write (``/readyz``): once a write has failed (disk full,
        I/O error), every ping is a real write probe until one succeeds."""
        try:
            await self.db.execute("SELECT 1")
            if self._writer.running and self._write_failed:
                return bool(await self._submit(_Probe()))
        except (sqlite3.Error, StoreError, ValueError):
            return False
        return self._writer.running

    async def _probe(self) -> bool:
        db = self.db
        try:
            await db.execute("BEGIN IMMEDIATE")
            await db.execute("CREATE TABLE IF NOT EXISTS probe (b BLOB)")
            await db.execute("INSERT INTO probe VALUES (zeroblob(?))", (PROBE_BYTES,))
            await db.execute("DELETE FROM probe")
            await db.execute("COMMIT")
        except asyncio.CancelledError:
            raise
        except Exception:
            with contextlib.suppress(Exception):
                await db.execute("ROLLBACK")
            return False
        self._write_failed = False
        return True

    # ------------------------------------------------------------ group commit
    # A batch costs a fixed handful of round trips to the SQLite thread, whatever its
    # size: one idempotency lookup, one executemany each for messages, audit entries and
    # room high-water marks, plus the rarer records one by one. Measured: per-statement
    # calls (four per message) made the writer the bottleneck near 1,000 sends/s.
    async def _submit(self, item: _Item) -> object:
        """What the batch's writer made of ``item``: for an ``Append`` its (seq, new),
        for a ``_Call`` what the call returned, for a ``_Probe`` whether it wrote."""
        return await self._writer.submit(item)

    async def _commit(self, items: list[_Item]) -> list[object]:
        if any(isinstance(it, _Probe) for it in items):
            # A probe never shares a transaction: its failure must not fail real writes.
            probed = await self._probe()
            rest = iter(await self._commit([it for it in items
                                            if not isinstance(it, _Probe)]))
            return [probed if isinstance(it, _Probe) else next(rest) for it in items]
        if not items:
            return []
        hwm_before, hash_before = dict(self._hwm), self._last_hash
        try:
            await self.db.execute("BEGIN IMMEDIATE")
            results = await self._write_batch(items)
            await self.db.execute("COMMIT")
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # SQLITE_FULL and friends roll back the whole transaction: nothing partial.
            self._hwm, self._last_hash = hwm_before, hash_before
            if not isinstance(e, StoreConflict):  # a lost race is no sign of a full disk
                self._write_failed = True
            with contextlib.suppress(Exception):
                await self.db.execute("ROLLBACK")
            raise
        self._write_failed = False
        return results

    async def _write_batch(self, items: list[_Item]) -> list[object]:
        conn = _Connection(self.db)
        appends = [it for it in items if isinstance(it, Append)]
        stored: dict[sql.MessageKey, int] = {}
        if appends:
            keys = list({(a.room, a.sender.id, a.msg_id) for a in appends})
            for start in range(0, len(keys), 300):  # SQLite's bound-parameter limit
                chunk = keys[start:start + 300]
                values = ",".join("(?,?,?)" for _ in chunk)
                rows = await conn.fetch(
                    "SELECT room, sender_id, msg_id, seq FROM messages WHERE "
                    f"(room, sender_id, msg_id) IN (VALUES {values})",
                    *(v for key in chunk for v in key))
                stored.update({(sql.col_str(r[0]), sql.col_str(r[1]), sql.col_str(r[2])):
                               sql.col_int(r[3]) for r in rows})
        results: list[object] = []
        messages: list[tuple[object, ...]] = []
        audits: list[sql.AuditItem] = []
        rooms_touched: set[str] = set()
        for it in items:  # in order: a room recorded earlier in the batch takes messages
            if isinstance(it, Append):
                result = sql.number(it, stored, self._hwm)
                results.append(result)
                if isinstance(result, tuple) and result[1]:
                    seq = result[0]
                    rooms_touched.add(it.room)
                    messages.append(sql.message_row(it, seq))
                    audits.append(sql.audit_of(it, seq))
                    # Same transaction as the message (the whole batch).
                    await self._write_ops(conn, it.also, audits)
            elif isinstance(it, _Call):
                results.append(await it.fn(conn))
            elif isinstance(it, _Ops):
                await self._write_ops(conn, it.ops, audits)
                results.append(None)
        if messages:
            await conn.executemany(TABLES.insert_messages, messages)
        if audits:
            rows, self._last_hash = sql.chain(self._last_hash, audits)
            await conn.executemany(TABLES.insert_audit, rows)
        if rooms_touched:
            await conn.executemany("UPDATE rooms SET hwm=? WHERE id=?",
                                   [(self._hwm[r], r) for r in sorted(rooms_touched)])
        return results

    async def _write_ops(self, conn: sql.Connection, ops: Sequence[StoreOp],
                         audits: list[sql.AuditItem]) -> None:
        """Records now; audit entries onto ``audits`` (chained once, for the batch)."""
        for op in ops:
            if isinstance(op, AuditEntry):
                audits.append((op, None))
                continue
            await TABLES.write(conn, op)
            if isinstance(op, RoomRecord):
                self._hwm.setdefault(op.id, 0)  # rolled back with the batch

    # ------------------------------------------------------------------ writes
    async def append_message(self, room: RoomId, sender: Person, msg_id: MessageId, text: str,
                             ts: int, audit: AuditEntry,
                             also: Sequence[StoreOp] = ()) -> tuple[int, bool]:
        return cast(tuple[int, bool], await self._submit(
            Append(room, sender, msg_id, text, ts, audit, tuple(also))))

    async def apply(self, ops: Sequence[StoreOp]) -> None:
        await self._submit(_Ops(tuple(ops)))

    async def _write(self, fn: Callable[Concatenate[sql.Connection, P], Awaitable[T]],
                     *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn`` in the writer's next batch (one transaction, durable when it returns)."""
        return cast(T, await self._submit(_Call(lambda conn: fn(conn, *args, **kwargs))))

    async def _read(self, fn: Callable[Concatenate[sql.Connection, P], Awaitable[T]],
                    *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(_Connection(self.db), *args, **kwargs)
        except (sqlite3.Error, ValueError) as e:  # ValueError: aiosqlite's closed connection
            raise StoreError(str(e)) from e

    async def purge(self, cutoffs: Cutoffs, dry_run: bool) -> dict[str, int]:
        return await self._write(TABLES.purge, cutoffs, dry_run)

    async def add_user(self, user: UserRow) -> None:
        await self._write(TABLES.add_user, user)

    async def set_disabled(self, username: str, disabled: bool) -> bool:
        return await self._write(TABLES.set_disabled, username, disabled)

    async def bump_version(self, user_id: str) -> bool:
        return await self._write(TABLES.bump_version, user_id)

    # ------------------------------------------------------------------- reads
    async def recent_messages(self, room: RoomId, limit: int) -> list[Message]:
        return await self._read(TABLES.recent_messages, room, limit)

    async def messages_between(self, room: RoomId, after: int, before: int) -> list[Message]:
        return await self._read(TABLES.messages_between, room, after, before)

    async def rooms(self) -> list[RoomRecord]:
        return await self._read(TABLES.rooms)

    async def held(self) -> list[HeldRecord]:
        return await self._read(TABLES.held)

    async def cases(self) -> list[CaseRecord]:
        return await self._read(TABLES.cases)

    async def alerts(self) -> list[AlertRecord]:
        return await self._read(TABLES.alerts)

    async def audit(self, room: str | None, since: int, limit: int,
                    action: str | None = None, scope: AuditScope | None = None
                    ) -> list[AuditRow]:
        return await self._read(TABLES.audit, room, since, limit, action, scope)

    async def audit_chain(self) -> list[ChainRow]:
        return await self._read(TABLES.audit_chain)

    async def user(self, username: str) -> UserRow | None:
        return await self._read(TABLES.user, username)

    async def user_by_id(self, user_id: str) -> UserRow | None:
        return await self._read(TABLES.user_by_id, user_id)

    async def users(self) -> list[UserRow]:
        return await self._read(TABLES.users)
