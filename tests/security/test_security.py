"""SECURITY.md § Attacks, through real sockets: frames no real client would send."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from pathlib import Path

import pytest
import websockets
from websockets.frames import Frame, Opcode

from chatserver.moderation.engine import RuleSet
from tests.conftest import Running, start_server


def raw_frame(first_byte: int, payload: bytes) -> bytes:
    """A masked client frame, byte by byte (RFC 6455 § 5.2), for frames no library will
    send (reserved bits). Payloads here stay under 126 bytes."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([first_byte, 0x80 | len(payload)]) + mask + masked


async def _raw(running: Running, frame: Frame | bytes) -> int | None:
    """Send one hand-made frame after a good hello; return the close code received."""
    token = await running.join("Raw")
    ws = await websockets.connect(running.ws_url)
    await ws.send(f'{{"type":"hello","token":"{token}"}}')
    await asyncio.wait_for(ws.recv(), 5)  # welcome
    if isinstance(frame, bytes):
        ws.transport.write(frame)
    else:
        ws.protocol.send_frame(frame)  # the sans-I/O layer builds exactly what we ask
        for data in ws.protocol.data_to_send():
            ws.transport.write(data)
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    except websockets.ConnectionClosed as e:
        return e.rcvd.code if e.rcvd else None


@pytest.mark.parametrize("payload", [b"\xff\xfe", b'{"type":"\xed\xa0\x80"}', b"\xc0\xaf"])
async def test_sec14_invalid_utf8_closes_1007(running: Running, payload: bytes) -> None:
    assert await _raw(running, Frame(Opcode.TEXT, payload)) == 1007


@pytest.mark.parametrize("frame", [
    raw_frame(0x80 | 0x40 | 0x1, b"{}"),  # FIN + RSV1 + text: compression never agreed
    raw_frame(0x80 | 0x20 | 0x1, b"{}"),  # RSV2
    raw_frame(0x80 | 0x3, b"x"),  # reserved opcode 0x3
    raw_frame(0x80 | 0xB, b"x"),  # reserved control opcode 0xB
    Frame(Opcode.CONT, b"orphan"),
    bytes([0x89, 0x80 | 126]) + (126).to_bytes(2, "big") + bytes(4) + b"p" * 126,  # big ping
    raw_frame(0x09, b"ping"),  # a fragmented (non-FIN) ping
    raw_frame(0x88, (999).to_bytes(2, "big")),  # close code 999
    raw_frame(0x88, (1005).to_bytes(2, "big")),  # close code 1005 is never sent
    raw_frame(0x88, b"\x03"),  # a one-byte close payload
], ids=["rsv1", "rsv2", "opcode-3", "opcode-B", "orphan-continuation", "ping-126",
        "fragmented-ping", "close-999", "close-1005", "close-1-byte"])
async def test_sec15_protocol_violations_close_1002(running: Running,
                                                    frame: Frame | bytes) -> None:
    assert await _raw(running, frame) == 1002


async def test_sec17_binary_after_hello_closes_1003(running: Running) -> None:
    assert await _raw(running, Frame(Opcode.BINARY, b"\x00")) == 1003


async def test_sec19_at_most_three_sockets_per_participant(running: Running) -> None:
    token = await running.join("Many")
    clients = [await running.client(token) for _ in range(3)]
    ws = await websockets.connect(running.ws_url)
    await ws.send(f'{{"type":"hello","token":"{token}"}}')
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert (await clients[0].say("the first three still work", "ok"))["status"] == "sent"


async def test_sec27_login_brute_force_is_429_and_audited(running: Running) -> None:
    codes = []
    for _ in range(7):
        status, _ = await running.post("/api/login", {"username": "facilitator",
                                                      "password": "wrong guess"})
        codes.append(status)
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
    # Even the right password waits out the lockout.
    status, _ = await running.post("/api/login", {"username": "facilitator",
                                                  "password": "correct horse battery"})
    assert status == 429
    ops = await running.login("ops")
    _, body = await running.get("/api/audit", ops)
    actions = [e["action"] for e in body["entries"]]
    # Issue 14: the window's first failure and first lockout at once (the rest are
    # summarised when the window ends: tests/security/test_login.py).
    assert actions.count("login_failed") == 1 and actions.count("login_locked") == 1


