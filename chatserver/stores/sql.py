"""What the two SQL stores share: one schema, one set of statements, one row mapping.

SQLite (embedded) and PostgreSQL (cluster) each once held a copy of all three, and the
copies drifted: re-storing a held message undid its decision in one and not the other.
Here each statement is written once, with ``?`` placeholders, and rendered for a
``Dialect`` (``$1``… for asyncpg; ``INTEGER`` or ``BIGINT``, ``BOOLEAN``). Upserts are
``INSERT … ON CONFLICT … DO UPDATE`` in both, never SQLite's ``INSERT OR REPLACE``: a
replace deletes the row first, so it resets every column the statement does not name.

What stays in each store is how it talks to its database and how it numbers messages:
SQLite keeps each room's high-water mark in memory (one process owns the file),
PostgreSQL locks the rooms' rows (every node shares them). Both reach the tables
through ``Tables``, which runs on a ``Connection`` each store adapts from its driver.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import orjson

from chatserver.auditchain import ChainRow, chain_hash, text_digest
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
from chatserver.core.roles import Role
from chatserver.core.scopes import AuditScope
from chatserver.ports import AuditRow, Cutoffs, StoreConflict, StoreError, UserRow
from chatserver.stores.groupcommit import Append
from chatserver.stores.records import alert_from, case_from, dumps, held_from, room_from

__all__ = [
    "MIGRATIONS", "POSTGRES", "SCHEMA", "SQLITE", "AuditItem", "AuditRows", "Connection",
    "Dialect", "MessageKey", "Row", "Tables", "audit_of", "chain", "col_int", "col_str",
    "message_row", "number",
]

Row = Sequence[object]
"""One result row as a driver gives it; each column is read through ``col_*`` once."""
MessageKey = tuple[str, str, str]
"""(room, sender id, send id): a message is stored once per key (idempotent resend)."""
AuditRows = list[tuple[object, ...]]
AuditItem = tuple[AuditEntry, Mapping[str, object] | None]
"""An audit entry to chain, and what joins its detail (a message's ``seq``)."""


class Connection(Protocol):
    """One database connection as ``Tables`` needs it; each store adapts its driver."""

    async def execute(self, sql: str, *args: object) -> int:
        """Run one statement; the number of rows it changed."""
    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...
    async def fetch(self, sql: str, *args: object) -> Sequence[Row]: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one database spells what the statements need."""

    integer: str
    """Seqs, ms timestamps, versions (PostgreSQL's INTEGER is 32 bits: too small)."""
    boolean: str
    false: str
    audit_id: str
    """The audit table's key: ascending in insertion order, the chain's order."""
    numbered: bool
    """Placeholders are ``$1, $2…`` (asyncpg), not ``?`` (sqlite3)."""

    def sql(self, text: str) -> str:
        """``text`` with its ``?`` placeholders in this dialect (our statements hold no
        ``?`` anywhere else)."""
        if not self.numbered:
            return text
        parts = text.split("?")
        return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))

    def types(self, text: str) -> str:
        return text.format(int=self.integer, bool=self.boolean, false=self.false,
                           audit_id=self.audit_id)


SQLITE: Final = Dialect("INTEGER", "INTEGER", "0", "INTEGER PRIMARY KEY AUTOINCREMENT",
                        numbered=False)
