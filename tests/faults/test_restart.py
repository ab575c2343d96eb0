"""SECURITY.md F-01 (SIGTERM) and F-02 (SIGKILL) against a real server process, with the
checker: lost = duplicated = unexpected = reordered = 0, seq never reused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from tests import logscan
from tests.conftest import ROOT
from tests.faults.checker import ClientView, check

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    def __init__(self, data: Path, port: int, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.data, self.port, self.extra_env, self.args = data, port, env or {}, args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "CHATSERVER_SERVER_DATA_DIR": str(self.data),
               "CHATSERVER_SERVER_PORT": str(self.port),
               # Several nodes on one machine: each its own metrics port.
               "CHATSERVER_SERVER_METRICS_PORT": "0",
               "CHATSERVER_LIMITS_RATE_MESSAGES": "100000",
               "CHATSERVER_LIMITS_FRAME_RATE": "100000",
               "CHATSERVER_LIMITS_FRAME_BURST": "100000",
               "CHATSERVER_AUTH_SECRET": "fault-test-secret-" + "s" * 40,
               **self.extra_env}
        with open(self.data / f"server-{self.port}.log", "ab") as log:  # the child keeps a copy
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chatserver", "serve", "--demo", *self.args],
                cwd=ROOT, env=env, stdout=log, stderr=log)
        # Readiness: the port answers /healthz. A generous ceiling, not a wait: start-up
        # compiles the rules and loads the encoder (seconds on a busy 2-core machine).
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=0.2)
                return
            if self.proc.poll() is not None:
                raise RuntimeError("server exited at start")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.05)
        raise RuntimeError("server did not become healthy")

    def stop(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def join(port: int, name: str) -> str:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/join", method="POST",
        data=json.dumps({"room": "demo", "name": name, "age_band": "16-17"}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as res:
        token: str = json.loads(res.read())["token"]
        logscan.remember(token)
        return token


class Member:
    """A websockets client that records everything it receives in the demo room."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.view = ClientView()
        self.acks: dict[str, dict[str, Any]] = {}
        self.ack_arrived = asyncio.Event()
        self.message_arrived = asyncio.Event()
        self.members: list[set[str]] = []  # the member list of each room event, in order
        self.room_changed = asyncio.Event()
        self.closed_code: int | None = None
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None

    @property
    def last_seq(self) -> int:
        return max((s for s, _ in self.view.received), default=0)

    async def connect(self, resume: bool) -> None:
        self.ws = await websockets.connect(f"ws://127.0.0.1:{self.port}/ws")
        hello: dict[str, Any] = {"type": "hello", "token": self.token}
        if resume:
            hello["resume"] = {"demo": self.last_seq}
        await self.ws.send(orjson.dumps(hello).decode())
        welcome = orjson.loads(await asyncio.wait_for(self.ws.recv(), 10))
        assert welcome["type"] == "welcome"
        if any(r.get("gap") for r in welcome["rooms"]):
            self.view.gap = True
        for m in welcome["history"].get("demo", []):
            self._got(m)
        self.reader = asyncio.create_task(self._read())

    def _got(self, m: dict[str, Any]) -> None:
        # Everything is recorded, repeats included: the checker counts duplicates.
        self.view.received.append((m["seq"], m["id"]))
        self.message_arrived.set()

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                e = orjson.loads(raw)
                if e["type"] == "message":
                    self._got(e)
                elif e["type"] == "ack":
                    self.acks[e["ref"]] = e
                    self.ack_arrived.set()
                elif e["type"] == "room":
                    self.members.append({m["name"] for m in e["members"]})
                    self.room_changed.set()
        except websockets.ConnectionClosed as closed:
            self.closed_code = closed.rcvd.code if closed.rcvd else None
        finally:
            self.ack_arrived.set()  # wake every waiter: the connection is gone
            self.message_arrived.set()

    async def wait_closed(self) -> int | None:
        assert self.reader is not None
        await asyncio.wait_for(self.reader, 30)
        return self.closed_code


