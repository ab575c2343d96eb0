"""The embedded store: SQLite in WAL mode through aiosqlite, with group commit.

One writer task takes queued writes and commits them together, so a burst of sends
costs one commit, not one each, while every caller still learns only after its own
write is durable (DESIGN.md invariant 7). ``synchronous=NORMAL`` in WAL mode survives
a process crash (SIGKILL); surviving power loss needs ``FULL`` (config, slower).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiosqlite
import orjson

from chatserver.auditchain import GENESIS, ChainRow, chain_hash, text_digest
from chatserver.core.effects import (
    AlertRecord,
    AuditEntry,
    CaseRecord,
    HeldDecided,
    HeldRecord,
    RedactRecord,
    RoomRecord,
    StoreOp,
)
from chatserver.core.events import Message, Person
from chatserver.core.ids import MessageId, ParticipantId, RoomId
from chatserver.core.scopes import AuditScope
from chatserver.ports import AuditRow, Cutoffs, StoreConflict, StoreError, UserRow
from chatserver.stores.groupcommit import Append, GroupCommit
from chatserver.stores.records import alert_from, case_from, dumps, held_from, room_from

__all__ = ["SqliteStore"]

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS rooms (id TEXT PRIMARY KEY, record TEXT NOT NULL,
    hwm INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS messages (room TEXT NOT NULL, seq INTEGER NOT NULL,
    msg_id TEXT NOT NULL, sender_id TEXT NOT NULL, sender_name TEXT NOT NULL,
    sender_role TEXT NOT NULL, text TEXT NOT NULL, ts INTEGER NOT NULL,
    redacted INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (room, seq));
CREATE UNIQUE INDEX IF NOT EXISTS messages_idem ON messages (room, sender_id, msg_id);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL,
    room TEXT, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT, detail TEXT NOT NULL,
    version TEXT NOT NULL, hash TEXT NOT NULL, text TEXT);
CREATE INDEX IF NOT EXISTS audit_room ON audit (room, id);
CREATE INDEX IF NOT EXISTS audit_action ON audit (action, id);
CREATE TABLE IF NOT EXISTS held (id TEXT PRIMARY KEY, room TEXT NOT NULL, record TEXT NOT NULL,
    decided INTEGER NOT NULL DEFAULT 0, ts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS cases (id TEXT PRIMARY KEY, record TEXT NOT NULL,
    ts INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS alerts (id TEXT PRIMARY KEY, room TEXT NOT NULL,
    record TEXT NOT NULL, ts INTEGER NOT NULL, status TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_status ON alerts (status, ts);
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL, password_hash TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0);
"""
MIGRATIONS: Final = (  # columns added after the first release: (table, column, definition)
    ("audit", "text", "TEXT"),
    ("held", "ts", "INTEGER NOT NULL DEFAULT 0"),
    ("cases", "ts", "INTEGER NOT NULL DEFAULT 0"),
    ("cases", "status", "TEXT NOT NULL DEFAULT ''"),
    ("users", "version", "INTEGER NOT NULL DEFAULT 0"),
    ("users", "display_name", "TEXT NOT NULL DEFAULT ''"),
)

Write = Callable[[aiosqlite.Connection], Awaitable[Any]]


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


Fields = tuple[int, str | None, str, str, str | None, str, str]


def _audit_fields(e: AuditEntry, extra: dict[str, object] | None = None
                  ) -> tuple[Fields, str | None]:
    """The chained fields and the text kept beside them (its digest is in the detail)."""
    detail: dict[str, object] = {**e.detail, **(extra or {})}
    if e.text is not None:
        detail["text_sha256"] = text_digest(e.text)
    return ((e.ts, e.room, e.actor, e.action, e.target, orjson.dumps(detail).decode(),
             e.version), e.text)


