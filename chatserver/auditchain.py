"""The audit log's hash chain (SECURITY.md SG-16): h_n = SHA-256(h_{n-1} ‖ entry).

Every store computes each entry's hash from the previous one as it appends, in the
same transaction; ``verify`` recomputes the chain, so a row edited or deleted directly
in the database is found (``chatserver audit verify``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = ["GENESIS", "ChainRow", "chain_hash", "text_digest", "verify"]

GENESIS: Final = "0" * 64
"""The hash before the first entry."""


def text_digest(text: str) -> str:
    """What the chain keeps of held or blocked text, so purging the text keeps it whole."""
    return hashlib.sha256(text.encode()).hexdigest()


def chain_hash(prev: str, ts: int, room: str | None, actor: str, action: str,
               target: str | None, detail_json: str, version: str) -> str:
    """The hash of one entry, chained to ``prev``. Fields are length-prefixed so that no
    two different entries can serialize alike."""
    h = hashlib.sha256(prev.encode())
    for part in (str(ts), room or "", actor, action, target or "", detail_json, version):
        data = part.encode()
        h.update(len(data).to_bytes(4, "big") + data)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class ChainRow:
    id: int
    ts: int
    room: str | None
    actor: str
    action: str
    target: str | None
    detail_json: str
    version: str
    hash: str
    text: str | None = None


def verify(rows: Iterable[ChainRow]) -> tuple[int, int | None]:
    """Check rows in id order; returns (rows checked, id of the first bad row or None)."""
    prev = GENESIS
    n = 0
    for row in rows:
        n += 1
        expected = chain_hash(prev, row.ts, row.room, row.actor, row.action, row.target,
                              row.detail_json, row.version)
        if row.hash != expected or (row.text is not None and text_digest(row.text) !=
                                    json.loads(row.detail_json).get("text_sha256")):
            return n, row.id
        prev = row.hash
    return n, None
