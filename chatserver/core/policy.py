"""Decisions the HTTP routes and the CLI ask for: who may join a room under which name,
what a staff account may be called, what a new room is, whether a staff session still
holds. Pure: the shells parse the request and pass what they read; these functions
answer or raise ``ChatError``.

They lived in the route handlers once; here, one rule serves every caller and the core
tests can reach it without a socket.
"""

from __future__ import annotations

import re
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from chatserver.core.effects import RoomRecord
from chatserver.core.errors import ChatError, ErrorCode
from chatserver.core.ids import RoomId
from chatserver.core.room import Room
from chatserver.core.session import Identity
from chatserver.core.vocabulary import RoomKind
from chatserver.moderation.contact import digits_view
from chatserver.moderation.engine import RuleSet
from chatserver.moderation.normalize import normalize, words_view
from chatserver.moderation.rules import Action
from chatserver.settings import RoomsConfig

__all__ = [
    "IMPERSONATED_NAMES", "NAME_CHARS", "NAME_MAX_DIGITS", "PLATFORM_WORDS", "RESERVED_NAMES",
    "ROOM_ID", "STAFF_NAME_CHARS", "STAFF_ROLE_WORDS", "Account", "admit_join",
    "check_display_name", "check_room_fields", "check_staff_display_name", "group_room",
    "is_open_group", "room_profile", "session_current", "staff_shown_name",
]

NAME_CHARS: Final = re.compile(r"^[A-Za-z0-9 _.\-]{1,24}$")
"""docs/protocol.md: 1–24 characters after trimming, letters, digits, spaces, _ - ."""
STAFF_NAME_CHARS: Final = re.compile(r"^[A-Za-z0-9 _.\-'()]{1,32}$")
"""A staff display name (``users add --display-name``): a little longer, and ' ( ) too
("Sam O'Neil", "Sam (facilitator)"); still no @, / or : that an address or a link needs."""
STAFF_ROLE_WORDS: Final = frozenset({
    "facilitator", "facilitators", "counsellor", "counsellors", "counselor", "staff",
    "support",
})
"""This service's own staff roles: kept from young people's names (SG-21), open to staff's
("Facilitator Sam"; the default names in ``ports.ROLE_NAMES``, such as "Support team")."""
IMPERSONATED_NAMES: Final = frozenset({
    "admin", "administrator", "childline", "samaritans", "moderator", "mod", "shout",
    "system", "kooth", "nspcc", "police", "helpline", "official", "modteam", "mods",
    "moderation", "moderators", "safeguarding", "papyrus", "hopeline", "youngminds",
    "nhs", "camhs", "ceop", "barnardos",
})
"""Helplines, other organisations, the moderators and the system: nobody's display name
may look like one, staff's included. A young person trusts a name that says Childline or
"mod team" more than one that says Facilitator, and this service is neither."""
RESERVED_NAMES: Final = IMPERSONATED_NAMES | STAFF_ROLE_WORDS
"""SG-21: no young person may impersonate staff or a helpline, nor a look-alike spelling."""
NAME_MAX_DIGITS: Final = 6
"""A display name with this many digits (also spelt: "oh seven nine ...") could carry a
phone number in pieces (SG-05)."""
PLATFORM_WORDS: Final = frozenset({
    "snap", "snapchat", "insta", "instagram", "ig", "tiktok", "discord", "whatsapp", "kik",
    "telegram", "facebook", "fb", "twitter", "sc", "onlyfans", "signal",
})
"""A display name is no place for a social handle (SG-05): "sn4p jsmith07" is refused."""
ROOM_ID: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}")
"""docs/protocol.md: a room id is lower-case letters, digits, ``-`` and ``_``."""
ADULT_BANDS: Final = ("18-25",)
"""A room for these bands only runs the ``adult`` moderation profile; any room a younger
person may join keeps the default one."""

_LOOKALIKE: Final = str.maketrans({"1": "l", "|": "l", "i": "l", "!": "l", "0": "o"})
"""ASCII look-alikes a name can swap (I/l/1/|, O/0) read as one letter (SG-21)."""


@dataclass(frozen=True, slots=True)
class _NameRule:
    """One audience's name rule: which characters, which words are kept from it, and the
    words that explain a refusal to whoever chose the name."""

    chars: re.Pattern[str]
    reserved: frozenset[str]
    bad_chars: str
    looks_reserved: str
    carries_contact: str
    rules_refuse: str
    skeletons: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "skeletons",
                           frozenset(w.translate(_LOOKALIKE) for w in self.reserved))


