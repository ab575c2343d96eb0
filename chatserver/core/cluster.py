"""This node's view of the others (docs/architecture.md § Cluster semantics): when each was last
heard from, who is connected to each, and the durable changes they made, applied here
as they were made there (``sync.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

from chatserver.core.alerting import Alerting
from chatserver.core.cases import Cases
from chatserver.core.effects import (
    AlertRecord,
    Effect,
    Emit,
    HeldDecided,
    HeldRecord,
    Publish,
    RoomRecord,
)
from chatserver.core.events import Person
from chatserver.core.ids import RoomId
from chatserver.core.messaging import Messaging
from chatserver.core.rooms import Rooms
from chatserver.core.sessions import Sessions
from chatserver.core.sync import Sync, SyncRecord

__all__ = ["Cluster"]


class Cluster:
    """Other nodes, their presence in our rooms, and their records."""

    def __init__(self, rooms: Rooms, sessions: Sessions, messaging: Messaging,
                 alerting: Alerting, cases: Cases) -> None:
        self.rooms = rooms
        self.sessions = sessions
        self.messaging = messaging
        self.alerting = alerting
        self.cases = cases
        self.nodes: dict[str, int] = {}
        """Other nodes of a cluster, when each was last heard from (ms)."""

    def presence(self, rooms: Iterable[RoomId] | None = None
                 ) -> tuple[tuple[RoomId, tuple[Person, ...]], ...]:
        """Who is connected to these rooms on this node; None: every room with anyone
        (a heartbeat)."""
        by_id = self.rooms.by_id
        if rooms is None:
            return tuple((r.id, people) for r in by_id.values()
                         if (people := r.local_people()))
        return tuple((rid, by_id[rid].local_people() if rid in by_id else ())
                     for rid in rooms)

    def leads(self, me: str) -> bool:
        """Room timers run on one node (the lowest id alive) so that a mute expiry or an
        unclaimed-emergency alert happens once, not once per node."""
        return all(me <= node for node in self.nodes)

    def apply_sync(self, node: str, sync: Sync, now_ms: int
                   ) -> tuple[list[Effect], set[RoomId]]:
        """Another node's durable changes and its presence. Returns effects for local
        connections, and the rooms whose member list changed here."""
        self.nodes[node] = now_ms
        effects = self.apply_records(sync.records, now_ms)
        changed: set[RoomId] = set()
        self._apply_presence(node, sync, changed)
        return effects, changed

    def apply_records(self, records: Iterable[SyncRecord], now_ms: int) -> list[Effect]:
        """Durable room state made elsewhere: by another node, or read back from the store
        after this node was cut off from the others."""
        effects: list[Effect] = []
        for rec in records:
            if isinstance(rec, RoomRecord):
                effects += self._sync_room(rec, now_ms)
            elif isinstance(rec, HeldRecord):
                room = self.rooms.by_id.get(rec.room)
                if room is not None:
                    room.held[rec.id] = rec
                    self.messaging.held_elsewhere(rec)
            elif isinstance(rec, HeldDecided):
                for room in self.rooms.by_id.values():
                    room.held.pop(rec.id, None)
            elif isinstance(rec, AlertRecord):
                self.alerting.book.apply(rec)
            else:
                effects += self.cases.apply(rec, now_ms)
        return effects

    def _apply_presence(self, node: str, sync: Sync, changed: set[RoomId]) -> None:
        for rid, people in sync.presence:
            room = self.rooms.by_id.get(rid)
            if room is not None and room.remote.get(node, ()) != people:
                changed.add(rid)
                if people:
                    room.remote[node] = people
                else:
                    del room.remote[node]
        if sync.full:
            listed = {rid for rid, _ in sync.presence}
            for room in self.rooms.by_id.values():
                if node in room.remote and room.id not in listed:
                    del room.remote[node]
                    changed.add(room.id)

    def _sync_room(self, rec: RoomRecord, now_ms: int) -> list[Effect]:
        room = self.rooms.by_id.get(rec.id)
        if room is None:
            self.rooms.add(rec)
            return []
        was_closed, removed_before = room.closed, set(room.removed)
        room.apply(rec)
        effects: list[Effect] = []
        for pid in sorted(room.removed - removed_before):
            effects += self.sessions.evict(room, pid)
        if room.closed and not was_closed:
            effects += self.sessions.close_locally(room, now_ms)
        elif effects:  # who is here changed: every node must hear it
            effects.append(Publish(room.id, room.state(now_ms)))
        return effects

    def expire_nodes(self, now_ms: int, expiry_ms: int) -> list[Effect]:
        """A node not heard from (killed): its members leave every member list here."""
        effects: list[Effect] = []
        for node in [n for n, seen in self.nodes.items() if now_ms - seen >= expiry_ms]:
            del self.nodes[node]
            for room in self.rooms.by_id.values():
                if room.remote.pop(node, None) is not None:
                    state = room.state(now_ms)
                    effects += [Emit(cid, state) for cid in sorted(room.conns())]
        return effects
