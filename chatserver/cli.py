"""``chatserver serve | users … | rules …``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import secrets
import signal
import socket
import sys
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from chatserver.config import Config, ConfigError, load_config, read_rule_files
from chatserver.core.audit import AuditAction
from chatserver.core.effects import RoomRecord
from chatserver.core.ids import RoomId
from chatserver.core.vocabulary import RoomKind
from chatserver.moderation.engine import RuleSet, Verdict, load_rules
from chatserver.moderation.evaluation import STAGES, Report, evaluate, predicted
from chatserver.moderation.pipeline import Moderator
from chatserver.moderation.rules import RuleLoadError
from chatserver.ports import Broker, ClusterState, Store, UserRow
from chatserver.stores.sqlite import SqliteStore

if TYPE_CHECKING:
    from chatserver.moderation.classifier import Encoder

__all__ = ["main"]

ROLES = ("facilitator", "counsellor", "ops")


def _store(config: Config) -> Store:
    """The store named by ``store.url``: ``sqlite:///…`` (default) or ``postgresql://…``."""
    url = config.store_url
    if url.startswith("sqlite:"):
        return SqliteStore.from_url(url, config.store.sqlite_synchronous)
    if url.startswith(("postgresql://", "postgres://")):
        from chatserver.stores.postgres import PostgresStore
        return PostgresStore.from_url(url)
    raise SystemExit(f"store.url {url!r}: use sqlite:///path or postgresql://…")


def _rules(directory: str | Path) -> RuleSet:
    try:
        return load_rules(read_rule_files(directory))
    except RuleLoadError as e:
        for p in e.problems:
            print(f"  {p}", file=sys.stderr)
        raise SystemExit(f"{len(e.problems)} problem(s) in {directory}") from None


# ------------------------------------------------------------------- serve
DEMO_ROOMS = (
    RoomRecord(RoomId("demo"), "Demo room: try it out", ("13-15", "16-17", "18-25"),
               "default", RoomKind.GROUP, False, 0, {}, (), False),
    RoomRecord(RoomId("after-school"), "After school chat (13-15)", ("13-15",), "default",
               RoomKind.GROUP, False, 0, {}, (), True),
    RoomRecord(RoomId("evening"), "Evening room (18-25)", ("18-25",), "adult",
               RoomKind.GROUP, False, 0, {}, (), True),
)


