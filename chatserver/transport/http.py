"""HTTP routes of docs/protocol.md § HTTP and the static client: parse, call, answer.

What a route decides is the core's (``core/policy.py``, ``core/views.py``); the routes
are listed in ``app.py``.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
import unicodedata
from typing import Final

from aiohttp import web

from chatserver.config import packaged
from chatserver.core.audit import AuditAction
from chatserver.core.effects import AuditEntry
from chatserver.core.errors import ChatError, ErrorCode
from chatserver.core.ids import ParticipantId, RoomId
from chatserver.core.policy import (
    admit_join,
    check_display_name,
    check_room_fields,
    group_room,
    is_open_group,
    staff_shown_name,
)
from chatserver.core.roles import Role
from chatserver.core.scopes import audit_scope
from chatserver.core.session import Identity
from chatserver.core.views import (
    group_room_ids,
    open_rooms as open_room_list,
    staff_rooms,
    visible_cases,
)
from chatserver.core.wire import decode_object, parse_decimal
from chatserver.moderation.rules import Action, RuleLoadError
from chatserver.observability import log
from chatserver.ports import BrokerError
from chatserver.runtime.accounts import still_signed_in
from chatserver.runtime.server import Server
from chatserver.transport.auth import Passwords, TokenError
from chatserver.transport.feedback import list_feedback
from chatserver.transport.keys import APP_KEY
from chatserver.transport.throttle import THROTTLE_KEY, client_address

__all__ = [
    "CLIENT_DIR", "audit", "cases", "create_room", "feedback", "healthz", "index", "join",
    "list_rooms", "login", "logout", "open_rooms", "public_room", "readyz",
    "resources", "rules_reload", "rules_try",
]

CLIENT_DIR: Final = packaged("client_web")
"""The pages, package data (a wheel serves them too)."""


async def _body(request: web.Request) -> dict[str, object]:
    raw = await request.read()
    if len(raw) > 64 * 1024:
        raise ChatError(ErrorCode.TOO_LARGE, "Request body is too large.")
    return decode_object(raw or b"{}", request.app[APP_KEY].config.limits.max_json_depth)


def _str_field(body: dict[str, object], key: str, required: bool = True) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ChatError(ErrorCode.BAD_REQUEST, f"Field {key!r} must be a string.")
    return value


async def staff(request: web.Request, *roles: Role) -> Identity:
    """The caller's staff identity, or 401/403. A participant token is always 403."""
    server = request.app[APP_KEY]
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        raise ChatError(ErrorCode.UNAUTHORIZED, "Sign in first.")
    try:
        ident = server.tokens.verify(auth.removeprefix("Bearer ").strip())
    except TokenError as e:
        log.info("token_refused", reason=e.reason, path=request.path)
        raise ChatError(ErrorCode.UNAUTHORIZED, "Your session has expired.") from None
    if ident.role == Role.PARTICIPANT or ident.role not in roles:
        log.info("authz_denied", path=request.path, role=ident.role.value)
        raise ChatError(ErrorCode.FORBIDDEN, "Your role can't do that.")
    if not await still_signed_in(server.store, ident):  # disabled, reset or logged out
        log.info("token_refused", reason="account_changed", path=request.path)
        raise ChatError(ErrorCode.UNAUTHORIZED, "Your session has ended. Sign in again.")
    return ident


def _shown_token(request: web.Request, server: Server) -> Identity | None:
    """A participant token a join also shows (a client asking for a fresh identity with
    its old one): if it was removed from the room, the join is refused too."""
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        return None
    try:
        return server.tokens.verify(auth.removeprefix("Bearer ").strip())
    except TokenError:
        return None


async def join(request: web.Request) -> web.Response:
    server = request.app[APP_KEY]
    body = await _body(request)
    try:  # issue 14: identities per client address are not free to mint
        allowed = await request.app[THROTTLE_KEY].take("join", client_address(request),
                                                       server.now())
    except BrokerError:
        # The count lives in Redis, which is down: let the join through (F-04, a node
        # serves while Redis is down). Nothing is sent or stored without Redis anyway,
        # so an identity minted now buys nothing.
        log.warning("join_budget_unavailable")
        allowed = True
    if not allowed:
        raise ChatError(ErrorCode.RATE_LIMITED, "Too many people have joined from here "
                                                "just now. Try again in a minute.")
    room_id = _str_field(body, "room")
    name = unicodedata.normalize("NFC", _str_field(body, "name")).strip()
    band = _str_field(body, "age_band")
    # SG-01: only name and age band are kept (inside the token); extra fields are ignored.
    check_display_name(name, server.core.rules)
    room = admit_join(server.core.rooms.get(RoomId(room_id)), name, band,
                      server.config.rooms.age_bands, _shown_token(request, server))
    pid = ParticipantId(server.core.ids.new("p"))
    ident = Identity(pid, name, Role.PARTICIPANT, room.id, band)
    token = server.tokens.issue(ident, int(time.time()))
    return web.json_response({"token": token, "participant": {"id": pid, "name": name},
                              "room": {"id": room.id, "title": room.title}})


