"""The sentence encoder in a process of its own (``moderation.model.encoder = "process"``).

In the server's process the encoder (a numpy forward pass, ~2-3 ms a line) competes with
the event loop for the GIL between its matrix products and for the process's core; in a
process of its own it runs on the machine's other core and the loop only pays for
sending the texts and reading back 2 KiB a line. The child is started with ``spawn`` (a
clean interpreter: no copy of the loop, its sockets or the store's thread) and loads the
same pinned encoder (``SentenceEncoder``: the weight files' hashes checked, one BLAS
thread), so its vectors are the in-thread path's, bit for bit.

Fail closed: a child that dies fails the lines it was encoding (the core holds them and
alerts ops, ``moderation_failed``), the server raises an ops alert ``encoder``, and a
new child is started at once; lines that arrive meanwhile wait for it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Final

import numpy as np

from chatserver.moderation.features import EncoderError, SentenceEncoder
from chatserver.runtime.vectors import Vectors

__all__ = ["EncoderDown", "ProcessEncoder"]

START_TIMEOUT_S: Final = 300.0
"""Loading the weights takes a few seconds; on a machine that is busy, much longer."""
INLINE_TIMEOUT_S: Final = 5.0
"""The rare blocking call (a line the shell did not prepare) waits at most this long."""

_encoder: SentenceEncoder | None = None
"""The child's encoder (one per child process)."""


def _load() -> None:
    global _encoder
    _exit_with_parent()
    _encoder = SentenceEncoder()


def _exit_with_parent() -> None:
    """A server killed outright (SIGKILL, OOM) cannot stop its child: the child watches
    its parent's sentinel and leaves with it, rather than live on as an orphan."""
    parent = multiprocessing.parent_process()
    if parent is None:  # pragma: no cover - always set in a spawned child
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _encode(folded: list[str]) -> Vectors:
    if _encoder is None:  # pragma: no cover - the initializer always ran first
        raise EncoderError("the encoder process has no encoder")
    return _encoder.encode(folded)


class EncoderDown(EncoderError):
    """The encoder process died or is being restarted: this batch has no vectors."""


class ProcessEncoder:
    """One child process with the encoder; ``encode`` (blocking) and ``encode_async``."""

    def __init__(self) -> None:
        # The child reads these when it imports numpy: one BLAS thread (on two cores,
        # more threads cost more than they give; see SentenceEncoder).
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        self._lock = threading.RLock()
        """Held to swap a dead child's pool for a new one (re-entered from ``_submit``)."""
        self._pool = self._start()
        self._ready = threading.Event()
        self.restarts = 0
        """How many times a dead child was replaced (tests and ops read it)."""
        self.closed = False
        self._first = self._warm(self._pool)
        """The child loads while the caller goes on (the heads, the rules): ``wait``."""

    def wait(self, timeout_s: float = START_TIMEOUT_S) -> ProcessEncoder:
        """Block until the first child has loaded the encoder; ``EncoderError`` if it
        could not (the server then refuses to start: fail closed)."""
        try:
            self._first.result(timeout_s)
        except Exception as e:
            self.close()
            raise EncoderError(f"the encoder process did not start: {e}") from e
        return self

    @staticmethod
    def _start() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=1, initializer=_load,
                                   mp_context=multiprocessing.get_context("spawn"))

    def _warm(self, pool: ProcessPoolExecutor) -> Future[Vectors]:
        """The weights loaded and one line encoded: only then is the child ``ready``."""
        future = pool.submit(_encode, ["warm up"])

        def done(f: Future[Vectors]) -> None:
            if pool is self._pool and not f.cancelled() and f.exception() is None:
                self._ready.set()
        future.add_done_callback(done)
        return future

    def _submit(self, folded: Sequence[str]) -> tuple[ProcessPoolExecutor, Future[Vectors]]:
        with self._lock:
            if self.closed:
                raise EncoderDown("the encoder process is stopped")
            pool = self._pool
            try:
                return pool, pool.submit(_encode, list(folded))
            except BrokenProcessPool as e:
                self._replace(pool)
                raise EncoderDown("the encoder process died; a new one is starting") from e

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """Start a new child in place of a dead one (once, whoever notices first)."""
        with self._lock:
            if self._pool is not broken or self.closed:
                return
            self._ready.clear()
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()
            self.restarts += 1
            self._warm(self._pool)

    async def encode_async(self, folded: list[str]) -> Vectors:
        pool, future = self._submit(folded)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool as e:
            self._replace(pool)
            raise EncoderDown("the encoder process died; a new one is starting") from e

    def encode(self, folded: Sequence[str]) -> Vectors:
        """Blocking, for a line the shell did not prepare ahead (as ``SentenceEncoder``
        does in the thread). Raises ``EncoderDown`` rather than wait for a child that
        is still starting: the core then holds the line (fail closed)."""
        if not self._ready.is_set():
            raise EncoderDown("the encoder process is starting")
        pool, future = self._submit(folded)
        try:
            out: Vectors = future.result(INLINE_TIMEOUT_S)
        except BrokenProcessPool as e:
            self._replace(pool)
            raise EncoderDown("the encoder process died; a new one is starting") from e
        except TimeoutError as e:
            raise EncoderDown("the encoder process did not answer in time") from e
        return out.astype(np.float32, copy=False)

    async def pid(self) -> int:
        """The child's process id (tests stop it to see the server recover)."""
        with self._lock:
            pool = self._pool
        return await asyncio.wrap_future(pool.submit(os.getpid))

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._pool.shutdown(wait=False, cancel_futures=True)
