"""The ceiling: a plain aiohttp broadcast server, no moderation, no store, no auth.

It speaks just enough of docs/protocol.md for bench/loadgen.py (join, hello, send → ack +
message to the room), so every figure of the real server can be read as a ratio of what
this machine can do at all.

    python -m bench.ceiling --port 8091
"""

from __future__ import annotations

import time
from collections import defaultdict

import orjson
from aiohttp import WSMsgType, web

from bench.comparison import serve

ROOMS: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
SEQ: dict[str, int] = defaultdict(int)




async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False, max_msg_size=32 * 1024)
    await ws.prepare(request)
    room = pid = name = ""
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            frame = orjson.loads(msg.data)
            if frame["type"] == "hello":
                room, pid, name = frame["token"].split("|")
                ROOMS[room].add(ws)
                await ws.send_bytes(orjson.dumps({"type": "welcome", "you": {"id": pid}}))
            elif frame["type"] == "send":
                SEQ[room] += 1
                out = orjson.dumps({"type": "message", "room": room, "seq": SEQ[room],
                                    "id": frame["id"], "text": frame["text"],
                                    "from": {"id": pid, "name": name, "role": "participant"},
                                    "ts": time.time_ns() // 1_000_000}).decode()
                for peer in list(ROOMS[room]):
                    if not peer.closed:
                        await peer.send_str(out)
                await ws.send_str(orjson.dumps({"type": "ack", "ref": frame["id"],
                                                "status": "sent", "seq": SEQ[room]}).decode())
    finally:
        ROOMS[room].discard(ws)
    return ws


def main() -> None:
    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    serve(app, 8091)


if __name__ == "__main__":
    main()
