"""Repeated audit events summarised per window (issue 14). Pure: time is an argument.

A burst of the same kind of event (3,000 failed logins in 1.3 s; 100 forbidden staff
commands from one participant) must not add a row each. Per key, the first event of
each kind in a window is written on its own (so the audit shows at once that it began);
when the window ends, one summary counts everything in it. Failed logins
(``transport/throttle.py``, one key) and denied commands (``core/guard.py``, one key per
participant and room) both count through this.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Final

__all__ = ["NAMES_KEPT", "AuditSummary", "Summary"]

NAMES_KEPT: Final = 20
"""A summary names at most this many distinct things (accounts, commands) and counts
the rest."""


@dataclass(slots=True)
class _Window:
    since: int
    counts: dict[str, int] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    other_names: int = 0


@dataclass(frozen=True, slots=True)
class Summary:
    """An ended window of one key."""

    key: Hashable
    since: int
    """When its first event happened."""
    counts: dict[str, int]
    """Events by kind."""
    names: tuple[str, ...]
    """Up to ``NAMES_KEPT`` distinct names seen (sorted)."""
    other_names: int
    """Events whose name was not kept."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class AuditSummary:
    """Windows of counted events, one per key, each ``window_ms`` from its first event."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._windows: dict[Hashable, _Window] = {}

    def count(self, key: Hashable, kind: str, name: str, now_ms: int) -> bool:
        """Count one event. Returns True when it is the first of its kind in its key's
        window: the caller writes it as an entry of its own (the rest wait for the
        summary). Call ``due`` first, so an ended window is summarised before a new one
        begins."""
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(now_ms)
        if name in window.names or len(window.names) < NAMES_KEPT:
            window.names.add(name)
        else:
            window.other_names += 1
        window.counts[kind] = window.counts.get(kind, 0) + 1
        return window.counts[kind] == 1

    def due(self, now_ms: int, force: bool = False) -> list[Summary]:
        """The windows that have ended (every window, ``force``: shutting down), which
        are then forgotten. A window whose only event was already written on its own is
        forgotten without a summary (``Summary.total`` 1: the caller skips it)."""
        ended = [k for k, w in self._windows.items()
                 # A clock stepping back (F-14) ends a window rather than stretching it.
                 if force or not 0 <= now_ms - w.since < self.window_ms]
        out = []
        for key in ended:
            w = self._windows.pop(key)
            out.append(Summary(key, w.since, dict(w.counts), tuple(sorted(w.names)),
                               w.other_names))
        return out

    def __len__(self) -> int:
        return len(self._windows)
