"""Load generator: R rooms x P participants, realistic text, figures for one window.

    python bench/loadgen.py --base http://127.0.0.1:8080 --kind chat --server-pid PID \
        [--rooms 100 --per-room 10 --rate 200 --warmup 3 --duration 10] \
        [--steps 400 --step-factor 1.5 --step-max 25600] [--procs 2] \
        [--idle 20] [--json out.json]

`--kind chat|ceiling` speak docs/protocol.md over websockets; `--kind socketio` speaks to
bench/peer_socketio.py. Talks only to 127.0.0.1 and stops by itself (every phase is
bounded in time).

Clients are spread over `--procs` worker processes (round robin, so every room has
members in every process) and the send rate is shared between them, so the load
generator is not the bottleneck; each window reports the workers' CPU (the total and the
busiest process) beside the server's. Send, ack and delivery times are read on
CLOCK_MONOTONIC, which is one clock for every process of the machine: each send id
carries its send time, so a delivery is timed in whichever process receives it.

The step search starts at the `--steps` rates and goes on past the last one, each rate
`--step-factor` times the one before, until a step fails (p99 send→delivery over
`--p99-limit-ms`, an error, a disconnect, a send never answered, or sends the server
did not take at the rate), or the cap (`--step-max`, `--max-steps`) is reached. A step
that fails while the busiest worker was saturated is *inconclusive* (the client may be
what was slow), not a failure of the server. The reason for stopping is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import random
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOADGEN_SATURATED_PCT = 90.0
"""A worker process at or above this share of one core may itself be what is slow."""
MACHINE_BUSY_PCT = 95.0
"""The whole machine this busy (every process, other people's work too): said beside a
failure, since the server may have been waiting for a core rather than slow."""
SENDS_SHORT = 0.95
"""Sends/s below this share of the target, with the workers not saturated: the server
did not take them (a send waits for the socket to drain), so the step fails."""
ACK_WAIT_S = 2.0
"""After a window, how long workers wait for the acks of its sends; a send still not
answered then counts against the step."""
SETTLE_S = 0.5
"""And then how long for in-flight deliveries of the window to land."""


def now_ns() -> int:
    """CLOCK_MONOTONIC: system-wide on Linux, so comparable between the workers."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _pids(spec: str) -> list[int]:
    """Every server process and its descendants (the encoder process of
    ``moderation.model.encoder = "process"`` works for the server: its CPU and memory
    count as the server's)."""
    out: list[int] = []
    todo = [int(p) for p in str(spec).split(",") if p]
    while todo:
        pid = todo.pop()
        out.append(pid)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def proc_cpu_s(pids: str) -> float:
    """CPU seconds of every server process (a cluster: the sum over its nodes)."""
    return sum(_proc_cpu_s(p) for p in _pids(pids))


def proc_rss_mb(pids: str) -> float:
    return sum(_proc_rss_mb(p) for p in _pids(pids))


def _proc_cpu_s(pid: int) -> float:
    # utime + stime of the whole process (every thread: the store writer, the encoder).
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # a child that has just exited
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _proc_rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # a child that has just exited
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of every core since boot, from /proc/stat: shows when the
    machine itself (this run and everyone else's work) was the limit."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user
    return float(total - idle), float(total)


def alive(pids: str) -> bool:
    return all(Path(f"/proc/{p}").exists() for p in _pids(pids))


# --- one worker process -------------------------------------------------------------


@dataclass
class Window:
    """One worker's tallies for one measured window [start_ns, end_ns) of send times."""

    start_ns: int
    end_ns: int
    sent: dict[str, int] = field(default_factory=dict)  # this worker's sends → send ns
    acked: set[str] = field(default_factory=set)
    ack_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)
    acks: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    disconnects: int = 0
    done_sending: bool = False
    answered: asyncio.Event = field(default_factory=asyncio.Event)  # every send acked

    def on_delivery(self, msg_id: str, now: int) -> None:
        try:
            sent = int(msg_id.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            return
        if self.start_ns <= sent < self.end_ns:
            self.delivery_ms.append((now - sent) / 1e6)

    def on_ack(self, msg_id: str, status: str, now: int) -> None:
        sent = self.sent.get(msg_id)
        if sent is None or msg_id in self.acked:
            return
        self.acked.add(msg_id)
        self.ack_ms.append((now - sent) / 1e6)
        self.acks[status] = self.acks.get(status, 0) + 1
        if status.startswith("rejected"):
            self.errors += 1
        if self.done_sending and len(self.acked) >= len(self.sent):
            self.answered.set()


class Tally:
    """What every client of a worker reports into: the open window, if any."""

    window: Window | None = None


class Participant(Protocol):
    async def connect(self) -> None: ...
    async def send(self, msg_id: str, text: str) -> None: ...
    async def close(self) -> None: ...


class WsClient:
    """One participant over a raw WebSocket (our server and the ceiling)."""

    def __init__(self, base: str, token: str, room: str, tally: Tally) -> None:
        self.url = base.replace("http", "ws", 1) + "/ws"
        self.token, self.room, self.tally = token, room, tally
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self.ws = await websockets.connect(self.url, max_queue=None, compression=None)
        await self.ws.send(orjson.dumps({"type": "hello", "token": self.token}).decode())
        welcome = orjson.loads(await self.ws.recv())
        if welcome["type"] != "welcome":
            raise SystemExit(f"hello refused: {welcome}")
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                event = orjson.loads(raw)
                win = self.tally.window
                if win is None:
                    continue
                kind = event["type"]
                if kind == "message":
                    win.on_delivery(event["id"], now_ns())
                elif kind == "ack":
                    status = event["status"]
                    if status == "rejected":
                        status = f"rejected:{event.get('code')}"
                    win.on_ack(event["ref"], status, now_ns())
                elif kind == "error":
                    win.errors += 1
        except websockets.ConnectionClosed:
            pass
        if self.tally.window is not None:
            self.tally.window.disconnects += 1

    async def send(self, msg_id: str, text: str) -> None:
        frame = {"type": "send", "room": self.room, "id": msg_id, "text": text}
        await self.ws.send(orjson.dumps(frame).decode())

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()


class SioClient:
    """One participant of bench/peer_socketio.py."""

    def __init__(self, base: str, token: str, room: str, tally: Tally) -> None:
        import socketio

        self.base, self.token, self.room, self.tally = base, token, room, tally
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("message", self.on_message)

    async def on_message(self, event: dict[str, Any]) -> None:
        if self.tally.window is not None:
            self.tally.window.on_delivery(event["id"], now_ns())

    async def connect(self) -> None:
        await self.sio.connect(self.base, transports=["websocket"])
        await self.sio.call("hello", {"token": self.token})

    async def send(self, msg_id: str, text: str) -> None:
        def on_ack(ack: dict[str, Any]) -> None:
            if self.tally.window is not None:
                self.tally.window.on_ack(msg_id, ack["status"], now_ns())

        await self.sio.emit("send", {"id": msg_id, "text": text}, callback=on_ack)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.disconnect()


async def sleep_until(t_ns: int) -> None:
    delay = (t_ns - now_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)


async def drive(clients: list[Participant], rate: float, start_ns: int, end_ns: int,
                texts: list[str], rng: random.Random, worker: int, counter: list[int],
                win: Window | None) -> None:
    """Send at `rate` messages/s from random participants, open loop on the wall clock:
    a worker that fell behind catches up rather than quietly sending less."""
    done = 0
    while (t := now_ns()) < end_ns:
        owed = int(rate * (t - start_ns) / 1e9) - done
        for _ in range(owed):
            counter[0] += 1
            sent = now_ns()
            # The id carries its send time (CLOCK_MONOTONIC), for the process receiving it.
            msg_id = f"w{worker}-{counter[0]}-{sent}"
            if win is not None:
                win.sent[msg_id] = sent
            with contextlib.suppress(Exception):
                await rng.choice(clients).send(msg_id, texts[counter[0] % len(texts)])
        done += max(owed, 0)
        await asyncio.sleep(0.005)


async def worker_window(clients: list[Participant], tally: Tally, cmd: dict[str, Any],
                        texts: list[str], rng: random.Random, worker: int,
                        counter: list[int]) -> dict[str, Any]:
    start, m0, m1 = cmd["start_ns"], cmd["measure_ns"], cmd["end_ns"]
    await sleep_until(start)
    await drive(clients, cmd["rate"], start, m0, texts, rng, worker, counter, None)
    win = Window(m0, m1)
    tally.window = win
    cpu0 = time.process_time()
    await drive(clients, cmd["rate"], m0, m1, texts, rng, worker, counter, win)
    cpu_s = time.process_time() - cpu0
    win.done_sending = True
    if len(win.acked) >= len(win.sent):
        win.answered.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(win.answered.wait(), ACK_WAIT_S)
    await asyncio.sleep(SETTLE_S)
    tally.window = None
    return {"sends": len(win.sent), "unanswered": len(win.sent) - len(win.acked),
            "ack_ms": win.ack_ms, "delivery_ms": win.delivery_ms, "acks": win.acks,
            "errors": win.errors, "disconnects": win.disconnects, "cpu_s": cpu_s}


def worker_main(conn: Connection, kind: str, worker: int,
                tokens: list[tuple[str, str, str]], texts: list[str]) -> None:
    """A worker process: connect its share of the participants, then run the windows the
    coordinator asks for, replying with raw tallies (merged there)."""
    try:
        import uvloop

        uvloop.run(_worker(conn, kind, worker, tokens, texts))
    except ImportError:
        asyncio.run(_worker(conn, kind, worker, tokens, texts))


async def _worker(conn: Connection, kind: str, worker: int,
                  tokens: list[tuple[str, str, str]], texts: list[str]) -> None:
    tally = Tally()
    cls = SioClient if kind == "socketio" else WsClient
    clients: list[Participant] = [cls(base, t, room, tally) for base, t, room in tokens]
    loop = asyncio.get_running_loop()
    try:
        sem = asyncio.Semaphore(50)

        async def connect(c: Participant) -> None:
            async with sem:
                await c.connect()

        await asyncio.gather(*(connect(c) for c in clients))
        conn.send({"ready": len(clients)})
        rng, counter = random.Random(worker), [0]
        while True:
            cmd = await loop.run_in_executor(None, conn.recv)
            if cmd["op"] == "stop":
                break
            conn.send(await worker_window(clients, tally, cmd, texts, rng, worker, counter))
    except BaseException:
        conn.send({"error": traceback.format_exc()})
        raise
    finally:
        await asyncio.gather(*(c.close() for c in clients))


# --- the coordinator -----------------------------------------------------------------


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def room_id(args: argparse.Namespace, r: int) -> str:
    return f"{args.room_prefix}{r}"


async def ensure_rooms(http: aiohttp.ClientSession, args: argparse.Namespace) -> None:
    """Our server only: create the bench rooms through the ops API (409 = exists)."""
    user, password = args.ops.split(":", 1)
    base = args.bases[0]
    async with http.post(base + "/api/login", json={"username": user, "password": password}) \
            as res:
        if res.status != 200:
            raise SystemExit(f"ops login failed: {res.status} {await res.text()}")
        token = (await res.json())["token"]
    for r in range(args.rooms):
        body = {"id": room_id(args, r), "title": f"Bench {r}", "age_bands": ["16-17"]}
        async with http.post(base + "/api/rooms", json=body,
                             headers={"Authorization": f"Bearer {token}"}) as res:
            if res.status not in (201, 409):
                raise SystemExit(f"room create failed: {res.status} {await res.text()}")


async def join_all(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """Every participant joins through POST /api/join; returns (base, token, room)."""
    async with aiohttp.ClientSession() as http:
        if args.ops:
            await ensure_rooms(http, args)
        sem = asyncio.Semaphore(20)

        async def join(r: int, p: int) -> tuple[str, str, str]:
            room = room_id(args, r)
            # Several nodes: each room's members alternate between them, so every
            # message crosses from one node to another.
            base = args.bases[p % len(args.bases)]
            async with sem, http.post(base + "/api/join", json={
                    "room": room, "name": f"bench{r}x{p}", "age_band": "16-17"}) as res:
                body = await res.json()
                if res.status != 200:
                    raise SystemExit(f"join failed: {res.status} {body}")
                return base, body["token"], room

        return list(await asyncio.gather(*(join(r, p) for r in range(args.rooms)
                                           for p in range(args.per_room))))


@dataclass
class Workers:
    conns: list[Connection]
    procs: Sequence[multiprocessing.process.BaseProcess]

    def recv_all(self) -> list[dict[str, Any]]:
        out = []
        for c in self.conns:
            reply: dict[str, Any] = c.recv()
            if "error" in reply:
                raise SystemExit(f"load generator worker failed:\n{reply['error']}")
            out.append(reply)
        return out

    def stop(self) -> None:
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.send({"op": "stop"})
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()


def start_workers(args: argparse.Namespace, tokens: list[tuple[str, str, str]],
                  texts: list[str]) -> Workers:
    # spawn, not fork: a worker starts clean (no copy of the coordinator's loop or sockets).
    ctx = multiprocessing.get_context("spawn")
    n = max(1, min(args.procs, len(tokens)))
    conns, procs = [], []
    for w in range(n):
        parent, child = ctx.Pipe()
        # Round robin: every room has members in every worker, so deliveries cross
        # processes as they would cross machines. The texts are dealt out too: with the
        # whole list each, every worker sent the same line at the same moment, and the
        # server saw each line twice at once (a twin it may answer from the first).
        p = ctx.Process(target=worker_main, daemon=True,
                        args=(child, args.kind, w, tokens[w::n], texts[w::n]))
        p.start()
        conns.append(parent)
        procs.append(p)
    workers = Workers(conns, procs)
    workers.recv_all()
    return workers


def other_cpu_pct(step: dict[str, Any], cores: int) -> float:
    """CPU (% of one core) of every process on the machine but the server and the load
    generator's workers, over the window: what other work took."""
    machine = step["machine_cpu_pct"] * cores
    return max(0.0, float(machine - step["server_cpu_pct"] - step["loadgen_cpu_pct"]))


def judge(step: dict[str, Any], limit_ms: float) -> tuple[str, str]:
    """("held" | "failed" | "inconclusive", why) for one window."""
    problems = []
    if step["errors"]:
        problems.append(f"{step['errors']} errors {step['acks']}")
    if step["disconnects"]:
        problems.append(f"{step['disconnects']} disconnects")
    if step["unanswered"]:
        problems.append(f"{step['unanswered']} sends unanswered after {ACK_WAIT_S:.0f} s")
    p99 = step["delivery_p99_ms"]
    if math.isnan(p99) or p99 > limit_ms:
        problems.append(f"p99 send→delivery {p99:.0f} ms > {limit_ms:.0f} ms")
    if step["sends_per_s"] < SENDS_SHORT * step["rate"]:
        problems.append(f"sent {step['sends_per_s']:.0f}/s of {step['rate']:.0f}/s")
    hot = step["loadgen_cpu_max_pct"] >= LOADGEN_SATURATED_PCT
    if not problems:
        return "held", ""
    why = "; ".join(problems)
    if step["machine_cpu_pct"] >= MACHINE_BUSY_PCT:
        why += (f" (every core of the machine was {step['machine_cpu_pct']:.0f}% busy; "
                f"other processes took {other_cpu_pct(step, os.cpu_count() or 1):.0f}% "
                "of a core)")
    if hot:
        return "inconclusive", (f"{why}, with the busiest load generator process at "
                                f"{step['loadgen_cpu_max_pct']:.0f}% of a core (the client "
                                "may be what was slow: run with more --procs)")
    return "failed", why


def window(args: argparse.Namespace, workers: Workers, rate: float) -> dict[str, Any]:
    """One window at `rate` over every worker; the server's CPU over the same interval."""
    if not alive(args.server_pid):
        raise ServerGone
    start = now_ns() + 200_000_000  # time for the command to reach every worker
    m0 = start + int(args.warmup * 1e9)
    m1 = m0 + int(args.duration * 1e9)
    n = len(workers.conns)
    for c in workers.conns:
        c.send({"op": "window", "rate": rate / n, "start_ns": start, "measure_ns": m0,
                "end_ns": m1})
    time.sleep(max(0.0, (m0 - now_ns()) / 1e9))
    cpu0, (busy0, total0) = proc_cpu_s(args.server_pid), machine_cpu()
    time.sleep(max(0.0, (m1 - now_ns()) / 1e9))
    try:
        cpu_s = proc_cpu_s(args.server_pid) - cpu0
    except FileNotFoundError:
        raise ServerGone from None
    busy1, total1 = machine_cpu()
    rss = proc_rss_mb(args.server_pid)
    replies = workers.recv_all()
    elapsed = (m1 - m0) / 1e9
    ack_ms = [x for r in replies for x in r["ack_ms"]]
    delivery_ms = [x for r in replies for x in r["delivery_ms"]]
    acks: dict[str, int] = {}
    for r in replies:
        for k, v in r["acks"].items():
            acks[k] = acks.get(k, 0) + v
    sends = sum(r["sends"] for r in replies)
    loadgen = [r["cpu_s"] / elapsed * 100 for r in replies]
    step = {
        "rate": rate, "sends_per_s": sends / elapsed,
        "deliveries_per_s": len(delivery_ms) / elapsed,
        "ack_p50_ms": pct(ack_ms, .5), "ack_p95_ms": pct(ack_ms, .95),
        "ack_p99_ms": pct(ack_ms, .99), "ack_max_ms": max(ack_ms, default=0),
        "delivery_p50_ms": pct(delivery_ms, .5),
        "delivery_p95_ms": pct(delivery_ms, .95),
        "delivery_p99_ms": pct(delivery_ms, .99),
        "delivery_max_ms": max(delivery_ms, default=0),
        "acks": acks, "errors": sum(r["errors"] for r in replies),
        "disconnects": sum(r["disconnects"] for r in replies),
        "unanswered": sum(r["unanswered"] for r in replies),
        "server_cpu_pct": cpu_s / elapsed * 100,
        "server_cpu_us_per_delivery": cpu_s * 1e6 / len(delivery_ms) if delivery_ms
        else None,
        "loadgen_cpu_pct": sum(loadgen), "loadgen_cpu_max_pct": max(loadgen),
        "machine_cpu_pct": (busy1 - busy0) / max(1.0, total1 - total0) * 100,
        "server_rss_mb": rss,
    }
    step["verdict"], step["why"] = judge(step, args.p99_limit_ms)
    return step


class ServerGone(Exception):
    """The server process exited during the run."""


def round2(x: float) -> float:
    """Two significant figures: 1350 → 1400, so the steps read as round numbers."""
    if x <= 0:
        return x
    digits = 10 ** (math.floor(math.log10(x)) - 1)
    return float(math.floor(x / digits + 0.5) * digits)  # half up: 1050 → 1100


def search(args: argparse.Namespace, measure: Callable[[float], dict[str, Any]]
           ) -> tuple[list[dict[str, Any]], str]:
    """The step search: (steps in the order run, why it stopped). ``measure(rate)`` runs
    one window (``window``) and returns it judged; it raises ``ServerGone``."""
    given = [float(r) for r in args.steps.split(",") if r]
    steps: list[dict[str, Any]] = []
    if not given:
        return steps, "no step search (--steps not given)"
    passed: float | None = None
    rate = given[0]
    while True:
        if len(steps) >= args.max_steps:
            return steps, f"reached --max-steps {args.max_steps} without a failure"
        try:
            step = measure(rate)
        except ServerGone:
            return steps, f"the server process exited at {rate:.0f} msg/s"
        steps.append(step)
        print(f"  step {rate:.0f} msg/s: {step['verdict']}, p99 send→delivery "
              f"{step['delivery_p99_ms']:.1f} ms, server CPU {step['server_cpu_pct']:.0f}%, "
              f"load generator {step['loadgen_cpu_pct']:.0f}% (busiest "
              f"{step['loadgen_cpu_max_pct']:.0f}%)" + (f": {step['why']}" if step["why"]
                                                       else ""), file=sys.stderr)
        if step["verdict"] != "held":
            break
        passed = rate
        nxt = given[len(steps)] if len(steps) < len(given) else round2(rate * args.step_factor)
        if nxt > args.step_max:
            return steps, (f"reached the cap (--step-max {args.step_max:.0f} msg/s) without "
                           f"a failure; {rate:.0f} msg/s held")
        rate = nxt
    first_bad = steps[-1]
    # Bisect between the last rate held and the first that failed, for resolution.
    bad = rate
    for _ in range(args.refine if first_bad["verdict"] == "failed" else 0):
        if passed is None:
            break
        mid = round2((passed + bad) / 2)
        if mid in (passed, bad):
            break
        try:
            step = measure(mid)
        except ServerGone:
            return steps, f"the server process exited at {mid:.0f} msg/s"
        steps.append(step)
        print(f"  refine {mid:.0f} msg/s: {step['verdict']}, p99 "
              f"{step['delivery_p99_ms']:.1f} ms", file=sys.stderr)
        if step["verdict"] == "held":
            passed = mid
        elif step["verdict"] == "failed":
            bad = mid
        else:
            break
    kind = "inconclusive" if first_bad["verdict"] == "inconclusive" else "failed"
    return steps, f"{kind} at {first_bad['rate']:.0f} msg/s: {first_bad['why']}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.filter import corpus_messages  # the coordinator only: workers get the texts

    rss_before = proc_rss_mb(args.server_pid)
    tokens = asyncio.run(join_all(args))
    workers = start_workers(args, tokens, corpus_messages(5000))
    try:
        time.sleep(1)
        rss_after = proc_rss_mb(args.server_pid)
        n = len(tokens)
        result: dict[str, Any] = {
            "kind": args.kind, "label": args.label or args.kind, "rooms": args.rooms,
            "per_room": args.per_room, "connections": n, "procs": len(workers.procs),
            "rss_before_mb": rss_before, "rss_connected_mb": rss_after,
            "kib_per_connection": (rss_after - rss_before) * 1024 / n,
            "p99_limit_ms": args.p99_limit_ms,
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        }
        if args.idle:
            cpu0, t0 = proc_cpu_s(args.server_pid), time.perf_counter()
            time.sleep(args.idle)
            result["idle_cpu_pct"] = (proc_cpu_s(args.server_pid) - cpu0) / \
                (time.perf_counter() - t0) * 100
            return result
        result["fixed"] = window(args, workers, args.rate)
        print(f"  fixed {args.rate:.0f} msg/s: p99 send→delivery "
              f"{result['fixed']['delivery_p99_ms']:.1f} ms, server CPU "
              f"{result['fixed']['server_cpu_pct']:.0f}%, load generator "
              f"{result['fixed']['loadgen_cpu_pct']:.0f}%", file=sys.stderr)
        steps, why = search(args, lambda rate: window(args, workers, rate))
        result["steps"] = steps
        result["stop_reason"] = why
        held = [s["rate"] for s in steps if s["verdict"] == "held"]
        result["max_rate_held"] = max(held, default=None)
        print(f"  {result['label']}: stopped: {why}", file=sys.stderr)
        return result
    finally:
        workers.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="http://127.0.0.1:8080",
                        help="server URL; several, comma-separated, for a cluster")
    parser.add_argument("--kind", choices=["chat", "ceiling", "socketio"], default="chat")
    parser.add_argument("--server-pid", required=True,
                        help="server process id; several, comma-separated, for a cluster")
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--per-room", type=int, default=10)
    parser.add_argument("--room-prefix", default="bench-",
                        help="room ids are PREFIX0, PREFIX1, …")
    parser.add_argument("--rate", type=float, default=200, help="total sends per second")
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--steps", default="",
                        help="comma-separated rates to start the search with; it goes on "
                             "past the last one until a step fails")
    parser.add_argument("--step-factor", type=float, default=1.5,
                        help="each step past --steps is this many times the one before")
    parser.add_argument("--step-max", type=float, default=25600,
                        help="the search stops (held) past this rate")
    parser.add_argument("--max-steps", type=int, default=14,
                        help="the search stops (held) after this many steps")
    parser.add_argument("--refine", type=int, default=1,
                        help="after a failure, this many bisections between the last rate "
                             "held and the first failed")
    parser.add_argument("--p99-limit-ms", type=float, default=100,
                        help="a step holds when p99 send→delivery is at most this")
    parser.add_argument("--procs", type=int, default=1,
                        help="worker processes the clients are spread over")
    parser.add_argument("--idle", type=float, default=0, help="idle seconds (no sends)")
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--label", help="the run's name in the report (default: kind)")
    parser.add_argument("--ops", help="user:password of an ops account to create rooms")
    args = parser.parse_args()
    args.bases = args.base.split(",")
    if not all(b.startswith(("http://127.", "http://localhost")) for b in args.bases):
        raise SystemExit("loadgen only talks to this machine (127.0.0.1)")
    if args.step_factor <= 1:
        raise SystemExit("--step-factor must be above 1")
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
