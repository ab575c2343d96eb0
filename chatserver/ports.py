"""The ports every backend implements (CONTRIBUTING.md § Style), with their guarantees."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from chatserver.auditchain import ChainRow
from chatserver.core.effects import (
    AlertRecord,
    Audience,
    AuditEntry,
    CaseRecord,
    HeldRecord,
    RoomRecord,
    StoreOp,
)
from chatserver.core.events import Event, Message, Person
from chatserver.core.ids import MessageId, ParticipantId, RoomId
from chatserver.core.scopes import AuditScope
from chatserver.core.sync import Sync

__all__ = [
    "Allowance", "AuditRow", "Broker", "BrokerError", "ClusterState", "Cutoffs", "Envelope",
    "Store", "StoreConflict", "StoreError", "UserRow",
]


class BrokerError(Exception):
    """The broker or the cluster state could not publish or answer (Redis down or slower
    than ``broker.timeout_s``); the caller answers ``internal``. A timeout may come after
    Redis did the work, so a publish that raised is in doubt, not undone."""


class StoreError(Exception):
    """The store could not make a write durable; nothing of that write happened."""


class StoreConflict(StoreError):
    """Someone else got there first (a case claimed on another node); nothing written."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """What travels between nodes: an already-moderated event and who gets it.

    A node never re-moderates an envelope (docs/architecture.md § Cluster semantics).
    """

    room: RoomId
    event: Event | Sync
    audience: Audience
    target: ParticipantId | None = None
    node: str = ""


@dataclass(frozen=True, slots=True)
class Allowance:
    """One attempt budget: at most ``limit`` counted attempts per ``window_ms`` (a fixed
    window that starts with the first attempt) under ``key``."""

    key: str
    limit: int
    window_ms: int


class Broker(Protocol):
    """Fan-out between nodes, and each room's recent history for resume
    (Centrifuge's ``Broker``: publish, subscribe, history).

    Guarantees:

    - Delivery is at most once: ``publish`` hands the envelope to the ``start`` handler
      of every node subscribed at that moment (following the room, or any node for
      ``Sync`` and ``ALL_ROOMS``), once each, or not at all. A node that was not
      subscribed (reconnecting) misses it for good; what it missed is found again by
      seq (holes filled from the store, clients resuming), never redelivered.
    - Order: a room's envelopes arrive in publish order; ``Sync`` and ``ALL_ROOMS``
      envelopes in publish order among themselves, but not ordered against a room's.
    - A ``Message`` is added to its room's history and published in one atomic step, so
      history order is publish order is seq order (the seq is the store's), and a seq
      already in history is neither kept nor delivered again: republishing what a node
      is unsure of is safe.
    - History keeps the last ``history`` messages of each room by seq; it is a cache of
      the store (the record), rebuilt with ``seed``.
    - A failure raises ``BrokerError`` instead of dropping silently.

    On a Redis outage: ``ready`` turns False as soon as the subscription is lost, and
    every call that needs Redis raises ``BrokerError`` within ``broker.timeout_s`` (the
    server refuses sends ``internal``, /readyz answers 503). The subscriber reconnects
    with backoff, subscribes again to control and every followed room, and then calls
    the ``on_reset`` hook it was given, so the server reseeds history from the store and
    tells its clients to resume (SECURITY.md F-04 to F-09).
    """

    shared: bool
    """True when other nodes receive what this one publishes (a cluster): the server
    then shares room state, presence and per-person counts (``ClusterState``)."""

    def ready(self) -> bool:
        """Whether a publish now would reach every node; no I/O (checked per send)."""
    async def ping(self) -> bool:
        """Whether the broker answers now (I/O, bounded by its timeout): /readyz."""
    async def start(self, on_envelope: Callable[[Envelope], Awaitable[None] | None]) -> None:
        """Deliver what arrives to ``on_envelope``, one envelope at a time; returns once
        subscribed, or after a bounded wait when the broker is down (it keeps trying)."""
    async def close(self) -> None: ...
    async def publish(self, envelope: Envelope) -> None:
        """Deliver to every node; a ``Message`` is first added to the room's history,
        in the same atomic step (seq order = history order = publish order)."""
    async def follow(self, room: RoomId) -> bool:
        """Receive this room's messages and events from now on (this node has members
        in it); True if it did not already."""
    async def unfollow(self, room: RoomId) -> None: ...
    async def resubscribe(self) -> None:
        """Drop the subscription and make it again (it went silent), then resync."""
    async def history(self, room: RoomId, after: int | None, limit: int
                      ) -> tuple[list[Message], bool]:
        """Messages after ``after`` (or the last ``limit``); True when history has a hole
        before them, so the client must be told ``gap``."""
    async def redact(self, room: RoomId, seq: int) -> None:
        """Remove one message from history: no resume or welcome sends it again."""
    async def seed(self, room: RoomId, messages: Sequence[Message]) -> None:
        """Merge the store's messages (the record) into a room's history, by seq, after
        a restart or a Redis outage; nothing is published."""


class ClusterState(Protocol):
    """The counts every node keeps together: attempt budgets (logins, per-address
    joins, hellos and feedback), each participant's send budget, and how many sockets
    each participant has open on each node.

    Guarantees: each call is one atomic step for the whole cluster (a Lua script), so
    parallel requests on several nodes cannot all slip under a limit; windows run in
    the caller's clock (``now_ms``), not the backend's. Socket counts are kept per node
    and go with the node: unless ``keep_sockets`` renews them, they expire after
    ``expiry_ms``, so a killed node's sockets stop counting.

    On a Redis outage every call raises ``BrokerError`` and each caller chooses: joins,
    hellos and sends are let through (nothing is sent or stored without the broker
    anyway, F-04), logins and feedback are refused ``internal`` (without the count
    nobody could stop guessing or a flood). Redis restarting empty forgets every count:
    windows start again, and the server closes every socket 1012 when the broker comes
    back (``Broker`` ``on_reset``), so each socket is counted again as it reconnects.
    """

    async def close(self) -> None: ...
    async def take_attempts(self, allowances: Sequence[Allowance], now_ms: int) -> bool:
        """Atomically, on every node: if each allowance is under its limit, count one
        attempt on each and return True; otherwise count nothing and return False.
        (Checked and counted in one step, so parallel requests cannot all pass.)"""
    async def settle_attempts(self, clear: Sequence[str], refund: Sequence[str]) -> None:
        """Forget the attempts counted under ``clear``; give one back under ``refund``
        (never below zero, never reviving an expired window)."""
    async def take_budget(self, participant: str, msg_id: str, limit: int, window_ms: int,
                          now_ms: int) -> bool:
        """One send from a participant's budget shared by every node (a sliding window
        of ``limit`` ids per ``window_ms``); True if within it. A resend of an id
        already counted is free. Asked only in a cluster: alone, the core's own window
        is the whole budget."""
    async def count_socket(self, node: str, participant: str, delta: int,
                           expiry_ms: int) -> None:
        """Add ``delta`` to the participant's open sockets on ``node``; the node's counts
        expire ``expiry_ms`` from now unless renewed."""
    async def keep_sockets(self, node: str, expiry_ms: int) -> None:
        """Heartbeat: this node is alive, its socket counts hold ``expiry_ms`` more."""
    async def sockets_elsewhere(self, participant: str, nodes: Sequence[str]) -> int:
        """How many sockets the participant has open on these other nodes (SEC-19: the
        cap is per participant, not per node)."""


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Records older than these times (ms) are past their retention (SG-24)."""

    messages: int
    audit_text: int
    cases: int

    @classmethod
    def at(cls, now_ms: int, chat_history_days: int, audit_text_days: int,
           case_record_years: int) -> Cutoffs:
        day = 86_400_000
        return cls(now_ms - chat_history_days * day, now_ms - audit_text_days * day,
                   now_ms - case_record_years * 365 * day)


