"""The slow tier of moderation, off the event loop: sentence vectors in a worker thread,
batched while messages wait (one flat batch streams the encoder's weights once)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["VectorBatcher"]

MAX_BATCH: Final = 32
"""Lines encoded together at most: a burst waits for at most one such batch."""

Vectors = npt.NDArray[np.float32]


class VectorBatcher:
    """``await vector(text)``: queued; one worker-thread call encodes everything queued.

    The event loop keeps serving other sockets meanwhile (numpy's matrix products
    release the GIL). An encoder error fails each waiting line, which the core then
    scores itself and, failing that, holds (fail closed).
    """

    def __init__(self, embed: Callable[[Sequence[str]], Vectors]) -> None:
        self._embed = embed
        self._pending: list[tuple[str, asyncio.Future[Vectors]]] = []
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        """How many encoder calls were made (bench and tests read it)."""

    async def vector(self, text: str) -> Vectors:
        future: asyncio.Future[Vectors] = asyncio.get_running_loop().create_future()
        self._pending.append((text, future))
        if self._worker is None:
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                self.batches += 1
                try:
                    vectors = await asyncio.to_thread(self._embed, [t for t, _ in batch])
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