_YOUNG_PERSON: Final = _NameRule(
    NAME_CHARS, RESERVED_NAMES,
    "Names can be 1 to 24 letters, numbers, spaces, dots, dashes or underscores.",
    "That name is kept for staff. Please pick another.",
    "Please leave social media names and numbers out of your display name, to keep you "
    "safe.",
    "Please pick a different name.")
_STAFF: Final = _NameRule(
    STAFF_NAME_CHARS, IMPERSONATED_NAMES,
    "A staff display name can be 1 to 32 letters, numbers, spaces and . - _ ' ( ).",
    "A staff display name must not look like a helpline, another organisation, the "
    "moderators or the system (Childline, Samaritans, Shout, mod team, ...); role words "
    "such as 'Facilitator Sam' are fine.",
    "A staff display name must not carry a phone number, an email address or a social "
    "media handle.",
    "The message rules would hide part of that display name from young people (a "
    "spelt-out address, a link, or words they would not see in a message); please choose "
    "another.")


def _name_views(name: str) -> list[str]:
    """The words view of the confusable skeleton, and the same with look-alike letters
    read as one ("ChildIine", "Chi1dline", "M0d team"; issue 13 § 4)."""
    folded = normalize(name).folded
    return [words_view(folded), words_view(folded.translate(_LOOKALIKE))]


def _looks_reserved(name: str, rule: _NameRule) -> bool:
    views = _name_views(name)
    # A short reserved word as a word of its own ("Sam the mod"): inside the joined
    # letters only the longer words are looked for, or "modern" would be refused.
    if any(t.translate(_LOOKALIKE) in rule.skeletons for v in views for t in v.split()):
        return True
    plain, swapped = ("".join(v.split()) for v in views)
    skeleton = swapped.translate(_LOOKALIKE)
    for joined, reserved in ((plain, rule.reserved), (skeleton, rule.skeletons)):
        if joined in reserved or any(w in joined for w in reserved if len(w) > 3):
            return True
    return False


def _names_a_platform(name: str) -> bool:
    return any(token in PLATFORM_WORDS for view in _name_views(name) for token in view.split())


def _check_name(name: str, rules: RuleSet, rule: _NameRule) -> None:
    if not rule.chars.match(name):
        raise ChatError(ErrorCode.BAD_REQUEST, rule.bad_chars)
    if _looks_reserved(name, rule):
        raise ChatError(ErrorCode.BAD_REQUEST, rule.looks_reserved)
    spoken = sum(len(r.digits) for r in digits_view(normalize(name).folded))
    if _names_a_platform(name) or spoken >= NAME_MAX_DIGITS:
        raise ChatError(ErrorCode.BAD_REQUEST, rule.carries_contact)
    # A participant's message rules, the strictest: what they would mask in a message
    # (a spelt-out address, abuse) is no better in a name every young person sees.
    if rules.check(name, "participant").action >= Action.MASK:
        raise ChatError(ErrorCode.BAD_REQUEST, rule.rules_refuse)


def check_display_name(name: str, rules: RuleSet) -> None:
    """A young person's display name, already NFC-normalized and trimmed.

    Raises:
        ChatError: ``bad_request`` with the words the join page shows, for a name that
            breaks the character rules, looks like staff or a helpline (SG-21), carries
            a social handle or a phone number in pieces (SG-05), or that a participant's
            message rules would mask or worse.
    """
    _check_name(name, rules, _YOUNG_PERSON)


def check_staff_display_name(name: str, rules: RuleSet) -> None:
    """A staff account's display name, what young people see in rooms (trimmed).

    The young person's rule, except that staff may use this service's role words
    (``STAFF_ROLE_WORDS``: "Facilitator Sam", "Support team") and a few more characters
    (``STAFF_NAME_CHARS``). Still nobody's name may look like a helpline, another
    organisation, the moderators or the system, or carry contact details (SG-05, SG-21):
    a young person takes a staff member's name on trust.

    Raises:
        ChatError: ``bad_request`` with words for the operator choosing the name.
    """
    if "@" in name:  # an address or a handle, said plainly rather than as a bad character
        raise ChatError(ErrorCode.BAD_REQUEST, _STAFF.carries_contact)
    _check_name(name, rules, _STAFF)


