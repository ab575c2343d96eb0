"""This node's sockets: frames written straight to a socket that keeps up, queued to a
bounded outbox (one writer task per socket) behind one that does not, slow clients cut
rather than waited for (CONTRIBUTING.md § Style), closes that always finish. The outbox
and its writer exist only once a socket first falls behind: most never do, and an idle
connection without them costs about 6 KiB less (bench/README.md § Idle memory).

The one owner of ``Socket`` objects: everything that writes to a client goes through
``Delivery``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from chatserver.config import ServerConfig
from chatserver.core.effects import Audience
from chatserver.core.errors import CloseCode
from chatserver.core.events import Ack, Event, Message
from chatserver.core.ids import ConnId, ParticipantId, RoomId
from chatserver.core.node import ChatCore
from chatserver.core.wire import encode
from chatserver.observability import Metrics, log

__all__ = ["Delivery", "Socket", "reset"]


def text_frame(payload: bytes) -> bytes:
    """The WebSocket frame aiohttp's writer would send for ``payload`` (RFC 6455 § 5.2: FIN,
    opcode text, no mask from a server, no extension bits as compression is off), built
    once per event so that every recipient is one ``transport.write`` of the same bytes."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


@dataclass(slots=True)
class Socket:
    """One WebSocket: written to directly while it keeps up, else through a bounded
    outbox drained by one writer task (CONTRIBUTING.md § Style), both made the first
    time a frame has to wait."""

    ws: web.WebSocketResponse
    outbox_frames: int
    """The outbox's bound: a client this many frames behind is cut."""
    transport: asyncio.Transport | None = None
    """The TCP transport, kept from the start: aiohttp forgets it once closing, and a
    peer that reads nothing must still be cut (``abort``)."""
    outbox: asyncio.Queue[bytes] | None = None
    writer: asyncio.Task[None] | None = None
    closing: bool = False
    close_task: asyncio.Task[None] | None = field(default=None)
    counted: ParticipantId | None = None
    """Whose socket this is, once counted in the cluster's per-person socket count."""
    held: list[tuple[Event, bytes]] | None = None
    """Live frames kept back while this socket's history is being read (welcome), so
    nothing arrives before the welcome or twice."""
    floor: dict[RoomId, int] = field(default_factory=dict)
    """Per room, the last seq this socket was sent as history: live copies are dropped."""

    wrote: bool = False
    """A frame went straight to the transport since the reader last yielded."""

    def put(self, frame: bytes, wire: bytes | None = None) -> bool:
        """Send a frame (``wire``: its ``text_frame``, when already built); False when
        the client has fallen too far behind.

        Written at once, with no task wake-up, when nothing is queued before it and the
        kernel took everything written so far (an empty write buffer). Otherwise it goes
        to the outbox, behind the frames already there, for the writer, which waits on
        aiohttp's flow control: the bytes held for a slow client stay bounded by the
        outbox and one transport buffer, as before, and its overflow still cuts it."""
        if self.closing:
            return True
        transport = self.transport
        if (transport is not None and not self.queued()
                and not transport.get_write_buffer_size() and not self.ws.closed):
            if not transport.is_closing():  # else the peer is gone: its reader ends it
                transport.write(text_frame(frame) if wire is None else wire)
                self.wrote = True
            return True
        if self.outbox is None:
            self.outbox = asyncio.Queue(maxsize=self.outbox_frames)
            self.writer = asyncio.create_task(_write_loop(self.ws, self.outbox))
        try:
            self.outbox.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        return True

    def queued(self) -> bool:
        """Frames wait in the outbox for the writer."""
        return self.outbox is not None and not self.outbox.empty()


async def _write_loop(ws: web.WebSocketResponse, outbox: asyncio.Queue[bytes]) -> None:
    """The writer of a socket's queued frames (CONTRIBUTING.md § Style)."""
    while True:
        frame = await outbox.get()
        try:
            await ws.send_frame(frame, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError):
            return
        finally:
            outbox.task_done()


