"""What the young person and staff are told in the service's own words: the notices
of ``config.notices`` (each a kind the client knows, with its text)."""

from __future__ import annotations

from chatserver.core.events import Notice
from chatserver.core.ids import CaseId, RoomId
from chatserver.settings import Config

__all__ = ["Notices"]


class Notices:
    """Notices built from the running config (every part words them alike)."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def text(self, kind: str) -> str:
        """The wording of ``kind``; empty if the config has none."""
        return self.config.notices.get(kind, "")

    def notice(self, kind: str, room: RoomId | None = None, *, resources: bool = False,
               case: CaseId | None = None) -> Notice:
        """A notice of ``kind``; ``resources``: with the crisis resources (signposting)."""
        return Notice(kind, self.text(kind), room,
                      self.config.resources if resources else None, case)
