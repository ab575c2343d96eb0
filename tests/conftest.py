"""Shared fixtures: a real server on a loopback port, real websockets clients."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from aiohttp import ClientSession, web

from chatserver.brokers.memory import MemoryBroker
from chatserver.brokers.memory_state import MemoryClusterState
from chatserver.config import (
    AuthConfig,
    Config,
    LimitsConfig,
    ModerationConfig,
    RoomsConfig,
    ServerConfig,
    read_rule_files,
)
from chatserver.core.effects import RoomRecord
from chatserver.core.ids import RoomId
from chatserver.core.vocabulary import RoomKind
from chatserver.moderation.classifier import Classifier, load_classifier
from chatserver.moderation.corpus import Corpus, load_corpus
from chatserver.moderation.engine import RuleSet, load_rules
from chatserver.moderation.pipeline import Moderator
from chatserver.ports import Broker, ClusterState
from chatserver.runtime.server import Server, now_ms
from chatserver.stores.sqlite import SqliteStore
from chatserver.transport.app import build_app
from chatserver.transport.auth import Passwords, Tokens
from chatserver.transport.keys import APP_KEY
from chatserver.transport.metrics import build_metrics_app
from tests import logscan

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "chatserver" / "moderation_rules"
SECRET = "test-secret-" + "x" * 40


async def redis_up(url: str) -> bool:
    import redis.asyncio as aioredis
    r = aioredis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(await r.ping())
    except Exception:
        return False
    finally:
        await r.aclose()


async def forget_redis_prefix(url: str, prefix: str) -> None:
    """Delete every key a test made under its own prefix (brokers, cluster state)."""
    import redis.asyncio as aioredis
    r = aioredis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        keys = [k async for k in r.scan_iter(f"{prefix}:*")]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()


def require(condition: bool, reason: str) -> None:
    """Skip with a clear reason on a laptop; fail in CI (CI=true), where it must exist."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@functools.cache
def classifier() -> Classifier:
    """The committed heads, loaded once for the run (servers share them, read-only)."""
    return load_classifier()


@pytest.fixture(scope="session")
def rules() -> RuleSet:
    return load_rules(read_rule_files(RULES_DIR))


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    """The labelled corpus, split (``corpus/``): loading it, near-duplicate removal
    included, takes 30 s here, so the run does it once for every test that reads it."""
    return load_corpus(ROOT / "corpus", ROOT / "tests/moderation/corpus")


OPEN_BUDGETS: dict[str, Any] = {"joins_per_address": 100_000, "logins_per_address": 100_000,
                                "hellos_per_address": 100_000}
"""Every test client comes from 127.0.0.1: the per-address budgets (issue 14) are wide
open unless a test sets them."""


def make_config(tmp: Path, rules_dir: Path = RULES_DIR, auth: AuthConfig | None = None,
                trusted_proxies: tuple[str, ...] = (), **limits: Any) -> Config:
    return Config(
        server=ServerConfig(port=0, data_dir=str(tmp), hello_timeout_s=0.5, heartbeat_s=5.0,
                            outbox_frames=16, tick_s=0.05, trusted_proxies=trusted_proxies),
        auth=auth or AuthConfig(),
        limits=dataclasses.replace(LimitsConfig(), **{**OPEN_BUDGETS, **limits}),
        moderation=ModerationConfig(rules_dir=str(rules_dir)),
        rooms=RoomsConfig(require_facilitator=False),
    )


