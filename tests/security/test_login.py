"""Issue 14 § Login, over real sockets: a lockout that cannot race and cannot be abused,
a bounded password pool, and revocation by account version.

Clients bind to other loopback addresses (127.0.0.2, …) to come from another address.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, TCPConnector

from chatserver.brokers.redis import RedisBroker
from chatserver.brokers.redis_state import RedisClusterState
from chatserver.config import AuthConfig
from chatserver.moderation.engine import RuleSet
from chatserver.transport.auth import Passwords
from chatserver.transport.throttle import THROTTLE_KEY
from tests.brokers.test_contract import REDIS_URL
from tests.conftest import (
    FakeClock,
    Running,
    forget_redis_prefix,
    redis_up,
    require,
    start_server,
)
from tests.safeguarding.test_safeguarding import run_cli

RIGHT = "correct horse battery"


async def post_from(running: Running, address: str, path: str, body: dict[str, Any],
                    token: str | None = None) -> tuple[int, Any]:
    """POST as a client on another loopback address."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with ClientSession(connector=TCPConnector(local_addr=(address, 0))) as s, \
            s.post(running.http + path, json=body, headers=headers) as r:
        return r.status, await r.json()


async def login_from(running: Running, address: str, username: str,
                     password: str) -> int:
    status, _ = await post_from(running, address, "/api/login",
                                {"username": username, "password": password})
    return status


async def audit_actions(running: Running) -> list[dict[str, Any]]:
    _, body = await running.get("/api/audit?limit=1000", await running.login("ops"))
    entries: list[dict[str, Any]] = body["entries"]
    return entries


