"""The embedded store: SQLite in WAL mode on a thread of its own, with group commit.

One writer task takes queued writes and commits them together, so a burst of sends
costs one commit, not one each, while every caller still learns only after its own
write is durable (docs/architecture.md invariant 7).

A batch is one call to the store's thread: the idempotency lookup, every statement, the
audit chain's rows and the COMMIT (or the ROLLBACK) run there in one go, so a batch
costs one hand-off to the thread and one back whatever it holds. Through aiosqlite,
one hand-off per statement, it cost six, about five per message at 250 msg/s
(bench/README.md, issue 17). Reads are one call each on the same thread and
connection, so a read never runs inside a batch half written.

Durability is ``store.sqlite_synchronous``: ``normal`` (the default) in WAL mode fsyncs
at checkpoints only, so every acked write survives a process crash (SIGKILL, OOM) and
the file survives power loss uncorrupted, but the last moments' commits may be lost
then; ``full`` fsyncs the WAL at every commit (one fsync per batch), so an acked write
survives power loss too, at that cost.

The tables, statements and row mapping are PostgreSQL's too (``stores/sql.py``); this
module holds the connection, its thread, the writer and each room's seq counter (in
memory: one process owns the file).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, Final, ParamSpec, TypeVar, cast

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

__all__ = ["SYNCHRONOUS", "SqliteStore"]

TABLES: Final = sql.Tables(sql.SQLITE)
SYNCHRONOUS: Final = {"normal": "NORMAL", "full": "FULL"}
"""``store.sqlite_synchronous`` → the PRAGMA. Not ``off``: a power loss could corrupt the
file, audit chain and all."""
P = ParamSpec("P")
T = TypeVar("T")
Write = Callable[[sql.Connection], Coroutine[Any, Any, object]]


def _complete(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end here, on the store's thread, without an event loop.

    ``sql.Tables`` is written once, as coroutines, for both stores; over ``_Connection``
    nothing in them ever waits (every call is sqlite3's, which returns when done), so
    the first step finishes them. One that suspended would be waiting for a loop that
    is not here: refused loudly rather than lost.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coro.close()
    raise RuntimeError("a store coroutine waited on the SQLite thread")


class _Connection:
    """``sql.Connection`` over sqlite3, for code on the store's thread (``_complete``)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    async def execute(self, statement: str, *args: object) -> int:
        return self.db.execute(statement, args).rowcount

    async def executemany(self, statement: str, rows: Sequence[Sequence[object]]) -> None:
        self.db.executemany(statement, rows)

    async def fetch(self, statement: str, *args: object) -> Sequence[sql.Row]:
        return self.db.execute(statement, args).fetchall()


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
    def __init__(self, path: str | Path, synchronous: str = "normal") -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous: one of {', '.join(SYNCHRONOUS)}, not "
                             f"{synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous
        self._thread: ThreadPoolExecutor | None = None
        """One worker, so one thread: the only one that ever touches ``_db``."""
        self._db: sqlite3.Connection | None = None
        self._writer: GroupCommit[_Item] = GroupCommit(self._commit, "sqlite-writer")
        # On the store's thread only (open, then each batch), never while a batch runs
        # elsewhere: the loop hands them over with each call and back with its result.
        self._hwm: dict[str, int] = {}
        """Each room's last seq; a room is here once it has a record (``sql.number``)."""
        self._last_hash = GENESIS
        self._write_failed = False
        """The last write failed: readiness probes with a write until one succeeds."""

    @classmethod
    def from_url(cls, url: str, synchronous: str = "normal") -> SqliteStore:
        return cls(url.removeprefix("sqlite:///").removeprefix("sqlite://"), synchronous)

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the store's thread: one hand-off there, one back."""
        thread, db = self._thread, self._db
        if thread is None or db is None:
            raise StoreError("store is not open")
        return await asyncio.get_running_loop().run_in_executor(thread, fn, db)

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-store")
        try:
            self._db = await asyncio.get_running_loop().run_in_executor(thread, self._connect)
        except BaseException:
            thread.shutdown(wait=False)
            raise
        self._thread = thread
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        """On the store's thread: sqlite3 then refuses the connection to any other."""
        db = sqlite3.connect(self.path, isolation_level=None)  # we say BEGIN and COMMIT
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={SYNCHRONOUS[self.synchronous]}")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(TABLES.schema)
            for table, column, definition in TABLES.migrations:
                names = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in names:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            self._hwm = dict(db.execute("SELECT id, hwm FROM rooms").fetchall())
            last = db.execute(TABLES.last_hash).fetchone()
        except BaseException:
            db.close()
            raise
        self._last_hash = last[0] if last else GENESIS
        return db

    async def close(self) -> None:
        await self._writer.stop()
        thread, db = self._thread, self._db
        self._thread = self._db = None  # no call after this one: it closes the connection
        if thread is not None and db is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(thread, db.close)
            finally:
                thread.shutdown(wait=True)  # idle by now: every call came before the close

    async def execute(self, statement: str, *args: object) -> list[sql.Row]:
        """One statement on the store's own connection, between batches: for what is the
        connection's (``PRAGMA max_page_count``, with which tests fill the disk)."""
        return await self._call(lambda db: db.execute(statement, args).fetchall())

    async def ping(self) -> bool:
        """Reachable and able to write (``/readyz``): once a write has failed (disk full,
        I/O error), every ping is a real write probe until one succeeds."""
        try:
            await self.execute("SELECT 1")
            if self._writer.running and self._write_failed:
                return bool(await self._submit(_Probe()))
        except (sqlite3.Error, StoreError):
            return False
        return self._writer.running

    def _probe(self, db: sqlite3.Connection) -> bool:
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("CREATE TABLE IF NOT EXISTS probe (b BLOB)")
            db.execute("INSERT INTO probe VALUES (zeroblob(?))", (PROBE_BYTES,))
            db.execute("DELETE FROM probe")
            db.execute("COMMIT")
        except Exception:
            _rollback(db)
            return False
        self._write_failed = False
        return True

    # ------------------------------------------------------------ group commit
    # A batch is one call to the store's thread (above), and within it a fixed handful
    # of statements whatever its size: one idempotency lookup, one executemany each for
    # messages, audit entries and room high-water marks, plus the rarer records one by
    # one. Measured: per-statement calls (four per message) made the writer the
    # bottleneck near 1,000 sends/s.
    async def _submit(self, item: _Item) -> object:
        """What the batch's writer made of ``item``: for an ``Append`` its (seq, new),
        for a ``_Call`` what the call returned, for a ``_Probe`` whether it wrote."""
        return await self._writer.submit(item)

    async def _commit(self, items: list[_Item]) -> list[object]:
        return await self._call(lambda db: self._commit_here(db, items))

    def _commit_here(self, db: sqlite3.Connection, items: list[_Item]) -> list[object]:
        """On the store's thread: the batch in one transaction, committed or rolled back
        whole before the loop hears of it."""
        if any(isinstance(it, _Probe) for it in items):
            # A probe never shares a transaction: its failure must not fail real writes.
            probed = self._probe(db)
            rest = iter(self._commit_here(db, [it for it in items
                                               if not isinstance(it, _Probe)]))
            return [probed if isinstance(it, _Probe) else next(rest) for it in items]
        if not items:
            return []
        hwm_before, hash_before = dict(self._hwm), self._last_hash
        try:
            db.execute("BEGIN IMMEDIATE")
            results = self._write_batch(db, items)
            db.execute("COMMIT")
        except Exception as e:
            # SQLITE_FULL and friends roll back the whole transaction: nothing partial.
            self._hwm, self._last_hash = hwm_before, hash_before
            if not isinstance(e, StoreConflict):  # a lost race is no sign of a full disk
                self._write_failed = True
            _rollback(db)
            raise
        self._write_failed = False
        return results

    def _write_batch(self, db: sqlite3.Connection, items: list[_Item]) -> list[object]:
        conn = _Connection(db)
        appends = [it for it in items if isinstance(it, Append)]
        stored: dict[sql.MessageKey, int] = {}
        if appends:
            keys = list({(a.room, a.sender.id, a.msg_id) for a in appends})
            for start in range(0, len(keys), 300):  # SQLite's bound-parameter limit
                chunk = keys[start:start + 300]
                values = ",".join("(?,?,?)" for _ in chunk)
                rows = db.execute(
                    "SELECT room, sender_id, msg_id, seq FROM messages WHERE "
                    f"(room, sender_id, msg_id) IN (VALUES {values})",
                    [v for key in chunk for v in key]).fetchall()
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
                    self._write_ops(conn, it.also, audits)
            elif isinstance(it, _Call):
                results.append(_complete(it.fn(conn)))
            elif isinstance(it, _Ops):
                self._write_ops(conn, it.ops, audits)
                results.append(None)
        if messages:
            db.executemany(TABLES.insert_messages, messages)
        if audits:
            rows, self._last_hash = sql.chain(self._last_hash, audits)
            db.executemany(TABLES.insert_audit, rows)
        if rooms_touched:
            db.executemany("UPDATE rooms SET hwm=? WHERE id=?",
                           [(self._hwm[r], r) for r in sorted(rooms_touched)])
        return results

    def _write_ops(self, conn: _Connection, ops: Sequence[StoreOp],
                   audits: list[sql.AuditItem]) -> None:
        """Records now; audit entries onto ``audits`` (chained once, for the batch)."""
        for op in ops:
            if isinstance(op, AuditEntry):
                audits.append((op, None))
                continue
            _complete(TABLES.write(conn, op))
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

    async def _write(self, fn: Callable[Concatenate[sql.Connection, P],
                                        Coroutine[Any, Any, T]],
                     *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn`` in the writer's next batch (one transaction, durable when it returns)."""
        return cast(T, await self._submit(_Call(lambda conn: fn(conn, *args, **kwargs))))

    async def _read(self, fn: Callable[Concatenate[sql.Connection, P],
                                       Coroutine[Any, Any, T]],
                    *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn`` on the store's thread, one call: after every batch acked before it."""
        try:
            return await self._call(lambda db: _complete(fn(_Connection(db), *args,
                                                               **kwargs)))
        except sqlite3.Error as e:
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


def _rollback(db: sqlite3.Connection) -> None:
    """After a failed statement: SQLITE_FULL and friends may have rolled back already."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
