"""Issue 2 acceptance over real sockets: exchange, bad input, resume, restart, slow client."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import websockets
from aiohttp import ClientSession

from chatserver.moderation.engine import RuleSet
from tests.conftest import SECRET, Running, start_server


def has_id(msg_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["id"] == msg_id


async def test_two_participants_exchange_messages_with_one_ack_and_rising_seq(
        running: Running) -> None:
    alex = await running.client(await running.join("Alex"))
    sam = await running.client(await running.join("Sam"))
    seqs = []
    for n in range(3):
        ack = await alex.say(f"update {n}: all good here", f"a{n}")
        assert ack["status"] == "sent"
        got = await sam.expect("message", has_id(f"a{n}"))
        mine = await alex.expect("message", has_id(f"a{n}"))
        assert got["seq"] == mine["seq"] == ack["seq"]
        assert got["from"] == {"id": alex.welcome["you"]["id"], "name": "Alex",
                               "role": "participant"}
        seqs.append(ack["seq"])
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    acks = [e for e in alex.seen if e["type"] == "ack"]
    assert len(acks) == 3  # exactly one ack per send


async def test_frames_of_every_length_arrive_whole(tmp_path: Path, rules: RuleSet) -> None:
    """The server builds each WebSocket frame itself (Delivery.fan_out): short, medium
    (16-bit length) and long (64-bit length: a welcome over 64 KiB) frames all arrive as
    sent, to a client that checks the framing (websockets)."""
    running = await start_server(tmp_path, rules, frame_rate=1e6, frame_burst=1e6)
    try:
        talker = await running.client(await running.login("facilitator"))
        await talker.send(type="join", room="lounge")
        await talker.expect("room")
        listener = await running.client(await running.join("Listener"))
        texts = ["ok", "y" * 125, "z" * 126, *(f"{n:02d}" + "x" * 1988 for n in range(40))]
        for n, text in enumerate(texts):
            assert (await talker.say(text, f"t{n}"))["status"] == "sent"
            assert (await listener.expect("message", has_id(f"t{n}")))["text"] == text
        late = await running.client_raw(await running.join("Late"))
        welcome = orjson.loads(raw := await asyncio.wait_for(late.ws.recv(), 5))
        assert len(raw) > 65535
        assert [m["text"] for m in welcome["history"]["lounge"]] == texts[-len(
            welcome["history"]["lounge"]):]
    finally:
        await running.stop()


async def test_no_hello_closes_4001(running: Running) -> None:
    ws = await websockets.connect(running.ws_url)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001


async def test_first_frame_not_hello_closes_4001(running: Running) -> None:
    ws = await websockets.connect(running.ws_url)
    await ws.send('{"type":"send","room":"lounge","id":"x","text":"hi"}')
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001


def _forged_tokens() -> list[str]:
    now = int(time.time())
    base = {"sub": "p_x", "name": "X", "role": "participant", "room": "lounge",
            "iat": now, "nbf": now, "exp": now + 600, "iss": "chatserver", "aud": "chatserver"}
    no_exp = {k: v for k, v in base.items() if k != "exp"}
    good = jwt.encode(base, SECRET, algorithm="HS256")
    head, body, sig = good.split(".")
    return [
        jwt.encode({**base, "exp": now - 3600}, SECRET, algorithm="HS256"),
        jwt.encode(no_exp, SECRET, algorithm="HS256"),
        jwt.encode(base, "another-secret-" + "y" * 40, algorithm="HS256"),
        jwt.encode({**base, "nbf": now + 3600}, SECRET, algorithm="HS256"),
        jwt.encode({**base, "aud": "elsewhere"}, SECRET, algorithm="HS256"),
        jwt.encode({**base, "role": "facilitator"}, "x" * 40, algorithm="HS256"),
        f"{head}.{body[:-2]}Aa.{sig}",
        "eyJhbGciOiJub25lIn0." + body + ".",
        "not a token",
    ]


@pytest.mark.parametrize("token", _forged_tokens())
async def test_bad_or_expired_token_closes_4401(running: Running, token: str) -> None:
    ws = await websockets.connect(running.ws_url)
    await ws.send(f'{{"type":"hello","token":"{token}"}}')
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_oversized_frame_closes_1009_and_others_keep_chatting(running: Running) -> None:
    bad = await running.client(await running.join("Big"))
    good = await running.client(await running.join("Good"))
    await bad.raw('{"type":"send","room":"lounge","id":"b","text":"' + "x" * 33_000 + '"}')
    assert await bad.closed_with() == 1009
    assert (await good.say("still here", "g1"))["status"] == "sent"


async def test_binary_frame_closes_1003(running: Running) -> None:
    c = await running.client(await running.join("Bin"))
    await c.raw(b"\x00\x01")
    assert await c.closed_with() == 1003


async def test_text_over_limit_is_rejected_too_large(running: Running) -> None:
    c = await running.client(await running.join("Long"))
    ack = await c.say("é" * 2001, "l1")
    assert (ack["status"], ack["code"]) == ("rejected", "too_large")
    assert (await c.say("ok" + " " * 3000, "l2"))["status"] == "sent"  # trimmed first


async def test_text_over_limit_is_refused_before_any_moderation(running: Running) -> None:
    """An over-long line (30,000 characters, a phone number and method detail in it) is answered
    ``too_large`` without being read: no moderation work, no alert, no signpost; the
    next line is moderated as usual."""
    fac = await running.client(await running.login("facilitator"))
    await fac.send(type="join", room="lounge")
    await fac.expect("room")
    c = await running.client(await running.join("Longer"))
    moderator = running.server.core.moderator
    before = moderator.waiting
    text = ("call me on 07700 900 417, how many pills would it take to die " * 520)[:30000]
    ack = await c.say(text, "big")
    assert (ack["status"], ack["code"]) == ("rejected", "too_large")
    assert moderator.waiting == before  # the pre-pass never read it
    assert (await c.say("how was everyones day", "next"))["status"] == "sent"
    assert not [e for e in c.seen if e["type"] == "notice" and e.get("kind") == "signpost"]
    assert not [e for e in fac.seen if e["type"] in ("alert", "held")]


@pytest.mark.parametrize("frame", [
    '{"type":"send","room":"lounge","id":"e","text":"   "}',
    "this is not json",
    '{"type":"send","room":"lounge","text":"no id"}',
    '{"type":"send","room":"lounge","id":"d","id":"e","text":"dup"}',
    '{"type":"slow_mode","room":"lounge","seconds":NaN}',
    '{"type":"send","room":"lounge","id":"s","text":"\\ud800"}',
    '{"type":"send","room":"lounge","id":"n","text":"a\\u0000b"}',
    '{"type":"report","room":"lounge","seq":true}',
    '["send"]',
])
async def test_malformed_frames_are_bad_request_and_socket_stays_open(
        running: Running, frame: str) -> None:
    c = await running.client(await running.join("Bad"))
    await c.raw(frame)
    err = await c.expect("error")
    assert err["code"] == "bad_request"
    assert (await c.say("still open", "ok1"))["status"] == "sent"


async def test_unknown_type(running: Running) -> None:
    c = await running.client(await running.join("Unk"))
    await c.send(type="teleport", room="lounge")
    assert (await c.expect("error"))["code"] == "unknown_type"


async def test_sixth_send_in_ten_seconds_is_rate_limited(running: Running) -> None:
    c = await running.client(await running.join("Fast"))
    outcomes = [(await c.say(f"msg {n}", f"r{n}"))["status"] for n in range(6)]
    assert outcomes[:5] == ["sent"] * 5
    last = [e for e in c.seen if e["type"] == "ack"][-1]
    assert (outcomes[5], last["code"]) == ("rejected", "rate_limited")


@pytest.mark.parametrize("frame", [
    {"type": "mute", "room": "lounge", "participant": "p_x"},
    {"type": "pause", "room": "lounge"},
    {"type": "approve", "room": "lounge", "held": "h_x"},
    {"type": "escalate", "room": "lounge", "participant": "p_x", "urgency": "urgent"},
    {"type": "claim", "case": "case_x"},
    {"type": "join", "room": "lounge"},
])
async def test_participant_staff_commands_are_forbidden(running: Running,
                                                        frame: dict[str, str]) -> None:
    c = await running.client(await running.join("Sneaky"))
    await c.send(**frame)
    assert (await c.expect("error"))["code"] == "forbidden"


@pytest.mark.parametrize("origin", [
    "https://evil.example", "http://127.0.0.1:1", "null", "HTTP://127.0.0.1",
])
async def test_foreign_origin_is_refused_403(running: Running, origin: str) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(running.ws_url, origin=origin)  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403


async def test_same_origin_is_accepted(running: Running) -> None:
    async with websockets.connect(running.ws_url,
                                  origin=f"http://127.0.0.1:{running.port}"):  # type: ignore[arg-type]
        pass


async def test_participant_token_on_staff_routes_is_403(running: Running) -> None:
    token = await running.join("Pat")
    for path in ("/api/rooms", "/api/audit", "/api/cases"):
        status, body = await running.get(path, token)
        assert (status, body["error"]["code"]) == (403, "forbidden")
    status, _ = await running.post("/api/rules/reload", {}, token)
    assert status == 403


async def test_resume_gets_exactly_the_missed_messages(running: Running) -> None:
    alex_token = await running.join("Alex")
    alex = await running.client(alex_token)
    sam = await running.client(await running.join("Sam"))
    first = await alex.say("before", "b1")
    await alex.close()
    missed = [(await sam.say(f"while away {n}", f"w{n}"))["seq"] for n in range(3)]
    back = await running.client(alex_token, resume={"lounge": first["seq"]})
    history = back.welcome["history"]["lounge"]
    assert [m["seq"] for m in history] == missed
    assert not back.welcome["rooms"][0].get("gap")
    await back.expect("notice", lambda e: e["kind"] == "welcome_back")


async def test_resending_the_same_id_returns_the_original_ack_once(running: Running) -> None:
    token = await running.join("Retry")
    c = await running.client(token)
    watcher = await running.client(await running.join("Watch"))
    first = await c.say("only once please", "same-id")
    await c.close()
    again = await running.client(token)
    second = await again.say("only once please", "same-id")
    assert second == first
    await watcher.say("after", "w-after")
    seen = [e for e in watcher.seen if e["type"] == "message" and e["id"] == "same-id"]
    assert len(seen) == 1


async def test_seq_rooms_staff_and_audit_survive_a_restart(tmp_path: Path,
                                                           rules: RuleSet) -> None:
    r1 = await start_server(tmp_path, rules)
    c = await r1.client(await r1.join("Before"))
    last = (await c.say("before restart", "x1"))["seq"]
    await c.close()
    await r1.stop()

    r2 = await start_server(tmp_path, rules)
    try:
        c2 = await r2.client(await r2.join("After"))
        assert (await c2.say("after restart", "x2"))["seq"] > last
        ops = await r2.login("ops")
        status, body = await r2.get("/api/audit?room=lounge", ops)
        assert status == 200
        assert any(e["action"] == "message.allow" for e in body["entries"])
        status, rooms = await r2.get("/api/rooms", ops)
        assert [room["id"] for room in rooms["rooms"]] == ["lounge"]
    finally:
        await r2.stop()


def _with_close_deadline(running: Running, seconds: float) -> None:
    """The close deadline under test; pings far apart, so that a missed pong (another
    way to close a peer that reads nothing) cannot decide the test instead."""
    cfg = running.server.config
    running.server.config = dataclasses.replace(
        cfg, server=dataclasses.replace(cfg.server, close_deadline_s=seconds,
                                        heartbeat_s=600.0))


async def _reader_that_stops(running: Running, name: str
                             ) -> tuple[websockets.ClientConnection, int]:
    """A member who stops reading after the welcome. Its receive buffer is made small so
    that what the kernel can absorb is bounded: the server's queue, not the kernel's
    autotuned megabytes, decides when it is too far behind (the cause of the old flake)."""
    token = await running.join(name)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", running.port))
    ws = await websockets.connect(running.ws_url, sock=sock, max_queue=1)
    await ws.send(f'{{"type":"hello","token":"{token}"}}')
    ws.transport.pause_reading()
    return ws, sock.getsockname()[1]


async def _flood_until_cut(running: Running, cut: int) -> None:
    """A facilitator (not rate-limited) talks until ``cut`` slow members were dropped;
    every message still reaches a member who reads."""
    talker = await running.client(await running.login("facilitator"))
    await talker.send(type="join", room="lounge")
    await talker.expect("room")
    listener = await running.client(await running.join("Listener"))
    big = "x" * 1990
    sent = 0
    while running.server.metrics.queue_drops._value.get() < cut:
        ack = await talker.say(big, f"big{sent}")
        assert ack["status"] == "sent"
        # The room never waits for its slowest member: every message reaches the others.
        await listener.expect("message", has_id(f"big{sent}"))
        sent += 1
        assert sent < 5000, "the slow client was never cut off"


def _server_side_open(server_port: int, client_ports: set[int]) -> set[int]:
    """Client ports the server still holds a TCP connection for (from /proc/net/tcp)."""
    held = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote = line.split()[1:3]
        if int(local.split(":")[1], 16) == server_port:
            port = int(remote.split(":")[1], 16)
            if port in client_ports:
                held.add(port)
    return held


# The abused client socket is torn down by the server mid-frame; its transport may be
# collected before websockets closes it, which is the point of the test, not a leak.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.slow
async def test_a_client_that_stops_reading_is_closed_1013_others_unaffected(
        tmp_path: Path, rules: RuleSet) -> None:
    # A frame budget big enough for one talker to outrun a socket that reads nothing.
    running = await start_server(tmp_path, rules, frame_rate=1e6, frame_burst=1e6)
    _with_close_deadline(running, 60.0)  # it reads again long before: the 1013 arrives
    try:
        slow, _ = await _reader_that_stops(running, "Slow")
        await _flood_until_cut(running, 1)
        # Read again: the queued bytes, then the close frame, arrive.
        slow.transport.resume_reading()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(slow.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        await slow.close()
    finally:
        await running.stop()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.slow
async def test_peers_that_never_read_again_are_cut_after_the_close_deadline(
        tmp_path: Path, rules: RuleSet) -> None:
    """Issue 14: 96 of 100 never-reading clients stayed connected, holding kernel
    buffers and descriptors. Now each is aborted once the close deadline passes."""
    running = await start_server(tmp_path, rules, frame_rate=1e6, frame_burst=1e6)
    _with_close_deadline(running, 0.2)
    try:
        stuck = [await _reader_that_stops(running, f"Stuck{n}") for n in range(10)]
        ports = {port for _, port in stuck}
        await _flood_until_cut(running, len(stuck))
        # Not even the kernel keeps them (no orphaned socket holding unsent bytes). The
        # kernel's table has no event to wait on, so it is polled, under a ceiling.
        async with asyncio.timeout(10):  # the deadline itself is 0.2 s
            while _server_side_open(running.port, ports):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        for ws, _ in stuck:
            ws.transport.abort()
    finally:
        await running.stop()


async def test_health_and_metrics(running: Running) -> None:
    async with ClientSession() as s:
        async with s.get(running.http + "/healthz") as r:
            assert (r.status, await r.json()) == (200, {"status": "ok"})
        async with s.get(running.http + "/readyz") as r:
            assert r.status == 200
        async with s.get(running.http + "/metrics") as r:
            assert r.status == 404  # issue 15: never on the public port
        async with s.get(running.metrics_url) as r:
            assert "chat_connections" in await r.text()
        async with s.get(running.http + "/") as r:
            assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")


async def test_token_in_url_is_never_read(running: Running) -> None:
    token = await running.join("Url")
    ws = await websockets.connect(running.ws_url + "?token=" + token)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001



async def test_origin_tricks_on_our_own_host_are_refused(running: Running) -> None:
    """SECURITY.md SEC-02: exact match on scheme, host and port."""
    port = running.port
    for origin in (f"http://127.0.0.1.:{port}", f"https://127.0.0.1:{port}",
                   f"http://127.0.0.1:{port + 1}", f"http://LOCALHOST:{port}",
                   f"http://127.0.0.1:{port}.evil.example", f"http://127.0.0.1:{port}/app",
                   "https://evil.com/127.0.0.1", "http://127.0.0.1@evil.example"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(running.ws_url, origin=origin)  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403, origin


async def test_two_thousand_escaped_emoji_fit_in_a_frame(running: Running) -> None:
    """docs/protocol.md § Limits: frame ≤ 32 KiB 'so 2,000 escaped emoji fit', and the text
    limit counts code points, not bytes or UTF-16 units."""
    c = await running.client(await running.join("Emoji"))
    frame = '{"type":"send","room":"lounge","id":"e1","text":"' + "\\ud83d\\ude00" * 2000 + '"}'
    assert len(frame.encode()) <= 32 * 1024
    await c.raw(frame)
    ack = await c.expect("ack", lambda e: e["ref"] == "e1")
    assert ack["status"] == "sent"
    mine = await c.expect("message", lambda e: e["id"] == "e1")
    assert mine["text"] == "😀" * 2000