async def test_sec28_internal_errors_leak_nothing(running: Running,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ops = await running.login("ops")

    async def broken(*args: object) -> None:
        raise RuntimeError("SELECT * FROM secret_table WHERE password='hunter2'")

    monkeypatch.setattr(running.server.store, "audit", broken)
    status, body = await running.get("/api/audit", ops)
    assert status == 500
    assert body == {"error": {"code": "internal",
                              "message": "Something went wrong on our side."}}


async def test_sec13_compression_is_never_negotiated(running: Running) -> None:
    ws = await websockets.connect(running.ws_url)  # offers permessage-deflate by default
    assert ws.response is not None
    assert "Sec-WebSocket-Extensions" not in ws.response.headers
    await ws.close()


async def test_sec20_non_send_frame_flood_is_rate_limited_then_closed_1008(
        running: Running) -> None:
    watcher = await running.client(await running.join("Watcher"))
    flooder = await running.client(await running.join("Flooder"))
    # The flooder reads while it floods (else its own replies would fill its queue: 1013).
    reading = asyncio.create_task(flooder.expect("never", timeout=15))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        with contextlib.suppress(websockets.ConnectionClosed):
            for _ in range(1000):
                await flooder.raw('{"type":"report","room":"lounge","seq":999999}')
        await reading
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    limited = [e for e in flooder.seen if e.get("code") == "rate_limited"]
    assert len(limited) == 1  # told once; the rest of the flood is not answered
    assert (await watcher.say("still fine", "v1"))["status"] == "sent"


async def test_sec24_a_dead_peer_is_closed_by_the_heartbeat_and_leaves_presence(
        tmp_path: Path, rules: RuleSet) -> None:
    running = await start_server(tmp_path, rules)
    running.server.config = dataclasses.replace(
        running.server.config, server=dataclasses.replace(running.server.config.server,
                                                          heartbeat_s=0.3))
    try:
        watcher = await running.client(await running.join("Watcher"))
        token = await running.join("Ghost")
        ghost = await websockets.connect(running.ws_url, ping_interval=None)
        await ghost.send(f'{{"type":"hello","token":"{token}"}}')
        await asyncio.wait_for(ghost.recv(), 5)
        await watcher.expect("room", lambda e: any(m["name"] == "Ghost" for m in e["members"]))
        ghost.transport.pause_reading()  # a frozen process: it never answers a ping
        gone = await watcher.expect(
            "room", lambda e: all(m["name"] != "Ghost" for m in e["members"]), timeout=10)
        assert [m["name"] for m in gone["members"]] == ["Watcher"]
        ghost.transport.abort()
    finally:
        await running.stop()


async def test_fl05_connections_that_never_say_hello_are_closed_4001(running: Running) -> None:
    healthy = await running.client(await running.join("Healthy"))
    silent = [await websockets.connect(running.ws_url) for _ in range(200)]
    assert (await healthy.say("served while 200 sockets idle", "h1"))["status"] == "sent"
    codes = []
    for ws in silent:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        codes.append(closed.value.rcvd.code if closed.value.rcvd else None)
    assert set(codes) == {4001}
    assert (await healthy.say("and after", "h2"))["status"] == "sent"


async def test_sec11_a_huge_declared_length_closes_1009(running: Running) -> None:
    header = bytes([0x81, 0x80 | 127]) + (2**62).to_bytes(8, "big") + os.urandom(4)
    assert await _raw(running, header) == 1009


async def test_sec12_a_fragment_flood_closes_1009(running: Running) -> None:
    frames = raw_frame(0x01, b"{")  # TEXT without FIN: the start of a fragmented message
    frames += b"".join(raw_frame(0x00, b"x") for _ in range(40_000))  # continuations
    assert await _raw(running, frames) == 1009


async def test_sec29_hsts_when_served_over_tls(running: Running) -> None:
    import aiohttp

    server = running.server
    server.config = dataclasses.replace(
        server.config, server=dataclasses.replace(server.config.server, hsts=True))
    async with aiohttp.ClientSession() as s, s.get(running.http + "/healthz") as r:
        assert r.headers["Strict-Transport-Security"].startswith("max-age=31536000")
