"""The cluster store: PostgreSQL through asyncpg, same port and guarantees as SQLite.

Every node shares it, so it assigns each room's ``seq`` in the message's own
transaction (``UPDATE rooms SET hwm = hwm + 1 … RETURNING``): the row lock orders
concurrent senders on every node, and a seq is never reused, not even when Redis
loses its data (SECURITY.md F-06), because the record is here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final, cast

import asyncpg
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

__all__ = ["PostgresStore"]


SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS rooms (id TEXT PRIMARY KEY, record TEXT NOT NULL,
    hwm BIGINT NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS messages (room TEXT NOT NULL, seq BIGINT NOT NULL,
    msg_id TEXT NOT NULL, sender_id TEXT NOT NULL, sender_name TEXT NOT NULL,
    sender_role TEXT NOT NULL, text TEXT NOT NULL, ts BIGINT NOT NULL,
    redacted BOOLEAN NOT NULL DEFAULT FALSE, PRIMARY KEY (room, seq));
CREATE UNIQUE INDEX IF NOT EXISTS messages_idem ON messages (room, sender_id, msg_id);
CREATE TABLE IF NOT EXISTS audit (id BIGSERIAL PRIMARY KEY, ts BIGINT NOT NULL, room TEXT,
    actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT, detail TEXT NOT NULL,
    version TEXT NOT NULL, hash TEXT NOT NULL, text TEXT);
CREATE INDEX IF NOT EXISTS audit_room ON audit (room, id);
CREATE INDEX IF NOT EXISTS audit_action ON audit (action, id);
CREATE TABLE IF NOT EXISTS held (id TEXT PRIMARY KEY, room TEXT NOT NULL, record TEXT NOT NULL,
    decided BOOLEAN NOT NULL DEFAULT FALSE, ts BIGINT NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS cases (id TEXT PRIMARY KEY, record TEXT NOT NULL,
    ts BIGINT NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS alerts (id TEXT PRIMARY KEY, room TEXT NOT NULL,
    record TEXT NOT NULL, ts BIGINT NOT NULL, status TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_status ON alerts (status, ts);
ALTER TABLE audit ADD COLUMN IF NOT EXISTS text TEXT;
ALTER TABLE held ADD COLUMN IF NOT EXISTS ts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cases ADD COLUMN IF NOT EXISTS ts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cases ADD COLUMN IF NOT EXISTS status TEXT NOT NULL DEFAULT '';
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL, password_hash TEXT NOT NULL, disabled BOOLEAN NOT NULL DEFAULT FALSE);
ALTER TABLE users ADD COLUMN IF NOT EXISTS version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN IF NOT EXISTS display_name TEXT NOT NULL DEFAULT '';
"""
_AUDIT_LOCK: Final = 0x43484154  # "CHAT": the advisory lock key of the audit chain
_SCHEMA_NAME: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


_USER_COLUMNS: Final = ("SELECT id, username, role, password_hash, disabled, version, "
                         "display_name")