@dataclass(frozen=True, slots=True)
class UserRow:
    id: str
    username: str
    role: str
    password_hash: str
    disabled: bool
    version: int = 0
    """Bumped by logout, password reset and disable: a token carries the version it
    was issued under and is refused once it moves (issue 14)."""
    display_name: str = ""
    """What everyone in a room sees (issue 14): never the login ``username``. Empty:
    the role's friendly name (``shown_name``)."""

    def shown_name(self) -> str:
        return self.display_name or self.default_name()

    def default_name(self) -> str:
        """The role's friendly name, shown when there is no display name (or one the
        staff name rule refuses, ``core/policy.py``)."""
        return ROLE_NAMES.get(self.role, "Staff")


ROLE_NAMES: Final = {"facilitator": "Facilitator", "counsellor": "Counsellor",
                     "ops": "Support team"}
"""A staff account's display name when none was given (``users add --display-name``)."""


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    ts: int
    room: str | None
    actor: str
    action: str
    target: str | None
    detail: dict[str, object]


class Store(Protocol):
    """The system of record (docs/architecture.md invariant 7).

    Guarantees: every method that writes is one transaction, durable when it
    returns; on failure it raises ``StoreError`` and nothing of the write remains. A
    read the store cannot answer raises ``StoreError`` too.
    ``append_message`` assigns the room's next ``seq`` in the same transaction as the
    message and its audit entry, so a seq is never reused, across restarts too.

    Records (``apply``): storing a record again replaces what it says, by id; what the
    store keeps beside it (a room's seq counter, a held message's decision) is not
    reset by that. A decision once made (``HeldDecided``) is never silently undone:
    a held message stored again after it stays decided, out of ``held()``. A case is
    claimed once (``StoreConflict`` for a claim on a case no longer open). What reads
    order by and retention purges by (a record's ``ts``, its status) is always the
    latest version's.

    Every store (SQLite, PostgreSQL) passes one contract, tests/stores/test_contract.py.
    """

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...
    async def append_message(self, room: RoomId, sender: Person, msg_id: MessageId,
                             text: str, ts: int, audit: AuditEntry,
                             also: Sequence[StoreOp] = ()) -> tuple[int, bool]:
        """Store a message, its audit entry and ``also`` in one transaction; return
        (seq, True), or the original (seq, False) when this sender already sent this id
        (idempotent resend: nothing new is written, ``also`` neither).

        Raises:
            StoreError: ``room`` has no record in the store (``apply`` a ``RoomRecord``
                first), or the write failed; nothing of it was written. Other callers'
                messages committed alongside are not refused with it.
            StoreConflict: a claim in ``also`` lost (see ``apply``)."""
    async def apply(self, ops: Sequence[StoreOp]) -> None: ...
    async def recent_messages(self, room: RoomId, limit: int) -> list[Message]: ...
    async def messages_between(self, room: RoomId, after: int, before: int
                               ) -> list[Message]:
        """Messages with ``after < seq < before``, oldest first (a node fills a hole in
        what the broker delivered: a node that died between commit and publish)."""
    async def rooms(self) -> list[RoomRecord]: ...
    async def held(self) -> list[HeldRecord]:
        """Held messages not yet decided (the approval queue)."""
    async def cases(self) -> list[CaseRecord]: ...
    async def alerts(self) -> list[AlertRecord]:
        """Alerts not yet resolved, oldest first (the facilitators' backlog)."""
    async def audit(self, room: str | None, since: int, limit: int,
                    action: str | None = None, scope: AuditScope | None = None
                    ) -> list[AuditRow]:
        """Entries from ``since`` (ms), oldest first, of one room and one action when
        given (``feedback``: what the "Tell us" page received); ``scope``
        (``core/scopes.py``): only what the reader's role may see, applied before
        ``limit``."""
    async def purge(self, cutoffs: Cutoffs, dry_run: bool) -> dict[str, int]:
        """Remove what is past retention (or count it, ``dry_run``): messages, held and
        blocked text in audit entries (the entries stay), decided held messages, closed
        cases, resolved alerts (their excerpts are risky text). Returns counts per class."""
    async def audit_chain(self) -> list[ChainRow]:
        """Every audit row with its hash, oldest first (``chatserver audit verify``)."""
    async def add_user(self, user: UserRow) -> None:
        """Create, or reset an existing name (its version moves: sessions end)."""
    async def user(self, username: str) -> UserRow | None: ...
    async def user_by_id(self, user_id: str) -> UserRow | None: ...
    async def users(self) -> list[UserRow]: ...
    async def set_disabled(self, username: str, disabled: bool) -> bool:
        """Disable or re-enable; either way the account's version moves, so no token
        issued before survives (not even after a re-enable)."""
    async def bump_version(self, user_id: str) -> bool:
        """End every session of the account (logout); False for an unknown id."""
