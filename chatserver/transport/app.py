"""The server: wires core, store and broker, runs effects, owns timers and shutdown.

Thin on purpose: every decision is the core's; this file only does I/O in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import struct
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import WSMsgType, web

from chatserver.config import Config, read_rule_files
from chatserver.core import commands as c
from chatserver.core.effects import (
    ALL_ROOMS,
    Audience,
    AuditEntry,
    Close,
    Deliver,
    Effect,
    Emit,
    History,
    Measure,
    OpsAlert,
    Persist,
    Publish,
    RedactRecord,
    RoomRecord,
    Welcome,
)
from chatserver.core.errors import CloseCode, ErrorCode
from chatserver.core.events import (
    Ack,
    ErrorEvent,
    Event,
    Message,
    RoomState,
    Welcome as WelcomeEvent,
)
from chatserver.core.ids import ConnId, MessageId, ParticipantId, RoomId
from chatserver.core.node import ChatCore
from chatserver.core.roles import Role
from chatserver.core.sequencer import Sequencer
from chatserver.core.session import Identity
from chatserver.core.sync import SYNC_RECORDS, Sync, SyncRecord
from chatserver.core.wire import encode
from chatserver.moderation.engine import Verdict, load_rules
from chatserver.moderation.pipeline import Moderator
from chatserver.moderation.rules import Action, RuleLoadError
from chatserver.observability import Metrics, log
from chatserver.ports import (
    Broker,
    BrokerError,
    ClusterState,
    Envelope,
    Store,
    StoreConflict,
    StoreError,
)
from chatserver.transport.auth import Tokens, session_current
from chatserver.transport.vectors import VectorBatcher

__all__ = ["APP_KEY", "Server", "Socket", "now_ms"]



def now_ms() -> int:
    """Wall-clock ms for ``ts`` fields (PROTOCOL.md: times are ms since the epoch)."""
    return time.time_ns() // 1_000_000


def _mono_ms() -> int:
    """For waiting on a missing seq: a wall-clock step must not shorten the wait."""
    return time.monotonic_ns() // 1_000_000


@dataclass(slots=True)
class Socket:
    """One WebSocket: a bounded outbox drained by one writer task (STYLE.md example 9)."""

    ws: web.WebSocketResponse
    outbox: asyncio.Queue[bytes]
    transport: asyncio.Transport | None = None
    """The TCP transport, kept from the start: aiohttp forgets it once closing, and a
    peer that reads nothing must still be cut (``abort``)."""
    writer: asyncio.Task[None] | None = None
    closing: bool = False
    close_task: asyncio.Task[None] | None = field(default=None)
    counted: ParticipantId | None = None
    """Whose socket this is, once counted in the cluster's per-person socket count."""
    held: list[tuple[Event, bytes]] | None = None
    """Live frames kept back while this socket's history is being read (welcome), so
    nothing arrives before the welcome or twice."""
    floor: dict[RoomId, int] = field(default_factory=dict)
    """Per room, the last seq this socket was sent as history: live copies are dropped."""

    def put(self, frame: bytes) -> bool:
        """Queue a frame; False when the client has fallen too far behind."""
        if self.closing:
            return True
        try:
            self.outbox.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        return True


