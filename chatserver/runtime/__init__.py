"""The node's runtime: runs the core's effects against the store, the broker and this
node's sockets, and owns the timers. No HTTP here: ``transport/`` parses requests and
frames and calls in.

``server.py`` is the one effect interpreter; ``delivery.py`` owns the sockets (fan-out,
the writer, slow clients); ``history.py`` reads what a welcome or a join sends first;
``cluster.py`` is this node among others (sync, seq holes, heartbeats).
"""

from __future__ import annotations

__all__: list[str] = []
