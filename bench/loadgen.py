"""Load generator: R rooms x P participants, realistic text, figures for one window.

    python bench/loadgen.py --base http://127.0.0.1:8080 --kind chat --server-pid PID \
        [--rooms 100 --per-room 10 --rate 200 --warmup 3 --duration 10] \
        [--steps 400,800,1600] [--idle 20] [--json out.json]

`--kind chat|ceiling` speak PROTOCOL.md over websockets; `--kind socketio` speaks to
bench/peer_socketio.py. Every client lives in this one process, so send, ack and
delivery times are read on one monotonic clock. Talks only to 127.0.0.1 and stops by
itself (each phase is bounded in time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.filter import corpus_messages  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Stats:
    sent: dict[str, float] = field(default_factory=dict)
    ack_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)
    acks: dict[str, int] = field(default_factory=dict)
    deliveries: int = 0
    sends: int = 0
    errors: int = 0
    disconnects: int = 0
    measuring: bool = False

    def reset(self) -> None:
        self.ack_ms.clear()
        self.delivery_ms.clear()
        self.acks.clear()
        self.deliveries = self.sends = self.errors = self.disconnects = 0


def _pids(spec: str) -> list[int]:
    return [int(p) for p in str(spec).split(",") if p]


def proc_cpu_s(pids: str) -> float:
    """CPU seconds of every server process (a cluster: the sum over its nodes)."""
    return sum(_proc_cpu_s(p) for p in _pids(pids))


def proc_rss_mb(pids: str) -> float:
    return sum(_proc_rss_mb(p) for p in _pids(pids))


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class WsClient:
    """One participant over a raw WebSocket (our server and the ceiling)."""

    def __init__(self, base: str, token: str, room: str, stats: Stats) -> None:
        self.url = base.replace("http", "ws", 1) + "/ws"
        self.token, self.room, self.stats = token, room, stats
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self.ws = await websockets.connect(self.url, max_queue=None, compression=None)
        await self.ws.send(orjson.dumps({"type": "hello", "token": self.token}).decode())
        welcome = orjson.loads(await self.ws.recv())
        assert welcome["type"] == "welcome", welcome
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        st = self.stats
        try:
            async for raw in self.ws:
                event = orjson.loads(raw)
                kind = event["type"]
                now = time.perf_counter()
                if kind == "message":
                    started = st.sent.get(event["id"])
                    if st.measuring and started is not None:
                        st.deliveries += 1
                        st.delivery_ms.append((now - started) * 1000)
                elif kind == "ack":
                    started = st.sent.get(event["ref"])
                    if st.measuring and started is not None:
                        st.ack_ms.append((now - started) * 1000)
                        status = event["status"] if event["status"] != "rejected" else \
                            f"rejected:{event.get('code')}"
                        st.acks[status] = st.acks.get(status, 0) + 1
                        if event["status"] == "rejected":
                            st.errors += 1
                elif kind == "error" and st.measuring:
                    st.errors += 1
        except websockets.ConnectionClosed:
            pass
        if st.measuring:
            st.disconnects += 1

    async def send(self, msg_id: str, text: str) -> None:
        await self.ws.send(orjson.dumps({"type": "send", "room": self.room, "id": msg_id,
                                         "text": text}).decode())

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()


class SioClient:
    """One participant of bench/peer_socketio.py."""

    def __init__(self, base: str, token: str, room: str, stats: Stats) -> None:
        import socketio
        self.base, self.token, self.room, self.stats = base, token, room, stats
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("message", self.on_message)

    async def on_message(self, event: dict[str, Any]) -> None:
        st = self.stats
        started = st.sent.get(event["id"])
        if st.measuring and started is not None:
            st.deliveries += 1
            st.delivery_ms.append((time.perf_counter() - started) * 1000)

    async def connect(self) -> None:
        await self.sio.connect(self.base, transports=["websocket"])
        await self.sio.call("hello", {"token": self.token})

    async def send(self, msg_id: str, text: str) -> None:
        st = self.stats

        def on_ack(ack: dict[str, Any]) -> None:
            started = st.sent.get(msg_id)
            if st.measuring and started is not None:
                st.ack_ms.append((time.perf_counter() - started) * 1000)
                st.acks[ack["status"]] = st.acks.get(ack["status"], 0) + 1

        await self.sio.emit("send", {"id": msg_id, "text": text}, callback=on_ack)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.disconnect()


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


async def ensure_rooms(http: aiohttp.ClientSession, args: argparse.Namespace) -> None:
    """Our server only: create the bench rooms through the ops API (409 = exists)."""
    user, password = args.ops.split(":", 1)
    base = args.bases[0]
    async with http.post(base + "/api/login",
                         json={"username": user, "password": password}) as res:
        token = (await res.json())["token"]
    for r in range(args.rooms):
        async with http.post(base + "/api/rooms", json={
                "id": f"bench-{r}", "title": f"Bench {r}", "age_bands": ["16-17"]},
                headers={"Authorization": f"Bearer {token}"}) as res:
            if res.status not in (201, 409):
                raise SystemExit(f"room create failed: {res.status} {await res.text()}")


async def setup(args: argparse.Namespace, stats: Stats) -> list[Any]:
    async with aiohttp.ClientSession() as http:
        if args.ops:
            await ensure_rooms(http, args)
        tokens: list[tuple[str, str, str]] = []
        for r in range(args.rooms):
            room = f"bench-{r}"
            for p in range(args.per_room):
                # Several nodes: each room's members alternate between them, so every
                # message crosses from one node to another.
                base = args.bases[p % len(args.bases)]
                async with http.post(base + "/api/join", json={
                        "room": room, "name": f"bench{r}x{p}", "age_band": "16-17"}) as res:
                    body = await res.json()
                    if res.status != 200:
                        raise SystemExit(f"join failed: {res.status} {body}")
                    tokens.append((base, body["token"], room))
    cls = SioClient if args.kind == "socketio" else WsClient
    clients = [cls(base, t, room, stats) for base, t, room in tokens]
    sem = asyncio.Semaphore(50)

    async def connect(c: Any) -> None:
        async with sem:
            await c.connect()

    await asyncio.gather(*(connect(c) for c in clients))
    return clients


async def drive(clients: list[Any], stats: Stats, rate: float, seconds: float,
                texts: list[str], counter: list[int]) -> None:
    """Send at `rate` messages/s in total, spread over random participants."""
    tick = 0.01
    owed = 0.0
    end = time.perf_counter() + seconds
    rng = random.Random(counter[0])
    while time.perf_counter() < end:
        owed += rate * tick
        while owed >= 1:
            owed -= 1
            counter[0] += 1
            msg_id = f"m{counter[0]}"
            stats.sent[msg_id] = time.perf_counter()
            if stats.measuring:
                stats.sends += 1
            client = rng.choice(clients)
            with contextlib.suppress(Exception):
                await client.send(msg_id, texts[counter[0] % len(texts)])
        await asyncio.sleep(tick)


async def window(args: argparse.Namespace, clients: list[Any], stats: Stats, rate: float,
                 texts: list[str], counter: list[int]) -> dict[str, Any]:
    await drive(clients, stats, rate, args.warmup, texts, counter)
    stats.reset()
    stats.measuring = True
    cpu0, t0 = proc_cpu_s(args.server_pid), time.perf_counter()
    me0 = time.process_time()
    await drive(clients, stats, rate, args.duration, texts, counter)
    elapsed = time.perf_counter() - t0
    cpu = (proc_cpu_s(args.server_pid) - cpu0) / elapsed * 100
    me = (time.process_time() - me0) / elapsed * 100
    stats.measuring = False
    await asyncio.sleep(0.5)  # let in-flight deliveries of the window land
    return {
        "rate": rate, "sends_per_s": stats.sends / elapsed,
        "deliveries_per_s": stats.deliveries / elapsed,
        "ack_p50_ms": pct(stats.ack_ms, .5), "ack_p95_ms": pct(stats.ack_ms, .95),
        "ack_p99_ms": pct(stats.ack_ms, .99), "ack_max_ms": max(stats.ack_ms, default=0),
        "delivery_p50_ms": pct(stats.delivery_ms, .5),
        "delivery_p95_ms": pct(stats.delivery_ms, .95),
        "delivery_p99_ms": pct(stats.delivery_ms, .99),
        "delivery_max_ms": max(stats.delivery_ms, default=0),
        "acks": dict(stats.acks), "errors": stats.errors, "disconnects": stats.disconnects,
        "server_cpu_pct": cpu, "loadgen_cpu_pct": me,
        "server_rss_mb": proc_rss_mb(args.server_pid),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    rss_before = proc_rss_mb(args.server_pid)
    clients = await setup(args, stats)
    n = len(clients)
    await asyncio.sleep(1)
    rss_after = proc_rss_mb(args.server_pid)
    result: dict[str, Any] = {
        "kind": args.kind, "rooms": args.rooms, "per_room": args.per_room,
        "connections": n, "rss_before_mb": rss_before, "rss_connected_mb": rss_after,
        "kib_per_connection": (rss_after - rss_before) * 1024 / n,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    if args.idle:
        cpu0, t0 = proc_cpu_s(args.server_pid), time.perf_counter()
        await asyncio.sleep(args.idle)
        result["idle_cpu_pct"] = (proc_cpu_s(args.server_pid) - cpu0) / \
            (time.perf_counter() - t0) * 100
    else:
        texts = corpus_messages(5000)
        counter = [0]
        result["fixed"] = await window(args, clients, stats, args.rate, texts, counter)
        steps = []
        for rate in [float(r) for r in args.steps.split(",") if r]:
            step = await window(args, clients, stats, rate, texts, counter)
            steps.append(step)
            if step["delivery_p99_ms"] > 100 or step["errors"] or step["disconnects"]:
                break
        result["steps"] = steps
        held = [s for s in steps if s["delivery_p99_ms"] <= 100 and not s["errors"]
                and not s["disconnects"]]
        result["max_rate_held"] = max((s["rate"] for s in held), default=None)
    await asyncio.gather(*(c.close() for c in clients))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="http://127.0.0.1:8080",
                        help="server URL; several, comma-separated, for a cluster")
    parser.add_argument("--kind", choices=["chat", "ceiling", "socketio"], default="chat")
    parser.add_argument("--server-pid", required=True,
                        help="server process id; several, comma-separated, for a cluster")
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--per-room", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200, help="total sends per second")
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--steps", default="", help="comma-separated rates to search")
    parser.add_argument("--idle", type=float, default=0, help="idle seconds (no sends)")
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--label", help="the run's name in the report (default: kind)")
    parser.add_argument("--ops", help="user:password of an ops account to create rooms")
    args = parser.parse_args()
    args.bases = args.base.split(",")
    if not all(b.startswith(("http://127.", "http://localhost")) for b in args.bases):
        raise SystemExit("loadgen only talks to this machine (127.0.0.1)")
    try:
        import uvloop
        result = uvloop.run(main_async(args))
    except ImportError:
        result = asyncio.run(main_async(args))
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
