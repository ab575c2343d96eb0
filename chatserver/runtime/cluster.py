"""This node among others: what it publishes, what it hears back, and in which order.

Messages from the broker reach local members in seq order, once (``Sequencer``); a seq
that never arrives is read from the store (``_fill_holes``). Durable changes are told to
the other nodes (``sync``); a heartbeat says who is here and notices a silent broker
link; nodes that stop beating are forgotten. Alone (a memory broker) most of this has
nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence

from chatserver.config import Config
from chatserver.core.effects import ALL_ROOMS, Audience, Effect, RoomRecord
from chatserver.core.errors import CloseCode
from chatserver.core.events import Message
from chatserver.core.ids import RoomId
from chatserver.core.node import ChatCore
from chatserver.core.sequencer import Sequencer
from chatserver.core.sync import SYNC_RECORDS, Sync, SyncRecord
from chatserver.moderation.rules import RuleLoadError
from chatserver.observability import Metrics, log
from chatserver.ports import Broker, BrokerError, ClusterState, Envelope, Store, StoreError
from chatserver.runtime.clock import mono_ms
from chatserver.runtime.delivery import Delivery

__all__ = ["Cluster"]

Run = Callable[[Sequence[Effect]], Awaitable[None]]
"""``Server.run``: effects the core answers to what another node said."""
Reload = Callable[[], Awaitable[tuple[int, str]]]
"""``Server.reload_rules``."""


class Cluster:
    def __init__(self, config: Config, core: ChatCore, store: Store, broker: Broker,
                 counts: ClusterState, delivery: Delivery, metrics: Metrics, node_id: str,
                 now: Callable[[], int], run: Run, reload_rules: Reload) -> None:
        self.config = config
        self.core = core
        self.store = store
        self.broker = broker
        self.counts = counts
        self.delivery = delivery
        self.metrics = metrics
        self.node_id = node_id
        self.now = now
        self.run = run
        self.reload_rules = reload_rules
        self.order = Sequencer()
        self._beat: asyncio.Task[None] | None = None
        self._holes: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._echo_ms = mono_ms()
        """When this node last heard its own heartbeat come back through the broker."""

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        try:
            await self._reseed()
        except BrokerError as e:
            # F-04: Redis down at start. Serve anyway (sends are refused `internal`,
            # /readyz says 503); the history is rebuilt when the broker comes back.
            log.error("ops_alert", kind="broker", error=type(e).__name__)
        await self.broker.start(self.on_envelope)
        if self.broker.shared:
            self._beat = asyncio.create_task(self._heartbeat(), name="heartbeat")

    async def stop(self) -> None:
        """Stop beating and filling holes (the broker is closed by the server)."""
        for task in (self._beat, self._holes):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @property
    def expiry_ms(self) -> int:
        return int(self.config.broker.node_expiry_s * 1000)

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
            await self.run(self.core.cluster.apply_records(records, self.now()))
            # Resolved elsewhere meanwhile: gone from the store's list, so from ours.
            self.core.alerts.load(await self.store.alerts(), fresh=True)
            await self._reseed()
        except (BrokerError, StoreError) as e:
            log.error("ops_alert", kind="reseed_failed", error=type(e).__name__)
        here = Sync(presence=self.core.cluster.presence(), full=True)
        await self.publish(Envelope(ALL_ROOMS, here, Audience.MEMBERS, None, self.node_id))
        for cid in list(self.delivery.sockets):
            self.delivery.close_soon(cid, CloseCode.RESTARTING, "reconnect and resume")

    def _order_new_rooms(self, records: Sequence[SyncRecord]) -> None:
        """A room made on another node just now has had no messages yet."""
        for rec in records:
            if isinstance(rec, RoomRecord) and rec.id not in self.core.rooms:
                self.order.start_at(rec.id, 0)

    async def rules_reloaded_here(self) -> None:
        """Ops reloaded the rules through this node: every other node reloads too."""
        if self.broker.shared:
            await self.publish(Envelope(ALL_ROOMS, Sync(reload_rules=True), Audience.MEMBERS,
                                        None, self.node_id))

    def _background(self, work: Coroutine[object, object, None]) -> None:
        """A task that outlives its caller, kept referenced until it ends."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_for_peer(self) -> None:
        try:
            await self.reload_rules()
        except RuleLoadError as e:
            log.error("ops_alert", kind="rules_reload_refused", problems=len(e.problems))

    # ------------------------------------------------------------- out
    async def publish(self, envelope: Envelope) -> bool:
        """Publish; a broker failure is an ops alert and False, never a lost socket."""
        try:
            await self.broker.publish(envelope)
        except BrokerError as e:
            self.metrics.ops_alerts.labels("broker").inc()
            log.error("ops_alert", kind="broker", error=type(e).__name__)
            return False
        return True

    async def sync(self, ops: Sequence[object]) -> None:
        """Tell the other nodes what was just made durable (nothing to tell alone)."""
        if self.broker.shared:
            records = tuple(op for op in ops if isinstance(op, SYNC_RECORDS))
            if records:
                await self.publish(Envelope(ALL_ROOMS, Sync(records), Audience.MEMBERS,
                                            None, self.node_id))

    async def track(self, room: RoomId, here: bool) -> None:
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

    # ------------------------------------------------------------- in
    async def on_envelope(self, env: Envelope) -> None:
        """An already-moderated event from the broker (never moderated again): fan out
        to local members; messages in seq order, once."""
        event = env.event
        if isinstance(event, Sync):
            await self._on_sync(env.node, event)
        elif isinstance(event, Message):
            for msg in self.order.offer(event, mono_ms()):
                self._fan_out_message(msg)
            if self.order.pending() and (self._holes is None or self._holes.done()):
                self._holes = asyncio.create_task(self._fill_holes(), name="holes")
        else:
            self.delivery.fan_out(env.room, event, env.audience, env.target)

    def _fan_out_message(self, msg: Message) -> None:
        self.core.observe(msg)
        self.delivery.fan_out(msg.room, msg, Audience.MEMBERS, None)

    async def _on_sync(self, node: str, sync: Sync) -> None:
        changed: set[RoomId] = set()
        if node == self.node_id and sync.full:
            self._echo_ms = mono_ms()
        if node != self.node_id:
            if sync.reload_rules:
                self._background(self._reload_for_peer())
            self._order_new_rooms(sync.records)
            effects, changed = self.core.cluster.apply_sync(node, sync, self.now())
            await self.run(effects)
        now = self.now()
        for rid in changed | set(sync.announce):
            room = self.core.rooms.get(rid)
            if room is not None:
                self.delivery.fan_out(rid, room.state(now), Audience.MEMBERS, None)

    async def _fill_holes(self) -> None:
        """A seq that does not arrive was stored by a node that died before publishing
        it (or whose publish failed): read it from the store, deliver it here, and
        publish it for the history and the other nodes (published once, by seq)."""
        grace = self.config.broker.gap_grace_ms
        while self.order.pending():
            await asyncio.sleep(grace / 2000)
            for hole in self.order.holes(mono_ms(), grace):
                try:
                    found = await self.store.messages_between(hole.room, hole.after,
                                                              hole.before)
                except StoreError:
                    continue
                log.warning("seq_hole_filled", room=hole.room, after=hole.after,
                            before=hole.before, found=len(found))
                ready = [m for msg in found for m in self.order.offer(msg, mono_ms())]
                for msg in ready + self.order.skip(hole, mono_ms()):
                    self._fan_out_message(msg)
                for msg in found:
                    await self.publish(Envelope(msg.room, msg, Audience.MEMBERS, None,
                                                self.node_id))

    async def _heartbeat(self) -> None:
        """Cluster presence: say who is here; forget nodes that stopped saying it."""
        cfg = self.config.broker
        while True:
            await asyncio.sleep(cfg.heartbeat_s)
            try:
                here = Sync(presence=self.core.cluster.presence(), full=True)
                await self.publish(Envelope(ALL_ROOMS, here, Audience.MEMBERS, None,
                                            self.node_id))
                with contextlib.suppress(BrokerError):
                    await self.counts.keep_sockets(self.node_id, self.expiry_ms)
                if self.broker.ready() and mono_ms() - self._echo_ms > self.expiry_ms:
                    # Subscribed, yet our own heartbeats stopped coming back: the link is
                    # silently dead (F-09). Everything else waits on the same subscription.
                    log.error("ops_alert", kind="broker_subscription_silent",
                              node=self.node_id)
                    self._echo_ms = mono_ms()
                    await self.broker.resubscribe()
                await self.run(self.core.cluster.expire_nodes(self.now(),
                                                              int(cfg.node_expiry_s * 1000)))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("heartbeat_failed")
