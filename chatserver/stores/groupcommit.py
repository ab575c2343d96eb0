"""Group commit: one writer task takes every write waiting and commits them together.

A batch costs one transaction (one fsync, one hold of the audit chain's lock) whatever
its size, so the store keeps up when many people send at once. Both stores use it; each
supplies ``commit``, which writes a batch in one transaction and returns one result per
item, or raises and leaves nothing of the batch behind. A result that is a ``StoreError``
is raised to that item's caller alone: it was refused, nothing of it was written, and the
rest of its batch was not refused with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from chatserver.core.effects import AuditEntry, StoreOp
from chatserver.core.events import Person
from chatserver.core.ids import MessageId, RoomId
from chatserver.ports import StoreConflict, StoreError

__all__ = ["Append", "GroupCommit"]

MAX_BATCH = 512

Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class Append:
    """A message to store with its audit entry (``Store.append_message``)."""

    room: RoomId
    sender: Person
    msg_id: MessageId
    text: str
    ts: int
    audit: AuditEntry
    also: tuple[StoreOp, ...] = ()


class GroupCommit(Generic[Item]):
    def __init__(self, commit: Callable[[list[Item]], Awaitable[list[object]]],
                 name: str) -> None:
        self._commit, self._name = commit, name
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[object]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._writer = asyncio.create_task(self._loop(), name=self._name)

    @property
    def running(self) -> bool:
        return self._writer is not None and not self._writer.done()

    async def stop(self) -> None:
        """After everything submitted is committed or failed."""
        if self._writer is not None:
            await self._queue.join()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None

    async def submit(self, item: Item) -> object:
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < MAX_BATCH:
                batch.append(self._queue.get_nowait())
            try:
                await self._run(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _run(self, batch: list[tuple[Item, asyncio.Future[object]]]) -> None:
        try:
            results = await self._commit([item for item, _ in batch])
        except asyncio.CancelledError:
            raise
        except StoreConflict as e:
            if len(batch) == 1:
                raise_into(batch, e)
                return
            # One write lost a race: the others in its batch must not fail with it.
            for one in batch:
                await self._run([one])
        except Exception as e:  # the whole batch rolled back: nothing partial
            raise_into(batch, e if isinstance(e, StoreError) else StoreError(str(e)))
        else:
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, StoreError):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)


def raise_into(batch: Sequence[tuple[object, asyncio.Future[object]]], error: Exception
               ) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(error)
