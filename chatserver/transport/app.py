"""The server: wires core, store and broker, runs effects, owns timers and shutdown.

Thin on purpose: every decision is the core's; this file only does I/O in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from aiohttp import WSMsgType, web

from chatserver.config import Config
from chatserver.core.effects import (
    Audience,
    Close,
    Deliver,
    Effect,
    Emit,
    History,
    OpsAlert,
    Persist,
    Publish,
    RedactRecord,
    RoomRecord,
    Welcome,
)
from chatserver.core.errors import CloseCode, ErrorCode
from chatserver.core.events import Ack, ErrorEvent, Event, Message, Welcome as WelcomeEvent
from chatserver.core.ids import ConnId, MessageId, RoomId
from chatserver.core.node import ChatCore
from chatserver.core.wire import encode
from chatserver.moderation.engine import RuleSet
from chatserver.observability import Metrics, log
from chatserver.ports import Broker, Envelope, Store, StoreError
from chatserver.transport.auth import Tokens

__all__ = ["APP_KEY", "Server", "Socket", "now_ms"]



def now_ms() -> int:
    """Wall-clock ms for ``ts`` fields (PROTOCOL.md: times are ms since the epoch)."""
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Socket:
    """One WebSocket: a bounded outbox drained by one writer task (STYLE.md example 9)."""

    ws: web.WebSocketResponse
    outbox: asyncio.Queue[bytes]
    writer: asyncio.Task[None] | None = None
    closing: bool = False
    close_task: asyncio.Task[None] | None = field(default=None)

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
    def __init__(self, config: Config, rules: RuleSet, store: Store, broker: Broker,
                 tokens: Tokens, node_id: str | None = None,
                 clock: Callable[[], int] = now_ms) -> None:
        self.config = config
        self.now = clock
        """Wall-clock ms; tests pass a clock they move (timed mutes without waiting)."""
        self.store = store
        self.broker = broker
        self.tokens = tokens
        self.node_id = node_id or secrets.token_hex(4)
        self.core = ChatCore(config, rules)
        self.metrics = Metrics()
        self.sockets: dict[ConnId, Socket] = {}
        self._next_conn = 0
        self._tick: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self.stopping = False

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        await self.store.open()
        for rec in await self.store.rooms():
            self.core.add_room(rec)
        self.core.load_held(await self.store.held())
        self.core.load_cases(await self.store.cases())
        for rid in list(self.core.rooms):
            # The store is the record; the broker's history is a cache rebuilt from it.
            await self.broker.seed(rid, await self.store.recent_messages(
                rid, self.config.limits.history))
        await self.broker.start(self.on_envelope)
        self._tick = asyncio.create_task(self._ticker(), name="ticker")
        log.info("server_started", node=self.node_id, rooms=len(self.core.rooms),
                 rules_version=self.core.rules.version)

    async def stop(self) -> None:
        """Graceful stop: close every socket 1012 (clients resume), flush the store."""
        self.stopping = True
        if self._tick is not None:
            self._tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick
        for sock in list(self.sockets.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sock.ws.close(code=CloseCode.RESTARTING,
                                                     message=b"server restarting"),
                                       self.config.server.shutdown_grace_s)
        await self.broker.close()
        await self.store.close()
        log.info("server_stopped", node=self.node_id)

    async def ensure_room(self, record: RoomRecord) -> None:
        if record.id not in self.core.rooms:
            await self.store.apply([record])
            self.core.add_room(record)

    def new_conn(self, sock: Socket) -> ConnId:
        self._next_conn += 1
        cid = ConnId(self._next_conn)
        self.sockets[cid] = sock
        self.core.connect(cid)
        self.metrics.connections.set(len(self.sockets))
        return cid

    async def drop_conn(self, cid: ConnId) -> None:
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
                await self.broker.publish(Envelope(effect.room, effect.event, effect.audience,
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
                        await self.broker.redact(op.room, op.seq)
            elif isinstance(effect, Deliver):
                if not await self._deliver(effect):
                    return
            elif isinstance(effect, Welcome):
                await self._welcome(effect)
            elif isinstance(effect, History):
                messages, _ = await self.broker.history(effect.room, None,
                                                        self.config.limits.welcome_history)
                for m in messages:
                    self.emit(effect.conn, m)
            elif isinstance(effect, Close):
                self.close_soon(effect.conn, effect.code, effect.reason)
            elif isinstance(effect, OpsAlert):
                self.metrics.ops_alerts.labels(effect.kind).inc()
                log.error("ops_alert", kind=effect.kind, detail=effect.detail)

    def _store_failed(self, error: Exception, conn: ConnId | None, ref: str | None) -> None:
        self.metrics.store_errors.inc()
        self.metrics.ops_alerts.labels("store").inc()
        log.error("ops_alert", kind="store", error=type(error).__name__)
        if conn is not None:
            event: Event = Ack(ref, "rejected", code=ErrorCode.INTERNAL.value) if ref else \
                ErrorEvent(ErrorCode.INTERNAL.value, "Something went wrong on our side.")
            self.emit(conn, event)

    async def _deliver(self, d: Deliver) -> bool:
        try:
            seq, new = await self.store.append_message(d.room, d.sender, d.msg_id, d.text,
                                                       d.ts, d.audit, d.also)
        except StoreError as e:
            self._store_failed(e, d.conn if d.conn is not None else d.actor, d.ref)
            self.core.undo(d.undo)
            await self.run(self.core.complete_send(d.sender.id, d.msg_id, None))
            return False
        msg = Message(d.room, seq, d.msg_id, d.sender, d.text, d.ts)
        if new:
            await self.broker.publish(Envelope(d.room, msg, Audience.MEMBERS, None,
                                               self.node_id))
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
        for state in w.rooms:
            after = w.resume.get(state.room)
            msgs, gap = await self.broker.history(state.room, after, limit.welcome_history
                                                  if after is None else limit.history)
            if after is not None and msgs and msgs[0].ts < now - window_ms:
                gap = True  # PROTOCOL.md § Limits: resume window 10 minutes
                msgs = msgs[-limit.welcome_history:]
            history[state.room] = tuple(msgs)
            rooms.append(state if not gap else type(state)(
                state.room, state.title, state.paused, state.slow_mode_s, state.members,
                state.closed, gap=True))
        self.emit(w.conn, WelcomeEvent(w.you, tuple(rooms), history))

    def emit(self, cid: ConnId, event: Event) -> None:
        sock = self.sockets.get(cid)
        if sock is not None and not sock.put(encode(event)):
            self._too_slow(cid)

    async def on_envelope(self, env: Envelope) -> None:
        """An already-moderated event from the broker: fan out to local members.

        Encoded once; the same bytes are queued to each socket; nobody is awaited.
        """
        if isinstance(env.event, Message):
            self.core.observe(env.event)
        targets = self.core.recipients(env.room, env.event, env.audience, env.target)
        if not targets:
            return
        frame = encode(env.event)
        for cid in targets:
            sock = self.sockets.get(cid)
            if sock is not None and not sock.put(frame):
                self._too_slow(cid)

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
                                   self.config.server.shutdown_grace_s)
        except (TimeoutError, ConnectionError, RuntimeError, asyncio.CancelledError):
            # A peer that reads nothing never takes the close frame: cut it.
            transport = sock.ws._req.transport if sock.ws._req is not None else None
            if transport is not None:
                transport.abort()
        finally:
            if sock.writer is not None:
                sock.writer.cancel()

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
                await self.run(self.core.tick(self.now()))
                stats = self.core.statistics()
                self.metrics.rooms.set(stats.rooms)
                self.metrics.held.set(stats.held)
                if n % 3 == 0:
                    await self._close_disabled_staff()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("tick_failed")

    async def _close_disabled_staff(self) -> None:
        """SG-19/SEC-07: staff disabled with ``users disable`` lose open sockets too."""
        for cid, conn in list(self.core.conns.items()):
            ident = conn.identity
            if ident is None or ident.role.value == "participant":
                continue
            user = await self.store.user_by_id(ident.id)
            if user is None or user.disabled:
                log.info("staff_socket_closed", reason="disabled", user=ident.id)
                self.close_soon(cid, CloseCode.BAD_TOKEN, "account disabled")


APP_KEY: Final = web.AppKey("server", Server)
"""Where the aiohttp app keeps its ``Server``."""