class Delivery:
    """The open sockets of this node, by connection id."""

    def __init__(self, core: ChatCore, metrics: Metrics, config: ServerConfig) -> None:
        self.core = core
        """Asked who receives an event (``recipients``); never changed from here."""
        self.metrics = metrics
        self.config = config
        self.sockets: dict[ConnId, Socket] = {}
        self._next_conn = 0

    def add(self, sock: Socket) -> ConnId:
        """A new socket's connection id; the caller tells the core it connected."""
        self._next_conn += 1
        cid = ConnId(self._next_conn)
        self.sockets[cid] = sock
        self.metrics.connections.set(len(self.sockets))
        return cid

    def discard(self, cid: ConnId) -> None:
        self.sockets.pop(cid, None)
        self.metrics.connections.set(len(self.sockets))

    def hold(self, cid: ConnId) -> None:
        """Keep live frames back until ``release``: this socket's history is being read."""
        sock = self.sockets.get(cid)
        if sock is not None:
            sock.held = []

    def release(self, cid: ConnId, history: Mapping[RoomId, Sequence[Message]]) -> None:
        """History is sent: send what arrived live meanwhile, minus what it held."""
        sock = self.sockets.get(cid)
        if sock is None:
            return
        for room, msgs in history.items():
            if msgs:
                sock.floor[room] = max(sock.floor.get(room, 0), msgs[-1].seq)
        held, sock.held = sock.held or [], None
        for event, frame in held:
            if isinstance(event, Message) and event.seq <= sock.floor.get(event.room, 0):
                continue
            if not sock.put(frame):
                self._too_slow(cid)
                return

    def emit(self, cid: ConnId, event: Event) -> None:
        if isinstance(event, Ack):  # every send is answered by exactly one ack
            self.metrics.count_ack(event.status)
        sock = self.sockets.get(cid)
        if sock is not None and not sock.put(encode(event)):
            self._too_slow(cid)

    def fan_out(self, room: RoomId, event: Event, audience: Audience,
                target: ParticipantId | None) -> None:
        """Encoded and framed once; the same bytes go to each socket; nobody is awaited."""
        targets = self.core.recipients(room, event, audience, target)
        if not targets:
            return
        frame = encode(event)
        wire = text_frame(frame)
        seq = event.seq if isinstance(event, Message) else None
        for cid in targets:
            sock = self.sockets.get(cid)
            if sock is None:
                continue
            if sock.held is not None:
                sock.held.append((event, frame))
                continue
            if seq is not None and sock.floor and seq <= sock.floor.get(room, 0):
                continue  # this socket had it as history already
            if not sock.put(frame, wire):
                self._too_slow(cid)

    def _too_slow(self, cid: ConnId) -> None:
        self.metrics.queue_drops.inc()
        log.warning("slow_consumer_closed", conn=cid)
        self.close_soon(cid, CloseCode.SLOW, "too slow")

    def close_soon(self, cid: ConnId, code: CloseCode, reason: str = "") -> None:
        sock = self.sockets.get(cid)
        if sock is None or sock.closing:
            return
        sock.closing = True
        sock.close_task = asyncio.create_task(self._close(sock, code, reason))

    async def _close(self, sock: Socket, code: CloseCode, reason: str) -> None:
        outbox = sock.outbox
        if outbox is None:
            pass  # nothing was ever queued
        elif code == CloseCode.SLOW:
            # Its queue is what overflowed: drop what is queued (it resumes by seq).
            while not outbox.empty():
                outbox.get_nowait()
                outbox.task_done()
        else:
            # Let queued frames (the error or notice explaining the close) go first.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(outbox.join(), 2.0)
        # The writer is never cancelled mid-send: aiohttp's drain waiter is shared with
        # close(), and cancelling one cancels the other. The close frame goes out behind
        # whatever the kernel already holds.
        try:
            await asyncio.wait_for(sock.ws.close(code=code, message=reason.encode()[:120]),
                                   self.config.close_deadline_s)
        except (TimeoutError, ConnectionError, RuntimeError, asyncio.CancelledError):
            # A peer that reads nothing never takes the close frame: cut it.
            if sock.transport is not None:
                reset(sock.transport)
        finally:
            if sock.writer is not None:
                sock.writer.cancel()

    def cut_if_unread(self, sock: Socket) -> None:
        """After the handler is done: if the peer still has not taken what we wrote
        (close frame included), abort the transport once ``close_deadline_s`` passes.
        ``transport.close()`` alone waits for ever on a peer that never reads."""
        transport = sock.transport
        if transport is None or transport.get_write_buffer_size() == 0:
            return
        asyncio.get_running_loop().call_later(self.config.close_deadline_s,
                                              reset, transport)

    async def close_all(self, code: CloseCode, reason: str, grace_s: float) -> None:
        """Shutdown: close every socket at once, as ``close_soon`` does (queued frames
        first, then the close frame, the writer never cut mid-send), all within
        ``grace_s`` in all (one by one, each socket waited for its own handshake, and
        a busy node took seconds to say goodbye)."""
        for cid in list(self.sockets):
            self.close_soon(cid, code, reason)
        tasks = [s.close_task for s in self.sockets.values() if s.close_task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)


def reset(transport: asyncio.Transport) -> None:
    """Cut a connection now, freeing what the kernel holds for it. ``abort()`` alone
    closes the descriptor, but the kernel keeps the unsent bytes of an orphaned socket
    (FIN_WAIT1) for minutes while it probes a peer whose window stays shut; a zero
    linger makes the close a reset (RST), so nothing is kept."""
    raw = transport.get_extra_info("socket")
    if raw is not None:
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
