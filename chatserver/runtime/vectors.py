"""The slow tier of moderation, off the event loop: sentence vectors in a worker thread or
a process of its own (``moderation.model.encoder``), batched while messages wait (one
flat batch streams the encoder's weights once)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["VectorBatcher", "Vectors"]

MAX_BATCH: Final = 32
"""Lines encoded together at most: a burst waits for at most one such batch."""

Vectors = npt.NDArray[np.float32]


class VectorBatcher:
    """``await vector(text)``: queued; one encoder call encodes everything queued.

    While a batch is being encoded the lines that arrive wait and go together in the
    next (the encoder's flat batch costs far less per line than one call each). The
    same text queued twice is encoded once. An encoder error fails each waiting line,
    which the core then scores itself and, failing that, holds (fail closed).
    """

    def __init__(self, embed: Callable[[list[str]], Awaitable[Vectors]]) -> None:
        self._embed = embed
        self._pending: dict[str, asyncio.Future[Vectors]] = {}
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        """How many encoder calls were made (bench and tests read it)."""

    @classmethod
    def in_thread(cls, embed: Callable[[Sequence[str]], Vectors]) -> VectorBatcher:
        """A blocking encoder run in a worker thread: the event loop keeps serving other
        sockets meanwhile (numpy's matrix products release the GIL), but the encoder
        still shares the process's core with it."""
        return cls(lambda texts: asyncio.to_thread(embed, texts))

    async def vector(self, text: str) -> Vectors:
        future = self._pending.get(text)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[text] = future
        if self._worker is None:
            self._worker = asyncio.create_task(self._drain())
        # Shielded: one waiter giving up (its socket closed) must not cancel its twin's.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = list(self._pending.items())[:MAX_BATCH]
                for text, _ in batch:
                    del self._pending[text]
                self.batches += 1
                try:
                    vectors = await self._embed([t for t, _ in batch])
                except Exception as e:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for (_, future), vec in zip(batch, vectors, strict=True):
                    if not future.done():
                        future.set_result(vec)
        finally:
            self._worker = None
