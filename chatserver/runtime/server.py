"""The server: wires core, store and broker, runs effects, owns timers and shutdown.

Thin on purpose: every decision is the core's; this file only does I/O in order. The
sockets are ``Delivery``'s, what a socket is sent first is ``HistoryReader``'s, and the
other nodes are ``Cluster``'s; ``run`` is the one place effects are carried out.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from chatserver.config import Config, read_rule_files
from chatserver.core import commands as c
from chatserver.core.audit import AuditAction
from chatserver.core.effects import (
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
from chatserver.core.errors import ChatError, CloseCode, ErrorCode
from chatserver.core.events import Ack, AckStatus, ErrorEvent, Event, Message, RoomState
from chatserver.core.ids import ConnId, MessageId, RoomId
from chatserver.core.node import ChatCore
from chatserver.core.roles import Role
from chatserver.core.session import Identity
from chatserver.core.sync import Sync
from chatserver.moderation.classifier import Classifier
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
from chatserver.runtime.accounts import still_signed_in
from chatserver.runtime.clock import mono_ms, now_ms
from chatserver.runtime.cluster import Cluster
from chatserver.runtime.delivery import Delivery, Socket
from chatserver.runtime.encoder import EncoderDown, ProcessEncoder
from chatserver.runtime.history import HistoryReader
from chatserver.runtime.vectors import VectorBatcher

__all__ = ["Server", "TokenService", "now_ms"]


class TokenService(Protocol):
    """The shells' token service (``transport/auth.py`` ``Tokens``): the server only
    carries it for them, so the HTTP routes and the socket handler share one."""

    def issue(self, ident: Identity, now_s: int) -> str: ...

    def verify(self, token: str) -> Identity: ...


class Server:
    def __init__(self, config: Config, rules: Moderator, store: Store, broker: Broker,
                 counts: ClusterState, tokens: TokenService, node_id: str | None = None,
                 clock: Callable[[], int] = now_ms) -> None:
        self.config = config
        self.now = clock
        """Wall-clock ms; tests pass a clock they move (timed mutes without waiting)."""
        self.store = store
        self.broker = broker
        self.counts = counts
        """What every node counts together (sockets, attempts, send budgets)."""
        self.tokens = tokens
        self.node_id = node_id or secrets.token_hex(4)
        self.core = ChatCore(config, rules)
        self.metrics = Metrics()
        self.metrics.watch(lambda: self.core.waiting(self.now()))
        self.delivery = Delivery(self.core, self.metrics, config.server)
        self.cluster = Cluster(config, self.core, store, broker, counts, self.delivery,
                               self.metrics, self.node_id, self.now, self.run,
                               self.reload_rules)
        self.history = HistoryReader(config.limits, store, broker, self.delivery,
                                     self.cluster.track, self.now)
        self._tick: asyncio.Task[None] | None = None
        self._broker_down_logged = -1000
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
        self.core.alerts.load(await self.store.alerts())
        await self.cluster.start()
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
        await self.cluster.stop()
        await self.delivery.close_all(CloseCode.RESTARTING, "server restarting",
                                      self.config.server.shutdown_grace_s)
        with contextlib.suppress(Exception):  # open denial windows: summarised now
            await self.run(self.core.flush_audit(self.now()))
        await self.broker.close()
        await self.counts.close()
        await self.store.close()
        log.info("server_stopped", node=self.node_id)

    async def on_broker_reset(self) -> None:
        """The broker came back after an outage (``Cluster.on_broker_reset``)."""
        await self.cluster.on_broker_reset()

    async def ensure_room(self, record: RoomRecord) -> None:
        if record.id not in self.core.rooms:
            await self.create_room(record)

    async def create_room(self, record: RoomRecord, *audit: AuditEntry) -> None:
        """A new room, in the store and on every node."""
        await self.store.apply([record, *audit])
        self.core.add_room(record)
        self.cluster.order.start_at(record.id, 0)
        await self.cluster.sync((record,))

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

    async def reload_rules_by(self, actor: str, how: str) -> tuple[int, str]:
        """Ops' reload (``POST /api/rules/reload`` with ``actor`` the ops account, or
        SIGHUP as ``system``): audited either way, refused or done, and on success every
        other node reloads too. Raises RuleLoadError with the running set kept."""
        try:
            count, version = await self.reload_rules()
        except RuleLoadError as e:
            await self.store.apply([AuditEntry(
                self.now(), None, actor, AuditAction.RULES_RELOAD_REFUSED, None,
                {"problems": len(e.problems), "by": how}, self.core.rules.version)])
            log.info("rules_reload_audited", by=how, refused=True)
            raise
        await self.store.apply([AuditEntry(self.now(), None, actor, AuditAction.RULES_RELOAD,
                                           None, {"rules": count, "by": how}, version)])
        log.info("rules_reload_audited", by=how, refused=False)
        await self.rules_reloaded_here()
        return count, version

    async def rules_reloaded_here(self) -> None:
        """Ops reloaded the rules through this node: every other node reloads too."""
        await self.cluster.rules_reloaded_here()

    def new_conn(self, sock: Socket) -> ConnId:
        cid = self.delivery.add(sock)
        self.core.connect(cid)
        return cid

    # ------------------------------------------------------- commands from sockets
    async def hello(self, cid: ConnId, ident: Identity, resume: Mapping[RoomId, int]) -> None:
        elsewhere = 0
        if self.broker.shared:
            others = [n for n in self.core.cluster.nodes if n != self.node_id]
            with contextlib.suppress(BrokerError):  # sends fail anyway without Redis
                elsewhere = await self.counts.sockets_elsewhere(ident.id, others)
        await self.run(self.core.hello(cid, ident, resume, self.now(), elsewhere))
        conn, sock = self.core.conns.get(cid), self.delivery.sockets.get(cid)
        if self.broker.shared and conn is not None and conn.identity is not None and \
                sock is not None and not sock.closing:
            sock.counted = ident.id
            with contextlib.suppress(BrokerError):
                await self.counts.count_socket(self.node_id, ident.id, 1,
                                               self.cluster.expiry_ms)

    async def handle(self, cid: ConnId, command: c.Command) -> None:
        over = False
        if self.broker.shared and isinstance(command, c.Send):  # one node: nothing to ask
            conn = self.core.conns.get(cid)
            ident = conn.identity if conn is not None else None
            if ident is not None and ident.role == Role.PARTICIPANT:
                lim = self.config.limits
                with contextlib.suppress(BrokerError):  # the publish would fail anyway
                    over = not await self.counts.take_budget(
                        ident.id, command.id, lim.rate_messages, lim.rate_window_s * 1000,
                        self.now())
        if isinstance(command, c.Send) and \
                len(command.text.strip()) <= self.config.limits.max_text_chars:
            # Over the limit, the core answers `too_large` before any moderation: the
            # pre-pass would read it all first (32 KiB: ~27 ms of the event loop).
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
                    self._vectors = self._batcher(moderator.classifier)
                vectors = self._vectors
                # A long message's windows are queued together: one batch encodes them.
                rows = await asyncio.gather(*(vectors.vector(w) for w in folded))
                moderator.remember(text, role.value, rows)
        except EncoderDown as e:
            # The encoder process died: the core holds this line (fail closed) and a
            # new process is already starting.
            self.metrics.ops_alerts.labels("encoder").inc()
            log.error("ops_alert", kind="encoder", detail=str(e))
        except Exception:
            # The core scores the line itself; failing that, it holds it (fail closed).
            log.exception("moderation_prepare_failed")

    @staticmethod
    def _batcher(classifier: Classifier) -> VectorBatcher:
        """Where the sentence vectors are computed (``moderation.model.encoder``)."""
        if isinstance(classifier.encoder, ProcessEncoder):
            return VectorBatcher(classifier.encoder.encode_async)
        return VectorBatcher.in_thread(classifier.embed)

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

    async def drop_conn(self, cid: ConnId) -> None:
        sock = self.delivery.sockets.get(cid)
        if sock is not None and sock.counted is not None and not self.stopping:
            with contextlib.suppress(BrokerError):
                await self.counts.count_socket(self.node_id, sock.counted, -1,
                                               self.cluster.expiry_ms)
        self.delivery.discard(cid)
        effects = self.core.disconnect(cid, self.now())
        if not self.stopping:  # on shutdown every socket goes; nobody is left to tell
            await self.run(effects)

    async def reject(self, cid: ConnId, error: ChatError, ref: str | None) -> None:
        """A frame that did not parse: the core answers it (and counts it)."""
        await self.run(self.core.reject_frame(cid, error, ref, self.now()))

    # --------------------------------------------------------------- effects
    async def run(self, effects: Sequence[Effect]) -> None:
        """Run effects in order; a failed durable step stops the rest (invariant 3)."""
        for effect in effects:
            if isinstance(effect, Emit):
                self.delivery.emit(effect.conn, effect.event)
            elif isinstance(effect, Publish):
                event: Event | Sync = effect.event
                if isinstance(event, RoomState) and effect.audience == Audience.MEMBERS:
                    # Who is in a room is per node: send this node's part; every node
                    # then shows its members the whole, merged the same way everywhere.
                    presence = self.core.cluster.presence((effect.room,))
                    await self.cluster.track(effect.room, bool(presence and presence[0][1]))
                    event = Sync(presence=presence, announce=(effect.room,))
                await self.cluster.publish(Envelope(effect.room, event, effect.audience,
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
                        # History and resume must no longer hold it (docs/protocol.md `redact`).
                        with contextlib.suppress(BrokerError):
                            await self.broker.redact(op.room, op.seq)
                await self.cluster.sync(effect.ops)
                if effect.then is not None:
                    await self.run(self.core.complete(effect.then, self.now()))
            elif isinstance(effect, Deliver):
                if not await self._deliver(effect):
                    return
            elif isinstance(effect, Welcome):
                await self.history.welcome(effect)
            elif isinstance(effect, History):
                await self.history.recent(effect)
            elif isinstance(effect, Close):
                self.delivery.close_soon(effect.conn, effect.code, effect.reason)
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
                self.delivery.emit(conn, ErrorEvent(ErrorCode.CONFLICT.value,
                                                    "Someone else has just taken that case.",
                                                    ref))
            return
        if isinstance(error, BrokerError):
            pass  # publish (or the readiness check) has already alerted
        else:
            self.metrics.store_errors.inc()
            self.metrics.ops_alerts.labels("store").inc()
            log.error("ops_alert", kind="store", error=type(error).__name__)
        if conn is not None:
            event: Event = Ack(ref, AckStatus.REJECTED, code=ErrorCode.INTERNAL.value) if ref else \
                ErrorEvent(ErrorCode.INTERNAL.value, "Something went wrong on our side.")
            self.delivery.emit(conn, event)

    async def _deliver(self, d: Deliver) -> bool:
        failed: Exception | None = None
        if not self.broker.ready():
            # Nobody on another node would see it: refuse before anything is stored.
            failed = BrokerError("broker unavailable")
            self.metrics.ops_alerts.labels("broker").inc()
            if mono_ms() - self._broker_down_logged >= 1000:  # one line a second, not a flood
                self._broker_down_logged = mono_ms()
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
            if not await self.cluster.publish(Envelope(d.room, msg, Audience.MEMBERS, None,
                                                       self.node_id)):
                # Stored but not published: in doubt. A resend with the same id gets
                # the stored seq and publishes it; other nodes fill the hole meanwhile.
                failed = BrokerError("publish failed")
            else:
                await self.cluster.sync(d.also)
        if failed is not None:
            self._store_failed(failed, d.conn if d.conn is not None else d.actor, d.ref)
            self.core.undo(d.undo)
            await self.run(self.core.complete_send(d.sender.id, d.msg_id, None))
            return False
        if d.conn is not None and d.ref is not None:
            ack = Ack(d.ref, AckStatus.SENT, seq=seq, text=d.text if d.masked else None,
                      room=d.room)
            self.delivery.emit(d.conn, ack)
            await self.run(self.core.complete_send(d.sender.id, d.msg_id, ack))
        return True

    # ----------------------------------------------------------------- timers
    async def _ticker(self) -> None:
        every = self.config.server.tick_s
        n = 0
        while True:
            await asyncio.sleep(every)
            n += 1
            try:
                await self.run(self.core.tick(self.now(), self.core.cluster.leads(self.node_id)))
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
            if ident is None or await still_signed_in(self.store, ident):
                continue
            log.info("staff_socket_closed", reason="account_changed", user=ident.id)
            self.delivery.close_soon(cid, CloseCode.BAD_TOKEN, "account disabled")
