"""Issue 8 acceptance 4: the logs of the whole test run hold no message text, token or
client IP (SECURITY.md SG-23).

Every server a test starts logs somewhere under pytest's base temp directory: in-process
servers to ``in-process.log``, server processes to their ``server-<port>.log``. Clients
in the tests remember what they sent and were given (``remember``). When the session
ends, every log is searched for all of it; a single find fails the run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from chatserver.observability import configure_logging

__all__ = ["remember", "scan", "use_session_log"]

_SECRETS: set[str] = set()
_STREAM: list[TextIO] = []
CLIENT_IP = "127.0.0.1"
"""Every test client connects from here."""


def remember(value: object) -> None:
    """A message text or token the logs must never hold. Short texts ("hi") are left
    out: they occur in ordinary words and prove nothing."""
    if isinstance(value, str) and len(value.strip()) >= 8:
        _SECRETS.add(value)


def start_session_log(path: Path) -> None:
    _STREAM.append(path.open("a", encoding="utf-8"))
    use_session_log()


def use_session_log() -> None:
    """In-process servers log at info level to the session's file (or stdout)."""
    configure_logging("info", stream=_STREAM[-1] if _STREAM else sys.stdout)


def end_session_log() -> None:
    configure_logging("warning", stream=sys.stdout)
    while _STREAM:
        _STREAM.pop().close()


def scan(root: Path) -> list[str]:
    """What was found where: one line per log file and kind of find."""
    found = []
    logs = sorted(root.rglob("*.log"))
    for log in logs:
        text = log.read_text(errors="replace")
        hits = sorted(s for s in _SECRETS if s in text)
        if hits:
            found.append(f"{log}: {len(hits)} sent text(s) or token(s), e.g. {hits[0][:40]!r}")
        if CLIENT_IP in text:
            found.append(f"{log}: the client IP {CLIENT_IP}")
    if not logs:
        found.append(f"no logs under {root}: the scan saw nothing")
    return found
