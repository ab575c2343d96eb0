"""The settings schema: frozen dataclasses, every default with its reason. Pure: no
file or environment is read here, so the core may take a ``Config`` as it is.

``chatserver/config.py`` builds one from ``config.toml`` and ``CHATSERVER_*`` variables
(and re-exports these names); ``config.toml`` documents the same keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from chatserver.core.events import Resource

__all__ = [
    "DEFAULT_EMERGENCY", "DEFAULT_NOTICES", "DEFAULT_RESOURCES", "AuthConfig", "BrokerConfig",
    "Config", "LimitsConfig", "ModelConfig", "ModerationConfig", "RetentionConfig", "RoomSeed",
    "RoomsConfig", "ServerConfig", "StoreConfig", "packaged",
]


def packaged(name: str) -> Path:
    """A directory shipped inside the package (``importlib.resources``): ``client_web``
    (the pages) or ``moderation_rules`` (the default rule sets). Found the same from a
    source tree, an editable install or a wheel."""
    return Path(str(resources.files("chatserver").joinpath(name)))


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "data"
    allowed_origins: tuple[str, ...] = ()
    """Exact scheme://host[:port] origins besides our own (same-origin is always allowed)."""
    hello_timeout_s: float = 10.0
    """docs/protocol.md § WebSocket: the first frame must be hello within 10 s, else 4001."""
    heartbeat_s: float = 20.0
    """aiohttp ping interval; a dead peer is closed after a missed pong (SEC-24)."""
    outbox_frames: int = 256
    """Per-socket queue; a client that falls this far behind is closed 1013 (FL-06)."""
    shutdown_grace_s: float = 5.0
    close_deadline_s: float = 2.0
    """A closed socket whose peer still has not taken our bytes after this long is cut
    (transport aborted): a peer that never reads must not keep kernel buffers and a file
    descriptor for ever (issue 14)."""
    tick_s: float = 1.0
    """How often timers (mute expiry, unanswered, break reminders) are checked."""
    hsts: bool = False
    """Send Strict-Transport-Security; turn on when served over TLS (SEC-29)."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks (``127.0.0.1``, ``10.0.0.0/8``, ``::1``) of the reverse
    proxies in front: only a TCP peer listed here is believed about the client's address,
    scheme and host (``X-Forwarded-For/Proto/Host``, issue 15). Empty: nobody is, and
    those headers are ignored."""
    metrics_host: str = "127.0.0.1"
    """``/metrics`` has a listener of its own, on loopback by default: what it shows (how
    long held messages and emergency cases wait) is for ops, never the public port."""
    metrics_port: int = 9464
    """The metrics listener's port (0: any free port, announced at start). Each node on
    one machine needs its own."""


