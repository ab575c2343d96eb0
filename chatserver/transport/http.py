"""HTTP routes of docs/protocol.md § HTTP, the static client, and security headers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from chatserver.config import packaged
from chatserver.core.effects import AuditEntry, RoomRecord
from chatserver.core.errors import ChatError, ErrorCode
from chatserver.core.ids import ParticipantId, RoomId
from chatserver.core.roles import Role
from chatserver.core.scopes import audit_scope, sees_case
from chatserver.core.session import Identity
from chatserver.core.wire import decode_object, parse_decimal
from chatserver.moderation.contact import digits_view
from chatserver.moderation.normalize import normalize, words_view
from chatserver.moderation.rules import Action, RuleLoadError
from chatserver.observability import log
from chatserver.ports import BrokerError
from chatserver.transport.app import APP_KEY, Server
from chatserver.transport.auth import Passwords, TokenError, still_signed_in
from chatserver.transport.feedback import list_feedback, post_feedback
from chatserver.transport.proxy import forwarded_middleware
from chatserver.transport.throttle import THROTTLE_KEY, Throttle, client_address
from chatserver.transport.ws import ws_handler

__all__ = ["build_app", "security_headers"]

CLIENT_DIR: Final = packaged("client_web")
"""The pages, package data (a wheel serves them too)."""
NAME_CHARS: Final = re.compile(r"^[A-Za-z0-9 _.\-]{1,24}$")
"""docs/protocol.md: 1–24 characters after trimming, letters, digits, spaces, _ - ."""
RESERVED_NAMES: Final = frozenset({
    "admin", "administrator", "facilitator", "counsellor", "counselor", "childline",
    "samaritans", "moderator", "mod", "staff", "shout", "system", "support", "kooth",
    "nspcc", "police", "helpline", "official", "modteam", "mods", "moderation", "moderators",
    "safeguarding", "papyrus", "hopeline", "youngminds", "facilitators", "counsellors",
})
"""SG-21: nobody may impersonate staff or a helpline, nor a look-alike spelling."""
NAME_MAX_DIGITS: Final = 6
"""A display name with this many digits (also spelt: "oh seven nine ...") could carry a
phone number in pieces (SG-05)."""
ROOM_ID: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}")
"""docs/protocol.md: a room id is lower-case letters, digits, ``-`` and ``_``."""
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


PLATFORM_WORDS: Final = frozenset({
    "snap", "snapchat", "insta", "instagram", "ig", "tiktok", "discord", "whatsapp", "kik",
    "telegram", "facebook", "fb", "twitter", "sc", "onlyfans", "signal",
})
"""A display name is no place for a social handle (SG-05): "sn4p jsmith07" is refused."""


_LOOKALIKE: Final = str.maketrans({"1": "l", "|": "l", "i": "l", "!": "l", "0": "o"})
"""ASCII look-alikes a name can swap (I/l/1/|, O/0) read as one letter (SG-21)."""
_RESERVED_SKELETONS: Final = frozenset(w.translate(_LOOKALIKE) for w in RESERVED_NAMES)


def _name_views(name: str) -> list[str]:
    """The words view of the confusable skeleton, and the same with look-alike letters
    read as one ("ChildIine", "Chi1dline", "M0d team"; issue 13 § 4)."""
    folded = normalize(name).folded
    return [words_view(folded), words_view(folded.translate(_LOOKALIKE))]


def _looks_reserved(name: str) -> bool:
    plain, swapped = ("".join(v.split()) for v in _name_views(name))
    skeleton = swapped.translate(_LOOKALIKE)
    for joined, reserved in ((plain, RESERVED_NAMES), (skeleton, _RESERVED_SKELETONS)):
        if joined in reserved or any(w in joined for w in reserved if len(w) > 3):
            return True
    return False


def _names_a_platform(name: str) -> bool:
    return any(token in PLATFORM_WORDS for view in _name_views(name) for token in view.split())


def _removed_token(request: web.Request, server: Server, room: RoomId) -> bool:
    """A join that shows a participant token already removed from this room (a client
    asking for a fresh identity with its old one) is refused too."""
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        return False
    try:
        ident = server.tokens.verify(auth.removeprefix("Bearer ").strip())
    except TokenError:
        return False
    target = server.core.rooms.get(room)
    return ident.room == room and target is not None and ident.id in target.removed


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
    if not NAME_CHARS.match(name):
        raise ChatError(ErrorCode.BAD_REQUEST, "Names can be 1 to 24 letters, numbers, "
                                               "spaces, dots, dashes or underscores.")
    if _looks_reserved(name):
        raise ChatError(ErrorCode.BAD_REQUEST, "That name is kept for staff. Please pick "
                                               "another.")
    spoken = sum(len(r.digits) for r in digits_view(normalize(name).folded))
    if _names_a_platform(name) or spoken >= NAME_MAX_DIGITS:
        raise ChatError(ErrorCode.BAD_REQUEST, "Please leave social media names and numbers "
                                               "out of your display name, to keep you safe.")
    if server.core.rules.check(name, "participant").action >= Action.MASK:
        raise ChatError(ErrorCode.BAD_REQUEST, "Please pick a different name.")
    room = server.core.rooms.get(RoomId(room_id))
    if room is None or room.kind != "group" or room.closed:
        raise ChatError(ErrorCode.NOT_FOUND, "No such room.")
    if band not in server.config.rooms.age_bands:
        raise ChatError(ErrorCode.BAD_REQUEST, "Unknown age band.")
    if band not in room.age_bands:
        raise ChatError(ErrorCode.FORBIDDEN, "This room is for a different age group.")
    if room.name_removed(name) or _removed_token(request, server, room.id):
        # Issue 14: a removal sticks for the room's life, not only for one token.
        raise ChatError(ErrorCode.FORBIDDEN, "A facilitator has asked you to leave this "
                                             "room for now. The 'Get help now' options are "
                                             "always there for you.")
    if any(p.name.casefold() == name.casefold() for p in room.present()):  # any node
        raise ChatError(ErrorCode.CONFLICT, "Someone is already using that name here.")
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
    # Issue 14: rooms show the display name, never the login name.
    ident = Identity(ParticipantId(user.id), user.shown_name(), Role(user.role),
                     version=user.version)
    await server.store.apply([AuditEntry(now, None, user.id, "login")])
    return web.json_response({"token": server.tokens.issue(ident, int(time.time())),
                              "user": {"id": user.id, "name": user.username,
                                       "display_name": user.shown_name(),
                                       "role": user.role}})


async def logout(request: web.Request) -> web.Response:
    """Ends every session of the account (its version moves): this token, others, and
    open sockets (closed 4401 within a few ticks)."""
    server = request.app[APP_KEY]
    ident = await staff(request, Role.FACILITATOR, Role.COUNSELLOR, Role.OPS)
    await server.store.bump_version(ident.id)
    await server.store.apply([AuditEntry(server.now(), None, ident.id, "logout")])
    return web.json_response({"status": "ok"})


async def list_rooms(request: web.Request) -> web.Response:
    server = request.app[APP_KEY]
    await staff(request, Role.FACILITATOR, Role.COUNSELLOR, Role.OPS)
    now = server.now()
    rooms = []
    for room in server.core.rooms.values():
        if room.kind != "group" or room.closed:
            continue
        present = room.present()  # on every node of a cluster
        rooms.append({
            "id": room.id, "title": room.title, "age_bands": list(room.age_bands),
            "paused": room.state(now).paused, "slow_mode_s": room.slow_mode_s,
            "participants": sum(1 for m in present if m.role == Role.PARTICIPANT),
            "facilitators": sum(1 for m in present if m.role == Role.FACILITATOR),
        })
    return web.json_response({"rooms": rooms})


async def open_rooms(request: web.Request) -> web.Response:
    """The rooms a young person may pick from at join: titles and age bands only."""
    server = request.app[APP_KEY]
    return web.json_response({"rooms": [
        {"id": r.id, "title": r.title, "age_bands": list(r.age_bands)}
        for r in server.core.rooms.values() if r.kind == "group" and not r.closed]})


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
    if room is None or room.kind != "group" or room.closed:
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
    bands = body.get("age_bands")
    if not title or len(title) > 80:
        raise ChatError(ErrorCode.BAD_REQUEST, "A room needs a title of up to 80 characters.")
    if not isinstance(bands, list) or not bands or \
            any(b not in server.config.rooms.age_bands for b in bands):
        raise ChatError(ErrorCode.BAD_REQUEST, "age_bands must be a list of configured bands.")
    # A generated id is made to pass the same check as a chosen one (issue 14).
    rid = _str_field(body, "id", required=False) or \
        server.core.ids.new("room").lower().replace("_", "-")
    if not ROOM_ID.fullmatch(rid):
        raise ChatError(ErrorCode.BAD_REQUEST, "Room ids are lower-case letters, digits, - "
                                               "and _.")
    if rid in server.core.rooms:
        raise ChatError(ErrorCode.CONFLICT, "That room already exists.")
    profile = "adult" if bands == ["18-25"] else "default"
    record = RoomRecord(RoomId(rid), title, tuple(bands), profile, "group", False, 0, {}, (),
                        server.config.rooms.require_facilitator)
    await server.create_room(record, AuditEntry(server.now(), RoomId(rid), ident.id,
                                                "room_created", None, {"title": title}))
    return web.json_response({"id": rid, "title": title, "age_bands": bands, "paused": False,
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
    if action == "feedback" and ident.role != Role.OPS:
        # Feedback may be about a facilitator: it is for ops (GET /api/feedback).
        raise ChatError(ErrorCode.FORBIDDEN, "Feedback is read by ops.")
    # Issue 14: scoped by role (core/scopes.py): a facilitator never reads counselling.
    scope = audit_scope(ident.role, (r.id for r in server.core.rooms.values()
                                     if r.kind == "group"))
    if scope is None:
        raise ChatError(ErrorCode.FORBIDDEN, "Your role can't read the audit log.")
    rows = await server.store.audit(room, since, limit, action=action, scope=scope)
    # SG-18: reading the audit log is itself audited.
    await server.store.apply([AuditEntry(server.now(), RoomId(room) if room else None, ident.id,
                                         "audit_read", None, {"since": since,
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
    server = request.app[APP_KEY]
    ident = await staff(request, Role.COUNSELLOR, Role.OPS)
    status = request.query.get("status") or None
    rank = {"emergency": 0, "urgent": 1, "routine": 2}
    out = []
    for k in sorted(server.core.cases.values(), key=lambda k: (rank.get(k.urgency, 3), k.ts)):
        if status and k.status != status:
            continue
        if not sees_case(ident.role, ident.id, k.status, k.counsellor):
            continue  # SG-18: the one rule (core/scopes.py) the WebSocket path uses too
        body = {"id": k.id, "ts": k.ts, "room": k.room, "participant": k.participant,
                "urgency": k.urgency, "status": k.status, "note": k.note}
        if k.counsellor:
            body["counsellor"] = k.counsellor
        out.append(body)
    return web.json_response({"cases": out})


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
        count, version = await server.reload_rules()
    except RuleLoadError as e:
        await server.store.apply([AuditEntry(server.now(), None, ident.id, "rules_reload_refused",
                                             None, {"problems": len(e.problems)},
                                             server.core.rules.version)])
        return web.json_response({"error": {
            "code": "bad_request", "message": f"{len(e.problems)} problem(s); the running "
                                              "rules were kept.",
            "problems": [{"file": p.file, "rule": p.rule, "message": p.message}
                         for p in e.problems]}}, status=400)
    await server.store.apply([AuditEntry(server.now(), None, ident.id, "rules_reload", None,
                                         {"rules": count}, version)])
    await server.rules_reloaded_here()
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


def build_app(server: Server) -> web.Application:
    # Behind a trusted proxy, the client as the proxy saw it (issue 15), for every
    # handler: the Origin check and the per-address budgets included. Inside ``errors``,
    # so a malformed forwarded header on /api/ answers in docs/protocol.md's JSON shape.
    forwarded = forwarded_middleware(server.config.server.trusted_proxies)
    app = web.Application(middlewares=[errors, *([forwarded] if forwarded else [])],
                          client_max_size=64 * 1024)
    app.on_response_prepare.append(security_headers)
    app[APP_KEY] = server
    throttle = Throttle(server.broker, server.config.auth, server.config.limits, server.store)
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
