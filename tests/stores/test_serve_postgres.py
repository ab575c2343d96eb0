"""One node on PostgreSQL: the server runs on it, and its records survive a restart."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import websockets

from tests.conftest import ROOT, require
from tests.faults.test_restart import ServerProcess, free_port, join
from tests.stores.test_contract import PG_DSN, _pg_available

pytestmark = pytest.mark.slow


async def _say(port: int, token: str, msg_id: str, text: str) -> dict[str, object]:
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send(json.dumps({"type": "hello", "token": token}))
        await asyncio.wait_for(ws.recv(), 10)
        await ws.send(json.dumps({"type": "send", "room": "demo", "id": msg_id, "text": text}))
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if event["type"] == "ack":
                return dict(event)


async def test_a_node_on_postgresql_keeps_seq_and_audit_across_a_restart(
        tmp_path: Path) -> None:
    require(await _pg_available(), f"PostgreSQL is not reachable at {PG_DSN}")
    schema = f"t_{secrets.token_hex(6)}"
    url = f"{PG_DSN}?schema={schema}"
    server = ServerProcess(tmp_path, free_port(), {"CHATSERVER_STORE_URL": url})
    server.start()
    try:
        token = join(server.port, "Pg")
        first = await _say(server.port, token, "m1", "stored in postgres")
        assert first["status"] == "sent"
        assert server.stop(signal.SIGTERM) == 0
        server.start()
        second = await _say(server.port, join(server.port, "Pg2"), "m2", "after restart")
        assert second["seq"] > first["seq"]  # type: ignore[operator]
        server.stop(signal.SIGTERM)
        verify = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "chatserver", "audit", "verify"], cwd=ROOT,
            env={"CHATSERVER_STORE_URL": url, "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=60, check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        server.kill()
        import asyncpg
        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
