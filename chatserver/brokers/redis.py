"""The cluster broker: Redis pub/sub for fan-out, a sorted set per room for history.

Envelopes are encoded by ``brokers/envelope.py``; anything that does not decode is
logged and dropped. The subscriber reconnects with backoff and resubscribes by itself,
and calls ``on_reset`` so the server can tell its clients to resume (SECURITY.md F-05,
F-08). The counts nodes share live next door (``brokers/redis_state.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from importlib.resources import files
from typing import Final

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from chatserver.brokers.envelope import decode_envelope, encode_envelope
from chatserver.core.effects import ALL_ROOMS, Audience
from chatserver.core.events import Message
from chatserver.core.ids import RoomId
from chatserver.core.sync import Sync
from chatserver.observability import log
from chatserver.ports import BrokerError, Envelope

__all__ = ["RedisBroker"]

_SCRIPTS: Final = files("chatserver.brokers") / "redis_scripts"
_PUBLISH_LUA: Final = (_SCRIPTS / "publish.lua").read_text()
"""History append and publish in one step (CONTRIBUTING.md § Style)."""


class RedisBroker:
    def __init__(self, url: str, *, history: int = 200, prefix: str = "chat",
                 timeout_s: float = 1.0,
                 on_reset: Callable[[], Awaitable[None] | None] | None = None) -> None:
        self.prefix, self.cap, self.timeout = prefix, history, timeout_s
        self.redis = aioredis.Redis.from_url(url, socket_timeout=timeout_s,
                                             socket_connect_timeout=timeout_s)
        self._script = self.redis.register_script(_PUBLISH_LUA)
        self._handler: Callable[[Envelope], Awaitable[None] | None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None
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
                if lost:
                    # The pool's idle connections went with the old Redis; drop them so
                    # the next publish opens a fresh one rather than failing on one
                    # (the subscription already proves Redis is reachable again).
                    await self.redis.connection_pool.disconnect(inuse_connections=False)
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
    def _messages(raw: Sequence[object]) -> list[Message]:
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
