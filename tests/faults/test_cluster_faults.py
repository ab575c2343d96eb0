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
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from tests.cluster import Cluster, cluster_of, redis_up
from tests.conftest import require
from tests.faults.checker import check
from tests.faults.test_restart import Member, _traffic, free_port, join, wait_until
from tests.stores.test_contract import PG_DSN

pytestmark = pytest.mark.slow


async def _final_history(cluster: Cluster) -> dict[int, str]:
    conn = await asyncpg.connect(PG_DSN)
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
    for mid in in_doubt:
        sender.acks.pop(mid, None)
        await sender.ws.send(orjson.dumps({"type": "send", "room": "demo", "id": mid,
                                           "text": f"message number {mid[1:]}"}).decode())
    for k in range(3):
        await sender.ws.send(orjson.dumps({"type": "send", "room": "demo", "id": f"after{k}",
                                           "text": "after the fault"}).decode())
    wanted = [*in_doubt, "after0", "after1", "after2"]
    await wait_until(sender.ack_arrived, lambda: all(k in sender.acks for k in wanted))
    assert all(sender.acks[k]["status"] == "sent" for k in wanted), \
        [sender.acks[k] for k in wanted if sender.acks[k]["status"] != "sent"]
    for listener in listeners:
        await wait_until(listener.message_arrived,
                         lambda m=listener: "after2" in {i for _, i in m.view.received})


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
        for m in (sender, near, far):
            await m.connect(resume=False)
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
        await _retry_and_finish(sender, [near, far], in_doubt)
        _report(await _final_history(cluster), sender, in_doubt,
                {"sender": sender, "near": near, "far": far}, "cluster SIGKILL")


@contextlib.contextmanager
def _private_redis() -> Iterator[tuple[str, Any]]:
    binary = shutil.which("redis-server")
    require(binary is not None, "redis-server is not installed")
    assert binary is not None
    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL)]

    def restart() -> None:
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))

    try:
        yield f"redis://127.0.0.1:{port}/0", (procs, restart)
    finally:
        for p in procs:
            p.kill()
            p.wait(10)


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


async def _until_redis(url: str) -> None:
    async with asyncio.timeout(10):
        while not await redis_up(url):  # noqa: ASYNC110 - another process starting
            await asyncio.sleep(0.02)


async def test_redis_restart_loses_no_acked_message_and_nodes_recover(
        tmp_path: Path) -> None:
    with _private_redis() as (url, (procs, restart)):
        await _until_redis(url)
        async with cluster_of(tmp_path, "a", "b", redis_url=url) as cluster:
            a, b = cluster.nodes["a"], cluster.nodes["b"]
            sender = Member(a.port, join(a.port, "Sender"))
            listener = Member(b.port, join(b.port, "Listener"))
            for m in (sender, listener):
                await m.connect(resume=False)
            sent: list[str] = []
            traffic = asyncio.create_task(_traffic(sender, sent))
            await wait_until(sender.ack_arrived, lambda: len(sender.acks) >= 40)
            procs[-1].kill()  # Redis dies mid-traffic, and with it every key
            procs[-1].wait(10)
            await _until_ready_is(a.port, 503)
            await _until_ready_is(b.port, 503)
            restart()
            # Each node reconnects by itself and tells its clients to resume.
            assert await sender.wait_closed() == 1012
            assert await listener.wait_closed() == 1012
            with contextlib.suppress(Exception):
                await asyncio.wait_for(traffic, 10)
            await _until_ready_is(a.port, 200)
            await _until_ready_is(b.port, 200)
            in_doubt = _in_doubt(sender, sent)
            await sender.connect(resume=True)
            await listener.connect(resume=True)
            await _retry_and_finish(sender, [listener], in_doubt)
            _report(await _final_history(cluster), sender, in_doubt,
                    {"sender": sender, "listener": listener}, "Redis restart")