def _listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address ``host`` resolves to (what aiohttp's TCPSite
    binds); port 0 takes a free port, the same on each address. Raises OSError (a port in
    use: EADDRINUSE) before anything else has started."""
    socks: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        for family, kind, proto, _, addr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(socks) > 1:
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            sock.bind(addr)
            sock.listen(128)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


async def _demo_accounts(store: Store) -> list[tuple[str, str, str]]:
    from chatserver.transport.auth import Passwords
    made = []
    for role in ROLES:
        password = secrets.token_urlsafe(9)
        existing = await store.user(role)
        uid = existing.id if existing else f"u_{secrets.token_urlsafe(6)}"
        await store.add_user(UserRow(uid, role, role, Passwords.hash(password), False))
        made.append((role, role, password))
    return made


def serve(args: argparse.Namespace, config: Config) -> int:
    from aiohttp import web

    from chatserver.brokers.memory import MemoryBroker
    from chatserver.brokers.memory_state import MemoryClusterState
    from chatserver.observability import announce, configure_logging, log
    from chatserver.runtime.server import Server
    from chatserver.transport.app import build_app
    from chatserver.transport.auth import Tokens, load_secret
    from chatserver.transport.metrics import build_metrics_app

    configure_logging()
    cluster = config.broker.url.startswith(("redis://", "rediss://", "unix://"))
    if not cluster and not config.broker.url.startswith("memory://"):
        raise SystemExit(f"broker.url {config.broker.url!r}: use memory:// (one node) or "
                         "redis://host:port/db (a cluster)")
    if cluster and not config.store_url.startswith(("postgresql://", "postgres://")):
        # SQLite is one file on one machine: nodes would each keep their own record.
        raise SystemExit("a cluster (broker.url redis://…) needs a shared store: "
                         "set store.url to postgresql://…")
    if cluster and not config.auth.secret:
        raise SystemExit("a cluster needs auth.secret (or CHATSERVER_AUTH_SECRET), the same "
                         "on every node, so a token from one node is valid on the others")
    rules = _rules(config.moderation.rules_path)
    moderator = _moderator(config, rules, serve=True)
    host, port = config.server.host, config.server.port
    # Bind first: a port in use stops here, before the store or the secret file is opened,
    # made or changed, and before anything is announced.
    try:
        socks = _listen(host, port)
    except OSError as e:
        print(f"chatserver: cannot listen on {host}:{port}: {e.strerror or e} "
              "(is another server running? choose --port or server.port)", file=sys.stderr)
        return 1
    # /metrics on its own listener (loopback by default), bound as early and as honestly.
    mhost, mport = config.server.metrics_host, config.server.metrics_port
    try:
        msocks = _listen(mhost, mport)
    except OSError as e:
        for sock in socks:
            sock.close()
        print(f"chatserver: cannot listen on {mhost}:{mport} for /metrics: "
              f"{e.strerror or e} (is another server running? choose "
              "server.metrics_port)", file=sys.stderr)
        return 1
    store = _store(config)
    secret = load_secret(config.auth, config.server.data_dir)
    broker: Broker = MemoryBroker(config.limits.history)
    counts: ClusterState = MemoryClusterState()
    redis = None
    if cluster:
        from chatserver.brokers.redis import RedisBroker
        from chatserver.brokers.redis_state import RedisClusterState
        broker = redis = RedisBroker(config.broker.url, history=config.limits.history,
                                     prefix=config.broker.prefix,
                                     timeout_s=config.broker.timeout_s)
        counts = RedisClusterState(config.broker.url, prefix=config.broker.prefix,
                                   timeout_s=config.broker.timeout_s)
    server = Server(config, moderator, store, broker, counts, Tokens(secret, config.auth),
                    node_id=args.node_id)
    if redis is not None:
        redis.on_reset = server.on_broker_reset  # the node tells its clients to resume
    app = build_app(server)

    async def run() -> None:
        runner = web.AppRunner(app, access_log=None,
                               shutdown_timeout=config.server.shutdown_grace_s)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await runner.setup()  # on_startup: the store opens, the node starts
        metrics = web.AppRunner(build_metrics_app(server), access_log=None)
        await metrics.setup()
        try:
            await rooms()  # before the first request: a join to "demo" finds it
            for sock in socks:
                await web.SockSite(runner, sock,
                                   shutdown_timeout=config.server.shutdown_grace_s).start()
            for sock in msocks:
                await web.SockSite(metrics, sock).start()
            await ready(socks[0].getsockname()[1], msocks[0].getsockname()[1])
            await stop.wait()
        finally:
            await metrics.cleanup()
            await runner.cleanup()  # on_shutdown: sockets close 1012, the store flushes

    async def rooms() -> None:
        records = list(DEMO_ROOMS) if args.demo else []
        records += [RoomRecord(RoomId(s.id), s.title, s.age_bands, s.profile, RoomKind.GROUP,
                               False, 0, {}, (), config.rooms.require_facilitator
                               if s.require_facilitator is None else s.require_facilitator)
                    for s in config.seed_rooms]
        for rec in records:
            await server.ensure_room(rec)

    async def ready(bound: int, metrics_bound: int) -> None:
        """Only once the port is ours and served: demo accounts, "ready" and the URLs."""
        # SIGHUP reloads the rules: in place before "ready" is announced, so a reload
        # sent as soon as the banner shows never meets the default action (exit).
        reloads: set[asyncio.Task[None]] = set()

        def on_hup() -> None:
            async def go() -> None:
                try:
                    await server.reload_rules_by("system", "sighup")
                except RuleLoadError as e:
                    log.error("rules_reload_refused", problems=[str(p) for p in e.problems])
            task = asyncio.get_running_loop().create_task(go())
            reloads.add(task)  # held until done: the loop keeps only a weak reference
            task.add_done_callback(reloads.discard)

        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_hup)
        if args.demo:
            announce("\nDemo staff accounts (passwords are new each time you start --demo):")
            for username, role, password in await _demo_accounts(store):
                announce(f"  {role:<12} username: {username:<12} password: {password}")
        shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::", "") else host
        base = f"http://{shown}:{bound}"
        announce(f"\nChat server ready (rules {rules.version}, model "
                 f"{moderator.model_version or 'off'}).\n"
                 f"  Young person's room: {base}/\n"
                 f"  Staff sign-in:       {base}/staff\n"
                 f"  Health:              {base}/healthz\n"
                 f"  Metrics (ops only):  http://{_url_host(mhost)}:{metrics_bound}/metrics\n")

    loop_factory = None
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux
        pass
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(run())
    finally:
        for sock in (*socks, *msocks):
            sock.close()
        if moderator.classifier is not None:
            from chatserver.runtime.encoder import ProcessEncoder
            if isinstance(moderator.classifier.encoder, ProcessEncoder):
                moderator.classifier.encoder.close()
    return 0


def _url_host(host: str) -> str:
    """``host`` as written in a URL: loopback and any-address as localhost (as the
    public URLs are shown; the logs hold no IP address, SG-23), an IPv6 address in
    brackets."""
    if host in ("127.0.0.1", "::1", "0.0.0.0", "::", ""):
        return "localhost"
    return f"[{host}]" if ":" in host else host


# ------------------------------------------------------------------- users
def _staff_name_problem(name: str, config: Config) -> str | None:
    """Why rooms may not show ``name`` for a staff account, or None: the server's own
    rule (``core/policy.py``) with the rules it will run. Empty is the role's name."""
    if not name:
        return None
    from chatserver.core.errors import ChatError
    from chatserver.core.policy import check_staff_display_name
    try:
        check_staff_display_name(name, _rules(config.moderation.rules_path))
    except ChatError as e:
        return e.message
    return None


