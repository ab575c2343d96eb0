"""The node's two clocks: wall time for what clients and the record see, monotonic time
for waiting."""

from __future__ import annotations

import time

__all__ = ["mono_ms", "now_ms"]


def now_ms() -> int:
    """Wall-clock ms for ``ts`` fields (docs/protocol.md: times are ms since the epoch)."""
    return time.time_ns() // 1_000_000


def mono_ms() -> int:
    """For waiting on a missing seq: a wall-clock step must not shorten the wait."""
    return time.monotonic_ns() // 1_000_000
