"""Issue 6 acceptance 3 and 4, SECURITY.md F-02 (cluster), F-05, F-06 and F-09: faults in
a two-node cluster, with the Jepsen-style checker.

- SIGKILL node B while its members send: they resume on node A, retry in-doubt sends
  with the same id, and nothing is lost, doubled or out of order.
- Restart Redis (no persistence: its history is gone) while traffic flows: sends are
  refused, never acked and lost; /readyz turns 503; both nodes come back by
  themselves, rebuild history from PostgreSQL and tell their clients to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from tests.cluster import Cluster, Node, cluster_of
from tests.conftest import redis_up, require
from tests.faults.checker import check
from tests.faults.test_restart import Member, _traffic, free_port, join, wait_until
from tests.stores.test_contract import PG_DSN, _pg_available

pytestmark = pytest.mark.slow


async def _final_history(cluster: Cluster) -> dict[int, str]:
    conn = await asyncpg.connect(cluster.pg_dsn)
    try:
        rows = await conn.fetch(f"SELECT seq, msg_id FROM {cluster.schema}.messages "
                                "WHERE room='demo'")
    finally:
        await conn.close()
    return {int(r["seq"]): str(r["msg_id"]) for r in rows}


def _in_doubt(sender: Member, sent: list[str]) -> list[str]:
    """No answer, or refused `internal` (the server was unsure): the client retries."""
    return [mid for mid in dict.fromkeys(sent)
            if mid not in sender.acks or sender.acks[mid].get("code") == "internal"]


async def _retry_and_finish(sender: Member, listeners: list[Member], in_doubt: list[str]
                            ) -> None:
    texts = {mid: f"message number {mid[1:]}" for mid in in_doubt}
    texts.update({f"after{k}": "after the fault" for k in range(3)})
    wanted = list(texts)
    # As a client does (docs/protocol.md § Cluster): a send answered `internal` is sent
    # again with the same id. Just after Redis is back, one publish may still meet a
    # connection that died with the old Redis; a few rounds, never a loss or a copy.
    pending = wanted
    for _ in range(4):
        for mid in pending:
            sender.acks.pop(mid, None)
            await sender.ws.send(orjson.dumps({"type": "send", "room": "demo", "id": mid,
                                               "text": texts[mid]}).decode())
        await wait_until(sender.ack_arrived,
                         lambda p=pending: all(k in sender.acks for k in p))
        pending = [k for k in pending if sender.acks[k].get("code") == "internal"]
        if not pending:
            break
    assert all(sender.acks[k]["status"] == "sent" for k in wanted), \
        [sender.acks[k] for k in wanted if sender.acks[k]["status"] != "sent"]
    for listener in listeners:
        await wait_until(listener.message_arrived,
                         lambda m=listener: "after2" in {i for _, i in m.view.received})


@dataclass
class Flow:
    """A sender on node A keeping five sends in flight, a listener on node B."""

    sender: Member
    listener: Member
    sent: list[str]
    traffic: asyncio.Task[None]


async def _start_flow(a: Node, b: Node) -> Flow:
    sender = Member(a.port, join(a.port, "Sender"))
    listener = Member(b.port, join(b.port, "Listener"))
    for m in (sender, listener):
        await m.connect(resume=False)
    sent: list[str] = []
    traffic = asyncio.create_task(_traffic(sender, sent))
    await wait_until(sender.ack_arrived, lambda: len(sender.acks) >= 40)  # acks, not time
    return Flow(sender, listener, sent, traffic)


async def _finish_flow(flow: Flow, cluster: Cluster, title: str,
                       reconnect: tuple[Member, ...] = ()) -> None:
    """Stop the traffic, reconnect who was closed (resume), retry every in-doubt send
    with its id, and let the checker decide."""
    flow.traffic.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await flow.traffic
    in_doubt = _in_doubt(flow.sender, flow.sent)
    for member in reconnect:
        await member.connect(resume=True)
    await _retry_and_finish(flow.sender, [flow.listener], in_doubt)
    _report(await _final_history(cluster), flow.sender, in_doubt,
            {"sender": flow.sender, "listener": flow.listener}, title)


async def _until_refused(sender: Member) -> None:
    """A send is answered `internal`: the fault is seen, nothing hangs."""
    await wait_until(sender.ack_arrived, lambda: any(
        x.get("code") == "internal" for x in sender.acks.values()))


async def _until_served_again(sender: Member) -> None:
    """Sends are acked `sent` again on the same socket (20 more)."""
    before = sum(x["status"] == "sent" for x in sender.acks.values())
    await wait_until(sender.ack_arrived, lambda: sum(
        x["status"] == "sent" for x in sender.acks.values()) > before + 20)


def _report(cluster_final: dict[int, str], sender: Member, in_doubt: list[str],
            views: dict[str, Member], title: str) -> None:
    acked = {mid: a["seq"] for mid, a in sender.acks.items() if a["status"] == "sent"}
    report = check(acked, in_doubt, cluster_final, {k: m.view for k, m in views.items()})
    print(f"\n{title}: {report} acked={len(acked)} in_doubt={len(in_doubt)}")
    assert report.ok, report
    ids = list(cluster_final.values())
    assert all(ids.count(mid) == 1 for mid in in_doubt)  # each retried id exactly once


async def test_sigkill_one_node_its_members_resume_on_the_other(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, "a", "b") as cluster:
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        sender = Member(b.port, join(b.port, "Sender"))
        near = Member(b.port, join(b.port, "Near"))  # on B, moves to A
        far = Member(a.port, join(a.port, "Far"))    # on A throughout
        ghost = Member(b.port, join(b.port, "Ghost"))  # on B, never comes back
        for m in (sender, near, far, ghost):
            await m.connect(resume=False)
        await wait_until(far.room_changed, lambda: bool(far.members) and
                         {"Sender", "Near", "Ghost"} <= far.members[-1])
        sent: list[str] = []
        traffic = asyncio.create_task(_traffic(sender, sent))
        await wait_until(sender.ack_arrived, lambda: len(sender.acks) >= 40)
        b.proc.kill()  # SIGKILL, mid-traffic
        await sender.wait_closed()
        await near.wait_closed()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(traffic, 10)
        in_doubt = _in_doubt(sender, sent)
        sender.port = near.port = a.port  # the load balancer sends them to node A
        await sender.connect(resume=True)
        await near.connect(resume=True)
        # F-03: node B's members leave node A's member list once B stops announcing them.
        await wait_until(far.room_changed, lambda: "Ghost" not in far.members[-1])
        await _retry_and_finish(sender, [near, far], in_doubt)
        _report(await _final_history(cluster), sender, in_doubt,
                {"sender": sender, "near": near, "far": far}, "cluster SIGKILL")


class PrivateRedis:
    """A Redis of the test's own (it is killed and restarted), without persistence."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        require(binary is not None, "redis-server is not installed")
        assert binary is not None
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no"]
        self.procs: list[subprocess.Popen[bytes]] = []

    async def start(self) -> None:
        self.procs.append(await asyncio.to_thread(
            subprocess.Popen, self.cmd, stdout=subprocess.DEVNULL))
        async with asyncio.timeout(10):
            while not await redis_up(self.url):  # noqa: ASYNC110 - another process starting
                await asyncio.sleep(0.02)

    def kill(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait(10)


@contextlib.asynccontextmanager
async def _private_redis(start: bool = True) -> AsyncIterator[PrivateRedis]:
    redis = PrivateRedis()
    try:
        if start:
            await redis.start()
        yield redis
    finally:
        redis.kill()


async def _ready(session: aiohttp.ClientSession, port: int) -> int:
    try:
        async with session.get(f"http://127.0.0.1:{port}/readyz") as r:
            return r.status
    except aiohttp.ClientError:
        return 0


async def _until_ready_is(port: int, status: int) -> None:
    """A readiness probe, as a load balancer polls it (bounded)."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(20):
        # Polled from outside, as a load balancer does: no event to wait on.
        while await _ready(session, port) != status:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def _redis_fault(tmp_path: Path, title: str,
                       fault: Callable[[PrivateRedis, Cluster], Awaitable[None]]) -> None:
    """Traffic from node A to a listener on node B; the fault lands mid-traffic; both
    nodes must tell their clients to resume (1012) by themselves; the checker decides."""
    async with _private_redis() as redis, \
            cluster_of(tmp_path, "a", "b", redis_url=redis.url) as cluster:
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        flow = await _start_flow(a, b)
        await fault(redis, cluster)
        assert await flow.sender.wait_closed() == 1012
        assert await flow.listener.wait_closed() == 1012
        await _until_ready_is(a.port, 200)
        await _until_ready_is(b.port, 200)
        await _finish_flow(flow, cluster, title, (flow.sender, flow.listener))


async def test_f05_f06_redis_restart_loses_no_acked_message_and_nodes_recover(
        tmp_path: Path) -> None:
    async def restart(redis: PrivateRedis, cluster: Cluster) -> None:
        redis.kill()  # Redis dies mid-traffic, and with it every key (F-06)
        for node in cluster.nodes.values():
            await _until_ready_is(node.port, 503)
        await redis.start()

    await _redis_fault(tmp_path, "F-05 Redis restart", restart)


async def test_f08_subscriber_connections_cut_by_redis(tmp_path: Path) -> None:
    async def cut(redis: PrivateRedis, cluster: Cluster) -> None:
        r = aioredis.Redis.from_url(redis.url)
        try:
            assert await r.client_kill_filter(_type="pubsub") >= 2  # one per node
        finally:
            await r.aclose()

    await _redis_fault(tmp_path, "F-08 subscribers cut", cut)


async def test_f04_redis_down_at_start_the_node_serves_and_recovers(tmp_path: Path) -> None:
    require(await _pg_available(), f"PostgreSQL is not reachable at {PG_DSN}")
    async with _private_redis(start=False) as redis:
        cluster = Cluster(tmp_path, redis.url)
        try:
            cluster.add_staff()
            node = cluster.start("a")  # /healthz answers: the process did not exit
            await _until_ready_is(node.port, 503)
            kid_token = await node.join("Kid", room="demo")
            kid = await node.client(kid_token)
            refused = await kid.say("is anyone there?", "m1", room="demo")
            assert (refused["status"], refused["code"]) == ("rejected", "internal")
            await redis.start()
            await _until_ready_is(node.port, 200)
            assert await kid.closed_with(10) == 1012  # told to resume
            kid = await node.client(kid_token, resume={"demo": 0})
            assert (await kid.say("is anyone there?", "m1", room="demo"))["status"] == "sent"
        finally:
            await cluster.close()


async def test_f07_redis_paused_sends_time_out_to_internal_and_nothing_is_lost(
        tmp_path: Path) -> None:
    """CLIENT PAUSE: every Redis call hangs for 2 s. Sends are answered `internal` within
    the broker timeout (1 s), the loop keeps serving, and once Redis answers again the
    in-doubt sends are retried: lost 0, duplicated 0. (A pause longer than
    ``broker.node_expiry_s`` would look like a dead link: F-09.)"""
    async with _private_redis() as redis, \
            cluster_of(tmp_path, "a", "b", redis_url=redis.url,
                       CHATSERVER_BROKER_NODE_EXPIRY_S="5") as cluster:
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        flow = await _start_flow(a, b)
        r = aioredis.Redis.from_url(redis.url)
        try:
            await r.client_pause(2000, all=True)
        finally:
            await r.aclose()
        await _until_ready_is(a.port, 503)
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{a.port}/healthz") as res:
            assert res.status == 200  # the event loop is not blocked
        await _until_refused(flow.sender)
        await _until_served_again(flow.sender)
        await _until_ready_is(a.port, 200)
        await _finish_flow(flow, cluster, "F-07 Redis paused")


class PrivatePostgres:
    """A PostgreSQL server of the test's own (it is crashed and restarted)."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        pg_ctl = found[-1] if found else shutil.which("pg_ctl")
        require(pg_ctl is not None, "PostgreSQL server binaries (pg_ctl) are not installed")
        assert pg_ctl is not None
        self.bin = Path(pg_ctl).parent
        # Not under pytest's tmp_path: that is private to root, and the server runs as
        # the postgres user.
        self.root = Path(tempfile.mkdtemp(prefix="chat-pg-"))
        self.root.chmod(0o755)
        self.dir = self.root / "pg"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        # PostgreSQL will not run as root: as root, run it as the postgres user.
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str) -> None:
        subprocess.run([*self.prefix, *args], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self.dir.mkdir()
        if self.prefix:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.dir), "-A", "trust", "-U",
                  "postgres", "--no-sync")

    def start(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir), "-l", str(self.dir / "log"),
                  "-w", "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
                  "start")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def crash(self) -> None:
        """Stop without a clean shutdown, as a crash or a failover would."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir), "-m", "immediate", "stop")


async def test_f12_postgresql_restart_loses_no_acked_message(tmp_path: Path) -> None:
    pg = PrivatePostgres()
    pg.init()
    pg.start()
    try:
        async with cluster_of(tmp_path, "a", "b", pg_dsn=pg.dsn) as cluster:
            a, b = cluster.nodes["a"], cluster.nodes["b"]
            flow = await _start_flow(a, b)
            await asyncio.to_thread(pg.crash)
            await _until_ready_is(a.port, 503)
            await _until_refused(flow.sender)
            await asyncio.to_thread(pg.start)
            await _until_ready_is(a.port, 200)
            await _until_ready_is(b.port, 200)
            # The pool reconnects by itself: sends are acked again on the same sockets.
            await _until_served_again(flow.sender)
            await _finish_flow(flow, cluster, "F-12 PostgreSQL restart")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(pg.crash)
        pg.remove()


class Blackhole:
    """A TCP proxy that can stop forwarding without closing anything: a blackholed link,
    as a dead switch or a dropped route looks to both ends."""

    def __init__(self, target_port: int) -> None:
        self.target, self.holed, self.port = target_port, False, 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer),
                             return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                    ) -> None:
        try:
            while data := await reader.read(65536):
                if not self.holed:  # holed: bytes vanish, connections stay open
                    writer.write(data)
                    await writer.drain()
        finally:
            writer.close()

    def close(self) -> None:
        self.server.close()


async def _until_logged(path: Path, text: str) -> None:
    """Wait for a node to report something in its log, as ops would see it (bounded)."""
    async with asyncio.timeout(20):
        while text not in await asyncio.to_thread(path.read_text, errors="replace"):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_f09_a_blackholed_redis_link_is_detected_and_recovered(tmp_path: Path) -> None:
    async with _private_redis() as redis:
        hole = Blackhole(redis.port)
        await hole.start()
        try:
            async with cluster_of(tmp_path, "a", redis_url=redis.url) as cluster:
                a = cluster.nodes["a"]
                # Started from a thread: the proxy runs on this test's event loop.
                b = await asyncio.to_thread(
                    cluster.start, "b", CHATSERVER_BROKER_URL=f"redis://127.0.0.1:{hole.port}/0")
                await _until_ready_is(b.port, 200)  # subscribed through the proxy
                flow = await _start_flow(a, b)
                hole.holed = True
                await _until_ready_is(b.port, 503)  # within the 1 s broker timeout
                # Node B's subscription is open but silent: it notices its own heartbeats
                # no longer come back, and subscribes again.
                await _until_logged(b.proc.data / f"server-{b.port}.log",
                                    "broker_subscription_silent")
                hole.holed = False
                assert await flow.listener.wait_closed() == 1012  # told to resume
                await _until_ready_is(b.port, 200)
                await _finish_flow(flow, cluster, "F-09 blackholed link", (flow.listener,))
        finally:
            hole.close()