def staff_shown_name(display_name: str, role_name: str, rules: RuleSet) -> str:
    """The name rooms show for a staff account: its display name while
    ``check_staff_display_name`` passes it, else ``role_name`` (a name stored before the
    rule, or written into the store by hand, never reaches a room)."""
    if not display_name:
        return role_name
    try:
        check_staff_display_name(display_name, rules)
    except ChatError:
        return role_name
    return display_name


def is_open_group(room: Room | None) -> bool:
    """A group room still open: the only kind anyone may pick, join or read about."""
    return room is not None and room.kind == RoomKind.GROUP and not room.closed


def admit_join(room: Room | None, name: str, band: str, bands: Sequence[str],
               shown: Identity | None) -> Room:
    """Whether a young person may join ``room`` as ``name`` in age band ``band``.

    Args:
        room: The room asked for, None when there is no such room.
        name: The display name, already passed by ``check_display_name``.
        band: The age band asked for.
        bands: The age bands configured (``rooms.age_bands``).
        shown: A participant token the client also showed, verified by the shell (a
            client asking for a fresh identity with its old one), or None.

    Returns:
        The room to issue a token for.

    Raises:
        ChatError: ``not_found``, ``bad_request``, ``forbidden`` (another age group; a
            removal) or ``conflict`` (the name is in use on some node).
    """
    if room is None or not is_open_group(room):
        raise ChatError(ErrorCode.NOT_FOUND, "No such room.")
    if band not in bands:
        raise ChatError(ErrorCode.BAD_REQUEST, "Unknown age band.")
    if band not in room.age_bands:
        raise ChatError(ErrorCode.FORBIDDEN, "This room is for a different age group.")
    removed_token = shown is not None and shown.room == room.id and shown.id in room.removed
    if room.name_removed(name) or removed_token:
        # Issue 14: a removal sticks for the room's life, not only for one token.
        raise ChatError(ErrorCode.FORBIDDEN, "A facilitator has asked you to leave this "
                                             "room for now. The 'Get help now' options are "
                                             "always there for you.")
    if any(p.name.casefold() == name.casefold() for p in room.present()):  # any node
        raise ChatError(ErrorCode.CONFLICT, "Someone is already using that name here.")
    return room


def check_room_fields(title: str, bands: object, rooms: RoomsConfig) -> tuple[str, ...]:
    """A new room's title (trimmed) and age bands, as ``POST /api/rooms`` sent them.

    Returns:
        The age bands, typed.

    Raises:
        ChatError: ``bad_request`` for an empty or long title, or bands that are not a
            non-empty list of configured bands.
    """
    if not title or len(title) > 80:
        raise ChatError(ErrorCode.BAD_REQUEST, "A room needs a title of up to 80 characters.")
    if not isinstance(bands, list) or not bands or \
            any(b not in rooms.age_bands for b in bands):
        raise ChatError(ErrorCode.BAD_REQUEST, "age_bands must be a list of configured bands.")
    return tuple(bands)


def room_profile(bands: Sequence[str]) -> str:
    """The moderation profile of a group room for these age bands."""
    return "adult" if tuple(bands) == ADULT_BANDS else "default"


def group_room(rid: str, title: str, bands: tuple[str, ...], rooms: RoomsConfig,
               existing: Container[str]) -> RoomRecord:
    """The record of a new group room, its fields passed by ``check_room_fields``.

    Raises:
        ChatError: ``bad_request`` for an id outside ``ROOM_ID``, ``conflict`` for an id
            in ``existing``.
    """
    if not ROOM_ID.fullmatch(rid):
        raise ChatError(ErrorCode.BAD_REQUEST, "Room ids are lower-case letters, digits, - "
                                               "and _.")
    if rid in existing:
        raise ChatError(ErrorCode.CONFLICT, "That room already exists.")
    return RoomRecord(RoomId(rid), title, bands, room_profile(bands), RoomKind.GROUP, False, 0,
                      {}, (), rooms.require_facilitator)


class Account(Protocol):
    """What a session check reads of a staff account (``ports.UserRow``)."""

    @property
    def disabled(self) -> bool: ...

    @property
    def version(self) -> int: ...


def session_current(ident: Identity, user: Account | None) -> bool:
    """A staff token is good while its account exists, is enabled and has the version
    the token was issued under (logout, reset and disable move it; issue 14)."""
    return user is not None and not user.disabled and user.version == ident.version
