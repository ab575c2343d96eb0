"""The metrics listener: ``/metrics`` on ``server.metrics_host:metrics_port`` only.

A listener of its own, loopback by default, so the public port (and any proxy in front
of it) never serves how long held messages and emergency cases wait (docs/ops/metrics.md).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from chatserver.runtime.server import Server
from chatserver.transport.app import security_headers
from chatserver.transport.keys import APP_KEY

__all__ = ["build_metrics_app"]


async def metrics(request: web.Request) -> web.Response:
    server = request.app[APP_KEY]
    body = generate_latest(server.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_metrics_app(server: Server) -> web.Application:
    """The metrics app for ``server``. It has no start-up or shutdown of its own: the
    public app (``http.build_app``) starts and stops the server."""
    app = web.Application()
    app.on_response_prepare.append(security_headers)  # the same headers as every response
    app[APP_KEY] = server
    app.router.add_get("/metrics", metrics)
    return app
