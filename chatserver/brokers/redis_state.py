"""The counts every node keeps together, in Redis: attempt budgets, send budgets and
per-node socket counts (``ClusterState``), each one Lua script so a check and its count
are one step for the whole cluster (issue 14, SECURITY.md FL-03, SEC-19).

Keys (under the broker prefix): ``att:<key>`` an attempt window, ``budget:<participant>``
a send window, ``socks:<node>`` a node's socket count per participant.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from chatserver.ports import Allowance, BrokerError

__all__ = ["RedisClusterState"]

_SCRIPTS: Final = files("chatserver.brokers") / "redis_scripts"
_BUDGET_LUA: Final = (_SCRIPTS / "budget.lua").read_text()
_ATTEMPTS_LUA: Final = (_SCRIPTS / "attempts.lua").read_text()
_REFUND_LUA: Final = (_SCRIPTS / "refund.lua").read_text()


class RedisClusterState:
    def __init__(self, url: str, *, prefix: str = "chat", timeout_s: float = 1.0) -> None:
        self.prefix = prefix
        self.redis = aioredis.Redis.from_url(url, socket_timeout=timeout_s,
                                             socket_connect_timeout=timeout_s)
        self._budget = self.redis.register_script(_BUDGET_LUA)
        self._attempts = self.redis.register_script(_ATTEMPTS_LUA)
        self._refund = self.redis.register_script(_REFUND_LUA)

    async def close(self) -> None:
        await self.redis.aclose()

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
