"""structlog JSON logs and the Prometheus metrics ops scrape.

Logs never carry message text, tokens or IP addresses (SECURITY.md SG-23, SEC-26):
JSON encoding keeps every event on one line whatever a display name contains.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Final, TextIO

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics", "announce", "configure_logging", "log"]

log = structlog.get_logger("chatserver")


class _SafeWriter:
    """A log sink that never aborts a request (F-11): failures are counted, not raised."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.dropped = 0

    def msg(self, message: str) -> None:
        try:
            self.stream.write(message + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            self.dropped += 1

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


_SINK: Final = _SafeWriter(sys.stdout)


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    if stream is not None:
        _SINK.stream = stream
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=lambda *_: _SINK,
        cache_logger_on_first_use=False,
    )


def announce(text: str) -> None:
    """Print for the person who started the server (the ready banner, demo passwords)
    without ever failing or blocking startup: stdout on a full device (ENOSPC), a closed
    pipe or a detached terminal is counted as a dropped line, like the logs (F-11).
    ``print`` would raise out of the startup hook and the server would never listen."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        _SINK.dropped += 1
        # What could not be flushed stays in the buffer and would fail again at every
        # later flush (and at exit): drop it.
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces stdout for good


def dropped_log_lines() -> int:
    return _SINK.dropped


class Metrics:
    """One registry per server, so tests can run several servers in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("chat_connections", "Open WebSocket connections", registry=r)
        self.rooms = Gauge("chat_rooms", "Rooms known to this node", registry=r)
        self.held = Gauge("chat_held_messages", "Messages waiting for review", registry=r)
        self.messages = Counter("chat_messages", "Sends by outcome", ["outcome"], registry=r)
        self.send_ack = Histogram(
            "chat_send_ack_seconds", "Time from a send frame to its ack", registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
        self.queue_drops = Counter("chat_slow_consumer_closes",
                                   "Sockets closed 1013 because their queue overflowed",
                                   registry=r)
        self.no_origin = Counter("chat_handshakes_without_origin",
                                 "WebSocket handshakes with no Origin (non-browser clients)",
                                 registry=r)
        self.ops_alerts = Counter("chat_ops_alerts", "Alerts for ops", ["kind"], registry=r)
        self.store_errors = Counter("chat_store_errors", "Store writes that failed", registry=r)

    def observe_ack(self, seconds: float, outcome: str) -> None:
        self.send_ack.observe(seconds)
        self.messages.labels(outcome).inc()


def bind(**kw: Any) -> None:
    structlog.contextvars.bind_contextvars(**kw)
