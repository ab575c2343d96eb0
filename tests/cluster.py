"""Two (or more) real server processes on one Redis and one PostgreSQL schema.

Each cluster gets a Redis key prefix and a PostgreSQL schema of its own, removed after.
Staff accounts are made with the CLI before the nodes start, as ops would.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from tests.conftest import ROOT, Endpoint, forget_redis_prefix, redis_up, require
from tests.faults.test_restart import ServerProcess, free_port
from tests.stores.test_contract import PG_DSN, _pg_available

__all__ = ["REDIS_URL", "Cluster", "Node", "cluster_of"]

REDIS_URL = os.environ.get("CHATSERVER_TEST_REDIS", "redis://127.0.0.1:6379/9")
PASSWORD = "correct horse battery"
STAFF = (("fac", "facilitator"), ("couns", "counsellor"), ("couns2", "counsellor"),
         ("ops1", "ops"))


class Node(Endpoint):
    """One server process, and the client helpers of a test server."""

    def __init__(self, proc: ServerProcess) -> None:
        super().__init__(proc.port)
        self.proc = proc


class Cluster:
    def __init__(self, tmp: Path, redis_url: str, pg_dsn: str = PG_DSN) -> None:
        self.tmp, self.pg_dsn = tmp, pg_dsn
        self.schema = f"c_{secrets.token_hex(5)}"
        self.prefix = f"c{secrets.token_hex(4)}"
        self.redis_url = redis_url
        self.env = {
            "CHATSERVER_BROKER_URL": redis_url,
            "CHATSERVER_BROKER_PREFIX": self.prefix,
            "CHATSERVER_BROKER_HEARTBEAT_S": "0.5",
            "CHATSERVER_BROKER_NODE_EXPIRY_S": "2",
            "CHATSERVER_STORE_URL": f"{pg_dsn}?schema={self.schema}",
            "CHATSERVER_AUTH_SECRET": "cluster-test-secret-" + "c" * 40,
            # Every test client is 127.0.0.1: per-address budgets (issue 14) stay open.
            "CHATSERVER_LIMITS_JOINS_PER_ADDRESS": "100000",
            "CHATSERVER_LIMITS_LOGINS_PER_ADDRESS": "100000",
            "CHATSERVER_LIMITS_HELLOS_PER_ADDRESS": "100000",
        }
        self.nodes: dict[str, Node] = {}

    def add_staff(self) -> None:
        for name, role in STAFF:
            subprocess.run([sys.executable, "-m", "chatserver", "users", "add", name,
                            "--role", role, "--password-stdin"], cwd=ROOT,
                           env={**os.environ, **self.env}, input=PASSWORD.encode(),
                           check=True, capture_output=True, timeout=60)

    def start(self, name: str, **env: str) -> Node:
        """Nodes share data_dir nothing: all they share is Redis and PostgreSQL."""
        data = self.tmp / name
        data.mkdir(exist_ok=True)
        proc = ServerProcess(data, free_port(), {**self.env, **env},
                             args=("--node-id", name))
        proc.start()
        node = self.nodes[name] = Node(proc)
        return node

    async def close(self) -> None:
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                await node.close_clients()
            node.proc.kill()
        import asyncpg
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            conn = await asyncpg.connect(self.pg_dsn)
            await conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
            await conn.close()
        with contextlib.suppress(Exception):
            await forget_redis_prefix(self.redis_url, self.prefix)


@contextlib.asynccontextmanager
async def cluster_of(tmp: Path, *names: str, redis_url: str = REDIS_URL,
                     pg_dsn: str = PG_DSN, **env: str) -> AsyncIterator[Cluster]:
    require(await redis_up(redis_url), f"Redis is not reachable at {redis_url}")
    require(await _pg_available(), f"PostgreSQL is not reachable at {PG_DSN}")
    cluster = Cluster(tmp, redis_url, pg_dsn)
    cluster.env.update(env)
    try:
        cluster.add_staff()
        for name in names:
            cluster.start(name)
        yield cluster
    finally:
        await cluster.close()
