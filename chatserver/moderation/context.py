"""Conversation context (issue 13 § 2): what one message alone cannot show.

Two kinds of per-sender memory, both bounded and pure (time is an argument:
CONTRIBUTING.md § Style):

- **A short window** of a sender's recently delivered messages in a room (the last
  ``messages - 1`` within ``window_ms``). ``joined`` returns them with the new message as
  one text for the rules to check, and ``Joined.crossing`` tells which of its hits span
  an earlier fragment *and* the new message: a phone number sent as "07700", "900", "41",
  "7" is caught by the "7", and the fragments it covers are named so the core can redact
  them (``to_redact``; a fragment whose seq the store has not assigned yet is redacted
  when ``delivered`` learns it).
- **Grooming signals** over a longer window (``grooming_ms``): each message's signals
  (``Rule.signal`` of its hits, or ``model`` for a high grooming head score) are kept
  per sender; ``grooming`` reports when a line brings the distinct signals to
  ``signals``, and whether this line follows such a line (the core holds both).

The core owns the one ``Conversation`` of a node (``ChatCore.context``); nothing else
keeps this state. Memory is bounded: fragments per window and their joined length,
windows and signal sets per sender (least recently active dropped past ``senders``),
and everything expires with its window (``prune``, from the core's timer tick).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "JOIN",
    "MAX_JOINED_CHARS",
    "MODEL_SIGNAL",
    "ContextStats",
    "Conversation",
    "Fragment",
    "Grooming",
    "Joined",
]

JOIN: Final = " "
"""Fragments are joined with one space: the rules already read across spaces and
separators (``07700 900 41 7`` is one phone number to the detector)."""
MAX_JOINED_CHARS: Final = 400
"""Earlier text joined before a new message (whole fragments, newest first). A split
detail is made of short pieces; this bound keeps the joined check to the cost of one
ordinary message whatever the window holds (a message alone may be 2,000 characters)."""
MODEL_SIGNAL: Final = "model"
"""The signal a grooming head score at or over ``moderation.grooming_score`` counts as."""


@dataclass(slots=True)
class Fragment:
    """One delivered message of a sender, as the window keeps it."""

    msg_id: str
    text: str
    ts: int
    seq: int | None = None
    """The room seq the store gave it; None until ``delivered``."""
    redact: int | None = None
    """When a split detail covering it was found: redact it (at once, or when its seq
    is known)."""
    because: tuple[str, ...] = ()
    """The rules that found it."""
    redacted: bool = False
    """A redaction of it was written (``redacted``): never asked for twice."""


@dataclass(frozen=True, slots=True)
class Joined:
    """A sender's recent fragments and a new message, as one text."""

    text: str
    fragments: tuple[Fragment, ...]
    starts: tuple[int, ...]
    """Where each fragment starts in ``text``."""
    current: int
    """Where the new message starts in ``text`` (it runs to the end)."""

    def _covered(self, span: tuple[int, int]) -> list[Fragment]:
        s, e = span
        return [f for f, at in zip(self.fragments, self.starts, strict=True)
                if s < at + len(f.text) and e > at]

    def crossing(self, spans: Iterable[tuple[int, int]]) -> tuple[Fragment, ...]:
        """The earlier fragments covered by the spans that also reach into the new
        message; empty when no span does (a match inside one earlier fragment was
        decided when it was sent; one inside the new message is its own verdict's)."""
        out: list[Fragment] = []
        for span in spans:
            if span[1] > self.current:
                out += [f for f in self._covered(span) if f not in out]
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Grooming:
    """What a sender's signals add up to after one message."""

    signals: tuple[str, ...]
    """Distinct signals within the window, this message's included (sorted)."""
    carried: tuple[str, ...]
    """Signals this message carries."""
    reached: bool
    """This message carries a signal and the distinct ones reach the threshold: hold it
    and alert facilitators."""
    after: bool
    """This message follows a line that ``reached``: hold it too."""


@dataclass(frozen=True, slots=True)
class ContextStats:
    senders: int
    fragments: int
    grooming: int


@dataclass(slots=True)
class _Signals:
    seen: dict[str, int] = field(default_factory=dict)
    """Signal → when it was last given (ms)."""
    hold_next: int | None = None
    """When a line reached the threshold: the next one is held (within the window)."""


