"""``GET /ws``: Origin check, hello deadline, one reader loop, one writer task."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Final
from urllib.parse import urlsplit

import structlog
from aiohttp import WSMsgType, web

from chatserver.core import commands as c
from chatserver.core.errors import ChatError, CloseCode, ErrorCode
from chatserver.core.events import ErrorEvent
from chatserver.core.ids import ConnId
from chatserver.core.wire import decode_object, frame_ref, parse
from chatserver.observability import log
from chatserver.ports import BrokerError
from chatserver.runtime.accounts import still_signed_in
from chatserver.runtime.delivery import Socket
from chatserver.runtime.server import Server
from chatserver.transport.auth import TokenError
from chatserver.transport.keys import APP_KEY
from chatserver.transport.throttle import THROTTLE_KEY, Throttle, client_address

__all__ = ["origin_allowed", "ws_handler"]

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def _origin_key(origin: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(origin)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or port is None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.username:
        return None
    return parts.scheme, parts.hostname, port


def origin_allowed(origin: str | None, request_host: str, secure: bool,
                   allowed: tuple[str, ...]) -> bool:
    """Exact match on scheme, host and port (SEC-01/02); no Origin is a non-browser
    client (SEC-03) and is let through: the token still decides everything."""
    if origin is None:
        return True
    # Compare the raw header case-sensitively on the host: browsers send it lower-case,
    # so an upper-case or trailing-dot host is a crafted request, refused.
    key = _origin_key(origin)
    if key is None or key[1] != key[1].lower() or key[1].endswith("."):
        return False
    own = _origin_key(f"{'https' if secure else 'http'}://{request_host}")
    if own is not None and key == own:
        return True
    return any(key == _origin_key(a) for a in allowed)


async def ws_handler(request: web.Request) -> web.StreamResponse:
    server: Server = request.app[APP_KEY]
    cfg = server.config
    origin = request.headers.get("Origin")
    if origin is None:
        server.metrics.no_origin.inc()
    # Behind a trusted proxy, host and scheme are the browser's (transport/proxy.py):
    # ``https://chat.example.org`` is then our own origin, not a stranger's.
    if not origin_allowed(origin, request.host, request.secure, cfg.server.allowed_origins):
        log.info("ws_origin_refused")
        raise web.HTTPForbidden(text="Origin not allowed")
    if server.stopping:
        raise web.HTTPServiceUnavailable()
    ws = web.WebSocketResponse(
        max_msg_size=cfg.limits.max_frame_bytes,  # docs/protocol.md § Limits → 1009
        compress=False,  # no permessage-deflate: bombs and memory (SEC-13)
        heartbeat=cfg.server.heartbeat_s,  # dead peers (SEC-24)
    )
    await ws.prepare(request)
    sock = Socket(ws, cfg.server.outbox_frames, request.transport)
    cid = server.new_conn(sock)
    structlog.contextvars.bind_contextvars(conn=cid)
    try:
        if await _hello(server, sock, cid, client_address(request),
                        request.app[THROTTLE_KEY]):
            await _read_loop(server, sock, cid)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("connection_failed")
        server.delivery.close_soon(cid, CloseCode.PROTOCOL_ERROR, "internal error")
    finally:
        await server.drop_conn(cid)
        if sock.close_task is not None:
            # Shielded: if this handler is cancelled, the close (1013, 4403 …) still
            # reaches the client.
            with contextlib.suppress(Exception):
                await asyncio.shield(sock.close_task)
        if sock.writer is not None:
            sock.writer.cancel()
        server.delivery.cut_if_unread(sock)
        structlog.contextvars.unbind_contextvars("conn", "user", "role")
    return ws


async def _hello(server: Server, sock: Socket, cid: int, address: str,
                 throttle: Throttle) -> bool:
    conn = ConnId(cid)
    try:
        msg = await sock.ws.receive(timeout=server.config.server.hello_timeout_s)
    except TimeoutError:
        server.delivery.close_soon(conn, CloseCode.NO_HELLO, "no hello")
        return False
    if msg.type != WSMsgType.TEXT:
        _close_for(server, conn, msg.type)
        return False
    try:
        command = parse(decode_object(msg.data, server.config.limits.max_json_depth))
    except ChatError:
        command = None
    if not isinstance(command, c.Hello):
        server.delivery.close_soon(conn, CloseCode.NO_HELLO, "the first frame must be hello")
        return False
    # Issue 14: hellos (each may fetch a welcome's history) per client address.
    with contextlib.suppress(BrokerError):  # without Redis nothing is served anyway
        if not await throttle.take("hello", address, server.now()):
            log.info("hello_refused", reason="address_budget")
            server.delivery.emit(conn, ErrorEvent(ErrorCode.RATE_LIMITED.value,
                                         "Too many connections. Try again in a minute."))
            server.delivery.close_soon(conn, CloseCode.POLICY, "too many connections")
            return False
    try:
        ident = server.tokens.verify(command.token)
    except TokenError as e:
        log.info("token_refused", reason=e.reason)
        server.delivery.close_soon(conn, CloseCode.BAD_TOKEN, "invalid token")
        return False
    if not await still_signed_in(server.store, ident):
        log.info("token_refused", reason="account_changed")
        server.delivery.close_soon(conn, CloseCode.BAD_TOKEN, "invalid token")
        return False
    structlog.contextvars.bind_contextvars(user=ident.id, role=ident.role.value)
    await server.hello(conn, ident, dict(command.resume))
    return True


def _close_for(server: Server, conn: int, kind: WSMsgType) -> None:
    if kind == WSMsgType.BINARY:
        server.delivery.close_soon(ConnId(conn), CloseCode.UNSUPPORTED_DATA, "binary frames")
    elif kind not in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
        server.delivery.close_soon(ConnId(conn), CloseCode.NO_HELLO,
                                   "the first frame must be hello")


async def _read_loop(server: Server, sock: Socket, cid: int) -> None:
    conn = ConnId(cid)
    while not sock.closing:
        msg = await sock.ws.receive()
        if msg.type == WSMsgType.BINARY:
            # RFC 6455 § 7.4.1: 1003, we only accept text.
            server.delivery.close_soon(conn, CloseCode.UNSUPPORTED_DATA, "binary frames")
            return
        if msg.type != WSMsgType.TEXT:
            return  # closed, closing or a frame-layer error aiohttp already answered
        started = time.perf_counter()
        try:
            obj = decode_object(msg.data, server.config.limits.max_json_depth)
        except ChatError as e:
            await _reject(server, sock, conn, e, None)
            continue
        try:
            command = parse(obj)
        except ChatError as e:
            await _reject(server, sock, conn, e, frame_ref(obj))
            continue
        await server.handle(conn, command)
        if isinstance(command, c.Send):
            server.metrics.send_ack.observe(time.perf_counter() - started)
        await _yield_if_replies(sock)


async def _reject(server: Server, sock: Socket, conn: ConnId, error: ChatError,
                  ref: str | None) -> None:
    await server.reject(conn, error, ref)
    await _yield_if_replies(sock)


async def _yield_if_replies(sock: Socket) -> None:
    """receive() returns without suspending while frames are buffered: yield so this
    socket's writer (and every other connection) runs between the frames of a burst."""
    if sock.wrote or sock.queued():
        sock.wrote = False
        await asyncio.sleep(0)
