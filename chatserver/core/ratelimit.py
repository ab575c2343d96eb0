"""Rate limits with time as an argument (CONTRIBUTING.md § Style)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["SlidingWindow", "TokenBucket"]


@dataclass(slots=True)
class SlidingWindow:
    """At most ``limit`` events in any ``window_ms``: exact, so the 6th send in 10 s fails.

    docs/protocol.md § Limits: ≤ 5 messages per 10 s per participant.
    """

    limit: int
    window_ms: int
    _times: deque[int] = field(default_factory=deque)

    def try_take(self, now_ms: int) -> bool:
        """Record an event at ``now_ms`` if the window has room; False if it has not."""
        if self._times and now_ms < self._times[-1]:
            # The clock stepped back (NTP, SECURITY.md F-14): forget rather than lock a
            # young person out for as long as the step.
            self._times.clear()
        while self._times and now_ms - self._times[0] >= self.window_ms:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now_ms)
        return True


@dataclass(slots=True)
class TokenBucket:
    """A per-connection frame budget (SECURITY.md SEC-20): ``rate`` per second, ``burst`` deep."""

    rate: float
    burst: float
    _tokens: float = -1.0
    _at_ms: int = 0

    def try_take(self, now_ms: int) -> bool:
        if self._tokens < 0:
            self._tokens, self._at_ms = self.burst, now_ms
        elapsed = max(0, now_ms - self._at_ms)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate / 1000)
        self._at_ms = now_ms
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