class Endpoint:
    """A server's URL, and helpers that speak to it as clients would."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.http = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        self.clients: list[Client] = []

    async def close_clients(self) -> None:
        # All at once: each close waits for its handshake, and a client whose unread
        # events filled its queue answers late (200 one by one took over a minute).
        await asyncio.gather(*(c.ws.close() for c in self.clients))

    async def post(self, path: str, body: dict[str, Any], token: str | None = None
                   ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with ClientSession() as s, \
                s.post(self.http + path, json=body, headers=headers) as r:
            return r.status, await r.json()

    async def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with ClientSession() as s, s.get(self.http + path, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    async def join(self, name: str, room: str = "lounge", band: str = "16-17") -> str:
        status, body = await self.post("/api/join", {"room": room, "name": name,
                                                     "age_band": band})
        assert status == 200, body
        token: str = body["token"]
        return token

    async def login(self, username: str, password: str = "correct horse battery") -> str:
        status, body = await self.post("/api/login", {"username": username,
                                                      "password": password})
        assert status == 200, body
        token: str = body["token"]
        return token

    async def client(self, token: str, resume: dict[str, int] | None = None) -> Client:
        client = await self.client_raw(token, resume)
        client.welcome = await client.expect("welcome")
        return client

    async def client_raw(self, token: str, resume: dict[str, int] | None = None) -> Client:
        """Connected and hello said; whatever the server answers is left to the test."""
        ws = await websockets.connect(self.ws_url)
        hello: dict[str, Any] = {"type": "hello", "token": token}
        if resume is not None:
            hello["resume"] = resume
        logscan.remember(token)
        await ws.send(orjson.dumps(hello).decode())
        client = Client(ws)
        self.clients.append(client)
        return client


class Running(Endpoint):
    """A server started in this process, with its metrics listener."""

    def __init__(self, server: Server, runner: web.AppRunner, port: int,
                 metrics: web.AppRunner, metrics_port: int) -> None:
        super().__init__(port)
        self.server, self.runner = server, runner
        self.metrics_runner = metrics
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    async def stop(self) -> None:
        await self.close_clients()
        await self.metrics_runner.cleanup()
        await self.runner.cleanup()


class Client:
    """A websockets client that waits for events by type, never by time."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.welcome: dict[str, Any] = {}
        self.seen: list[dict[str, Any]] = []
        self._unclaimed: list[dict[str, Any]] = []

    async def send(self, **frame: Any) -> None:
        logscan.remember(frame.get("text"))
        logscan.remember(frame.get("token"))
        await self.ws.send(orjson.dumps(frame).decode())

    async def raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        event: dict[str, Any] = orjson.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.seen.append(event)
        return event

    async def expect(self, kind: str, where: Callable[[dict[str, Any]], bool] | None = None,
                     timeout: float = 5.0) -> dict[str, Any]:
        """The first event of this type not yet claimed (others stay for later calls),
        within a generous ceiling."""
        def wanted(event: dict[str, Any]) -> bool:
            return event.get("type") == kind and (where is None or where(event))

        for event in self._unclaimed:
            if wanted(event):
                self._unclaimed.remove(event)
                return event
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout)
                if wanted(event):
                    return event
                self._unclaimed.append(event)

    def forget(self, kind: str) -> None:
        """Drop unclaimed events of this type: only ones arriving from now on count."""
        self._unclaimed = [e for e in self._unclaimed if e.get("type") != kind]

    async def say(self, text: str, msg_id: str, room: str = "lounge") -> dict[str, Any]:
        await self.send(type="send", room=room, id=msg_id, text=text)
        return await self.expect("ack", lambda e: e["ref"] == msg_id)

    async def closed_with(self, timeout: float = 5.0) -> int | None:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.ws.recv()
        except websockets.ConnectionClosed as e:
            return e.rcvd.code if e.rcvd else None
        return None

    async def close(self) -> None:
        await self.ws.close()


class FakeClock:
    """Wall time that tests move by hand: timers fire on the server's next tick."""

    def __init__(self) -> None:
        self.ms = 1_800_000_000_000

    def __call__(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += int(seconds * 1000)


async def start_server(tmp: Path, rules: RuleSet, rules_dir: Path = RULES_DIR,
                       clock: Callable[[], int] | None = None, port: int = 0,
                       auth: AuthConfig | None = None, broker: Broker | None = None,
                       counts: ClusterState | None = None,
                       trusted_proxies: tuple[str, ...] = (), **limits: Any) -> Running:
    config = make_config(tmp, rules_dir, auth, trusted_proxies, **limits)
    store = SqliteStore(tmp / "chat.db")
    server = Server(config, Moderator(rules, classifier(), config.moderation.model), store,
                    broker or MemoryBroker(config.limits.history),
                    counts or MemoryClusterState(), Tokens(SECRET, config.auth),
                    clock=clock or now_ms)
    app = build_app(server)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = runner.addresses[0][1]
    metrics = web.AppRunner(build_metrics_app(server))
    await metrics.setup()
    await web.TCPSite(metrics, "127.0.0.1", 0).start()
    await server.ensure_room(RoomRecord(RoomId("lounge"), "Lounge", ("13-15", "16-17"),
                                        "default", RoomKind.GROUP, False, 0, {}, (), False))
    from chatserver.ports import UserRow
    for role in ("facilitator", "counsellor", "ops"):
        if await store.user(role) is None:
            await store.add_user(UserRow(f"u_{role}", role, role,
                                         Passwords.hash("correct horse battery"), False))
    return Running(server, runner, port, metrics, metrics.addresses[0][1])


@pytest.fixture(scope="session", autouse=True)
def _whole_run_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Issue 8 acceptance 4: after the run, no log holds a sent text, token or IP."""
    root = tmp_path_factory.getbasetemp()
    logscan.start_session_log(root / "in-process.log")
    yield
    logscan.end_session_log()
    found = logscan.scan(root)
    if found:
        pytest.fail("operational logs hold what they must not:\n" + "\n".join(found))


@pytest.fixture
async def running(tmp_path: Path, rules: RuleSet) -> AsyncIterator[Running]:
    logscan.use_session_log()
    r = await start_server(tmp_path, rules)
    yield r
    await r.stop()


__all__ = ["APP_KEY", "Client", "Running", "make_config", "require", "start_server"]
