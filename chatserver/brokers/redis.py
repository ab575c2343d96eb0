"""The cluster broker: Redis pub/sub for fan-out, a sorted set per room for history.

Envelopes are msgpack maps tagged with the sending node (never pickle); anything that
does not decode into the typed envelope is logged and dropped (STYLE.md example 10).
The subscriber reconnects with backoff and resubscribes by itself, and calls
``on_reset`` so the server can tell its clients to resume (SECURITY.md F-05, F-08).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from importlib.resources import files
from typing import Any, Final

import msgpack
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from chatserver.core.effects import (
    ALL_ROOMS,
    AlertRecord,
    Audience,
    CaseRecord,
    HeldDecided,
    HeldRecord,
    RoomRecord,
)
from chatserver.core.events import Encoded, Message, Person
from chatserver.core.ids import HeldId, MessageId, ParticipantId, RoomId
from chatserver.core.sync import Sync, SyncRecord
from chatserver.core.wire import encode
from chatserver.observability import log
from chatserver.ports import Allowance, BrokerError, Envelope
from chatserver.stores.records import alert_from, case_from, dumps, held_from, room_from

__all__ = ["RedisBroker", "decode_envelope", "encode_envelope"]

MAX_ENVELOPE_BYTES: Final = 256 * 1024
"""A frame is at most 32 KiB; an envelope far beyond that is not ours."""
_SCRIPTS: Final = files("chatserver.brokers") / "redis_scripts"
_PUBLISH_LUA: Final = (_SCRIPTS / "publish.lua").read_text()
_BUDGET_LUA: Final = (_SCRIPTS / "budget.lua").read_text()
_ATTEMPTS_LUA: Final = (_SCRIPTS / "attempts.lua").read_text()
_REFUND_LUA: Final = (_SCRIPTS / "refund.lua").read_text()


def _decided_from(raw: str) -> HeldDecided:
    return HeldDecided(HeldId(orjson.loads(raw)["id"]))


_RECORD_KINDS: Final[dict[str, Callable[[str], SyncRecord]]] = {
    "room": room_from, "held": held_from, "case": case_from, "decided": _decided_from,
    "alert": alert_from}


def _record_kind(record: SyncRecord) -> str:
    return {RoomRecord: "room", HeldRecord: "held", CaseRecord: "case",
            HeldDecided: "decided", AlertRecord: "alert"}[type(record)]


def _encode_sync(sync: Sync) -> list[Any]:
    return [[[_record_kind(r), dumps(r)] for r in sync.records],
            [[room, [[p.id, p.name, p.role] for p in people]] for room, people in sync.presence],
            sync.full, list(sync.announce), sync.reload_rules]


def _decode_sync(body: Any) -> Sync:
    records, presence, full, announce, reload_rules = body
    strings = list(announce) + [x for _, people in presence for p in people for x in p]
    strings += [room for room, _ in presence] + [x for r in records for x in r]
    if not (isinstance(full, bool) and isinstance(reload_rules, bool)
            and all(isinstance(x, str) for x in strings)):
        raise ValueError("bad sync")
    return Sync(
        tuple(_RECORD_KINDS[kind](raw) for kind, raw in records),
        tuple((RoomId(room), tuple(Person(ParticipantId(i), n, r) for i, n, r in people))
              for room, people in presence),
        full, tuple(RoomId(r) for r in announce), reload_rules)


def encode_envelope(env: Envelope) -> bytes:
    body: dict[str, Any] = {"v": 1, "node": env.node, "room": env.room,
                            "aud": env.audience.value, "target": env.target,
                            "type": env.event.TYPE, "frame": b"", "msg": None}
    if isinstance(env.event, Sync):
        body["sync"] = _encode_sync(env.event)
    else:
        body["frame"] = encode(env.event)
    if isinstance(env.event, Message):
        m = env.event
        body["msg"] = [m.seq, m.id, m.sender.id, m.sender.name, m.sender.role, m.text, m.ts]
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def decode_envelope(data: bytes) -> Envelope | None:
    """The typed envelope, or None for anything that is not exactly one."""
    if len(data) > MAX_ENVELOPE_BYTES:
        return None
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True,
                               max_bin_len=MAX_ENVELOPE_BYTES, max_str_len=MAX_ENVELOPE_BYTES)
        if not isinstance(body, dict) or body.get("v") != 1:
            return None
        room, node, aud = body["room"], body["node"], Audience(body["aud"])
        target, frame, kind = body["target"], body["frame"], body["type"]
        if not (isinstance(room, str) and isinstance(node, str) and isinstance(frame, bytes)
                and isinstance(kind, str) and (target is None or isinstance(target, str))):
            return None
        msg = body["msg"]
        if kind == Sync.TYPE:
            event: Message | Encoded | Sync = _decode_sync(body["sync"])
        elif msg is not None:
            seq, mid, sid, name, role, text, ts = msg
            if not (isinstance(seq, int) and isinstance(ts, int) and
                    all(isinstance(x, str) for x in (mid, sid, name, role, text))):
                return None
            event = Message(
                RoomId(room), seq, MessageId(mid), Person(ParticipantId(sid), name, role),
                text, ts)
        else:
            event = Encoded(kind, frame)
        return Envelope(RoomId(room), event, aud,
                        ParticipantId(target) if target else None, node)
    except (ValueError, KeyError, TypeError, AttributeError, msgpack.UnpackException,
            orjson.JSONDecodeError):
        return None


class RedisBroker:
    def __init__(self, url: str, *, history: int = 200, prefix: str = "chat",
                 timeout_s: float = 1.0,
                 on_reset: Callable[[], Awaitable[None] | None] | None = None) -> None:
        self.prefix, self.cap, self.timeout = prefix, history, timeout_s
        self.redis = aioredis.Redis.from_url(url, socket_timeout=timeout_s,
                                             socket_connect_timeout=timeout_s)
        self._script = self.redis.register_script(_PUBLISH_LUA)
        self._budget = self.redis.register_script(_BUDGET_LUA)
        self._attempts = self.redis.register_script(_ATTEMPTS_LUA)
        self._refund = self.redis.register_script(_REFUND_LUA)
        self._handler: Callable[[Envelope], Awaitable[None] | None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._pubsub: Any = None
        self._rooms: set[str] = set()
        self.on_reset = on_reset
        self.subscribed = asyncio.Event()

    def _hist(self, room: str) -> str:
        return f"{self.prefix}:hist:{{{room}}}"

    @property
    def _control(self) -> str:
        """Room state records, presence, case queue: every node hears all of it."""
        return f"{self.prefix}:ctl"

    def _channel(self, room: str) -> str:
        """A room's messages and events: only nodes with members in it subscribe."""
        return f"{self.prefix}:ch:{room}"

    async def follow(self, room: RoomId) -> bool:
        """Subscribe to a room's channel (this node has members in it); True if new."""
        if room in self._rooms:
            return False
        self._rooms.add(room)
        if self._pubsub is not None and self.subscribed.is_set():
            try:
                await self._pubsub.subscribe(self._channel(room))
            except (RedisError, OSError) as e:
                # The listener subscribes to every followed room when it reconnects.
                raise BrokerError(str(e)) from e
        return True

    async def unfollow(self, room: RoomId) -> None:
        if room not in self._rooms:
            return
        self._rooms.discard(room)
        if self._pubsub is not None and self.subscribed.is_set():
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(self._channel(room))

    async def start(self, on_envelope: Callable[[Envelope], Awaitable[None] | None]) -> None:
        self._handler = on_envelope
        self._listener = asyncio.create_task(self._listen(), name="redis-subscriber")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.subscribed.wait(), 5)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self.redis.aclose()

    shared = True
    """Other nodes see what this one publishes (the server replicates room state)."""

    def ready(self) -> bool:
        """Subscribed now: a message published now reaches every node (no I/O)."""
        return self.subscribed.is_set()

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), self.timeout)) and \
                self.subscribed.is_set()
        except (RedisError, OSError, TimeoutError):
            return False

    async def resubscribe(self) -> None:
        """The subscription looks alive but nothing arrives on it (a blackholed link,
        F-09): drop it and subscribe again, as after any loss."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        self.subscribed.clear()
        self._listener = asyncio.create_task(self._listen(lost=True), name="redis-subscriber")

    async def _listen(self, lost: bool = False) -> None:
        """One subscription for all rooms; reconnects with backoff, resubscribes, and
        tells the server (clients resume by seq, so nothing missed goes unseen).
        ``lost``: Redis was unreachable (at start too): resync once it is back."""
        delay = 0.1
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._control, *[self._channel(r) for r in self._rooms])
                self._pubsub = pubsub
                self.subscribed.set()
                if lost and self.on_reset is not None:
                    log.warning("broker_resubscribed")
                    result = self.on_reset()
                    if inspect.isawaitable(result):
                        await result
                lost, delay = False, 0.1
                while True:
                    msg = await pubsub.get_message(timeout=None)
                    if msg is None or msg.get("type") != "message":
                        continue
                    env = decode_envelope(msg["data"])
                    if env is None:
                        log.warning("broker_envelope_dropped")
                        continue
                    if self._handler is not None:
                        result = self._handler(env)
                        if inspect.isawaitable(result):
                            await result
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as e:
                self.subscribed.clear()
                lost = True
                log.error("ops_alert", kind="broker_subscriber_lost", error=type(e).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                log.exception("broker_handler_failed")
            finally:
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def publish(self, envelope: Envelope) -> None:
        payload = encode_envelope(envelope)
        try:
            if isinstance(envelope.event, Message):
                await self._script(keys=[self._hist(envelope.room)],
                                   args=[envelope.event.seq, payload, self.cap,
                                         self._channel(envelope.room), "1"])
            else:
                channel = self._control if isinstance(envelope.event, Sync) or \
                    envelope.room == ALL_ROOMS else self._channel(envelope.room)
                await self.redis.publish(channel, payload)
        except (RedisError, OSError) as e:
            raise BrokerError(str(e)) from e

    async def history(self, room: RoomId, after: int | None, limit: int
                      ) -> tuple[list[Message], bool]:
        try:
            if after is None:
                raw = await self.redis.zrange(self._hist(room), -limit, -1)
                return self._messages(raw), False
            raw = await self.redis.zrangebyscore(self._hist(room), f"({after}", "+inf")
            first = await self.redis.zrange(self._hist(room), 0, 0, withscores=True)
            full = await self.redis.zcard(self._hist(room)) >= self.cap
        except (RedisError, OSError) as e:
            raise BrokerError(str(e)) from e
        msgs = self._messages(raw)
        gap = bool(full and first and after < int(first[0][1]) - 1)
        return (msgs[-limit:] if gap else msgs), gap

    @staticmethod
    def _messages(raw: Sequence[Any]) -> list[Message]:
        out = []
        for data in raw:
            env = decode_envelope(data) if isinstance(data, bytes) else None
            if env is not None and isinstance(env.event, Message):
                out.append(env.event)
        return out

    async def redact(self, room: RoomId, seq: int) -> None:
        try:
            await self.redis.zremrangebyscore(self._hist(room), seq, seq)
        except (RedisError, OSError) as e:
            raise BrokerError(str(e)) from e

    async def seed(self, room: RoomId, messages: Sequence[Message]) -> None:
        """Rebuild a room's history from the store when Redis lost it (F-06): merged by
        seq through the publish script (without publishing), so what another node
        published meanwhile is neither lost nor doubled."""
        if not messages:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for m in messages:
                    await self._script(keys=[self._hist(room)],
                                       args=[m.seq, encode_envelope(Envelope(
                                           room, m, Audience.MEMBERS)),
                                             self.cap, self._channel(room), "0"],
                                       client=pipe)
                await pipe.execute()
        except (RedisError, OSError) as e:
            raise BrokerError(str(e)) from e

    # ------------------------------------------------ per-participant, all nodes
    async def take_budget(self, participant: str, msg_id: str, limit: int, window_ms: int,
                          now_ms: int) -> bool:
        """One send from a participant's budget, shared by every node (FL-03)."""
        try:
            taken = await self._budget(keys=[f"{self.prefix}:budget:{participant}"],
                                       args=[now_ms, window_ms, limit, msg_id])
        except (RedisError, OSError) as e:
            raise BrokerError(str(e)) from e
        return bool(taken)

    def _attempt_key(self, key: str) -> str:
        return f"{self.prefix}:att:{key}"

    async def take_attempts(self, allowances: Sequence[Allowance], now_ms: int) -> bool:
        """Check and count every allowance in one script, for every node (issue 14)."""
        if not allowances:
            return True
        args: list[int] = [now_ms]
        for a in allowances:
            args += [a.limit, a.window_ms]
        try:
            taken = await self._attempts(keys=[self._attempt_key(a.key) for a in allowances],
                                         args=args)
        except (RedisError, OSError) as e:
            raise BrokerError(str(e)) from e
        return bool(taken)

    async def settle_attempts(self, clear: Sequence[str], refund: Sequence[str]) -> None:
        keys = [self._attempt_key(k) for k in (*clear, *refund)]
        if not keys:
            return
        try:
            await self._refund(keys=keys, args=[len(clear)])
        except (RedisError, OSError) as e:
            raise BrokerError(str(e)) from e

    def _socks(self, node: str) -> str:
        return f"{self.prefix}:socks:{node}"

    async def sockets_elsewhere(self, participant: str, nodes: Sequence[str]) -> int:
        """Open sockets of a participant on these other nodes (SEC-19: the cap is per
        participant, not per node)."""
        if not nodes:
            return 0
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for node in nodes:
                    pipe.hget(self._socks(node), participant)
                counts = await pipe.execute()
        except (RedisError, OSError) as e:
            raise BrokerError(str(e)) from e
        return sum(int(c) for c in counts if c is not None)

    async def count_socket(self, node: str, participant: str, delta: int,
                           expiry_ms: int) -> None:
        """This node's socket count for a participant; the whole count expires with
        the node (a killed node's sockets stop counting after ``node_expiry_s``)."""
        key = self._socks(node)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hincrby(key, participant, delta)
                pipe.pexpire(key, expiry_ms)
                left, _ = await pipe.execute()
                if int(left) <= 0:
                    await self.redis.hdel(key, participant)
        except (RedisError, OSError) as e:
            raise BrokerError(str(e)) from e

    async def keep_sockets(self, node: str, expiry_ms: int) -> None:
        """Heartbeat: this node is alive, its socket counts still hold."""
        try:
            await self.redis.pexpire(self._socks(node), expiry_ms)
        except (RedisError, OSError) as e:
            raise BrokerError(str(e)) from e

    async def flush_for_tests(self) -> None:
        keys = [k async for k in self.redis.scan_iter(f"{self.prefix}:*")]
        if keys:
            await self.redis.delete(*keys)
