"""What the two comparison servers share: a join that hands out "room|id|name" tokens
(no auth: the ceiling and the peer measure fan-out, not security) and the run loop."""

from __future__ import annotations

import argparse
import itertools

from aiohttp import web

__all__ = ["join", "serve"]

_IDS = itertools.count(1)


async def join(request: web.Request) -> web.Response:
    body = await request.json()
    pid = f"p{next(_IDS)}"
    return web.json_response({"token": f"{body['room']}|{pid}|{body['name']}",
                              "participant": {"id": pid, "name": body["name"]},
                              "room": {"id": body["room"], "title": body["room"]}})


def serve(app: web.Application, default_port: int) -> None:
    """Parse ``--port`` and run ``app`` on 127.0.0.1 (uvloop where available)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=default_port)
    args = parser.parse_args()
    app.router.add_post("/api/join", join)
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = None
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, loop=loop,
                access_log=None)
