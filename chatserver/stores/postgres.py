"""The cluster store: PostgreSQL through asyncpg, same port and guarantees as SQLite.

Every node shares it, so it assigns each room's ``seq`` in the messages' own
transaction (the rooms' rows locked ``FOR UPDATE``, then their ``hwm`` moved): the row
lock orders concurrent senders on every node, and a seq is never reused, not even when
Redis loses its data (SECURITY.md F-06), because the record is here.

The tables, statements and row mapping are SQLite's too (``stores/sql.py``); this
module holds the pool, the group commit and the cluster's locks.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Concatenate, Final, ParamSpec, TypeVar, cast

import asyncpg

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

__all__ = ["PostgresStore"]

TABLES: Final = sql.Tables(sql.POSTGRES)
SCHEMA: Final = TABLES.schema + "".join(
    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {definition};\n"
    for table, column, definition in TABLES.migrations)
_AUDIT_LOCK: Final = 0x43484154  # "CHAT": the advisory lock key of the audit chain
_SCHEMA_NAME: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_DRIVER_ERRORS: Final = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
P = ParamSpec("P")
T = TypeVar("T")


class _Connection:
    """``sql.Connection`` over an asyncpg connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def execute(self, statement: str, *args: object) -> int:
        status: str = await self.conn.execute(statement, *args)  # "UPDATE 1", "INSERT 0 1"
        count = status.rpartition(" ")[2]
        return int(count) if count.isdigit() else 0

    async def executemany(self, statement: str, rows: Sequence[Sequence[object]]) -> None:
        await self.conn.executemany(statement, rows)

    async def fetch(self, statement: str, *args: object) -> Sequence[sql.Row]:
        rows: list[sql.Row] = await self.conn.fetch(statement, *args)
        return rows


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
            async with self.pool.acquire() as conn, conn.transaction():
                # Nodes of a cluster start together: two running this DDL at once on a
                # fresh schema deadlock (or collide on CREATE SCHEMA), so one node at a
                # time creates it, under a lock named by the schema, held to the commit.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                                   f"chatserver-schema:{self.schema}")
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
                await conn.execute(f"SET LOCAL search_path TO {self.schema}")
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

    @asynccontextmanager
    async def _connection(self, transaction: bool) -> AsyncIterator[_Connection]:
        try:
            async with self.pool.acquire() as conn:
                if not transaction:
                    yield _Connection(conn)
                    return
                async with conn.transaction():
                    yield _Connection(conn)
        except _DRIVER_ERRORS as e:
            raise StoreError(str(e)) from e

    async def _write(self, fn: Callable[Concatenate[sql.Connection, P], Awaitable[T]],
                     *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn`` in a transaction of its own; StoreConflict and StoreError roll it back."""
        async with self._connection(transaction=True) as conn:
            return await fn(conn, *args, **kwargs)

    async def _read(self, fn: Callable[Concatenate[sql.Connection, P], Awaitable[T]],
                    *args: P.args, **kwargs: P.kwargs) -> T:
        async with self._connection(transaction=False) as conn:
            return await fn(conn, *args, **kwargs)

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
            return await self._write(self._append_batch, items)
        except StoreError as e:
            if isinstance(e.__cause__, asyncpg.UniqueViolationError):
                # The same sender's same id, stored by another node a moment ago: only
                # that send lost a race. Alone, it finds the stored one (seq, False).
                raise StoreConflict(str(e)) from e
            raise

    async def _append_batch(self, conn: sql.Connection, items: list[Append]) -> list[object]:
        keys = list({(a.room, a.sender.id, a.msg_id) for a in items})
        stored: dict[sql.MessageKey, int] = {
            (sql.col_str(r[0]), sql.col_str(r[1]), sql.col_str(r[2])): sql.col_int(r[3])
            for r in await conn.fetch(
                "SELECT m.room, m.sender_id, m.msg_id, m.seq FROM messages m JOIN "
                "unnest($1::text[], $2::text[], $3::text[]) AS k(room, sender_id, msg_id) "
                "USING (room, sender_id, msg_id)",
                [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])}
        # Room counters are locked in id order, the same on every node: no deadlock.
        wanted = sorted({a.room for a in items
                         if (a.room, a.sender.id, a.msg_id) not in stored})
        hwm: dict[str, int] = {sql.col_str(r[0]): sql.col_int(r[1]) for r in await conn.fetch(
            "SELECT id, hwm FROM rooms WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
            wanted)}
        results: list[object] = []
        rows: list[tuple[object, ...]] = []
        audits: list[sql.AuditItem] = []
        others: list[StoreOp] = []
        for a in items:
            result = sql.number(a, stored, hwm)
            results.append(result)
            if isinstance(result, tuple) and result[1]:
                seq = result[0]
                rows.append(sql.message_row(a, seq))
                audits.append(sql.audit_of(a, seq))
                audits += [(op, None) for op in a.also if isinstance(op, AuditEntry)]
                others += [op for op in a.also if not isinstance(op, AuditEntry)]
        touched = sorted({a.room for a, r in zip(items, results, strict=True)
                          if isinstance(r, tuple) and r[1]})
        if touched:
            await conn.execute(
                "UPDATE rooms SET hwm = d.hwm FROM unnest($1::text[], $2::bigint[]) "
                "AS d(id, hwm) WHERE rooms.id = d.id", touched, [hwm[r] for r in touched])
        if rows:
            await conn.executemany(TABLES.insert_messages, rows)
        for op in others:  # same transaction as their messages
            await TABLES.write(conn, op)
        await self._append_audit(conn, audits)
        return results

    async def apply(self, ops: Sequence[StoreOp]) -> None:
        async def write(conn: sql.Connection) -> None:
            for op in ops:
                if not isinstance(op, AuditEntry):
                    await TABLES.write(conn, op)
            await self._append_audit(conn, [(op, None) for op in ops
                                            if isinstance(op, AuditEntry)])

        await self._write(write)

    async def _append_audit(self, conn: sql.Connection, entries: Sequence[sql.AuditItem]
                            ) -> None:
        if not entries:
            return
        # SG-16: one chain across every node, so appends take a transaction-scoped lock.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _AUDIT_LOCK)
        last = await conn.fetch(TABLES.last_hash)
        rows, _ = sql.chain(sql.col_str(last[0][0]) if last else GENESIS, entries)
        await conn.executemany(TABLES.insert_audit, rows)

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
