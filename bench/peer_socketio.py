"""The peer: a python-socketio chat server (AsyncServer on aiohttp) with a naive word
filter, the stack a Python team would otherwise pick. Same rooms and load as ours.

    python bench/peer_socketio.py --port 8092
"""

from __future__ import annotations

import argparse
import itertools
import re
import time
from collections import defaultdict

import socketio
from aiohttp import web

# A naive filter: one big alternation of words, Python `re`, no normalization.
BAD_WORDS = ["kill yourself", "kys", "fuck", "shit", "cunt", "snapchat", "whatsapp",
             "how old are you", "where do you live", "send me a pic", "paracetamol",
             "overdose", "suicide", "kill myself", "end it all", "loser", "stupid", "idiot"]
FILTER = re.compile(r"\b(?:" + "|".join(map(re.escape, BAD_WORDS)) + r")\b", re.IGNORECASE)

sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins=[])
SEQ: dict[str, int] = defaultdict(int)
IDS = itertools.count(1)
WHO: dict[str, tuple[str, str, str]] = {}


@sio.event
async def hello(sid: str, data: dict[str, str]) -> dict[str, object]:
    room, pid, name = data["token"].split("|")
    WHO[sid] = (room, pid, name)
    await sio.enter_room(sid, room)
    return {"type": "welcome", "you": {"id": pid}}


@sio.event
async def send(sid: str, data: dict[str, str]) -> dict[str, object]:
    room, pid, name = WHO[sid]
    if FILTER.search(data["text"]):
        return {"type": "ack", "ref": data["id"], "status": "blocked"}
    SEQ[room] += 1
    await sio.emit("message", {"type": "message", "room": room, "seq": SEQ[room],
                               "id": data["id"], "text": data["text"],
                               "from": {"id": pid, "name": name, "role": "participant"},
                               "ts": time.time_ns() // 1_000_000}, room=room)
    return {"type": "ack", "ref": data["id"], "status": "sent", "seq": SEQ[room]}


async def join(request: web.Request) -> web.Response:
    body = await request.json()
    pid = f"p{next(IDS)}"
    return web.json_response({"token": f"{body['room']}|{pid}|{body['name']}",
                              "participant": {"id": pid, "name": body["name"]},
                              "room": {"id": body["room"], "title": body["room"]}})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8092)
    args = parser.parse_args()
    app = web.Application()
    sio.attach(app)
    app.router.add_post("/api/join", join)
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = None
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, loop=loop,
                access_log=None)


if __name__ == "__main__":
    main()