async def login(request: web.Request) -> web.Response:
    """SEC-27 and issue 14: the attempt is counted before the password is checked (one
    atomic step, every node), per account and address and per address; the check runs
    in the bounded pool; unknown names cost the same dummy-hash verification."""
    server = request.app[APP_KEY]
    throttle = request.app[THROTTLE_KEY]
    body = await _body(request)
    username = _str_field(body, "username")[:64]
    password = _str_field(body, "password")[:1024]
    now = server.now()
    await throttle.audit.flush(now)
    with throttle.pool.slot():  # full: 429 at once, nothing counted, nothing hashed
        try:
            attempt = await throttle.login_attempt(username, client_address(request), now)
        except BrokerError:
            raise ChatError(ErrorCode.INTERNAL, "Sign-in is unavailable right now.") from None
        if attempt is None:
            await throttle.audit.locked(username, now)
            raise ChatError(ErrorCode.RATE_LIMITED, "Too many attempts. Try again later.")
        user = await server.store.user(username)
        stored = user.password_hash if user is not None else None
        ok = await throttle.pool.run(functools.partial(Passwords.verify, stored, password))
    if not ok or user is None or user.disabled:
        await throttle.audit.failed_login(username, now)
        raise ChatError(ErrorCode.UNAUTHORIZED, "Wrong username or password.")
    with contextlib.suppress(BrokerError):
        await throttle.login_succeeded(attempt)
    # Issue 14: rooms show the display name, never the login name; one stored before
    # the staff name rule (or by hand) that breaks it shows as the role's name.
    shown = staff_shown_name(user.display_name, user.default_name(), server.core.rules)
    if shown != user.shown_name():
        log.warning("staff_display_name_refused", user=user.id)
    ident = Identity(ParticipantId(user.id), shown, Role(user.role), version=user.version)
    await server.store.apply([AuditEntry(now, None, user.id, AuditAction.LOGIN)])
    return web.json_response({"token": server.tokens.issue(ident, int(time.time())),
                              "user": {"id": user.id, "name": user.username,
                                       "display_name": shown,
                                       "role": user.role}})


async def logout(request: web.Request) -> web.Response:
    """Ends every session of the account (its version moves): this token, others, and
    open sockets (closed 4401 within a few ticks)."""
    server = request.app[APP_KEY]
    ident = await staff(request, Role.FACILITATOR, Role.COUNSELLOR, Role.OPS)
    await server.store.bump_version(ident.id)
    await server.store.apply([AuditEntry(server.now(), None, ident.id, AuditAction.LOGOUT)])
    return web.json_response({"status": "ok"})


async def list_rooms(request: web.Request) -> web.Response:
    server = request.app[APP_KEY]
    await staff(request, Role.FACILITATOR, Role.COUNSELLOR, Role.OPS)
    return web.json_response({"rooms": staff_rooms(server.core.rooms.values(), server.now())})


async def open_rooms(request: web.Request) -> web.Response:
    """The rooms a young person may pick from at join: titles and age bands only."""
    server = request.app[APP_KEY]
    return web.json_response({"rooms": open_room_list(server.core.rooms.values())})


PUBLIC_NOTICES: Final = ("held", "blocked", "paused", "muted", "unmuted", "removed",
                          "held_rejected", "break_reminder", "report_received", "signpost",
                          "escalated", "support_requested", "support_pending", "welcome_back")
"""Notice texts a young person's page may show before or without the server's frame."""


async def public_room(request: web.Request) -> web.Response:
    """Issue 16: what the young person's page shows about a room, from config, so the
    page hard-codes none of it. Anyone may read it: nothing private (no staff names,
    no counts, no members; the welcome says who is there once joined)."""
    server = request.app[APP_KEY]
    room = server.core.rooms.get(RoomId(request.match_info["id"]))
    if room is None or not is_open_group(room):
        raise ChatError(ErrorCode.NOT_FOUND, "No such room.")
    cfg = server.config
    return web.json_response({
        "id": room.id, "title": room.title, "age_bands": list(room.age_bands),
        "guidelines": list(cfg.rooms.guidelines),
        "resources": [r.to_wire() for r in cfg.resources],
        "complaints": cfg.notices.get("complaints", ""),
        "notices": {k: cfg.notices[k] for k in PUBLIC_NOTICES if k in cfg.notices},
        "support_note_chars": cfg.rooms.support_note_chars,
    })


async def create_room(request: web.Request) -> web.Response:
    server = request.app[APP_KEY]
    ident = await staff(request, Role.FACILITATOR, Role.OPS)
    body = await _body(request)
    title = _str_field(body, "title").strip()
    bands = check_room_fields(title, body.get("age_bands"), server.config.rooms)
    # A generated id is made to pass the same check as a chosen one (issue 14).
    rid = _str_field(body, "id", required=False) or \
        server.core.ids.new("room").lower().replace("_", "-")
    record = group_room(rid, title, bands, server.config.rooms, server.core.rooms)
    await server.create_room(record, AuditEntry(server.now(), RoomId(rid), ident.id,
                                                AuditAction.ROOM_CREATED, None,
                                                {"title": title}))
    return web.json_response({"id": rid, "title": title, "age_bands": list(bands),
                              "paused": False,
                              "slow_mode_s": 0, "participants": 0, "facilitators": 0},
                             status=201)


