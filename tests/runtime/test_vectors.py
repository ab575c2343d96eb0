"""The slow moderation tier runs off the event loop and batches lines that wait."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from chatserver.runtime.vectors import VectorBatcher, Vectors


class GatedEncoder:
    """An encoder that blocks (in its worker thread) until the test lets it go."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.calls: list[list[str]] = []

    def __call__(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(list(texts))
        self.started.set()
        self.release.wait(30)
        return np.array([[float(len(t))] for t in texts], dtype=np.float32)


async def test_the_loop_keeps_serving_while_the_encoder_works() -> None:
    enc = GatedEncoder()
    batcher = VectorBatcher.in_thread(enc)
    first = asyncio.create_task(batcher.vector("a line that needs a closer look"))
    await asyncio.to_thread(enc.started.wait, 30)
    # The encoder is busy in its thread; other work on the loop still runs.
    other = await asyncio.wait_for(asyncio.sleep(0, result="served"), 5)
    assert other == "served" and not first.done()
    enc.release.set()
    assert (await first)[0] == len("a line that needs a closer look")


async def test_lines_that_wait_are_encoded_together() -> None:
    enc = GatedEncoder()
    batcher = VectorBatcher.in_thread(enc)
    first = asyncio.create_task(batcher.vector("one"))
    await asyncio.to_thread(enc.started.wait, 30)
    waiting = [asyncio.create_task(batcher.vector(t)) for t in ("two", "three", "four")]
    await asyncio.sleep(0)  # let them queue (one loop turn, not a wait for time)
    enc.release.set()
    results = await asyncio.gather(first, *waiting)
    assert [float(r[0]) for r in results] == [3.0, 3.0, 5.0, 4.0]
    assert enc.calls == [["one"], ["two", "three", "four"]]


async def test_an_encoder_error_reaches_every_waiting_line() -> None:
    def broken(texts: Sequence[str]) -> Vectors:
        raise RuntimeError("encoder failed")

    batcher = VectorBatcher.in_thread(broken)
    with pytest.raises(RuntimeError, match="encoder failed"):
        await batcher.vector("anything")
    # The next line gets a fresh try (the worker is not left wedged).
    with pytest.raises(RuntimeError):
        await batcher.vector("again")