class Server:
    def __init__(self, config: Config, rules: Moderator, store: Store, broker: Broker,
                 cluster: ClusterState, tokens: Tokens, node_id: str | None = None,
                 clock: Callable[[], int] = now_ms) -> None:
        self.config = config
        self.now = clock
        """Wall-clock ms; tests pass a clock they move (timed mutes without waiting)."""
        self.store = store
        self.broker = broker
        self.cluster = cluster
        self.tokens = tokens
        self.node_id = node_id or secrets.token_hex(4)
        self.core = ChatCore(config, rules)
        self.metrics = Metrics()
        self.metrics.watch(lambda: self.core.waiting(self.now()))
        self.sockets: dict[ConnId, Socket] = {}
        self._next_conn = 0
        self._tick: asyncio.Task[None] | None = None
        self._beat: asyncio.Task[None] | None = None
        self._holes: asyncio.Task[None] | None = None
        self.order = Sequencer()
        self._tasks: set[asyncio.Task[None]] = set()
        self._broker_down_logged = -1000
        self._echo_ms = _mono_ms()
        """When this node last heard its own heartbeat come back through the broker."""
        self._reload_lock = asyncio.Lock()
        self._vectors: VectorBatcher | None = None
        self.stopping = False

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        await self.store.open()
        for rec in await self.store.rooms():
            self.core.add_room(rec)
        self.core.load_held(await self.store.held())
        self.core.load_cases(await self.store.cases())
        self.core.load_alerts(await self.store.alerts())
        try:
            await self._reseed()
        except BrokerError as e:
            # F-04: Redis down at start. Serve anyway (sends are refused `internal`,
            # /readyz says 503); the history is rebuilt when the broker comes back.
            log.error("ops_alert", kind="broker", error=type(e).__name__)
        await self.broker.start(self.on_envelope)
        self._tick = asyncio.create_task(self._ticker(), name="ticker")
        if self.broker.shared:
            self._beat = asyncio.create_task(self._heartbeat(), name="heartbeat")
        log.info("server_started", node=self.node_id, rooms=len(self.core.rooms),
                 rules_version=self.core.rules.version)

    async def stop(self) -> None:
        """Graceful stop: close every socket 1012 (clients resume), flush the store."""
        self.stopping = True
        for task in (self._tick, self._beat, self._holes):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for sock in list(self.sockets.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sock.ws.close(code=CloseCode.RESTARTING,
                                                     message=b"server restarting"),
                                       self.config.server.shutdown_grace_s)
        with contextlib.suppress(Exception):  # open denial windows: summarised now
            await self.run(self.core.flush_audit(self.now()))
        await self.broker.close()
        await self.cluster.close()
        await self.store.close()
        log.info("server_stopped", node=self.node_id)

    async def _reseed(self) -> None:
        """The store is the record; the broker's history is a cache rebuilt from it, and
        each room's delivery order starts after what the store holds."""
        for rid in list(self.core.rooms):
            recent = await self.store.recent_messages(rid, self.config.limits.history)
            self.order.start_at(rid, recent[-1].seq if recent else 0)
            await self.broker.seed(rid, recent)

    async def on_broker_reset(self) -> None:
        """The broker came back after an outage: what was published meanwhile may be
        missing here and from its history. Rebuild the history from the store, say who
        is here, and close every socket 1012 so its client resumes by seq."""
        log.warning("broker_reconnected", node=self.node_id)
        try:
            # Changes other nodes made while this one could not hear them.
            records: list[SyncRecord] = [*await self.store.rooms(),
                                         *await self.store.held(), *await self.store.cases()]
            self._order_new_rooms(records)
            await self.run(self.core.apply_records(records, self.now()))
            # Resolved elsewhere meanwhile: gone from the store's list, so from ours.
            self.core.load_alerts(await self.store.alerts(), fresh=True)
            await self._reseed()
        except (BrokerError, StoreError) as e:
            log.error("ops_alert", kind="reseed_failed", error=type(e).__name__)
        await self._publish(Envelope(ALL_ROOMS, Sync(presence=self.core.presence(), full=True),
                                     Audience.MEMBERS, None, self.node_id))
        for cid in list(self.sockets):
            self.close_soon(cid, CloseCode.RESTARTING, "reconnect and resume")

    def _order_new_rooms(self, records: Sequence[SyncRecord]) -> None:
        """A room made on another node just now has had no messages yet."""
        for rec in records:
            if isinstance(rec, RoomRecord) and rec.id not in self.core.rooms:
                self.order.start_at(rec.id, 0)

    async def ensure_room(self, record: RoomRecord) -> None:
        if record.id not in self.core.rooms:
            await self.create_room(record)

    async def create_room(self, record: RoomRecord, *audit: AuditEntry) -> None:
        """A new room, in the store and on every node."""
        await self.store.apply([record, *audit])
        self.core.add_room(record)
        self.order.start_at(record.id, 0)
        await self._sync((record,))

    async def reload_rules(self) -> tuple[int, str]:
        """Load ``moderation_rules/`` and swap atomically; raises RuleLoadError and keeps
        the running set on any problem. Compiling runs in a thread: the loop keeps
        serving."""
        async with self._reload_lock:
            files = read_rule_files(self.config.moderation.rules_path)
            ruleset = await asyncio.to_thread(load_rules, files)
            self.core.set_rules(ruleset)
            log.info("rules_reloaded", version=ruleset.version, rules=len(ruleset))
            return len(ruleset), ruleset.version

    async def rules_reloaded_here(self) -> None:
        """Ops reloaded the rules through this node: every other node reloads too."""
        if self.broker.shared:
            await self._publish(Envelope(ALL_ROOMS, Sync(reload_rules=True), Audience.MEMBERS,
                                         None, self.node_id))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """A task that outlives its caller, kept referenced until it ends."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_for_peer(self) -> None:
        try:
            await self.reload_rules()
        except RuleLoadError as e:
            log.error("ops_alert", kind="rules_reload_refused", problems=len(e.problems))

    def new_conn(self, sock: Socket) -> ConnId:
        self._next_conn += 1
        cid = ConnId(self._next_conn)
        self.sockets[cid] = sock
        self.core.connect(cid)
        self.metrics.connections.set(len(self.sockets))
        return cid

    # ------------------------------------------------------- commands from sockets
    async def hello(self, cid: ConnId, ident: Identity, resume: Mapping[RoomId, int]) -> None:
        elsewhere = 0
        if self.broker.shared:
            others = [n for n in self.core.nodes if n != self.node_id]
            with contextlib.suppress(BrokerError):  # sends fail anyway without Redis
                elsewhere = await self.cluster.sockets_elsewhere(ident.id, others)
        await self.run(self.core.hello(cid, ident, resume, self.now(), elsewhere))
        conn, sock = self.core.conns.get(cid), self.sockets.get(cid)
        if self.broker.shared and conn is not None and conn.identity is not None and \
                sock is not None and not sock.closing:
            sock.counted = ident.id
            with contextlib.suppress(BrokerError):
                await self.cluster.count_socket(self.node_id, ident.id, 1, self._expiry_ms)

    async def handle(self, cid: ConnId, command: c.Command) -> None:
        over = False
        if self.broker.shared and isinstance(command, c.Send):  # one node: nothing to ask
            conn = self.core.conns.get(cid)
            ident = conn.identity if conn is not None else None
            if ident is not None and ident.role == Role.PARTICIPANT:
                lim = self.config.limits
                with contextlib.suppress(BrokerError):  # the publish would fail anyway
                    over = not await self.cluster.take_budget(
                        ident.id, command.id, lim.rate_messages, lim.rate_window_s * 1000,
                        self.now())
        if isinstance(command, c.Send):
            await self._prepare_moderation(cid, command.text)
        await self.run(self.core.handle(cid, command, self.now(), over))

    async def _prepare_moderation(self, cid: ConnId, text: str) -> None:
        """The slow tier of moderation, computed here (off the loop, batched) so that the
        core's check, which runs inline, finds it ready."""
        conn = self.core.conns.get(cid)
        ident = conn.identity if conn is not None else None
        if ident is not None:
            await self._prepare_text(text, ident.role)

    async def _prepare_text(self, text: str, role: Role) -> None:
        moderator = self.core.moderator
        if moderator.classifier is None:
            return
        try:
            folded = moderator.needs_vector(text, role.value)
            if folded is not None:
                if self._vectors is None:
                    self._vectors = VectorBatcher(moderator.classifier.embed)
                moderator.remember(text, role.value, await self._vectors.vector(folded))
        except Exception:
            # The core scores the line itself; failing that, it holds it (fail closed).
            log.exception("moderation_prepare_failed")

    async def moderate(self, text: str, role: Role = Role.PARTICIPANT) -> Verdict:
        """A text written outside a room (the "Tell us" page) read by the same moderator
        as a message, both stages, the slow tier off the loop as for a ``send``. A
        failing moderator fails closed: the text counts as blocked."""
        await self._prepare_text(text, role)
        try:
            return self.core.moderator.check(text, role.value)
        except Exception:
            log.exception("moderation_failed")
            return Verdict(Action.BLOCK, "", (), (), (), False, None, "", "", "error")

    @property
    def _expiry_ms(self) -> int:
        return int(self.config.broker.node_expiry_s * 1000)

    async def drop_conn(self, cid: ConnId) -> None:
        sock = self.sockets.get(cid)
        if sock is not None and sock.counted is not None and not self.stopping:
            with contextlib.suppress(BrokerError):
                await self.cluster.count_socket(self.node_id, sock.counted, -1,
                                                self._expiry_ms)
        self.sockets.pop(cid, None)
        self.metrics.connections.set(len(self.sockets))
        effects = self.core.disconnect(cid, self.now())
        if not self.stopping:  # on shutdown every socket goes; nobody is left to tell
            await self.run(effects)

    # --------------------------------------------------------------- effects
    async def run(self, effects: Sequence[Effect]) -> None:
        """Run effects in order; a failed durable step stops the rest (invariant 3)."""
        for effect in effects:
            if isinstance(effect, Emit):
                self.emit(effect.conn, effect.event)
            elif isinstance(effect, Publish):
                event: Event | Sync = effect.event
                if isinstance(event, RoomState) and effect.audience == Audience.MEMBERS:
                    # Who is in a room is per node: send this node's part; every node
                    # then shows its members the whole, merged the same way everywhere.
                    presence = self.core.presence((effect.room,))
                    await self._track(effect.room, bool(presence and presence[0][1]))
                    event = Sync(presence=presence, announce=(effect.room,))
                await self._publish(Envelope(effect.room, event, effect.audience,
                                             effect.target, self.node_id))
            elif isinstance(effect, Persist):
                try:
                    await self.store.apply(effect.ops)
                except StoreError as e:
                    self._store_failed(e, effect.conn, effect.ref)
                    if effect.conn is not None and effect.ref is not None:
                        self.core.abort_send(effect.conn, MessageId(effect.ref))
                    self.core.undo(effect.undo)
                    return
                for op in effect.ops:
                    if isinstance(op, RedactRecord):
                        # History and resume must no longer hold it (PROTOCOL.md `redact`).
                        with contextlib.suppress(BrokerError):
                            await self.broker.redact(op.room, op.seq)
                await self._sync(effect.ops)
                if effect.then is not None:
                    await self.run(self.core.complete(effect.then, self.now()))
            elif isinstance(effect, Deliver):
                if not await self._deliver(effect):
                    return
            elif isinstance(effect, Welcome):
                await self._welcome(effect)
            elif isinstance(effect, History):
                sock = self.sockets.get(effect.conn)
                if sock is not None:
                    sock.held = []
                await self._track(effect.room, True)
                messages, _ = await self._history(effect.room, None,
                                                  self.config.limits.welcome_history)
                for m in messages:
                    self.emit(effect.conn, m)
                self._release(effect.conn, {effect.room: messages})
            elif isinstance(effect, Close):
                self.close_soon(effect.conn, effect.code, effect.reason)
            elif isinstance(effect, OpsAlert):
                self.metrics.ops_alerts.labels(effect.kind).inc()
                log.error("ops_alert", kind=effect.kind, detail=effect.detail)
            elif isinstance(effect, Measure):
                self.metrics.record(effect)

    def _store_failed(self, error: Exception, conn: ConnId | None, ref: str | None) -> None:
        """A durable step failed (store) or could not be shared (broker): `internal`."""
        if isinstance(error, StoreConflict) and ref is None:
            # Not a fault: someone else was first (a case claimed on another node).
            if conn is not None:
                self.emit(conn, ErrorEvent(ErrorCode.CONFLICT.value,
                                           "Someone else has just taken that case.", ref))
            return
        if isinstance(error, BrokerError):
            pass  # _publish (or the readiness check) has already alerted
        else:
            self.metrics.store_errors.inc()
            self.metrics.ops_alerts.labels("store").inc()
            log.error("ops_alert", kind="store", error=type(error).__name__)
        if conn is not None:
            event: Event = Ack(ref, "rejected", code=ErrorCode.INTERNAL.value) if ref else \
                ErrorEvent(ErrorCode.INTERNAL.value, "Something went wrong on our side.")
            self.emit(conn, event)

    async def _publish(self, envelope: Envelope) -> bool:
        """Publish; a broker failure is an ops alert and False, never a lost socket."""
        try:
            await self.broker.publish(envelope)
        except BrokerError as e:
            self.metrics.ops_alerts.labels("broker").inc()
            log.error("ops_alert", kind="broker", error=type(e).__name__)
            return False
        return True

    async def _sync(self, ops: Sequence[object]) -> None:
        """Tell the other nodes what was just made durable (nothing to tell alone)."""
        if self.broker.shared:
            records = tuple(op for op in ops if isinstance(op, SYNC_RECORDS))
            if records:
                await self._publish(Envelope(ALL_ROOMS, Sync(records), Audience.MEMBERS,
                                             None, self.node_id))

    async def _deliver(self, d: Deliver) -> bool:
        failed: Exception | None = None
        if not self.broker.ready():
            # Nobody on another node would see it: refuse before anything is stored.
            failed = BrokerError("broker unavailable")
            self.metrics.ops_alerts.labels("broker").inc()
            if _mono_ms() - self._broker_down_logged >= 1000:  # one line a second, not a flood
                self._broker_down_logged = _mono_ms()
                log.error("ops_alert", kind="broker", error="unavailable")
        else:
            try:
                seq, _ = await self.store.append_message(d.room, d.sender, d.msg_id, d.text,
                                                         d.ts, d.audit, d.also)
            except StoreError as e:
                failed = e
        if failed is None:
            msg = Message(d.room, seq, d.msg_id, d.sender, d.text, d.ts)
            # Published again on a resend too (the first node may have died between its
            # commit and its publish): the broker publishes a seq only once.
            if not await self._publish(Envelope(d.room, msg, Audience.MEMBERS, None,
                                                self.node_id)):
                # Stored but not published: in doubt. A resend with the same id gets
                # the stored seq and publishes it; other nodes fill the hole meanwhile.
                failed = BrokerError("publish failed")
            else:
                await self._sync(d.also)
        if failed is not None:
            self._store_failed(failed, d.conn if d.conn is not None else d.actor, d.ref)
            self.core.undo(d.undo)
            await self.run(self.core.complete_send(d.sender.id, d.msg_id, None))
            return False
        if d.conn is not None and d.ref is not None:
            ack = Ack(d.ref, "sent", seq=seq, text=d.text if d.masked else None, room=d.room)
            self.emit(d.conn, ack)
            await self.run(self.core.complete_send(d.sender.id, d.msg_id, ack))
        return True

    async def _welcome(self, w: Welcome) -> None:
        limit = self.config.limits
        window_ms = limit.resume_window_s * 1000
        history: dict[RoomId, tuple[Message, ...]] = {}
        rooms = []
        now = self.now()
        sock = self.sockets.get(w.conn)
        if sock is not None:
            sock.held = []
        for state in w.rooms:  # subscribed before reading history: nothing falls between
            await self._track(state.room, True)
        budget = limit.welcome_bytes  # issue 14: a small hello cannot fetch megabytes
        for state in w.rooms:
            after = w.resume.get(state.room)
            msgs, gap = await self._history(state.room, after, limit.welcome_history
                                            if after is None else limit.history)
            if after is not None and msgs and msgs[0].ts < now - window_ms:
                gap = True  # PROTOCOL.md § Limits: resume window 10 minutes
                msgs = msgs[-limit.welcome_history:]
            kept = _newest_within(msgs, budget)
            budget -= sum(size for _, size in kept)
            if len(kept) < len(msgs) and after is not None:
                gap = True  # cut short by limits.welcome_bytes: the client reloads
            msgs = [m for m, _ in kept]
            history[state.room] = tuple(msgs)
            rooms.append(state if not gap else type(state)(
                state.room, state.title, state.paused, state.slow_mode_s, state.members,
                state.closed, gap=True))
        self.emit(w.conn, WelcomeEvent(w.you, tuple(rooms), history))
        self._release(w.conn, history)

    async def _track(self, room: RoomId, here: bool) -> None:
        """Receive a room's traffic while this node has members in it (a cluster node
        does not hear rooms it serves nobody in)."""
        try:
            if not here:
                await self.broker.unfollow(room)
            elif await self.broker.follow(room):
                # Newly heard: the order starts after what the history already holds.
                last, _ = await self.broker.history(room, None, 1)
                if last:
                    self.order.start_at(room, last[-1].seq)
        except BrokerError:
            pass  # the subscriber takes every followed room when it reconnects

    async def _history(self, room: RoomId, after: int | None, limit: int
                       ) -> tuple[list[Message], bool]:
        """From the broker; from the store (the record) while the broker is down."""
        try:
            return await self.broker.history(room, after, limit)
        except BrokerError:
            if after is None:
                return await self.store.recent_messages(room, limit), False
            msgs = await self.store.messages_between(room, after, 2**62)
            return msgs[-limit:], len(msgs) > limit

    def _release(self, cid: ConnId, history: Mapping[RoomId, Sequence[Message]]) -> None:
        """History is sent: send what arrived live meanwhile, minus what it held."""
        sock = self.sockets.get(cid)
        if sock is None:
            return
        for room, msgs in history.items():
            if msgs:
                sock.floor[room] = max(sock.floor.get(room, 0), msgs[-1].seq)
        held, sock.held = sock.held or [], None
        for event, frame in held:
            if isinstance(event, Message) and event.seq <= sock.floor.get(event.room, 0):
                continue
            if not sock.put(frame):
                self._too_slow(cid)
                return

    def emit(self, cid: ConnId, event: Event) -> None:
        sock = self.sockets.get(cid)
        if sock is not None and not sock.put(encode(event)):
            self._too_slow(cid)

    async def on_envelope(self, env: Envelope) -> None:
        """An already-moderated event from the broker (never moderated again): fan out
        to local members; messages in seq order, once."""
        event = env.event
        if isinstance(event, Sync):
            await self._on_sync(env.node, event)
        elif isinstance(event, Message):
            for msg in self.order.offer(event, _mono_ms()):
                self._fan_out_message(msg)
            if self.order.pending() and (self._holes is None or self._holes.done()):
                self._holes = asyncio.create_task(self._fill_holes(), name="holes")
        else:
            self._fan_out(env.room, event, env.audience, env.target)

    def _fan_out_message(self, msg: Message) -> None:
        self.core.observe(msg)
        self._fan_out(msg.room, msg, Audience.MEMBERS, None)

    def _fan_out(self, room: RoomId, event: Event, audience: Audience,
                 target: ParticipantId | None) -> None:
        """Encoded once; the same bytes are queued to each socket; nobody is awaited."""
        targets = self.core.recipients(room, event, audience, target)
        if not targets:
            return
        frame = encode(event)
        seq = event.seq if isinstance(event, Message) else None
        for cid in targets:
            sock = self.sockets.get(cid)
            if sock is None:
                continue
            if sock.held is not None:
                sock.held.append((event, frame))
                continue
            if seq is not None and sock.floor and seq <= sock.floor.get(room, 0):
                continue  # this socket had it as history already
            if not sock.put(frame):
                self._too_slow(cid)

    async def _on_sync(self, node: str, sync: Sync) -> None:
        changed: set[RoomId] = set()
        if node == self.node_id and sync.full:
            self._echo_ms = _mono_ms()
        if node != self.node_id:
            if sync.reload_rules:
                self._background(self._reload_for_peer())
            self._order_new_rooms(sync.records)
            effects, changed = self.core.apply_sync(node, sync, self.now())
            await self.run(effects)
        now = self.now()
        for rid in changed | set(sync.announce):
            room = self.core.rooms.get(rid)
            if room is not None:
                self._fan_out(rid, room.state(now), Audience.MEMBERS, None)

    async def _fill_holes(self) -> None:
        """A seq that does not arrive was stored by a node that died before publishing
        it (or whose publish failed): read it from the store, deliver it here, and
        publish it for the history and the other nodes (published once, by seq)."""
        grace = self.config.broker.gap_grace_ms
        while self.order.pending():
            await asyncio.sleep(grace / 2000)
            for hole in self.order.holes(_mono_ms(), grace):
                try:
                    found = await self.store.messages_between(hole.room, hole.after,
                                                              hole.before)
                except StoreError:
                    continue
                log.warning("seq_hole_filled", room=hole.room, after=hole.after,
                            before=hole.before, found=len(found))
                ready = [m for msg in found for m in self.order.offer(msg, _mono_ms())]
                for msg in ready + self.order.skip(hole, _mono_ms()):
                    self._fan_out_message(msg)
                for msg in found:
                    await self._publish(Envelope(msg.room, msg, Audience.MEMBERS, None,
                                                 self.node_id))

    async def _heartbeat(self) -> None:
        """Cluster presence: say who is here; forget nodes that stopped saying it."""
        cfg = self.config.broker
        while True:
            await asyncio.sleep(cfg.heartbeat_s)
            try:
                await self._publish(Envelope(ALL_ROOMS, Sync(presence=self.core.presence(),
                                                             full=True),
                                             Audience.MEMBERS, None, self.node_id))
                with contextlib.suppress(BrokerError):
                    await self.cluster.keep_sockets(self.node_id, self._expiry_ms)
                if self.broker.ready() and _mono_ms() - self._echo_ms > self._expiry_ms:
                    # Subscribed, yet our own heartbeats stopped coming back: the link is
                    # silently dead (F-09). Everything else waits on the same subscription.
                    log.error("ops_alert", kind="broker_subscription_silent",
                              node=self.node_id)
                    self._echo_ms = _mono_ms()
                    await self.broker.resubscribe()
                await self.run(self.core.expire_nodes(self.now(),
                                                      int(cfg.node_expiry_s * 1000)))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("heartbeat_failed")

    def _too_slow(self, cid: ConnId) -> None:
        self.metrics.queue_drops.inc()
        log.warning("slow_consumer_closed", conn=cid)
        self.close_soon(cid, CloseCode.SLOW, "too slow")

    def close_soon(self, cid: ConnId, code: CloseCode, reason: str = "") -> None:
        sock = self.sockets.get(cid)
        if sock is None or sock.closing:
            return
        sock.closing = True
        sock.close_task = asyncio.create_task(self._close(sock, code, reason))

    async def _close(self, sock: Socket, code: CloseCode, reason: str) -> None:
        if code == CloseCode.SLOW:
            # Its queue is what overflowed: drop what is queued (it resumes by seq).
            while not sock.outbox.empty():
                sock.outbox.get_nowait()
                sock.outbox.task_done()
        else:
            # Let queued frames (the error or notice explaining the close) go first.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sock.outbox.join(), 2.0)
        # The writer is never cancelled mid-send: aiohttp's drain waiter is shared with
        # close(), and cancelling one cancels the other. The close frame goes out behind
        # whatever the kernel already holds.
        try:
            await asyncio.wait_for(sock.ws.close(code=code, message=reason.encode()[:120]),
                                   self.config.server.close_deadline_s)
        except (TimeoutError, ConnectionError, RuntimeError, asyncio.CancelledError):
            # A peer that reads nothing never takes the close frame: cut it.
            if sock.transport is not None:
                reset(sock.transport)
        finally:
            if sock.writer is not None:
                sock.writer.cancel()

    def cut_if_unread(self, sock: Socket) -> None:
        """After the handler is done: if the peer still has not taken what we wrote
        (close frame included), abort the transport once ``close_deadline_s`` passes.
        ``transport.close()`` alone waits for ever on a peer that never reads."""
        transport = sock.transport
        if transport is None or transport.get_write_buffer_size() == 0:
            return
        asyncio.get_running_loop().call_later(self.config.server.close_deadline_s,
                                              reset, transport)

    async def write_loop(self, sock: Socket) -> None:
        """The one writer of a socket (STYLE.md example 2)."""
        while True:
            frame = await sock.outbox.get()
            try:
                await sock.ws.send_frame(frame, WSMsgType.TEXT)
            except (ConnectionError, RuntimeError):
                return
            finally:
                sock.outbox.task_done()

    # ----------------------------------------------------------------- timers
    async def _ticker(self) -> None:
        every = self.config.server.tick_s
        n = 0
        while True:
            await asyncio.sleep(every)
            n += 1
            try:
                await self.run(self.core.tick(self.now(), self.core.leads(self.node_id)))
                stats = self.core.statistics()
                self.metrics.rooms.set(stats.rooms)
                self.metrics.held.set(stats.held)
                self.metrics.know({room.profile for room in self.core.rooms.values()})
                if n % 3 == 0:
                    await self._close_disabled_staff()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("tick_failed")

    async def _close_disabled_staff(self) -> None:
        """SG-19/SEC-07: staff disabled with ``users disable``, logged out or whose
        password was reset (the account version moved) lose open sockets too."""
        for cid, conn in list(self.core.conns.items()):
            ident = conn.identity
            if ident is None or ident.role.value == "participant":
                continue
            user = await self.store.user_by_id(ident.id)
            if not session_current(ident, user):
                log.info("staff_socket_closed", reason="account_changed", user=ident.id)
                self.close_soon(cid, CloseCode.BAD_TOKEN, "account disabled")


def _newest_within(msgs: Sequence[Message], budget: int) -> list[tuple[Message, int]]:
    """The newest messages whose encoded frames fit in ``budget`` bytes, oldest first."""
    kept: list[tuple[Message, int]] = []
    for m in reversed(msgs):
        size = len(encode(m))
        if size > budget:
            break
        budget -= size
        kept.append((m, size))
    kept.reverse()
    return kept


def reset(transport: asyncio.Transport) -> None:
    """Cut a connection now, freeing what the kernel holds for it. ``abort()`` alone
    closes the descriptor, but the kernel keeps the unsent bytes of an orphaned socket
    (FIN_WAIT1) for minutes while it probes a peer whose window stays shut; a zero
    linger makes the close a reset (RST), so nothing is kept."""
    raw = transport.get_extra_info("socket")
    if raw is not None:
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


APP_KEY: Final = web.AppKey("server", Server)
"""Where the aiohttp app keeps its ``Server``."""
