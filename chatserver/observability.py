"""structlog JSON logs and the Prometheus metrics ops scrape.

Logs never carry message text, tokens or IP addresses (SECURITY.md SG-23, SEC-26):
JSON encoding keeps every event on one line whatever a display name contains.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Final, TextIO

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chatserver.core.commands import Urgency
from chatserver.core.effects import Measure, Measurement

if TYPE_CHECKING:
    from chatserver.core.node import Waiting

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


HELD_BUCKETS: Final = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0)
"""Held → decision. 120 s is a bound: the alert rule's "waiting > 2 min" is the SLO."""
CLAIM_BUCKETS: Final = (30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
                        14400.0)
"""Escalation → claim. 120 s is ``rooms.emergency_unclaimed_s``'s default."""
ACK_BUCKETS: Final = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
"""Alert raised → acknowledged."""
DECISIONS: Final = ("approve", "reject")


class Metrics:
    """One registry per server, so tests can run several servers in one process.

    The safeguarding series (docs/ops/metrics.md) are labelled by room profile and, for
    decisions and claims, one of a fixed few values: never a person, a room id or text.
    """

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
        # ---- safeguarding (docs/ops/metrics.md)
        self.held_decision = Histogram(
            "chat_held_decision_seconds",
            "Held message: from being held to a facilitator's approve or reject",
            ["profile", "decision"], registry=r, buckets=HELD_BUCKETS)
        self.case_claim = Histogram(
            "chat_case_claim_seconds", "Case: from escalation to a counsellor's claim",
            ["profile", "urgency"], registry=r, buckets=CLAIM_BUCKETS)
        self.alert_ack = Histogram(
            "chat_alert_ack_seconds", "Alert: from being raised to staff acknowledging it",
            ["profile"], registry=r, buckets=ACK_BUCKETS)
        self.unanswered = Counter(
            "chat_unanswered_posts",
            "Young people's posts nobody else answered within rooms.unanswered_s",
            ["profile"], registry=r)
        self.signposts = Counter(
            "chat_signposts", "Crisis support shown to the person who wrote something worrying",
            ["profile"], registry=r)

    def count_ack(self, status: str) -> None:
        """One send's outcome, ``chat_messages_total{outcome}``: call once for each
        ``ack`` a sender is sent (``sent``, ``held``, ``blocked``, ``rejected``).
        (``chat_send_ack_seconds`` is observed by the reader loop, ``transport/ws.py``.)"""
        self.messages.labels(status).inc()

    def record(self, m: Measure) -> None:
        """A safeguarding measurement the core emitted (``Measure``)."""
        if m.what is Measurement.SIGNPOSTED:
            self.signposts.labels(m.profile).inc()
        elif m.what is Measurement.UNANSWERED:
            self.unanswered.labels(m.profile).inc()
        elif m.seconds is None:
            return  # a timed measurement without its time: nothing honest to record
        elif m.what is Measurement.HELD_DECIDED:
            self.held_decision.labels(m.profile, m.kind).observe(m.seconds)
        elif m.what is Measurement.CASE_CLAIMED:
            self.case_claim.labels(m.profile, m.kind).observe(m.seconds)
        elif m.what is Measurement.ALERT_ACKNOWLEDGED:
            self.alert_acknowledged(m.profile, m.seconds)

    def alert_acknowledged(self, profile: str, seconds: float) -> None:
        """The hook for alert acknowledgement: call it once per alert, when staff first
        acknowledge it, on the node where the acknowledgement was made durable.

        Args:
            profile: the profile of the alert's room (``Room.profile``), never its id.
            seconds: from the alert being raised to the acknowledgement (not negative).

        From the pure core, emit ``Measure(Measurement.ALERT_ACKNOWLEDGED, profile,
        seconds)`` after the acknowledgement's ``Persist`` instead: ``Server.run`` brings
        it here. Until acknowledgements exist nothing calls this, and
        ``chat_alert_ack_seconds`` has no series.
        """
        self.alert_ack.labels(profile).observe(max(0.0, seconds))

    def know(self, profiles: Iterable[str]) -> None:
        """Start the safeguarding counters at 0 for every room profile in use, so that
        the first unanswered post after a restart shows in ``increase()``. (Not the
        acknowledgement histogram: it stays empty until something acknowledges.)"""
        for p in profiles:
            self.unanswered.labels(p)
            self.signposts.labels(p)
            for decision in DECISIONS:
                self.held_decision.labels(p, decision)
            for urgency in Urgency:
                self.case_claim.labels(p, urgency.value)

    def watch(self, snapshot: Callable[[], Waiting]) -> None:
        """Serve the waiting gauges from ``snapshot``, read at each scrape (the oldest
        held message's age is as old as the scrape, not the last timer tick)."""
        self.registry.register(_WaitingCollector(snapshot))


class _WaitingCollector(Collector):
    """Gauges of what waits for staff, computed at scrape time from the core."""

    def __init__(self, snapshot: Callable[[], Waiting]) -> None:
        self.snapshot = snapshot

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        by_profile, by_case = ["profile"], ["profile", "urgency"]
        return (
            GaugeMetricFamily("chat_held_waiting", "Held messages waiting for a decision",
                              labels=by_profile),
            GaugeMetricFamily("chat_held_oldest_seconds",
                              "Age of the oldest held message waiting for a decision "
                              "(0: none)", labels=by_profile),
            GaugeMetricFamily("chat_cases_unclaimed", "Open cases no counsellor has claimed",
                              labels=by_case),
            GaugeMetricFamily("chat_case_oldest_unclaimed_seconds",
                              "Age of the oldest open case no counsellor has claimed (0: none)",
                              labels=by_case),
        )

    def describe(self) -> Iterator[Metric]:
        # Without this, registering would call collect() (and the snapshot) at once.
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        waiting = self.snapshot()
        held, held_age, cases, case_age = self._families()
        for profile, (count, oldest) in sorted(waiting.held.items()):
            held.add_metric([profile], count)
            held_age.add_metric([profile], oldest)
        for (profile, urgency), (count, oldest) in sorted(waiting.unclaimed.items()):
            cases.add_metric([profile, urgency], count)
            case_age.add_metric([profile, urgency], oldest)
        return iter((held, held_age, cases, case_age))