@dataclass(frozen=True, slots=True)
class AuthConfig:
    secret: str = ""
    """HS256 signing key shared by a cluster; generated into data_dir when empty."""
    participant_ttl_s: int = 4 * 3600
    staff_ttl_s: int = 8 * 3600
    issuer: str = "chatserver"
    audience: str = "chatserver"
    leeway_s: int = 5
    """Small clock-skew allowance on exp/nbf (F-14)."""
    login_max_failures: int = 5
    """docs/protocol.md: 429 after repeated failures (SEC-27), counted per account *and*
    client address, so a stranger cannot lock a facilitator out (issue 14)."""
    login_address_failures: int = 10
    """Failures from one address over every account (password spraying: ten usernames
    tried once each are throttled together)."""
    login_lockout_s: int = 300
    """The failure window: counted from the first failure, 429 until it ends."""
    verify_concurrency: int = 2
    """argon2 verifications at once (each takes a core for ~50 ms and 64 MiB)."""
    verify_queue: int = 8
    """Logins waiting for a verification; past it, 429 at once (issue 14)."""
    login_audit_window_s: int = 60
    """Failed logins are audited as one summary entry per window, not a row each."""


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    url: str = "memory://"
    """``memory://`` (one node) or ``redis://host:port/db`` (a cluster)."""
    timeout_s: float = 1.0
    prefix: str = "chat"
    """Key and channel prefix, so that several deployments can share one Redis."""
    heartbeat_s: float = 2.0
    """How often a node tells the others who is connected to it."""
    node_expiry_s: float = 6.0
    """A node not heard from this long is gone: its members leave the member lists."""
    gap_grace_ms: int = 500
    """How long a node waits for a missing seq before reading it from the store."""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = ""
    """Default: sqlite:///<data_dir>/chat.db."""
    sqlite_synchronous: str = "normal"
    """SQLite in WAL mode (``stores/sqlite.py``): ``normal`` keeps every acked write
    through a process crash, and the file whole through power loss, which may lose the
    last moments' commits; ``full`` keeps acked writes through power loss too, for an
    fsync per commit. Not ``off`` (power loss could corrupt the file)."""


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_frame_bytes: int = 32 * 1024
    """docs/protocol.md § Limits: frame ≤ 32 KiB (2,000 escaped emoji fit); aiohttp max_msg_size."""
    max_json_depth: int = 32
    """Nesting bound of a frame or HTTP body (the deepest frame of docs/protocol.md is 3):
    deeper is ``bad_request`` (a ``hello``: close 4001), never a recursion failure."""
    max_text_chars: int = 2000
    """Code points after trimming (docs/protocol.md § Limits)."""
    rate_messages: int = 5
    rate_window_s: int = 10
    """docs/protocol.md § Limits: ≤ 5 messages per 10 s per participant."""
    flood_alert_after: int = 3
    """Rate-limited sends in a row before facilitators get a `flood` alert."""
    flood_close_after: int = 10
    """Rate-limited sends in a row before the socket is closed 1008."""
    frame_rate: float = 20.0
    frame_burst: float = 40.0
    """Per-connection frame budget for every frame type (SEC-20)."""
    frame_close_after: int = 50
    history: int = 200
    """Messages kept per room for history and resume."""
    welcome_history: int = 50
    """How many recent messages a fresh (non-resume) welcome carries."""
    resume_window_s: int = 600
    max_sockets_per_token: int = 3
    """SEC-19: a cap on concurrent sockets per participant."""
    address_window_s: int = 60
    """The window of the per-client-address budgets below (issue 14)."""
    joins_per_address: int = 20
    """``POST /api/join`` per address per window: identities are not free to mint."""
    logins_per_address: int = 30
    """``POST /api/login`` attempts (right or wrong) per address per window."""
    hellos_per_address: int = 120
    """WebSocket ``hello``s per address per window (reconnects included)."""
    feedback_per_address: int = 10
    """``POST /api/feedback`` (the "Tell us" page) per address per window: generous for a
    school behind one address, small enough that nobody can flood the ops inbox."""
    welcome_bytes: int = 131072
    """A welcome's history holds at most this many bytes of messages (newest kept;
    a resume cut short is marked ``gap``): a small hello cannot fetch megabytes."""
    idempotency_keys: int = 100_000
    alert_coalesce_s: int = 60
    """Issue 14: an alert of the same kind about the same participant in the same room,
    within this long of an unresolved one's first occurrence, is counted into it (its
    ``count``) instead of raising a new one. 0: every occurrence is its own alert."""
    reports_per_window: int = 5
    report_window_s: int = 60
    """Issue 14: a reporter may ``report`` this many times per window; past that,
    ``error rate_limited`` (nothing stored, nobody alerted)."""
    denied_audit_window_s: int = 60
    """Issue 14: of a participant's forbidden commands, the window's first is audited
    (``denied``) and the rest counted into one ``denied_summary`` entry per window."""
    departed_keep_s: int = 600
    """Issue 14: someone who left a room (every socket gone) stays known to it this long
    (resume, staff acting on them, their ignore list, slow mode); then the room forgets
    them. What safety needs stays: removals, mutes, open alerts."""
    departed_kept: int = 500
    """... and at most this many departed per room (the oldest forgotten first)."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The learned second stage (``moderation/pipeline.py``)."""

    enabled: bool = True
    path: str = ""
    """The heads to load; empty: the ones packaged with the server."""
    mode: str = "live"
    """``live``, or ``shadow``: every head scored and audited, none acted on."""
    shadow_heads: tuple[str, ...] = ()
    """Heads in shadow while the others act (trying out a retrained head)."""
    clear: bool = True
    """May clear a supportive line that a ``model_may_clear`` rule would hold."""
    thresholds: Mapping[str, float] = field(default_factory=dict)
    """Per head, over training's choice."""
    profile_thresholds: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Room profile → head → threshold, over both."""
    encoder: str = "process"
    """Where ``serve`` runs the sentence encoder: ``process`` (a child process of its
    own, on another core; restarted if it dies) or ``thread`` (a worker thread of the
    server's process, sharing the interpreter's lock with the event loop). Same vectors
    either way (``runtime/encoder.py``). On the quiet 2-core machine at 200 msg/s, p99
    send→delivery was 14, 17 and 25 ms with ``process`` and 69, 114 and 92 ms with
    ``thread``, at 5–7 % more CPU per delivery (bench/README.md, 2026-12-02 14:50);
    ``thread`` starts a second faster and uses about 60 MB less memory."""


@dataclass(frozen=True, slots=True)
class ModerationConfig:
    rules_dir: str = ""
    """The rule files to load; empty: the ones packaged with the server
    (``chatserver/moderation_rules``). A relative path is taken from the working directory."""
    profiles: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: {"default": frozenset(), "adult": frozenset({"profanity"})})
    """Profile → categories switched off."""
    model: ModelConfig = ModelConfig()
    window_messages: int = 4
    """Issue 13: a participant's last messages in a room (this one included) are also
    checked as one text, so a detail split over several short messages is caught."""
    window_s: int = 60
    """... and only those sent within this many seconds of each other."""
    grooming_window_s: int = 1800
    """Grooming signals (age, location, alone, secrecy, ...) accumulate per sender this
    long (30 minutes)."""
    grooming_signals: int = 3
    """Distinct signals within the window that raise a `grooming` alert and hold."""
    grooming_score: float = 0.5
    """A grooming head score at or over this counts as one signal (``model``)."""
    context_senders: int = 10_000
    """At most this many senders' windows are kept (least recently active dropped)."""

    @property
    def rules_path(self) -> Path:
        """``rules_dir``, or the packaged rules when it is empty."""
        return Path(self.rules_dir) if self.rules_dir else packaged("moderation_rules")