def users(args: argparse.Namespace, config: Config) -> int:
    from chatserver.transport.auth import Passwords

    shown = ""
    if args.users_cmd in ("add", "rename"):
        # Checked before anything is asked, printed or stored: a name that is refused
        # leaves the account as it was.
        shown = unicodedata.normalize("NFC", args.display_name).strip()
        problem = _staff_name_problem(shown, config)
        if problem is not None:
            print(f"display name {shown!r}: {problem}", file=sys.stderr)
            return 2

    async def go() -> int:
        store = _store(config)
        await store.open()
        try:
            if args.users_cmd == "rename":
                existing = await store.user(args.name)
                if existing is None:
                    print(f"no user {args.name}", file=sys.stderr)
                    return 1
                # The version moves (add_user): open sessions end, and the next sign-in
                # carries the new name into rooms.
                renamed = dataclasses.replace(existing, display_name=shown)
                await store.add_user(renamed)
                print(f"user {args.name} is shown as {renamed.shown_name()!r}; open "
                      "sessions close within seconds")
            elif args.users_cmd == "add":
                if args.password_stdin:
                    password = sys.stdin.readline().rstrip("\n")
                    if len(password) < 10:
                        print("password must be at least 10 characters", file=sys.stderr)
                        return 2
                else:
                    password = secrets.token_urlsafe(12)
                    print(f"password for {args.name}: {password}  (shown once)")
                existing = await store.user(args.name)
                uid = existing.id if existing else f"u_{secrets.token_urlsafe(6)}"
                await store.add_user(UserRow(uid, args.name, args.role,
                                             Passwords.hash(password), False,
                                             display_name=shown))
                print(f"user {args.name} ({args.role}) saved")
            elif args.users_cmd == "list":
                for u in await store.users():
                    print(f"{u.username:<20} {u.role:<12} {'disabled' if u.disabled else ''}")
            elif args.users_cmd == "disable":
                if not await store.set_disabled(args.name, True):
                    print(f"no user {args.name}", file=sys.stderr)
                    return 1
                print(f"user {args.name} disabled; open sessions close within seconds")
            return 0
        finally:
            await store.close()

    return asyncio.run(go())