def _int_query(request: web.Request, key: str, default: int, high: int) -> int:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    return parse_decimal(raw, key, high=high)


async def audit(request: web.Request) -> web.Response:
    server = request.app[APP_KEY]
    ident = await staff(request, Role.FACILITATOR, Role.OPS)
    room = request.query.get("room") or None
    action = request.query.get("action") or None
    since = _int_query(request, "since", 0, 2**53)
    limit = _int_query(request, "limit", 100, 1000)
    if action == AuditAction.FEEDBACK and ident.role != Role.OPS:
        # Feedback may be about a facilitator: it is for ops (GET /api/feedback).
        raise ChatError(ErrorCode.FORBIDDEN, "Feedback is read by ops.")
    # Issue 14: scoped by role (core/scopes.py): a facilitator never reads counselling.
    scope = audit_scope(ident.role, group_room_ids(server.core.rooms.values()))
    if scope is None:
        raise ChatError(ErrorCode.FORBIDDEN, "Your role can't read the audit log.")
    rows = await server.store.audit(room, since, limit, action=action, scope=scope)
    # SG-18: reading the audit log is itself audited.
    await server.store.apply([AuditEntry(server.now(), RoomId(room) if room else None, ident.id,
                                         AuditAction.AUDIT_READ, None, {"since": since,
                                                              "limit": limit})])
    return web.json_response({"entries": [
        {"id": r.id, "ts": r.ts, "room": r.room, "actor": r.actor, "action": r.action,
         **({"target": r.target} if r.target else {}), "detail": r.detail} for r in rows]})


async def feedback(request: web.Request) -> web.Response:
    """Ops read what the "Tell us" page received (``transport/feedback.py``)."""
    ident = await staff(request, Role.OPS)
    return await list_feedback(request, ident, _int_query(request, "since", 0, 2**53),
                               _int_query(request, "limit", 100, 1000))


async def cases(request: web.Request) -> web.Response:
    """The cases the caller may see, each as its ``case`` frame shows it (SG-18: the one
    rule, core/scopes.py, the WebSocket path uses too)."""
    server = request.app[APP_KEY]
    ident = await staff(request, Role.COUNSELLOR, Role.OPS)
    status = request.query.get("status") or None
    views = visible_cases(server.core.cases.values(), ident.role, ident.id, status)
    return web.json_response({"cases": [v.body() for v in views]})


async def rules_try(request: web.Request) -> web.Response:
    server = request.app[APP_KEY]
    await staff(request, Role.OPS)
    body = await _body(request)
    text = _str_field(body, "text")
    role = _str_field(body, "role", required=False) or "participant"
    profile = _str_field(body, "profile", required=False) or "default"
    v = server.core.moderator.check(text, role, profile=profile)
    out: dict[str, object] = {
        "action": v.action.label, "normalized": v.normalized, "version": v.version,
        "stage": v.stage, "model_version": v.model_version,
        "rules": [{"id": h.rule.id, "category": h.rule.category, "action": h.rule.action.label,
                   "span": list(h.span)} for h in v.hits],
        "cleared": [h.rule.id for h in v.cleared],
        "shadow": [h.rule.id for h in v.shadow], "alerts": list(v.alerts),
        "signpost": v.signpost,
        "model": {head: {"score": score, "threshold": v.thresholds.get(head)}
                  for head, score in v.scores.items()},
    }
    if v.action == Action.MASK:
        out["text_out"] = v.text_out
    return web.json_response(out)


async def rules_reload(request: web.Request) -> web.Response:
    server = request.app[APP_KEY]
    ident = await staff(request, Role.OPS)
    try:
        count, version = await server.reload_rules_by(ident.id, "api")
    except RuleLoadError as e:
        return web.json_response({"error": {
            "code": "bad_request", "message": f"{len(e.problems)} problem(s); the running "
                                              "rules were kept.",
            "problems": [{"file": p.file, "rule": p.rule, "message": p.message}
                         for p in e.problems]}}, status=400)
    return web.json_response({"rules": count, "version": version})


async def resources(request: web.Request) -> web.Response:
    server = request.app[APP_KEY]
    return web.json_response({"resources": [r.to_wire() for r in server.config.resources],
                              "complaints": server.config.notices.get("complaints", "")})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    server = request.app[APP_KEY]
    broker_ok = await server.broker.ping()
    store_ok = await server.store.ping()
    ok = broker_ok and store_ok and not server.stopping
    return web.json_response({"status": "ok" if ok else "unavailable", "broker": broker_ok,
                              "store": store_ok}, status=200 if ok else 503)


async def index(request: web.Request) -> web.FileResponse:
    page = request.match_info.get("page") or "index"
    path = CLIENT_DIR / f"{page}.html"
    if not re.fullmatch(r"[a-z]+", page) or not path.exists():
        raise web.HTTPNotFound()
    return web.FileResponse(path)