POSTGRES: Final = Dialect("BIGINT", "BOOLEAN", "FALSE", "BIGSERIAL PRIMARY KEY",
                          numbered=True)

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS rooms (id TEXT PRIMARY KEY, record TEXT NOT NULL,
    hwm {int} NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS messages (room TEXT NOT NULL, seq {int} NOT NULL,
    msg_id TEXT NOT NULL, sender_id TEXT NOT NULL, sender_name TEXT NOT NULL,
    sender_role TEXT NOT NULL, text TEXT NOT NULL, ts {int} NOT NULL,
    redacted {bool} NOT NULL DEFAULT {false}, PRIMARY KEY (room, seq));
CREATE UNIQUE INDEX IF NOT EXISTS messages_idem ON messages (room, sender_id, msg_id);
CREATE TABLE IF NOT EXISTS audit (id {audit_id}, ts {int} NOT NULL, room TEXT,
    actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT, detail TEXT NOT NULL,
    version TEXT NOT NULL, hash TEXT NOT NULL, text TEXT);
CREATE INDEX IF NOT EXISTS audit_room ON audit (room, id);
CREATE INDEX IF NOT EXISTS audit_action ON audit (action, id);
CREATE TABLE IF NOT EXISTS held (id TEXT PRIMARY KEY, room TEXT NOT NULL, record TEXT NOT NULL,
    decided {bool} NOT NULL DEFAULT {false}, ts {int} NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS cases (id TEXT PRIMARY KEY, record TEXT NOT NULL,
    ts {int} NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS alerts (id TEXT PRIMARY KEY, room TEXT NOT NULL,
    record TEXT NOT NULL, ts {int} NOT NULL, status TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_status ON alerts (status, ts);
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL, password_hash TEXT NOT NULL, disabled {bool} NOT NULL DEFAULT {false},
    version {int} NOT NULL DEFAULT 0);
"""
"""Every table as a new store creates it (``{int}``… are the dialect's types)."""

MIGRATIONS: Final = (
    ("audit", "text", "TEXT"),
    ("held", "ts", "{int} NOT NULL DEFAULT 0"),
    ("cases", "ts", "{int} NOT NULL DEFAULT 0"),
    ("cases", "status", "TEXT NOT NULL DEFAULT ''"),
    ("users", "version", "{int} NOT NULL DEFAULT 0"),
    ("users", "display_name", "TEXT NOT NULL DEFAULT ''"),
)
"""Columns added after the first release, (table, column, definition): a store adds
each one its database lacks when it opens."""


def chain(last_hash: str, entries: Iterable[AuditItem]) -> tuple[AuditRows, str]:
    """Audit rows chained on from ``last_hash`` (SG-16), and the new last hash.

    The held or blocked text is kept beside the chained fields, its SHA-256 in the
    detail, so a purge of the text never breaks ``audit verify`` (SG-09). Each entry's
    ``extra`` joins its detail (a message's ``seq``).
    """
    rows: AuditRows = []
    digest = last_hash
    for e, extra in entries:
        body: dict[str, object] = {**e.detail, **(extra or {})}
        if e.text is not None:
            body["text_sha256"] = text_digest(e.text)
        detail = orjson.dumps(body).decode()
        digest = chain_hash(digest, e.ts, e.room, e.actor, e.action, e.target, detail,
                            e.version)
        rows.append((e.ts, e.room, e.actor, e.action, e.target, detail, e.version, digest,
                     e.text))
    return rows, digest


def number(append: Append, stored: dict[MessageKey, int], hwm: dict[str, int]
           ) -> tuple[int, bool] | StoreError:
    """The seq of one message in a batch, by the same rules in both stores.

    Args:
        append: the message.
        stored: seqs already stored, or given earlier in this batch, by key; updated.
        hwm: the last seq of each room the store has a record of; updated.

    Returns:
        (seq, False) for a resend; (next seq, True) for a new message, which the caller
        must write (``message_row``, ``audit_of``, then ``also``) in this transaction;
        or, for a room the store has no record of, the error to give that caller alone
        (nothing of it is written).
    """
    key = (append.room, append.sender.id, append.msg_id)
    if key in stored:
        return stored[key], False
    if append.room not in hwm:
        return StoreError(f"no room {append.room!r} in the store")
    seq = stored[key] = hwm[append.room] = hwm[append.room] + 1
    return seq, True


def message_row(a: Append, seq: int) -> tuple[object, ...]:
    return (a.room, seq, a.msg_id, a.sender.id, a.sender.name, a.sender.role, a.text, a.ts)


def audit_of(a: Append, seq: int) -> AuditItem:
    """The message's own audit entry, its seq in the detail."""
    return a.audit, {"seq": seq}


_MESSAGE_COLUMNS: Final = "seq, msg_id, sender_id, sender_name, sender_role, text, ts"
_USER_COLUMNS: Final = "id, username, role, password_hash, disabled, version, display_name"


def col_int(v: object) -> int:
    """An INTEGER/BIGINT column (SQLite and asyncpg both give ``int``)."""
    if isinstance(v, int):
        return int(v)
    raise StoreError(f"expected an integer column, got {type(v).__name__}")


def col_str(v: object) -> str:
    """A TEXT column that is never NULL."""
    if isinstance(v, str):
        return v
    raise StoreError(f"expected a text column, got {type(v).__name__}")


def _opt_str(v: object) -> str | None:
    return None if v is None else col_str(v)


def _message(room: RoomId, r: Row) -> Message:
    return Message(room, col_int(r[0]), MessageId(col_str(r[1])),
                   Person(ParticipantId(col_str(r[2])), col_str(r[3]), Role(col_str(r[4]))),
                   col_str(r[5]), col_int(r[6]))


def _user(r: Row) -> UserRow:
    return UserRow(col_str(r[0]), col_str(r[1]), col_str(r[2]), col_str(r[3]), bool(r[4]),
                   col_int(r[5]), _opt_str(r[6]) or "")


def _detail(raw: object) -> dict[str, object]:
    """An audit row's detail: always a JSON object (``chain`` writes it)."""
    detail = orjson.loads(col_str(raw))
    if not isinstance(detail, dict):
        raise StoreError("an audit detail is not a JSON object")
    return detail


class Tables:
    """The tables both stores keep, for one dialect: every statement rendered once.

    Each method runs on the connection it is given; the caller owns the transaction.
    """

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        q = dialect.sql
        self.schema = dialect.types(SCHEMA)
        self.migrations = tuple((t, c, dialect.types(d)) for t, c, d in MIGRATIONS)
        self.insert_messages = q(
            "INSERT INTO messages (room, seq, msg_id, sender_id, sender_name, sender_role,"
            " text, ts) VALUES (?,?,?,?,?,?,?,?)")
        self.insert_audit = q(
            "INSERT INTO audit (ts, room, actor, action, target, detail, version, hash, text)"
            " VALUES (?,?,?,?,?,?,?,?,?)")
        self.last_hash = "SELECT hash FROM audit ORDER BY id DESC LIMIT 1"
        # A record's columns are its index (order, retention): they follow the record.
        # Nothing here names `held.decided` but HeldDecided: a decision is never undone
        # by storing the held message again (ports.py § Store).
        self._upsert_room = q("INSERT INTO rooms (id, record) VALUES (?, ?) ON CONFLICT (id)"
                              " DO UPDATE SET record=excluded.record")  # hwm: the seq's
        self._upsert_held = q(
            "INSERT INTO held (id, room, record, ts) VALUES (?,?,?,?) ON CONFLICT (id) DO "
            "UPDATE SET room=excluded.room, record=excluded.record, ts=excluded.ts")
        self._decide_held = q("UPDATE held SET decided=? WHERE id=?")
        self._claim_case = q("UPDATE cases SET record=?, status=? WHERE id=? AND "
                             "status='open'")
        self._upsert_case = q(
            "INSERT INTO cases (id, record, ts, status) VALUES (?,?,?,?) ON CONFLICT (id) DO "
            "UPDATE SET record=excluded.record, ts=excluded.ts, status=excluded.status")
        self._redact = q("UPDATE messages SET redacted=? WHERE room=? AND seq=?")
        self._upsert_alert = q(
            "INSERT INTO alerts (id, room, record, ts, status) VALUES (?,?,?,?,?) ON CONFLICT"
            " (id) DO UPDATE SET room=excluded.room, record=excluded.record, ts=excluded.ts,"
            " status=excluded.status")
        self._recent = q(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE room=? AND NOT "
                         "redacted ORDER BY seq DESC LIMIT ?")
        self._between = q(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE room=? AND seq > ?"
                          " AND seq < ? AND NOT redacted ORDER BY seq")
        self._chain = ("SELECT id, ts, room, actor, action, target, detail, version, hash, "
                       "text FROM audit ORDER BY id")
        # Retention (SG-09, SG-24): (what is counted and removed, the cutoff that applies).
        self._purges = {
            "messages": ("FROM messages WHERE ts < ?", "messages"),
            "audit_text": ("FROM audit WHERE text IS NOT NULL AND ts < ?", "audit_text"),
            "held": ("FROM held WHERE decided AND ts < ?", "audit_text"),
            "cases": ("FROM cases WHERE status='closed' AND ts < ?", "cases"),
            # An alert's excerpt is risky text: kept as long as held text (SG-09).
            "alerts": ("FROM alerts WHERE status='resolved' AND ts < ?", "audit_text"),
        }
        self._forget_text = q("UPDATE audit SET text=NULL WHERE text IS NOT NULL AND ts < ?")
        self._add_user = q(
            "INSERT INTO users (id, username, role, password_hash, disabled, display_name)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (username) DO UPDATE SET"
            " role=excluded.role, password_hash=excluded.password_hash,"
            " disabled=excluded.disabled, display_name=excluded.display_name,"
            " version=users.version + 1")  # a reset ends every session (issue 14)
        self._user = q(f"SELECT {_USER_COLUMNS} FROM users WHERE username=?")
        self._user_by_id = q(f"SELECT {_USER_COLUMNS} FROM users WHERE id=?")
        self._users = f"SELECT {_USER_COLUMNS} FROM users ORDER BY username"
        self._set_disabled = q("UPDATE users SET disabled=?, version=version + 1 "
                               "WHERE username=?")
        self._bump_version = q("UPDATE users SET version=version + 1 WHERE id=?")

    # ------------------------------------------------------------------ writes
    async def write(self, conn: Connection, op: StoreOp) -> None:
        """One record; audit entries are the store's to chain (``chain``).

        Raises:
            StoreConflict: a claim on a case that is no longer open; the caller's
                transaction must roll back.
        """
        if isinstance(op, RoomRecord):
            await conn.execute(self._upsert_room, op.id, dumps(op))
        elif isinstance(op, HeldRecord):
            await conn.execute(self._upsert_held, op.id, op.room, dumps(op), op.ts)
        elif isinstance(op, HeldDecided):
            await conn.execute(self._decide_held, True, op.id)
        elif isinstance(op, CaseRecord) and op.status == "claimed":
            # A case is claimed once, on whichever node: the claim holds only if the case
            # is still open (two counsellors claiming at once on two nodes).
            if await conn.execute(self._claim_case, dumps(op), op.status, op.id) != 1:
                raise StoreConflict(f"case {op.id} is no longer open")
        elif isinstance(op, CaseRecord):
            await conn.execute(self._upsert_case, op.id, dumps(op), op.ts, op.status)
        elif isinstance(op, RedactRecord):
            await conn.execute(self._redact, True, op.room, op.seq)
        elif isinstance(op, AlertRecord):
            await conn.execute(self._upsert_alert, op.id, op.room, dumps(op), op.ts,
                               op.status)
        else:  # AuditEntry: chained by the store, which alone knows the chain's end
            raise TypeError(op)

    async def purge(self, conn: Connection, cutoffs: Cutoffs, dry_run: bool
                    ) -> dict[str, int]:
        counts = {}
        for name, (where, which) in self._purges.items():
            cutoff = getattr(cutoffs, which)
            rows = await conn.fetch(self.dialect.sql(f"SELECT COUNT(*) {where}"), cutoff)
            counts[name] = col_int(rows[0][0])
            if not dry_run and counts[name]:
                if name == "audit_text":  # the entries stay: the chain covers them
                    await conn.execute(self._forget_text, cutoff)
                else:
                    await conn.execute(self.dialect.sql(f"DELETE {where}"), cutoff)
        return counts

    async def add_user(self, conn: Connection, user: UserRow) -> None:
        await conn.execute(self._add_user, user.id, user.username, user.role,
                           user.password_hash, user.disabled, user.display_name)

    async def set_disabled(self, conn: Connection, username: str, disabled: bool) -> bool:
        return await conn.execute(self._set_disabled, disabled, username) == 1

    async def bump_version(self, conn: Connection, user_id: str) -> bool:
        return await conn.execute(self._bump_version, user_id) == 1

    # ------------------------------------------------------------------- reads
    async def recent_messages(self, conn: Connection, room: RoomId, limit: int
                              ) -> list[Message]:
        rows = await conn.fetch(self._recent, room, limit)
        return [_message(room, r) for r in reversed(rows)]

    async def messages_between(self, conn: Connection, room: RoomId, after: int,
                               before: int) -> list[Message]:
        return [_message(room, r) for r in await conn.fetch(self._between, room, after,
                                                             before)]

    async def rooms(self, conn: Connection) -> list[RoomRecord]:
        return [room_from(col_str(r[0])) for r in await conn.fetch("SELECT record FROM rooms")]

    async def held(self, conn: Connection) -> list[HeldRecord]:
        return [held_from(col_str(r[0])) for r in
                await conn.fetch("SELECT record FROM held WHERE NOT decided")]

    async def cases(self, conn: Connection) -> list[CaseRecord]:
        return [case_from(col_str(r[0])) for r in await conn.fetch("SELECT record FROM cases")]

    async def alerts(self, conn: Connection) -> list[AlertRecord]:
        return [alert_from(col_str(r[0])) for r in await conn.fetch(
            "SELECT record FROM alerts WHERE status != 'resolved' ORDER BY ts, id")]

    async def audit(self, conn: Connection, room: str | None, since: int, limit: int,
                    action: str | None = None, scope: AuditScope | None = None
                    ) -> list[AuditRow]:
        sql = "SELECT id, ts, room, actor, action, target, detail FROM audit WHERE ts >= ?"
        args: list[object] = [since]
        if room:
            sql, args = sql + " AND room = ?", [*args, room]
        if action:
            sql, args = sql + " AND action = ?", [*args, action]
        if scope is not None and scope.rooms is not None:
            # No rooms at all: `IN (NULL)` matches nothing (not even entries without one).
            sql += f" AND room IN ({','.join('?' * len(scope.rooms)) or 'NULL'})"
            args += sorted(scope.rooms)
        if scope is not None and scope.hidden_actions:
            sql += f" AND action NOT IN ({','.join('?' * len(scope.hidden_actions))})"
            args += sorted(scope.hidden_actions)
        rows = await conn.fetch(self.dialect.sql(sql + " ORDER BY id LIMIT ?"), *args, limit)
        return [AuditRow(col_int(r[0]), col_int(r[1]), _opt_str(r[2]), col_str(r[3]),
                         col_str(r[4]), _opt_str(r[5]), _detail(r[6]))
                for r in rows]

    async def audit_chain(self, conn: Connection) -> list[ChainRow]:
        return [ChainRow(col_int(r[0]), col_int(r[1]), _opt_str(r[2]), col_str(r[3]),
                         col_str(r[4]), _opt_str(r[5]), col_str(r[6]), col_str(r[7]),
                         col_str(r[8]), _opt_str(r[9]))
                for r in await conn.fetch(self._chain)]

    async def user(self, conn: Connection, username: str) -> UserRow | None:
        rows = await conn.fetch(self._user, username)
        return _user(rows[0]) if rows else None

    async def user_by_id(self, conn: Connection, user_id: str) -> UserRow | None:
        rows = await conn.fetch(self._user_by_id, user_id)
        return _user(rows[0]) if rows else None

    async def users(self, conn: Connection) -> list[UserRow]:
        return [_user(r) for r in await conn.fetch(self._users)]