# ------------------------------------------------------------------- audit
def audit_cmd(args: argparse.Namespace, config: Config) -> int:
    """``audit verify``: recompute the hash chain; exit 1 naming the first bad row."""
    from chatserver.auditchain import verify

    async def go() -> int:
        store = _store(config)
        await store.open()
        try:
            checked, bad = verify(await store.audit_chain())
        finally:
            await store.close()
        if bad is not None:
            print(f"FAILED: the audit chain breaks at entry {bad} (after {checked - 1} good "
                  "entries): a row was edited or removed outside the server")
            return 1
        print(f"ok: {checked} audit entries, hash chain intact")
        return 0

    return asyncio.run(go())


def purge_cmd(args: argparse.Namespace, config: Config) -> int:
    """``purge [--dry-run]``: apply the retention periods in config (SG-09, SG-24)."""
    import time

    from chatserver.core.effects import AuditEntry
    from chatserver.ports import Cutoffs

    r = config.retention
    now = args.now if args.now is not None else time.time_ns() // 1_000_000
    cutoffs = Cutoffs.at(now, r.chat_history_days, r.audit_text_days, r.case_record_years)

    async def go() -> int:
        store = _store(config)
        await store.open()
        try:
            counts = await store.purge(cutoffs, args.dry_run)
            if not args.dry_run:  # the purge itself is audited
                await store.apply([AuditEntry(now, None, "system", AuditAction.RETENTION_PURGE,
                                              None, dict(counts))])
        finally:
            await store.close()
        verb = "would remove" if args.dry_run else "removed"
        for name, n in counts.items():
            print(f"{verb} {n:>6} {name.replace('_', ' ')}")
        return 0

    return asyncio.run(go())


# ------------------------------------------------------------------- rules
def _moderator(config: Config, ruleset: RuleSet, model_path: str | None = None,
               thresholds: Mapping[str, float] | None = None,
               serve: bool = False) -> Moderator:
    """Rules plus the learned heads; a model that cannot load stops the command (fail
    closed: the server never runs without the second stage it was configured with).
    ``serve``: the encoder where ``moderation.model.encoder`` says (the other commands
    encode in their own process)."""
    from chatserver.moderation.classifier import ModelLoadError, load_classifier
    from chatserver.moderation.features import SentenceEncoder
    model = config.moderation.model
    if thresholds:
        model = dataclasses.replace(model, thresholds={**model.thresholds, **thresholds})
    if not model.enabled and model_path is None:
        return Moderator(ruleset, None, model)
    make: Callable[[], Encoder] = SentenceEncoder
    if serve and model.encoder == "process":
        from chatserver.runtime.encoder import ProcessEncoder
        child = ProcessEncoder()  # loads in its process while this one loads the heads
        make = child.wait
    try:
        return Moderator(ruleset, load_classifier(model_path or model.path or None, make),
                         model)
    except ModelLoadError as e:
        raise SystemExit(f"{e}\n(set moderation.model.enabled = false to run on rules "
                         "alone)") from None


def _explain(text: str, v: Verdict) -> str:
    lines = [f"verdict:    {v.action.label}   (decided by: {v.stage})",
             f"normalized: {v.normalized!r}"]
    if v.text_out != text:
        lines.append(f"text out:   {v.text_out!r}")
    lines.append("stage 1, rules:")
    rule_hits = [h for h in v.hits if not h.rule.id.startswith("model.")]
    for h in rule_hits + list(v.cleared):
        s, e = h.span
        lines.append(f"  {h.rule.action.label:<6} {h.rule.id:<28} matched {text[s:e]!r}"
                     + ("  (cleared by the model)" if h in v.cleared else ""))
    if not rule_hits and not v.cleared:
        lines.append("  no rule matched")
    for h in v.shadow:
        lines.append(f"  shadow {h.rule.id}")
    if v.model_version is None:
        lines.append("stage 2, model: off")
    else:
        lines.append(f"stage 2, model {v.model_version}:")
        for head, score in v.scores.items():
            t = v.thresholds.get(head)
            mark = "  <- fires" if t is not None and score >= t else ""
            lines.append(f"  {head:<9} {score:.3f}   threshold {'-' if t is None else f'{t:.3f}'}"
                         f"{mark}")
    if v.alerts:
        lines.append(f"alerts:     {', '.join(v.alerts)}")
    if v.signpost:
        lines.append("signpost:   crisis resources shown to the sender")
    lines.append(f"rules:      version {v.version}")
    return "\n".join(lines)


