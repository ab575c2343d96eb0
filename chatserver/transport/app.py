"""The aiohttp application: its routes, middleware and response headers, and the
server's start and stop hooked to the app's.

Handlers live in ``http.py`` (HTTP routes), ``ws.py`` (``/ws``) and ``feedback.py``;
every decision they need is the core's (``core/policy.py``, ``core/views.py``) and
every effect runs in ``runtime/server.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from chatserver.core.errors import ChatError, ErrorCode
from chatserver.observability import log
from chatserver.runtime.server import Server, now_ms
from chatserver.transport.feedback import post_feedback
from chatserver.transport.http import (
    CLIENT_DIR,
    audit,
    cases,
    create_room,
    feedback,
    healthz,
    index,
    join,
    list_rooms,
    login,
    logout,
    open_rooms,
    public_room,
    readyz,
    resources,
    rules_reload,
    rules_try,
)
from chatserver.transport.keys import APP_KEY
from chatserver.transport.proxy import forwarded_middleware
from chatserver.transport.throttle import THROTTLE_KEY, Throttle
from chatserver.transport.ws import ws_handler

# ``Server``, ``now_ms`` and ``APP_KEY`` are re-exported: code that took them from here
# before the runtime had its own package keeps working.
__all__ = ["APP_KEY", "Server", "build_app", "now_ms", "security_headers"]

CSP: Final = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
              "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


SERVER_HEADER: Final = "chatserver"
"""The ``Server`` header: no product versions for an attacker to match (ASVS 13.4.6)."""


def _error(code: ErrorCode, message: str, status: int | None = None) -> web.Response:
    return web.json_response({"error": {"code": code.value, "message": message}},
                             status=status or code.http_status)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors under ``/api/`` answer docs/protocol.md's JSON shape; other paths keep aiohttp's
    plain pages (headers come from ``security_headers`` either way)."""
    try:
        return await handler(request)
    except ChatError as e:
        return _error(e.code, e.message)
    except web.HTTPException as e:
        if e.status >= 400 and request.path.startswith("/api/"):
            code = {404: ErrorCode.NOT_FOUND,
                    413: ErrorCode.TOO_LARGE}.get(e.status, ErrorCode.BAD_REQUEST)
            # 405 keeps its status and its Allow header (RFC 9110 § 15.5.6).
            response = _error(code, e.reason, e.status if e.status == 405 else None)
            if "Allow" in e.headers:
                response.headers["Allow"] = e.headers["Allow"]
            return response
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("http_failed", path=request.path)
        return _error(ErrorCode.INTERNAL, "Something went wrong on our side.")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response this app sends (routes, static files, the
    WebSocket handshake, and the 404/405 pages aiohttp makes itself) gets the same
    headers."""
    h = response.headers
    h["Server"] = SERVER_HEADER
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Cache-Control", "no-store")
    if request.app[APP_KEY].config.server.hsts:
        h.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


def build_app(server: Server) -> web.Application:
    # Behind a trusted proxy, the client as the proxy saw it (issue 15), for every
    # handler: the Origin check and the per-address budgets included. Inside ``errors``,
    # so a malformed forwarded header on /api/ answers in docs/protocol.md's JSON shape.
    forwarded = forwarded_middleware(server.config.server.trusted_proxies)
    app = web.Application(middlewares=[errors, *([forwarded] if forwarded else [])],
                          client_max_size=64 * 1024)
    app.on_response_prepare.append(security_headers)
    app[APP_KEY] = server
    throttle = Throttle(server.counts, server.config.auth, server.config.limits, server.store)
    app[THROTTLE_KEY] = throttle
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/resources", resources)
    app.router.add_post("/api/join", join)
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", logout)
    app.router.add_get("/api/rooms", list_rooms)
    app.router.add_get("/api/rooms/open", open_rooms)
    app.router.add_get("/api/rooms/{id}/public", public_room)
    app.router.add_post("/api/rooms", create_room)
    app.router.add_get("/api/audit", audit)
    app.router.add_get("/api/cases", cases)
    app.router.add_post("/api/feedback", post_feedback)
    app.router.add_get("/api/feedback", feedback)
    app.router.add_post("/api/rules/try", rules_try)
    app.router.add_post("/api/rules/reload", rules_reload)
    app.router.add_get("/", index)
    app.router.add_get("/{page:[a-z]+}", index)
    if CLIENT_DIR.exists():
        app.router.add_static("/static/", CLIENT_DIR, show_index=False)

    summaries: list[asyncio.Task[None]] = []

    async def summarise_logins() -> None:
        """A window of failed logins is summarised even if nobody tries again."""
        while True:
            await asyncio.sleep(server.config.server.tick_s)
            try:
                await throttle.audit.flush(server.now())
            except Exception:
                log.exception("login_audit_failed")

    async def on_startup(_: web.Application) -> None:
        await server.start()
        summaries.append(asyncio.create_task(summarise_logins(), name="login-audit"))

    async def on_shutdown(_: web.Application) -> None:
        for task in summaries:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await throttle.audit.flush(server.now(), force=True)
        await server.stop()
        throttle.pool.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app