@dataclass(frozen=True, slots=True)
class RoomsConfig:
    age_bands: tuple[str, ...] = ("13-15", "16-17", "18-25")
    require_facilitator: bool = True
    """A room with no facilitator present is paused for participants."""
    unanswered_s: int = 120
    break_after_min: int = 45
    emergency_unclaimed_s: int = 120
    case_context: int = 20
    support_note_chars: int = 280
    """``request_support``: the young person's optional note, at most this long."""
    guidelines: tuple[str, ...] = (
        "Be kind. Everyone here is going through something.",
        "Keep it anonymous: no real names, phone numbers, social media, school or where "
        "you live.",
        "Messages are checked before others see them. Some wait for a facilitator; you're "
        "not in trouble if yours does.",
        "You can report a message, or ignore someone from \"Who's here\".",
        "If you need to talk to someone now, press \"Get help now\" at any time.",
        "Need to leave fast? Press \"Quick exit\", or Esc twice.",
    )
    """The room guidelines the young person's page shows (``GET /api/rooms/{id}/public``)."""


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """How long each class of record is kept (SG-24); `chatserver purge` applies it.
    Defaults are placeholders until the safeguarding lead sets them."""

    chat_history_days: int = 30
    audit_text_days: int = 365
    """Held and blocked text in the audit log; the audit row itself is kept."""
    case_record_years: int = 7
    ip_log_days: int = 0
    """We log no IP addresses; a proxy's own logs fall under this."""


@dataclass(frozen=True, slots=True)
class RoomSeed:
    id: str
    title: str
    age_bands: tuple[str, ...]
    profile: str = "default"
    require_facilitator: bool | None = None


DEFAULT_RESOURCES = (
    Resource("Childline", phone="0800 1111", url="https://www.childline.org.uk",
             hours="24 hours, free"),
    Resource("Samaritans", phone="116 123", url="https://www.samaritans.org",
             hours="24 hours, free"),
    Resource("Shout", text="Text SHOUT to 85258", hours="24 hours, free"),
    Resource("Emergency", phone="999", text="If you are in danger right now, call 999.",
             hours="Any time"),
)

DEFAULT_NOTICES: Mapping[str, str] = {
    "signpost": "You matter, and you don't have to cope with this alone. These people are "
                "there to listen, any time:",
    "muted": "A facilitator has paused your messages for a little while. You can still read "
             "along, and you're welcome to keep reading.",
    "unmuted": "You can send messages again. Welcome back into the conversation.",
    "removed": "A facilitator has asked you to leave this room for now. If you need support, "
               "the 'Get help now' options are always there for you.",
    "held_rejected": "A facilitator decided not to share your message with the room. You're "
                     "not in trouble; if you'd like to talk about it, a facilitator is here.",
    "break_reminder": "You've been chatting for a while. How about a short break: a glass of "
                      "water, a stretch, some fresh air? We'll be here.",
    "escalated": "A counsellor would like to talk with you one-to-one. It's private, and you "
                 "can stay in the group too.",
    "welcome_back": "Welcome back! You're reconnected and caught up.",
    "report_received": "Thank you for letting us know. A facilitator will take a look. The "
                       "person you reported won't be told it was you.",
    "paused": "The room is paused for a moment. A facilitator will be back soon.",
    "blocked": "That message wasn't sent. You're not in trouble. If you'd like to talk about "
               "it, a facilitator is here.",
    "held": "Your message is waiting for a facilitator to take a look. You're not in trouble.",
    "support_requested": "Thank you for asking. A counsellor will talk with you one-to-one "
                         "as soon as they can. It's private, and you can stay in the group "
                         "meanwhile.",
    "support_pending": "You've already asked, and that's fine. A counsellor will be with you "
                       "as soon as they can.",
    "complaints": "If you think we got this wrong, please tell us: there's a 'Tell us' page "
                  "under 'Get help now'.",
    "feedback_received": "Thank you for telling us. Someone on the team reads every message "
                         "and uses it to make this chat better. They can't reply here, so if "
                         "you need to talk to someone now, the people under 'Get help now' "
                         "are there for you.",
}


DEFAULT_EMERGENCY = (
    "Emergency: if a young person is in immediate danger, call 999 now, then tell the "
    "duty counsellor and follow the safeguarding procedure.")


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    broker: BrokerConfig = BrokerConfig()
    store: StoreConfig = StoreConfig()
    limits: LimitsConfig = LimitsConfig()
    moderation: ModerationConfig = ModerationConfig()
    rooms: RoomsConfig = RoomsConfig()
    retention: RetentionConfig = RetentionConfig()
    resources: tuple[Resource, ...] = DEFAULT_RESOURCES
    notices: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_NOTICES))
    emergency_procedure: str = DEFAULT_EMERGENCY
    seed_rooms: tuple[RoomSeed, ...] = ()

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{Path(self.server.data_dir) / 'chat.db'}"
