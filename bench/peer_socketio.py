"""The peer: a python-socketio chat server (AsyncServer on aiohttp) with a naive word
filter, the stack a Python team would otherwise pick. Same rooms and load as ours.

    python -m bench.peer_socketio --port 8092
"""

from __future__ import annotations

import re
import time
from collections import defaultdict

import socketio
from aiohttp import web

from bench.comparison import serve

# A naive filter: one big alternation of words, Python `re`, no normalization.
BAD_WORDS = ["kill yourself", "kys", "fuck", "shit", "cunt", "snapchat", "whatsapp",
             "how old are you", "where do you live", "send me a pic", "paracetamol",
             "overdose", "suicide", "kill myself", "end it all", "loser", "stupid", "idiot"]
FILTER = re.compile(r"\b(?:" + "|".join(map(re.escape, BAD_WORDS)) + r")\b", re.IGNORECASE)

sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins=[])
SEQ: dict[str, int] = defaultdict(int)
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




def main() -> None:
    app = web.Application()
    sio.attach(app)
    serve(app, 8092)


if __name__ == "__main__":
    main()