def _read_jsonl(path: str) -> list[dict[str, str]]:
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = orjson.loads(line)
            if not isinstance(row.get("text"), str) or not isinstance(row.get("label"), str):
                raise SystemExit(f"{path}:{n}: each line needs 'text' and 'label'")
            rows.append(row)
    return rows


def _print_report(report: Report, show_misses: bool) -> None:
    cats = report.categories()
    print(f"{'caught (held or blocked)':<26}" + "".join(f"{s:>9}" for s in STAGES))
    for cat in cats:
        print(f"  {cat:<12} n={report.totals[cat]:<9}"
              + "".join(f"{report.recall(s, cat):>9.3f}" for s in STAGES))
    print(f"  {'must-allow':<12} n={report.allow_n:<9}"
          + "".join(f"{report.false_positive_rate(s):>9.3f}" for s in STAGES)
          + "   <- share held or blocked (false positives)")
    for stage in STAGES:
        print(f"\nconfusion, {stage} (label -> predicted):")
        for (a, b), n in sorted(report.stages[stage].confusion.items()):
            print(f"  {a + ' -> ' + b:<24} {n}")
    if show_misses:
        for label, pred, text in report.stages["whole"].misses:
            print(f"  MISS {label} -> {pred}: {text}")


def _thresholds_arg(values: Sequence[str]) -> dict[str, float]:
    out = {}
    for v in values:
        head, _, num = v.partition("=")
        try:
            out[head] = float(num)
        except ValueError:
            raise SystemExit(f"--threshold {v!r}: use HEAD=NUMBER, e.g. risk=0.8") from None
    return out


