"""Who may try again: login lockout, per-address budgets, the bounded password pool.

Issue 14. Every count is taken through ``ClusterState.take_attempts``, checked and
counted in one atomic step *before* the expensive or risky work, and shared by
every node of a cluster (Redis) or held by the one node (memory). Keys are per client
address (``client_address``): a stranger can exhaust only their own address's budget,
never lock a facilitator out of their account from elsewhere.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from chatserver.config import AuthConfig, LimitsConfig
from chatserver.core.audit import AuditAction
from chatserver.core.effects import AuditEntry
from chatserver.core.errors import ChatError, ErrorCode
from chatserver.core.summary import AuditSummary
from chatserver.ports import Allowance, ClusterState, Store

__all__ = ["THROTTLE_KEY", "LoginAttempt", "LoginAudit", "Throttle", "VerifyPool",
           "client_address"]


def client_address(request: web.Request) -> str:
    """The address every per-client budget is keyed by: the TCP peer, or behind one of
    ``server.trusted_proxies`` the client that proxy names (``transport/proxy.py`` has
    already resolved ``request.remote`` by the time a handler runs). Never logged
    (SG-23)."""
    return request.remote or "unknown"


def _tag(address: str) -> str:
    """A key part for an address: hashed (no IP in Redis keys), in a Redis hash tag so
    an address's counters share one slot (the login script touches several)."""
    return "{" + hashlib.blake2s(address.encode(), digest_size=12).hexdigest() + "}"


def _account(username: str) -> str:
    return hashlib.blake2s(username.casefold().encode(), digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """A login admitted past the lockout; settle it with ``Throttle.login_succeeded``."""

    account_key: str
    address_key: str


class VerifyPool:
    """Password hashing in a bounded pool (issue 14: a flood of logins must not grow
    memory or slow other clients): ``concurrency`` argon2 verifications at a time on
    threads of their own, at most ``queue`` more waiting; past that, ``rate_limited`` at
    once, before anything is read or hashed."""

    def __init__(self, concurrency: int, queue: int) -> None:
        self.concurrency, self.queue = max(1, concurrency), max(0, queue)
        self._sem = asyncio.Semaphore(self.concurrency)
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="argon2")
        self.admitted = 0
        """Requests holding a place (verifying or waiting)."""
        self._watchers: list[tuple[int, asyncio.Future[None]]] = []

    @contextmanager
    def slot(self) -> Iterator[None]:
        """A place in the pool for one login, or ``ChatError(rate_limited)`` now."""
        if self.admitted >= self.concurrency + self.queue:
            raise ChatError(ErrorCode.RATE_LIMITED, "Sign-in is busy. Try again in a moment.")
        self.admitted += 1
        for n, fut in self._watchers:
            if self.admitted >= n and not fut.done():
                fut.set_result(None)
        try:
            yield
        finally:
            self.admitted -= 1

    async def wait_admitted(self, n: int) -> None:
        """Return once ``n`` logins hold a place at the same time (tests, metrics)."""
        if self.admitted >= n:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.append((n, fut))
        try:
            await fut
        finally:
            self._watchers.remove((n, fut))

    async def run(self, work: Callable[[], bool]) -> bool:
        """Run ``work`` (a verification) on the pool, at most ``concurrency`` at once."""
        async with self._sem:
            return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class LoginAudit:
    """Failed and locked-out logins audited as a summary per window, not a row each
    (issue 14: 3,000 failures were 3,000 rows). In each window the first failure and
    the first lockout are written at once (SEC-27: the lockout is audited); when the
    window ends, one ``login_failures`` entry counts everything in it. The counting is
    the core's ``AuditSummary`` (denied commands are summarised the same way)."""

    def __init__(self, store: Store, window_s: int) -> None:
        self.store = store
        self.summary = AuditSummary(window_s * 1000)

    async def failed_login(self, username: str, now_ms: int) -> None:
        await self.flush(now_ms)
        if self.summary.count(None, "failed", username, now_ms):
            await self.store.apply([AuditEntry(now_ms, None, username, AuditAction.LOGIN_FAILED)])

    async def locked(self, username: str, now_ms: int) -> None:
        await self.flush(now_ms)
        if self.summary.count(None, "locked", username, now_ms):
            await self.store.apply([AuditEntry(now_ms, None, username, AuditAction.LOGIN_LOCKED)])

    async def flush(self, now_ms: int, force: bool = False) -> None:
        """Write the window's summary once it has ended (or now, ``force``)."""
        for s in self.summary.due(now_ms, force):
            if s.total > 1:  # a lone failure is already its own entry
                await self.store.apply([AuditEntry(
                    now_ms, None, "system", AuditAction.LOGIN_FAILURES, None, {
                        "since": s.since, "failed": s.counts.get("failed", 0),
                        "locked": s.counts.get("locked", 0), "accounts": list(s.names),
                        "other_accounts": s.other_names})])


class Throttle:
    """The budgets of issue 14, all through one atomic primitive of the cluster state."""

    def __init__(self, counts: ClusterState, auth: AuthConfig, limits: LimitsConfig,
                 store: Store) -> None:
        self.counts, self.auth, self.limits = counts, auth, limits
        self.pool = VerifyPool(auth.verify_concurrency, auth.verify_queue)
        self.audit = LoginAudit(store, auth.login_audit_window_s)

    async def take(self, kind: str, address: str, now_ms: int) -> bool:
        """One ``join``, ``hello`` or ``feedback`` from this address's budget
        (``limits.*_per_address`` per ``limits.address_window_s``); False when spent."""
        limit = {"join": self.limits.joins_per_address,
                 "hello": self.limits.hellos_per_address,
                 "feedback": self.limits.feedback_per_address}[kind]
        return await self.counts.take_attempts(
            [Allowance(f"{kind}:{_tag(address)}", limit, self.limits.address_window_s * 1000)],
            now_ms)

    async def login_attempt(self, username: str, address: str, now_ms: int
                            ) -> LoginAttempt | None:
        """Count a login as a failure *before* its password is checked; None when this
        address is locked out of this account, or has failed too often on any account
        (password spraying), or has used its login budget. The right password from
        another address is not affected."""
        tag, window = _tag(address), self.auth.login_lockout_s * 1000
        attempt = LoginAttempt(f"login:{tag}:acct:{_account(username)}", f"login:{tag}:fail")
        ok = await self.counts.take_attempts([
            Allowance(attempt.account_key, self.auth.login_max_failures, window),
            Allowance(attempt.address_key, self.auth.login_address_failures, window),
            Allowance(f"login:{tag}:all", self.limits.logins_per_address,
                      self.limits.address_window_s * 1000),
        ], now_ms)
        return attempt if ok else None

    async def login_succeeded(self, attempt: LoginAttempt) -> None:
        """The right password: its account-and-address failures are forgotten and the
        address gets back the failure counted for this attempt."""
        await self.counts.settle_attempts([attempt.account_key], [attempt.address_key])

    async def not_verified(self, attempt: LoginAttempt) -> None:
        """The attempt never reached a verification (the pool was full): uncount it."""
        await self.counts.settle_attempts([], [attempt.account_key, attempt.address_key])


THROTTLE_KEY: Final = web.AppKey("throttle", Throttle)
"""Where the aiohttp app keeps its ``Throttle``."""
