"""The pure core: no asyncio, no sockets, no clock reads, no logging.

Commands and the current time go in, effects come out; the transport runs them.
"""

from __future__ import annotations

__all__: list[str] = []