class GatedVerify:
    """Passwords.verify that waits at a gate: shows how many logins reached a real
    verification, and holds them there while a test sends more."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str | None] = []
        self.gate = threading.Event()
        self.loop = asyncio.get_running_loop()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        real = Passwords.verify

        def verify(password_hash: str | None, password: str) -> bool:
            self.calls.append(password_hash)
            self.loop.call_soon_threadsafe(self._wake)
            self.gate.wait(30)
            return real(password_hash, password)

        monkeypatch.setattr(Passwords, "verify", staticmethod(verify))

    def _wake(self) -> None:
        for n, fut in self._waiters:
            if len(self.calls) >= n and not fut.done():
                fut.set_result(None)

    async def wait_calls(self, n: int) -> None:
        fut: asyncio.Future[None] = self.loop.create_future()
        self._waiters.append((n, fut))
        self._wake()
        await asyncio.wait_for(fut, 10)


@pytest.fixture
async def gated(tmp_path: Path, rules: RuleSet, monkeypatch: pytest.MonkeyPatch
                ) -> AsyncIterator[tuple[Running, GatedVerify]]:
    gate = GatedVerify(monkeypatch)
    running = await start_server(tmp_path, rules,
                                 auth=AuthConfig(verify_concurrency=8, verify_queue=8))
    yield running, gate
    gate.gate.set()
    await running.stop()


async def test_parallel_wrong_guesses_are_counted_before_any_is_verified(
        gated: tuple[Running, GatedVerify]) -> None:
    running, gate = gated
    first = [asyncio.create_task(login_from(running, "127.0.0.2", "facilitator", "wrong"))
             for _ in range(5)]
    await gate.wait_calls(5)  # five are being verified, held at the gate
    # The burst goes on while they are held: 35 more guesses and the right password.
    burst = await asyncio.gather(*[login_from(running, "127.0.0.2", "facilitator", "wrong")
                                   for _ in range(35)],
                                 login_from(running, "127.0.0.2", "facilitator", RIGHT))
    assert set(burst) == {429}  # refused before verification, the right password too
    gate.gate.set()
    assert await asyncio.gather(*first) == [401] * 5
    assert len(gate.calls) == 5


async def test_a_stranger_cannot_lock_a_facilitator_out_from_another_address(
        running: Running) -> None:
    codes = [await login_from(running, "127.0.0.2", "facilitator", "guess")
             for _ in range(6)]
    assert codes == [401] * 5 + [429]
    assert await login_from(running, "127.0.0.2", "facilitator", RIGHT) == 429
    # The facilitator, from their own address, signs in.
    assert await login_from(running, "127.0.0.1", "facilitator", RIGHT) == 200


async def test_ten_usernames_once_each_from_one_address_are_throttled_together(
        running: Running) -> None:
    codes = [await login_from(running, "127.0.0.3", f"staff{i}", "Summer2024!")
             for i in range(10)]
    assert codes == [401] * 10
    assert await login_from(running, "127.0.0.3", "counsellor", "Summer2024!") == 429
    assert await login_from(running, "127.0.0.3", "counsellor", RIGHT) == 429
    assert await login_from(running, "127.0.0.4", "counsellor", RIGHT) == 200


async def test_a_burst_of_failed_logins_is_one_summarised_audit_entry_per_window(
        tmp_path: Path, rules: RuleSet) -> None:
    clock = FakeClock()
    running = await start_server(tmp_path, rules, clock=clock)
    try:
        codes = [await login_from(running, "127.0.0.2", "facilitator", "nope")
                 for _ in range(30)]
        assert codes == [401] * 5 + [429] * 25
        clock.advance(61)  # the audit window (and the address budget) closes
        entries = await audit_actions(running)
        login_rows = [e for e in entries if e["action"].startswith("login_")]
        assert [e["action"] for e in login_rows] == [
            "login_failed", "login_locked", "login_failures"]
        summary = login_rows[-1]["detail"]
        assert (summary["failed"], summary["locked"]) == (5, 25)
        assert summary["accounts"] == ["facilitator"]
        clock.advance(300)  # the lockout window ends: the right password works again
        assert await login_from(running, "127.0.0.2", "facilitator", RIGHT) == 200
    finally:
        await running.stop()


async def test_a_login_flood_is_refused_at_once_past_the_verify_queue(
        tmp_path: Path, rules: RuleSet, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = GatedVerify(monkeypatch)
    running = await start_server(tmp_path, rules,
                                 auth=AuthConfig(verify_concurrency=1, verify_queue=2))
    try:
        held = [asyncio.create_task(login_from(running, f"127.0.1.{i}",
                                               secrets.token_hex(6), "x")) for i in range(3)]
        await gate.wait_calls(1)  # one verifying, two waiting: the pool is full
        await asyncio.wait_for(running.runner.app[THROTTLE_KEY].pool.wait_admitted(3), 10)
        flood = await asyncio.gather(*[
            login_from(running, f"127.0.2.{i}", secrets.token_hex(6), "x") for i in range(20)])
        assert set(flood) == {429}  # answered while the gate is still shut: at once
        # Another client is still served meanwhile.
        assert (await running.get("/api/resources"))[0] == 200
        gate.gate.set()
        assert await asyncio.gather(*held) == [401] * 3
        # Unknown usernames went through a real (dummy-hash) verification: same cost.
        assert gate.calls == [None, None, None]
    finally:
        gate.gate.set()
        await running.stop()


# ------------------------------------------------------- revocation by account version
async def test_logout_ends_the_token_and_its_open_sockets(running: Running) -> None:
    token = await running.login("facilitator")
    other_session = await running.login("facilitator")
    fac = await running.client(token)
    status, _ = await running.post("/api/logout", {}, token)
    assert status == 200
    assert await fac.closed_with(timeout=5) == 4401
    for t in (token, other_session):
        assert (await running.get("/api/rooms", t))[0] == 401
    assert (await running.get("/api/rooms", await running.login("facilitator")))[0] == 200


async def test_a_participant_token_cannot_log_out(running: Running) -> None:
    status, _ = await running.post("/api/logout", {}, await running.join("Kai"))
    assert status == 403


async def test_a_password_reset_ends_existing_sessions(running: Running,
                                                       tmp_path: Path) -> None:
    token = await running.login("counsellor")
    cou = await running.client(token)
    done = await asyncio.to_thread(run_cli, tmp_path, "users", "add", "counsellor", "--role",
                                   "counsellor")
    assert done.returncode == 0, done.stderr
    assert await cou.closed_with(timeout=5) == 4401
    assert (await running.get("/api/cases", token))[0] == 401


async def test_a_token_from_before_disable_stays_dead_after_re_enable(
        running: Running, tmp_path: Path) -> None:
    token = await running.login("facilitator")
    done = await asyncio.to_thread(run_cli, tmp_path, "users", "disable", "facilitator")
    assert done.returncode == 0, done.stderr
    assert await running.server.store.set_disabled("facilitator", False)  # re-enabled
    assert (await running.get("/api/rooms", token))[0] == 401
    late = await running.client_raw(token)
    assert await late.closed_with() == 4401
    assert (await running.get("/api/rooms", await running.login("facilitator")))[0] == 200


# ------------------------------------------------------------------- across nodes
@pytest.fixture
async def two_nodes(tmp_path: Path, rules: RuleSet) -> AsyncIterator[list[Running]]:
    require(await redis_up(REDIS_URL), f"Redis is not reachable at {REDIS_URL}")
    prefix = f"t{secrets.token_hex(4)}"
    nodes = [await start_server(tmp_path / name, rules,
                                broker=RedisBroker(REDIS_URL, prefix=prefix),
                                counts=RedisClusterState(REDIS_URL, prefix=prefix))
             for name in ("a", "b")]
    yield nodes
    for node in nodes:
        await node.stop()
    await forget_redis_prefix(REDIS_URL, prefix)


async def test_login_failures_are_counted_once_for_the_whole_cluster(
        two_nodes: list[Running]) -> None:
    a, b = two_nodes

    def guess(node: Running) -> Callable[[], Any]:
        return lambda: login_from(node, "127.0.0.2", "facilitator", "wrong")

    codes = await asyncio.gather(*[guess(a if i % 2 else b)() for i in range(20)])
    assert sorted(codes) == [401] * 5 + [429] * 15  # five verified, on both nodes together
    assert await login_from(a, "127.0.0.2", "facilitator", RIGHT) == 429
    assert await login_from(b, "127.0.0.2", "facilitator", RIGHT) == 429
    assert await login_from(b, "127.0.0.1", "facilitator", RIGHT) == 200
