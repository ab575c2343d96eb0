"""Where the aiohttp application keeps its ``Server``: apart from ``app.py`` because
every handler module reads it and ``app.py`` imports every handler module."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from chatserver.runtime.server import Server

__all__ = ["APP_KEY"]

APP_KEY: Final = web.AppKey("server", Server)
"""Where the aiohttp app keeps its ``Server``."""
