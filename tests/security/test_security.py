"""SECURITY.md § Attacks, through real sockets: frames no real client would send."""

from __future__ import annotations

import asyncio
import os

import pytest
import websockets
from websockets.frames import Frame, Opcode

from tests.conftest import Running


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
], ids=["rsv1", "rsv2", "opcode-3", "opcode-B", "orphan-continuation"])
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
    assert actions.count("login_failed") == 5 and "login_locked" in actions


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
