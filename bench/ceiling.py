"""The ceiling: a plain aiohttp broadcast server, no moderation, no store, no auth.

It speaks just enough of PROTOCOL.md for bench/loadgen.py (join, hello, send → ack +
message to the room), so every figure of the real server can be read as a ratio of what
this machine can do at all.

    python bench/ceiling.py --port 8091
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections import defaultdict

import orjson
from aiohttp import WSMsgType, web

ROOMS: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
SEQ: dict[str, int] = defaultdict(int)
IDS = itertools.count(1)


async def join(request: web.Request) -> web.Response:
    body = await request.json()
    pid = f"p{next(IDS)}"
    return web.json_response({"token": f"{body['room']}|{pid}|{body['name']}",
                              "participant": {"id": pid, "name": body["name"]},
                              "room": {"id": body["room"], "title": body["room"]}})


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
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/api/join", join)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/healthz", lambda r: asyncio.sleep(0, web.json_response({"ok": 1})))
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = None
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, loop=loop,
                access_log=None)


if __name__ == "__main__":
    main()