class Conversation:
    """Per-sender conversation context of one node.

    Args:
        messages: messages checked together, the new one included (``window_messages``).
        window_ms: fragments older than this are not joined (``window_s``).
        grooming_ms: how long a grooming signal counts (``grooming_window_s``).
        signals: distinct signals that hold and alert (``grooming_signals``).
        senders: windows and signal sets kept at most (each kind), least recent dropped.
    """

    def __init__(self, messages: int = 4, window_ms: int = 60_000,
                 grooming_ms: int = 1_800_000, signals: int = 3, senders: int = 10_000
                 ) -> None:
        self.messages = max(1, messages)
        self.window_ms = window_ms
        self.grooming_ms = grooming_ms
        self.signals = max(1, signals)
        self.senders = max(1, senders)
        self._windows: OrderedDict[str, dict[str, deque[Fragment]]] = OrderedDict()
        """Sender → room → their recent fragments there."""
        self._grooming: OrderedDict[str, _Signals] = OrderedDict()

    # ------------------------------------------------------------ the window
    def _window(self, room: str, sender: str, now_ms: int) -> deque[Fragment] | None:
        rooms = self._windows.get(sender)
        window = rooms.get(room) if rooms else None
        if rooms is None or window is None:
            return None
        while window and now_ms - window[0].ts > self.window_ms:
            window.popleft()
        if not window:
            del rooms[room]
            if not rooms:
                del self._windows[sender]
            return None
        return window

    def joined(self, room: str, sender: str, text: str, now_ms: int) -> Joined | None:
        """The sender's recent fragments in ``room`` and ``text`` as one text, or None
        when there are none (then the message's own verdict is the whole story)."""
        window = self._window(room, sender, now_ms)
        if window is None:
            return None
        picked: list[Fragment] = []
        size = 0
        for frag in reversed(window):
            size += len(frag.text) + len(JOIN)
            if size > MAX_JOINED_CHARS:
                break
            picked.append(frag)
        if not picked:
            return None
        picked.reverse()
        starts: list[int] = []
        at = 0
        for frag in picked:
            starts.append(at)
            at += len(frag.text) + len(JOIN)
        joined = JOIN.join(f.text for f in picked) + JOIN + text
        return Joined(joined, tuple(picked), tuple(starts), at)

    def add(self, room: str, sender: str, msg_id: str, text: str, now_ms: int) -> None:
        """A message of ``sender`` is on its way to the room: it joins their window."""
        if self.messages < 2:
            return
        rooms = self._windows.setdefault(sender, {})
        window = rooms.get(room)
        if window is None:
            window = rooms[room] = deque(maxlen=self.messages - 1)
        window.append(Fragment(msg_id, text, now_ms))
        self._windows.move_to_end(sender)
        while len(self._windows) > self.senders:
            self._windows.popitem(last=False)

    def delivered(self, sender: str, msg_id: str, seq: int | None) -> Fragment | None:
        """The store gave a fragment its seq (None: its write failed, so it leaves the
        window). Returns the fragment when it is already known to be part of a split
        detail: the caller redacts it now (``Fragment.redact`` says since when, and
        ``because`` which rules), then calls ``redacted``."""
        for window in self._windows.get(sender, {}).values():
            frag = next((f for f in window if f.msg_id == msg_id), None)
            if frag is None:
                continue
            if seq is None:
                window.remove(frag)
                return None
            frag.seq = seq
            return frag if frag.redact is not None and not frag.redacted else None
        return None

    def to_redact(self, fragments: Sequence[Fragment], now_ms: int,
                  because: Sequence[str]) -> tuple[int, ...]:
        """Mark fragments of a split detail; returns the seqs to redact now. A fragment
        without a seq yet is redacted when ``delivered`` gives it one."""
        for frag in fragments:
            if frag.redact is None:
                frag.redact, frag.because = now_ms, tuple(because)
        return tuple(f.seq for f in fragments if f.seq is not None and not f.redacted)

    def redacted(self, sender: str, seqs: Iterable[int]) -> None:
        """The redactions are written: they are not asked for again."""
        wanted = set(seqs)
        for window in self._windows.get(sender, {}).values():
            for frag in window:
                if frag.seq in wanted:
                    frag.redacted = True

    # ------------------------------------------------------- grooming signals
    def grooming(self, sender: str, carried: Iterable[str], now_ms: int) -> Grooming:
        """Record one message's signals; say whether the sender's signals together
        (within ``grooming_ms``) mean this line, or this line as the one after, is held.
        Call it once per message of a participant."""
        kinds = tuple(sorted(set(carried)))
        state = self._grooming.get(sender)
        if state is None:
            if not kinds:
                return Grooming((), (), False, False)
            state = self._grooming[sender] = _Signals()
        self._expire(state, now_ms)
        after = state.hold_next is not None
        state.hold_next = None
        for kind in kinds:
            state.seen[kind] = now_ms
        signals = tuple(sorted(state.seen))
        reached = bool(kinds) and len(signals) >= self.signals
        if reached:
            state.hold_next = now_ms
        if state.seen or state.hold_next is not None:
            self._grooming.move_to_end(sender)
            while len(self._grooming) > self.senders:
                self._grooming.popitem(last=False)
        else:
            del self._grooming[sender]
        return Grooming(signals, kinds, reached, after)

    def _expire(self, state: _Signals, now_ms: int) -> None:
        for kind in [k for k, ts in state.seen.items() if now_ms - ts > self.grooming_ms]:
            del state.seen[kind]
        if state.hold_next is not None and now_ms - state.hold_next > self.grooming_ms:
            state.hold_next = None

    # ------------------------------------------------------------- bounding
    def forget(self, sender: str) -> None:
        """A sender left (or was removed): nothing of theirs is kept."""
        self._windows.pop(sender, None)
        self._grooming.pop(sender, None)

    def prune(self, now_ms: int) -> None:
        """Drop what has expired (the core calls this from its timer tick)."""
        for sender, rooms in list(self._windows.items()):
            for room in list(rooms):
                self._window(room, sender, now_ms)
        for sender, state in list(self._grooming.items()):
            self._expire(state, now_ms)
            if not state.seen and state.hold_next is None:
                del self._grooming[sender]

    def statistics(self) -> ContextStats:
        return ContextStats(senders=len(self._windows),
                            fragments=sum(len(w) for rooms in self._windows.values()
                                          for w in rooms.values()),
                            grooming=len(self._grooming))