async def wait_until(event: asyncio.Event, done: Any, timeout: float = 30) -> None:
    """Wait for a condition that ``event`` signals; clear first so no wake-up is lost."""
    async with asyncio.timeout(timeout):
        while True:
            event.clear()
            if done():
                return
            await event.wait()


async def _traffic(sender: Member, sent: list[str]) -> None:
    """Keep five sends in flight until the connection drops (the fault lands mid-traffic)."""
    n = 0
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            while n - len(sender.acks) < 5:
                mid = f"m{n}"
                sent.append(mid)
                logscan.remember(f"message number {n}")
                await sender.ws.send(orjson.dumps({"type": "send", "room": "demo", "id": mid,
                                                   "text": f"message number {n}"}).decode())
                n += 1
            reader = sender.reader
            assert reader is not None
            if reader.done():
                return
            acked = len(sender.acks)
            await wait_until(sender.ack_arrived,
                             lambda a=acked, r=reader: len(sender.acks) > a or r.done())


async def _run(tmp_path: Path, sig: int) -> None:
    port = free_port()
    server = ServerProcess(tmp_path, port)
    server.start()
    try:
        sender = Member(port, join(port, "Sender"))
        listener = Member(port, join(port, "Listener"))
        await sender.connect(resume=False)
        await listener.connect(resume=False)
        sent: list[str] = []
        traffic = asyncio.create_task(_traffic(sender, sent))
        await wait_until(sender.ack_arrived, lambda: len(sender.acks) >= 40)  # acks, not time
        code = server.stop(sig)
        if sig == signal.SIGTERM:
            assert code == 0
            assert await sender.wait_closed() == 1012
            assert await listener.wait_closed() == 1012
        else:
            await sender.wait_closed()
            await listener.wait_closed()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(traffic, 10)
        acked_before = {mid: a["seq"] for mid, a in sender.acks.items() if a["status"] == "sent"}
        in_doubt = [mid for mid in sent if mid not in sender.acks]

        server.start()
        await sender.connect(resume=True)
        await listener.connect(resume=True)
        for mid in in_doubt:  # retry every in-doubt send with the same id
            n = mid[1:]
            await sender.ws.send(orjson.dumps({"type": "send", "room": "demo", "id": mid,
                                               "text": f"message number {n}"}).decode())
        for _ in range(3):
            await sender.ws.send(orjson.dumps({"type": "send", "room": "demo",
                                               "id": f"after{_}",
                                               "text": "after the restart"}).decode())
        await wait_until(sender.ack_arrived, lambda: all(
            k in sender.acks for k in [*in_doubt, "after0", "after1", "after2"]))
        last_id = "after2"
        await wait_until(listener.message_arrived,
                         lambda: last_id in {mid for _, mid in listener.view.received})
        # F-02: the first seq after the restart is above every seq acked before it.
        assert sender.acks["after0"]["seq"] > max(acked_before.values())
        acked = {mid: a["seq"] for mid, a in sender.acks.items() if a["status"] == "sent"}
        server.stop(signal.SIGTERM)
    finally:
        server.kill()
    db = sqlite3.connect(tmp_path / "chat.db")
    final = dict(db.execute("SELECT seq, msg_id FROM messages WHERE room='demo'").fetchall())
    db.close()
    report = check(acked, in_doubt, final,
                   {"sender": sender.view, "listener": listener.view})
    print(f"\n{signal.Signals(sig).name}: {report} acked={len(acked)} "
          f"in_doubt={len(in_doubt)}")
    assert report.ok, report
    # Every retried in-doubt id was delivered exactly once.
    assert all(list(final.values()).count(mid) == 1 for mid in in_doubt)


async def test_f01_sigterm_mid_traffic_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    await _run(tmp_path, signal.SIGTERM)


async def test_f02_sigkill_mid_traffic_never_reuses_a_seq(tmp_path: Path) -> None:
    await _run(tmp_path, signal.SIGKILL)