def rules_cmd(args: argparse.Namespace, config: Config) -> int:
    directory = args.dir or config.moderation.rules_path
    if args.rules_cmd == "check":
        try:
            ruleset = load_rules(read_rule_files(directory))
        except RuleLoadError as e:
            for p in e.problems:
                print(p)
            print(f"FAILED: {len(e.problems)} problem(s)")
            return 1
        examples = sum(len(r.examples_match) + len(r.examples_no_match) for r in ruleset.rules)
        print(f"ok: {len(ruleset)} rules, {examples} examples pass, version {ruleset.version}")
        return 0
    moderator = _moderator(config, _rules(directory), args.model)
    if args.rules_cmd == "try":
        print(_explain(args.text, moderator.check(args.text, args.role, profile=args.profile)))
        return 0
    rows = _read_jsonl(args.file)
    if args.rules_cmd == "eval":
        report = evaluate(moderator, rows, args.profile)
        if args.json:
            print(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
        else:
            _print_report(report, args.show_misses)
        return 0
    candidate = _moderator(config, _rules(args.against or directory),
                           args.candidate_model or args.model,
                           _thresholds_arg(args.threshold))
    changed = 0
    for row in rows:
        old = moderator.check(row["text"], profile=args.profile)
        new = candidate.check(row["text"], profile=args.profile)
        if old.action != new.action or predicted(old) != predicted(new):
            changed += 1
            print(f"{old.action.label:>5} -> {new.action.label:<5} "
                  f"[{predicted(old)} -> {predicted(new)}] ({old.stage} -> {new.stage}) "
                  f"{row['text']}")
    print(f"{changed} of {len(rows)} messages change verdict (rules {moderator.version} -> "
          f"{candidate.version}, model {moderator.model_version} -> {candidate.model_version})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    # --config is accepted before or after any subcommand: every parser knows it, and the
    # one given last wins (SUPPRESS: a parser where it is not given sets nothing).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                        help="config file (default: ./config.toml when there is one)")
    parser = argparse.ArgumentParser(prog="chatserver", parents=[common])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_serve = sub.add_parser("serve", parents=[common], help="run the server")
    p_serve.add_argument("--host")
    p_serve.add_argument("--port", type=int)
    p_serve.add_argument("--node-id", help="this node's name in a cluster (default: random)")
    p_serve.add_argument("--demo", action="store_true",
                         help="demo rooms and one demo account per staff role")
    p_users = sub.add_parser("users", parents=[common], help="staff accounts")
    us = p_users.add_subparsers(dest="users_cmd", required=True)
    p_add = us.add_parser("add", parents=[common])
    p_add.add_argument("name")
    p_add.add_argument("--role", choices=ROLES, required=True)
    p_add.add_argument("--password-stdin", action="store_true")
    p_add.add_argument("--display-name", default="",
                       help="what young people see in rooms (never the login name); "
                            "default: the role's name, such as 'Facilitator'. Role words "
                            "are fine ('Facilitator Sam'); a helpline's or another "
                            "organisation's name, a phone number, email or handle are "
                            "refused")
    p_ren = us.add_parser("rename", parents=[common],
                          help="change the name young people see (the password stays)")
    p_ren.add_argument("name")
    p_ren.add_argument("--display-name", required=True,
                       help="the new name in rooms; '' for the role's name")
    us.add_parser("list", parents=[common])
    p_dis = us.add_parser("disable", parents=[common])
    p_dis.add_argument("name")
    p_rules = sub.add_parser("rules", parents=[common],
                             help="check, try, evaluate and backtest rules")
    p_rules.add_argument("--dir", help="rules directory (default: config)")
    p_rules.add_argument("--model", help="the heads to use (default: config, or packaged)")
    p_rules.add_argument("--profile", default="default", help="room profile (thresholds)")
    rs = p_rules.add_subparsers(dest="rules_cmd", required=True)
    rs.add_parser("check", parents=[common])
    p_try = rs.add_parser("try", parents=[common])
    p_try.add_argument("text")
    p_try.add_argument("--role", default="participant")
    p_eval = rs.add_parser("eval", parents=[common])
    p_eval.add_argument("file")
    p_eval.add_argument("--json", action="store_true")
    p_eval.add_argument("--show-misses", action="store_true")
    p_bt = rs.add_parser("backtest", parents=[common])
    p_bt.add_argument("file")
    p_bt.add_argument("--against", help="candidate rules directory (default: the same)")
    p_bt.add_argument("--candidate-model", help="candidate heads (.npz from make model)")
    p_bt.add_argument("--threshold", action="append", default=[], metavar="HEAD=VALUE",
                      help="candidate threshold for one head (repeatable)")
    p_audit = sub.add_parser("audit", parents=[common], help="audit log tools")
    aus = p_audit.add_subparsers(dest="audit_cmd", required=True)
    aus.add_parser("verify", parents=[common], help="check the audit log's hash chain")
    p_purge = sub.add_parser("purge", parents=[common],
                             help="apply the retention periods in config")
    p_purge.add_argument("--dry-run", action="store_true", help="count, change nothing")
    p_purge.add_argument("--now", type=int, help=argparse.SUPPRESS)  # tests: injected clock
    args = parser.parse_args(argv)
    env = dict(__import__("os").environ)
    if args.cmd == "serve":
        if args.host:
            env["CHATSERVER_SERVER_HOST"] = args.host
        if args.port is not None:  # --port 0 is a port too: any free one
            env["CHATSERVER_SERVER_PORT"] = str(args.port)
    path: str | None = getattr(args, "config", None)
    if path is None:
        path = "config.toml" if Path("config.toml").is_file() else None
    elif not Path(path).is_file():
        print(f"config: {path}: no such file (--config names a file that must exist)",
              file=sys.stderr)
        return 2
    try:
        config = load_config(path, env)
    except ConfigError as e:
        print(f"config: {e}", file=sys.stderr)
        return 2
    if args.cmd == "serve":
        return serve(args, config)
    if args.cmd == "users":
        return users(args, config)
    if args.cmd == "audit":
        return audit_cmd(args, config)
    if args.cmd == "purge":
        return purge_cmd(args, config)
    return rules_cmd(args, config)