_USER_COLUMNS: Final = ("SELECT id, username, role, password_hash, disabled, version, "
                         "display_name")


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._writer: GroupCommit[_Item] = GroupCommit(self._commit, "sqlite-writer")
        self._hwm: dict[str, int] = {}
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
        await self._db.executescript(SCHEMA)
        for table, column, definition in MIGRATIONS:
            async with self._db.execute(f"PRAGMA table_info({table})") as cur:
                names = {row[1] async for row in cur}
            if column not in names:
                await self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        async with self._db.execute("SELECT id, hwm FROM rooms") as cur:
            self._hwm = {row[0]: row[1] async for row in cur}
        async with self._db.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1") as cur:
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
    async def _submit(self, item: _Item) -> Any:
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

    async def _write_batch(self, items: list[_Item]) -> list[Any]:
        db = self.db
        appends = [it for it in items if isinstance(it, Append)]
        existing: dict[tuple[str, str, str], int] = {}
        if appends:
            keys = list({(a.room, a.sender.id, a.msg_id) for a in appends})
            for start in range(0, len(keys), 300):  # SQLite's bound-parameter limit
                chunk = keys[start:start + 300]
                values = ",".join("(?,?,?)" for _ in chunk)
                async with db.execute(
                        "SELECT room, sender_id, msg_id, seq FROM messages WHERE "
                        f"(room, sender_id, msg_id) IN (VALUES {values})",
                        [v for key in chunk for v in key]) as cur:
                    existing.update({(r[0], r[1], r[2]): r[3] async for r in cur})
        results: list[Any] = []
        messages: list[tuple[object, ...]] = []
        audits: list[tuple[object, ...]] = []
        rooms_touched: set[str] = set()
        for it in items:
            if isinstance(it, Append):
                key = (it.room, it.sender.id, it.msg_id)
                if key in existing:
                    results.append((existing[key], False))
                    continue
                seq = self._hwm.get(it.room, 0) + 1
                self._hwm[it.room] = seq
                existing[key] = seq
                rooms_touched.add(it.room)
                messages.append((it.room, seq, it.msg_id, it.sender.id, it.sender.name,
                                 it.sender.role, it.text, it.ts))
                audits.append(self._chained(_audit_fields(it.audit, {"seq": seq})))
                for op in it.also:  # same transaction as the message (the whole batch)
                    if isinstance(op, AuditEntry):
                        audits.append(self._chained(_audit_fields(op)))
                    else:
                        await self._apply_one(db, op)
                results.append((seq, True))
            elif isinstance(it, _Call):
                results.append(await it.fn(db))
            elif isinstance(it, _Ops):
                for op in it.ops:
                    if isinstance(op, AuditEntry):
                        audits.append(self._chained(_audit_fields(op)))
                    else:
                        await self._apply_one(db, op)
                results.append(None)
        if messages:
            await db.executemany(
                "INSERT INTO messages (room, seq, msg_id, sender_id, sender_name, sender_role,"
                " text, ts) VALUES (?,?,?,?,?,?,?,?)", messages)
        if audits:
            await db.executemany(
                "INSERT INTO audit (ts, room, actor, action, target, detail, version, hash, "
                "text) VALUES (?,?,?,?,?,?,?,?,?)", audits)
        if rooms_touched:
            await db.executemany("UPDATE rooms SET hwm=? WHERE id=?",
                                 [(self._hwm[r], r) for r in sorted(rooms_touched)])
        return results

    # ------------------------------------------------------------------ writes
    async def append_message(self, room: RoomId, sender: Person, msg_id: MessageId, text: str,
                             ts: int, audit: AuditEntry,
                             also: Sequence[StoreOp] = ()) -> tuple[int, bool]:
        result: tuple[int, bool] = await self._submit(
            Append(room, sender, msg_id, text, ts, audit, tuple(also)))
        return result

    async def apply(self, ops: Sequence[StoreOp]) -> None:
        await self._submit(_Ops(tuple(ops)))

    async def _apply_one(self, db: aiosqlite.Connection, op: StoreOp) -> None:
        if isinstance(op, AuditEntry):
            await db.execute("INSERT INTO audit (ts, room, actor, action, target, detail, "
                             "version, hash, text) VALUES (?,?,?,?,?,?,?,?,?)",
                             self._chained(_audit_fields(op)))
        elif isinstance(op, RoomRecord):
            await db.execute(
                "INSERT INTO rooms (id, record) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET record=excluded.record", (op.id, dumps(op)))
        elif isinstance(op, HeldRecord):
            await db.execute("INSERT OR REPLACE INTO held (id, room, record, ts) "
                             "VALUES (?,?,?,?)", (op.id, op.room, dumps(op), op.ts))
        elif isinstance(op, HeldDecided):
            await db.execute("UPDATE held SET decided=1 WHERE id=?", (op.id,))
        elif isinstance(op, CaseRecord) and op.status == "claimed":
            # A case is claimed once: the claim holds only if the case is still open.
            async with db.execute("UPDATE cases SET record=?, status=? WHERE id=? AND "
                                  "status='open'", (dumps(op), op.status, op.id)) as cur:
                if cur.rowcount != 1:
                    raise StoreConflict(f"case {op.id} is no longer open")
        elif isinstance(op, CaseRecord):
            await db.execute("INSERT OR REPLACE INTO cases (id, record, ts, status) "
                             "VALUES (?,?,?,?)", (op.id, dumps(op), op.ts, op.status))
        elif isinstance(op, RedactRecord):
            await db.execute("UPDATE messages SET redacted=1 WHERE room=? AND seq=?",
                             (op.room, op.seq))
        elif isinstance(op, AlertRecord):
            await db.execute("INSERT OR REPLACE INTO alerts (id, room, record, ts, status) "
                             "VALUES (?,?,?,?,?)",
                             (op.id, op.room, dumps(op), op.ts, op.status))
        else:  # pragma: no cover - the union is exhaustive
            raise TypeError(op)

    def _chained(self, entry: tuple[Fields, str | None]) -> tuple[object, ...]:
        """The row with its chain hash; advances the chain (rolled back with the batch)."""
        fields, text = entry
        self._last_hash = chain_hash(self._last_hash, *fields)
        return (*fields, self._last_hash, text)

    async def audit_chain(self) -> list[ChainRow]:
        async with self.db.execute("SELECT id, ts, room, actor, action, target, detail, "
                                   "version, hash, text FROM audit ORDER BY id") as cur:
            return [ChainRow(*row) async for row in cur]

    async def purge(self, cutoffs: Cutoffs, dry_run: bool) -> dict[str, int]:
        """Apply retention (SG-09, SG-24); with ``dry_run`` count only. One transaction."""
        queries = {
            "messages": ("FROM messages WHERE ts < ?", cutoffs.messages),
            "audit_text": ("FROM audit WHERE text IS NOT NULL AND ts < ?", cutoffs.audit_text),
            "held": ("FROM held WHERE decided=1 AND ts < ?", cutoffs.audit_text),
            "cases": ("FROM cases WHERE status='closed' AND ts < ?", cutoffs.cases),
            # An alert's excerpt is risky text: kept as long as held text (SG-09).
            "alerts": ("FROM alerts WHERE status='resolved' AND ts < ?", cutoffs.audit_text),
        }

        async def run(db: aiosqlite.Connection) -> dict[str, int]:
            counts = {}
            for name, (where, cutoff) in queries.items():
                async with db.execute(f"SELECT COUNT(*) {where}", (cutoff,)) as cur:
                    row = await cur.fetchone()
                counts[name] = int(row[0]) if row else 0
                if not dry_run and counts[name]:
                    if name == "audit_text":
                        await db.execute("UPDATE audit SET text=NULL WHERE text IS NOT NULL "
                                         "AND ts < ?", (cutoff,))
                    else:
                        await db.execute(f"DELETE {where}", (cutoff,))
            return counts

        result: dict[str, int] = await self._submit(_Call(run))
        return result

    # ------------------------------------------------------------------- reads
    async def recent_messages(self, room: RoomId, limit: int) -> list[Message]:
        async with self.db.execute(
                "SELECT seq, msg_id, sender_id, sender_name, sender_role, text, ts FROM "
                "messages WHERE room=? AND redacted=0 ORDER BY seq DESC LIMIT ?",
                (room, limit)) as cur:
            rows = await cur.fetchall()
        return [Message(room, r[0], MessageId(r[1]), Person(ParticipantId(r[2]), r[3], r[4]),
                        r[5], r[6]) for r in reversed(list(rows))]

    async def messages_between(self, room: RoomId, after: int, before: int) -> list[Message]:
        async with self.db.execute(
                "SELECT seq, msg_id, sender_id, sender_name, sender_role, text, ts FROM "
                "messages WHERE room=? AND seq > ? AND seq < ? AND redacted=0 ORDER BY seq",
                (room, after, before)) as cur:
            rows = await cur.fetchall()
        return [Message(room, r[0], MessageId(r[1]), Person(ParticipantId(r[2]), r[3], r[4]),
                        r[5], r[6]) for r in rows]

    async def rooms(self) -> list[RoomRecord]:
        async with self.db.execute("SELECT record FROM rooms") as cur:
            return [room_from(r[0]) async for r in cur]

    async def held(self) -> list[HeldRecord]:
        async with self.db.execute("SELECT record FROM held WHERE decided=0") as cur:
            return [held_from(r[0]) async for r in cur]

    async def cases(self) -> list[CaseRecord]:
        async with self.db.execute("SELECT record FROM cases") as cur:
            return [case_from(r[0]) async for r in cur]

    async def alerts(self) -> list[AlertRecord]:
        async with self.db.execute("SELECT record FROM alerts WHERE status != 'resolved' "
                                   "ORDER BY ts, id") as cur:
            return [alert_from(r[0]) async for r in cur]

    async def audit(self, room: str | None, since: int, limit: int,
                    action: str | None = None, scope: AuditScope | None = None
                    ) -> list[AuditRow]:
        sql, args = "SELECT id, ts, room, actor, action, target, detail FROM audit " \
            "WHERE ts >= ?", list[object]([since])
        if room:
            sql, args = sql + " AND room = ?", [*args, room]
        if action:
            sql, args = sql + " AND action = ?", [*args, action]
        if scope is not None and scope.rooms is not None:
            sql += f" AND room IN ({','.join('?' * len(scope.rooms)) or 'NULL'})"
            args += sorted(scope.rooms)
        if scope is not None and scope.hidden_actions:
            sql += f" AND action NOT IN ({','.join('?' * len(scope.hidden_actions))})"
            args += sorted(scope.hidden_actions)
        async with self.db.execute(sql + " ORDER BY id LIMIT ?", (*args, limit)) as cur:
            return [AuditRow(r[0], r[1], r[2], r[3], r[4], r[5], orjson.loads(r[6]))
                    async for r in cur]

    # ------------------------------------------------------------------- users
    async def add_user(self, user: UserRow) -> None:
        async def write(db: aiosqlite.Connection) -> None:
            await db.execute(
                "INSERT INTO users (id, username, role, password_hash, disabled, display_name)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT (username) DO UPDATE SET"
                " role=excluded.role, password_hash=excluded.password_hash,"
                " disabled=excluded.disabled, display_name=excluded.display_name,"
                " version=users.version + 1",  # a reset ends every session (issue 14)
                (user.id, user.username, user.role, user.password_hash, int(user.disabled),
                 user.display_name))

        await self._submit(_Call(write))

    def _user(self, r: Any) -> UserRow:
        return UserRow(r[0], r[1], r[2], r[3], bool(r[4]), int(r[5]), r[6] or "")

    async def user(self, username: str) -> UserRow | None:
        async with self.db.execute(_USER_COLUMNS + " FROM "
                                   "users WHERE username=?", (username,)) as cur:
            row = await cur.fetchone()
        return self._user(row) if row else None

    async def user_by_id(self, user_id: str) -> UserRow | None:
        async with self.db.execute(_USER_COLUMNS + " FROM "
                                   "users WHERE id=?", (user_id,)) as cur:
            row = await cur.fetchone()
        return self._user(row) if row else None

    async def users(self) -> list[UserRow]:
        async with self.db.execute(_USER_COLUMNS + " FROM "
                                   "users ORDER BY username") as cur:
            return [self._user(r) async for r in cur]

    async def set_disabled(self, username: str, disabled: bool) -> bool:
        async def write(db: aiosqlite.Connection) -> bool:
            cur = await db.execute("UPDATE users SET disabled=?, version=version + 1 "
                                   "WHERE username=?", (int(disabled), username))
            return bool(cur.rowcount)

        result: bool = await self._submit(_Call(write))
        return result

    async def bump_version(self, user_id: str) -> bool:
        async def write(db: aiosqlite.Connection) -> bool:
            cur = await db.execute("UPDATE users SET version=version + 1 WHERE id=?",
                                   (user_id,))
            return bool(cur.rowcount)

        result: bool = await self._submit(_Call(write))
        return result