class PostgresStore:
    def __init__(self, dsn: str, schema: str = "public", pool_size: int = 10) -> None:
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"bad schema name {schema!r}")
        self.dsn, self.schema, self.pool_size = dsn, schema, pool_size
        self._pool: asyncpg.Pool | None = None
        self._writer: GroupCommit[Append] = GroupCommit(self._commit, "postgres-writer")

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """``postgresql://…[?schema=name]``: the schema option is ours, not libpq's."""
        schema = "public"
        if "schema=" in url:
            base, _, query = url.partition("?")
            params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            schema = params.pop("schema")
            url = base + ("?" + "&".join(f"{k}={v}" for k, v in params.items())
                          if params else "")
        return cls(url, schema)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("store is not open")
        return self._pool

    async def open(self) -> None:
        try:
            # A startup setting, not SET: the pool's RESET ALL on release keeps it.
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self.pool_size,
                server_settings={"search_path": self.schema})
            async with self.pool.acquire() as conn:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
                await conn.execute(f"SET search_path TO {self.schema}")
                await conn.execute(SCHEMA)
        except (OSError, asyncpg.PostgresError) as e:
            raise StoreError(str(e)) from e
        self._writer.start()

    async def close(self) -> None:
        await self._writer.stop()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> bool:
        try:
            async with self.pool.acquire(timeout=1) as conn:
                await conn.fetchval("SELECT 1")
        except Exception:
            return False
        return True

    async def _tx(self, fn: Any) -> Any:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                return await fn(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise StoreError(str(e)) from e

    # ------------------------------------------------------------------ writes
    async def append_message(self, room: RoomId, sender: Person, msg_id: MessageId, text: str,
                             ts: int, audit: AuditEntry,
                             also: Sequence[StoreOp] = ()) -> tuple[int, bool]:
        result = await self._writer.submit(Append(room, sender, msg_id, text, ts, audit,
                                                  tuple(also)))
        return cast(tuple[int, bool], result)

    # ------------------------------------------------------------ group commit
    # One transaction per message held the cluster-wide audit lock across five round
    # trips and a commit each, which capped a cluster near 600 sends/s.
    async def _commit(self, items: list[Append]) -> list[object]:
        try:
            result: list[object] = await self._tx(
                lambda conn: self._append_batch(conn, items))
        except StoreError as e:
            if isinstance(e.__cause__, asyncpg.UniqueViolationError):
                # The same sender's same id, stored by another node a moment ago: only
                # that send lost a race. Alone, it finds the stored one (seq, False).
                raise StoreConflict(str(e)) from e
            raise
        return result

    async def _append_batch(self, conn: asyncpg.Connection, items: list[Append]
                            ) -> list[tuple[int, bool]]:
        keys = list({(a.room, a.sender.id, a.msg_id) for a in items})
        existing: dict[tuple[str, str, str], int] = {
            (r[0], r[1], r[2]): int(r[3]) for r in await conn.fetch(
                "SELECT m.room, m.sender_id, m.msg_id, m.seq FROM messages m JOIN "
                "unnest($1::text[], $2::text[], $3::text[]) AS k(room, sender_id, msg_id) "
                "USING (room, sender_id, msg_id)",
                [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])}
        new: dict[str, int] = {}
        for a in items:
            key = (a.room, a.sender.id, a.msg_id)
            if key not in existing:
                existing[key] = -1  # a resend within the batch gets the first one's seq
                new[a.room] = new.get(a.room, 0) + 1
        # Room counters are locked in id order, the same on every node: no deadlock.
        rooms = sorted(new)
        hwm = {r[0]: int(r[1]) for r in await conn.fetch(
            "SELECT id, hwm FROM rooms WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
            rooms)}
        if len(hwm) != len(rooms):
            raise StoreError(f"unknown room in {rooms}")
        if rooms:
            await conn.execute(
                "UPDATE rooms SET hwm = rooms.hwm + d.k FROM unnest($1::text[], $2::bigint[]) "
                "AS d(id, k) WHERE rooms.id = d.id", rooms, [new[r] for r in rooms])
        results: list[tuple[int, bool]] = []
        rows: list[tuple[object, ...]] = []
        audits: list[tuple[AuditEntry, dict[str, object] | None]] = []
        others: list[StoreOp] = []
        for a in items:
            key = (a.room, a.sender.id, a.msg_id)
            if existing[key] != -1:
                results.append((existing[key], False))
                continue
            hwm[a.room] += 1
            seq = existing[key] = hwm[a.room]
            rows.append((a.room, seq, a.msg_id, a.sender.id, a.sender.name, a.sender.role,
                         a.text, a.ts))
            audits.append((a.audit, {"seq": seq}))
            audits += [(op, None) for op in a.also if isinstance(op, AuditEntry)]
            others += [op for op in a.also if not isinstance(op, AuditEntry)]
            results.append((seq, True))
        if rows:
            await conn.executemany(
                "INSERT INTO messages (room, seq, msg_id, sender_id, sender_name, sender_role,"
                " text, ts) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)", rows)
        for op in others:  # same transaction as their messages
            await self._apply_one(conn, op)
        await self._audit_many(conn, audits)
        return results

    async def apply(self, ops: Sequence[StoreOp]) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            for op in ops:
                await self._apply_one(conn, op)

        await self._tx(write)

    async def _apply_one(self, conn: asyncpg.Connection, op: StoreOp) -> None:
        if isinstance(op, AuditEntry):
            await self._audit(conn, op)
        elif isinstance(op, RoomRecord):
            await conn.execute(
                "INSERT INTO rooms (id, record) VALUES ($1, $2) "
                "ON CONFLICT (id) DO UPDATE SET record=excluded.record", op.id, dumps(op))
        elif isinstance(op, HeldRecord):
            await conn.execute(
                "INSERT INTO held (id, room, record, ts) VALUES ($1,$2,$3,$4) "
                "ON CONFLICT (id) DO UPDATE SET record=excluded.record",
                op.id, op.room, dumps(op), op.ts)
        elif isinstance(op, HeldDecided):
            await conn.execute("UPDATE held SET decided=TRUE WHERE id=$1", op.id)
        elif isinstance(op, CaseRecord) and op.status == "claimed":
            # A case is claimed once, on whichever node: the claim holds only if the case
            # is still open (two counsellors claiming at once on two nodes).
            done = await conn.execute("UPDATE cases SET record=$2, status=$3 WHERE id=$1 "
                                      "AND status='open'", op.id, dumps(op), op.status)
            if done != "UPDATE 1":
                raise StoreConflict(f"case {op.id} is no longer open")
        elif isinstance(op, CaseRecord):
            await conn.execute(
                "INSERT INTO cases (id, record, ts, status) VALUES ($1,$2,$3,$4) "
                "ON CONFLICT (id) DO UPDATE SET record=excluded.record, status=excluded.status",
                op.id, dumps(op), op.ts, op.status)
        elif isinstance(op, RedactRecord):
            await conn.execute("UPDATE messages SET redacted=TRUE WHERE room=$1 AND seq=$2",
                               op.room, op.seq)
        elif isinstance(op, AlertRecord):
            await conn.execute(
                "INSERT INTO alerts (id, room, record, ts, status) VALUES ($1,$2,$3,$4,$5) "
                "ON CONFLICT (id) DO UPDATE SET record=excluded.record, status=excluded.status",
                op.id, op.room, dumps(op), op.ts, op.status)
        else:  # pragma: no cover - the union is exhaustive
            raise TypeError(op)

    async def _audit(self, conn: asyncpg.Connection, e: AuditEntry) -> None:
        await self._audit_many(conn, [(e, None)])

    async def _audit_many(self, conn: asyncpg.Connection,
                          entries: Sequence[tuple[AuditEntry, dict[str, object] | None]]
                          ) -> None:
        if not entries:
            return
        # SG-16: one chain across every node, so appends take a transaction-scoped lock.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _AUDIT_LOCK)
        prev = await conn.fetchval("SELECT hash FROM audit ORDER BY id DESC LIMIT 1")
        digest = prev or GENESIS
        rows = []
        for e, extra in entries:
            body: dict[str, object] = {**e.detail, **(extra or {})}
            if e.text is not None:
                body["text_sha256"] = text_digest(e.text)
            detail = orjson.dumps(body).decode()
            digest = chain_hash(digest, e.ts, e.room, e.actor, e.action, e.target, detail,
                                e.version)
            rows.append((e.ts, e.room, e.actor, e.action, e.target, detail, e.version, digest,
                         e.text))
        await conn.executemany(
            "INSERT INTO audit (ts, room, actor, action, target, detail, version, hash, text) "
            "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)", rows)

    async def audit_chain(self) -> list[ChainRow]:
        rows = await self._fetch("SELECT id, ts, room, actor, action, target, detail, version,"
                                 " hash, text FROM audit ORDER BY id")
        return [ChainRow(int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9])
                for r in rows]

    async def purge(self, cutoffs: Cutoffs, dry_run: bool) -> dict[str, int]:
        queries = {
            "messages": ("FROM messages WHERE ts < $1", cutoffs.messages),
            "audit_text": ("FROM audit WHERE text IS NOT NULL AND ts < $1", cutoffs.audit_text),
            "held": ("FROM held WHERE decided AND ts < $1", cutoffs.audit_text),
            "cases": ("FROM cases WHERE status='closed' AND ts < $1", cutoffs.cases),
            # An alert's excerpt is risky text: kept as long as held text (SG-09).
            "alerts": ("FROM alerts WHERE status='resolved' AND ts < $1", cutoffs.audit_text),
        }

        async def run(conn: asyncpg.Connection) -> dict[str, int]:
            counts = {}
            for name, (where, cutoff) in queries.items():
                counts[name] = int(await conn.fetchval(f"SELECT COUNT(*) {where}", cutoff))
                if not dry_run and counts[name]:
                    if name == "audit_text":
                        await conn.execute("UPDATE audit SET text=NULL WHERE text IS NOT NULL "
                                           "AND ts < $1", cutoff)
                    else:
                        await conn.execute(f"DELETE {where}", cutoff)
            return counts

        result: dict[str, int] = await self._tx(run)
        return result

    # ------------------------------------------------------------------- reads
    async def _fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        try:
            async with self.pool.acquire() as conn:
                rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
                return rows
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise StoreError(str(e)) from e

    async def recent_messages(self, room: RoomId, limit: int) -> list[Message]:
        rows = await self._fetch(
            "SELECT seq, msg_id, sender_id, sender_name, sender_role, text, ts FROM messages "
            "WHERE room=$1 AND NOT redacted ORDER BY seq DESC LIMIT $2", room, limit)
        return [Message(room, int(r[0]), MessageId(r[1]),
                        Person(ParticipantId(r[2]), r[3], r[4]), r[5], int(r[6]))
                for r in reversed(rows)]

    async def messages_between(self, room: RoomId, after: int, before: int) -> list[Message]:
        rows = await self._fetch(
            "SELECT seq, msg_id, sender_id, sender_name, sender_role, text, ts FROM messages "
            "WHERE room=$1 AND seq > $2 AND seq < $3 AND NOT redacted ORDER BY seq",
            room, after, before)
        return [Message(room, int(r[0]), MessageId(r[1]),
                        Person(ParticipantId(r[2]), r[3], r[4]), r[5], int(r[6])) for r in rows]

    async def rooms(self) -> list[RoomRecord]:
        return [room_from(r[0]) for r in await self._fetch("SELECT record FROM rooms")]

    async def held(self) -> list[HeldRecord]:
        return [held_from(r[0]) for r in
                await self._fetch("SELECT record FROM held WHERE NOT decided")]

    async def cases(self) -> list[CaseRecord]:
        return [case_from(r[0]) for r in await self._fetch("SELECT record FROM cases")]

    async def alerts(self) -> list[AlertRecord]:
        return [alert_from(r[0]) for r in await self._fetch(
            "SELECT record FROM alerts WHERE status != 'resolved' ORDER BY ts, id")]

    async def audit(self, room: str | None, since: int, limit: int,
                    action: str | None = None, scope: AuditScope | None = None
                    ) -> list[AuditRow]:
        rooms = sorted(scope.rooms) if scope is not None and scope.rooms is not None else None
        hidden = sorted(scope.hidden_actions) if scope is not None else []
        rows = await self._fetch(
            "SELECT id, ts, room, actor, action, target, detail FROM audit "
            "WHERE ts >= $1 AND ($2::text IS NULL OR room = $2) "
            "AND ($3::text IS NULL OR action = $3) "
            "AND ($4::text[] IS NULL OR room = ANY($4::text[])) "
            "AND NOT (action = ANY($5::text[])) ORDER BY id LIMIT $6",
            since, room or None, action or None, rooms, hidden, limit)
        return [AuditRow(int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], orjson.loads(r[6]))
                for r in rows]

    # ------------------------------------------------------------------- users
    async def add_user(self, user: UserRow) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO users (id, username, role, password_hash, disabled, display_name)"
                " VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (username) DO UPDATE SET "
                "role=excluded.role, password_hash=excluded.password_hash, "
                "disabled=excluded.disabled, display_name=excluded.display_name, "
                "version=users.version + 1",
                user.id, user.username, user.role, user.password_hash, user.disabled,
                user.display_name)

        await self._tx(write)

    @staticmethod
    def _user(r: asyncpg.Record) -> UserRow:
        return UserRow(r[0], r[1], r[2], r[3], bool(r[4]), int(r[5]), r[6] or "")

    async def user(self, username: str) -> UserRow | None:
        rows = await self._fetch(_USER_COLUMNS + " FROM users"
                                 " WHERE username=$1", username)
        return self._user(rows[0]) if rows else None

    async def user_by_id(self, user_id: str) -> UserRow | None:
        rows = await self._fetch(_USER_COLUMNS + " FROM users"
                                 " WHERE id=$1", user_id)
        return self._user(rows[0]) if rows else None

    async def users(self) -> list[UserRow]:
        return [self._user(r) for r in await self._fetch(
            _USER_COLUMNS + " FROM users ORDER BY username")]

    async def set_disabled(self, username: str, disabled: bool) -> bool:
        async def write(conn: asyncpg.Connection) -> bool:
            status: str = await conn.execute(
                "UPDATE users SET disabled=$1, version=version + 1 WHERE username=$2",
                disabled, username)
            return status.endswith(" 1")

        result: bool = await self._tx(write)
        return result

    async def bump_version(self, user_id: str) -> bool:
        async def write(conn: asyncpg.Connection) -> bool:
            status: str = await conn.execute(
                "UPDATE users SET version=version + 1 WHERE id=$1", user_id)
            return status.endswith(" 1")

        result: bool = await self._tx(write)
        return result
