"""``chatserver serve | users … | rules …``."""

from __future__ import annotations

import argparse
import asyncio
import collections
import secrets
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from chatserver.config import Config, ConfigError, load_config, read_rule_files
from chatserver.core.effects import RoomRecord
from chatserver.core.ids import RoomId
from chatserver.moderation.engine import RuleSet, Verdict, load_rules
from chatserver.moderation.rules import RuleLoadError
from chatserver.ports import Broker, Store, UserRow
from chatserver.stores.sqlite import SqliteStore

__all__ = ["main"]

ROLES = ("facilitator", "counsellor", "ops")


def _store(config: Config) -> Store:
    """The store named by ``store.url``: ``sqlite:///…`` (default) or ``postgresql://…``."""
    url = config.store_url
    if url.startswith("sqlite:"):
        return SqliteStore.from_url(url)
    if url.startswith(("postgresql://", "postgres://")):
        from chatserver.stores.postgres import PostgresStore
        return PostgresStore.from_url(url)
    raise SystemExit(f"store.url {url!r}: use sqlite:///path or postgresql://…")


def _rules(directory: str) -> RuleSet:
    try:
        return load_rules(read_rule_files(directory))
    except RuleLoadError as e:
        for p in e.problems:
            print(f"  {p}", file=sys.stderr)
        raise SystemExit(f"{len(e.problems)} problem(s) in {directory}") from None


# ------------------------------------------------------------------- serve
DEMO_ROOMS = (
    RoomRecord(RoomId("demo"), "Demo room: try it out", ("13-15", "16-17", "18-25"),
               "default", "group", False, 0, {}, (), False),
    RoomRecord(RoomId("after-school"), "After school chat (13-15)", ("13-15",), "default",
               "group", False, 0, {}, (), True),
    RoomRecord(RoomId("evening"), "Evening room (18-25)", ("18-25",), "adult", "group",
               False, 0, {}, (), True),
)


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
    from chatserver.observability import configure_logging, log
    from chatserver.transport.app import Server
    from chatserver.transport.auth import Tokens, load_secret
    from chatserver.transport.http import build_app, reload_rules

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
    rules = _rules(config.moderation.rules_dir)
    store = _store(config)
    secret = load_secret(config.auth, config.server.data_dir)
    broker: Broker = MemoryBroker(config.limits.history)
    redis = None
    if cluster:
        from chatserver.brokers.redis import RedisBroker
        broker = redis = RedisBroker(config.broker.url, history=config.limits.history,
                                     prefix=config.broker.prefix,
                                     timeout_s=config.broker.timeout_s)
    server = Server(config, rules, store, broker, Tokens(secret, config.auth),
                    node_id=args.node_id)
    if redis is not None:
        redis.on_reset = server.on_broker_reset  # the node tells its clients to resume
    app = build_app(server)
    host, port = config.server.host, config.server.port

    async def demo_and_signals(_: web.Application) -> None:
        rooms = list(DEMO_ROOMS) if args.demo else []
        rooms += [RoomRecord(RoomId(s.id), s.title, s.age_bands, s.profile, "group", False, 0,
                             {}, (), config.rooms.require_facilitator
                             if s.require_facilitator is None else s.require_facilitator)
                  for s in config.seed_rooms]
        for rec in rooms:
            await server.ensure_room(rec)
        if args.demo:
            print("\nDemo staff accounts (passwords are new each time you start --demo):")
            for username, role, password in await _demo_accounts(store):
                print(f"  {role:<12} username: {username:<12} password: {password}")
        base = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}"
        print(f"\nChat server ready (rules {rules.version}).\n"
              f"  Young person's room: {base}/\n"
              f"  Staff sign-in:       {base}/staff\n"
              f"  Health:              {base}/healthz\n", flush=True)

        def on_hup() -> None:
            async def go() -> None:
                try:
                    await reload_rules(server)
                except RuleLoadError as e:
                    log.error("rules_reload_refused", problems=[str(p) for p in e.problems])
            asyncio.get_running_loop().create_task(go())

        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_hup)

    app.on_startup.append(demo_and_signals)
    loop = None
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is optional off Linux
        pass
    web.run_app(app, host=host, port=port, print=None, loop=loop,
                shutdown_timeout=config.server.shutdown_grace_s, access_log=None)
    return 0


# ------------------------------------------------------------------- users
def users(args: argparse.Namespace, config: Config) -> int:
    from chatserver.transport.auth import Passwords

    async def go() -> int:
        store = _store(config)
        await store.open()
        try:
            if args.users_cmd == "add":
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
                                             Passwords.hash(password), False))
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
                await store.apply([AuditEntry(now, None, "system", "retention_purge", None,
                                              dict(counts))])
        finally:
            await store.close()
        verb = "would remove" if args.dry_run else "removed"
        for name, n in counts.items():
            print(f"{verb} {n:>6} {name.replace('_', ' ')}")
        return 0

    return asyncio.run(go())


# ------------------------------------------------------------------- rules
def _explain(text: str, v: Verdict) -> str:
    lines = [f"verdict:    {v.action.label}", f"normalized: {v.normalized!r}"]
    if v.text_out != text:
        lines.append(f"text out:   {v.text_out!r}")
    for h in v.hits:
        s, e = h.span
        lines.append(f"  {h.rule.action.label:<6} {h.rule.id:<28} matched {text[s:e]!r}")
    for h in v.shadow:
        lines.append(f"  shadow {h.rule.id}")
    if v.alerts:
        lines.append(f"alerts:     {', '.join(v.alerts)}")
    if v.signpost:
        lines.append("signpost:   crisis resources shown to the sender")
    lines.append(f"rules:      version {v.version}")
    return "\n".join(lines)


def predicted(v: Verdict) -> str:
    """The category a verdict puts a line in, for eval: 'allow' when nothing acts."""
    acting = [h for h in v.hits if h.rule.action > 0]
    return acting[0].rule.category if acting else "allow"


def _read_jsonl(path: str) -> list[dict[str, str]]:
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = orjson.loads(line)
            if not isinstance(row.get("text"), str) or not isinstance(row.get("label"), str):
                raise SystemExit(f"{path}:{n}: each line needs 'text' and 'label'")
            rows.append(row)
    return rows


def evaluate(ruleset: RuleSet, rows: Sequence[dict[str, str]]) -> dict[str, object]:
    """Precision and recall per category, and the false-positive rate on 'allow' lines."""
    confusion: collections.Counter[tuple[str, str]] = collections.Counter()
    caught: collections.Counter[str] = collections.Counter()
    flagged: collections.Counter[str] = collections.Counter()
    flagged_right: collections.Counter[str] = collections.Counter()
    totals: collections.Counter[str] = collections.Counter()
    misses: list[tuple[str, str, str]] = []
    for row in rows:
        label = row["label"]
        v = ruleset.check(row["text"], "participant")
        cats = {h.rule.category for h in v.hits if h.rule.action > 0}
        pred = predicted(v)
        confusion[(label, pred)] += 1
        totals[label] += 1
        for cat in cats:
            flagged[cat] += 1
            flagged_right[cat] += cat == label
        if label == "allow":
            if cats:
                misses.append((label, pred, row["text"]))
        elif label in cats:
            caught[label] += 1
        else:
            misses.append((label, pred, row["text"]))
    cats_all = sorted(set(totals) - {"allow"})
    per = {c: {"n": totals[c], "recall": caught[c] / totals[c] if totals[c] else 0.0,
               "precision": flagged_right[c] / flagged[c] if flagged[c] else 1.0}
           for c in cats_all}
    fp = sum(n for (lab, pred), n in confusion.items() if lab == "allow" and pred != "allow")
    return {"categories": per, "allow_n": totals["allow"],
            "false_positive_rate": fp / totals["allow"] if totals["allow"] else 0.0,
            "confusion": {f"{a}->{b}": n for (a, b), n in sorted(confusion.items())},
            "misses": misses}


def rules_cmd(args: argparse.Namespace, config: Config) -> int:
    directory = args.dir or config.moderation.rules_dir
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
    ruleset = _rules(directory)
    if args.rules_cmd == "try":
        print(_explain(args.text, ruleset.check(args.text, args.role)))
        return 0
    rows = _read_jsonl(args.file)
    if args.rules_cmd == "eval":
        report = evaluate(ruleset, rows)
        if args.json:
            print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
            return 0
        print(f"{'category':<12} {'n':>5} {'recall':>8} {'precision':>10}")
        for cat, m in report["categories"].items():  # type: ignore[attr-defined]
            print(f"{cat:<12} {m['n']:>5} {m['recall']:>8.3f} {m['precision']:>10.3f}")
        print(f"{'allow':<12} {report['allow_n']:>5}   false-positive rate "
              f"{report['false_positive_rate']:.3f}")
        print("\nconfusion (label -> predicted):")
        for k, n in report["confusion"].items():  # type: ignore[attr-defined]
            print(f"  {k:<24} {n}")
        if args.show_misses:
            for label, pred, text in report["misses"]:  # type: ignore[attr-defined]
                print(f"  MISS {label} -> {pred}: {text}")
        return 0
    candidate = _rules(args.against)
    changed = 0
    for row in rows:
        old = ruleset.check(row["text"])
        new = candidate.check(row["text"])
        if old.action != new.action or predicted(old) != predicted(new):
            changed += 1
            print(f"{old.action.label:>5} -> {new.action.label:<5} "
                  f"[{predicted(old)} -> {predicted(new)}] {row['text']}")
    print(f"{changed} of {len(rows)} messages change verdict "
          f"({ruleset.version} -> {candidate.version})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chatserver")
    parser.add_argument("--config", default="config.toml")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_serve = sub.add_parser("serve", help="run the server")
    p_serve.add_argument("--host")
    p_serve.add_argument("--port", type=int)
    p_serve.add_argument("--node-id", help="this node's name in a cluster (default: random)")
    p_serve.add_argument("--demo", action="store_true",
                         help="demo rooms and one demo account per staff role")
    p_users = sub.add_parser("users", help="staff accounts")
    us = p_users.add_subparsers(dest="users_cmd", required=True)
    p_add = us.add_parser("add")
    p_add.add_argument("name")
    p_add.add_argument("--role", choices=ROLES, required=True)
    p_add.add_argument("--password-stdin", action="store_true")
    us.add_parser("list")
    p_dis = us.add_parser("disable")
    p_dis.add_argument("name")
    p_rules = sub.add_parser("rules", help="check, try, evaluate and backtest rules")
    p_rules.add_argument("--dir", help="rules directory (default: config)")
    rs = p_rules.add_subparsers(dest="rules_cmd", required=True)
    rs.add_parser("check")
    p_try = rs.add_parser("try")
    p_try.add_argument("text")
    p_try.add_argument("--role", default="participant")
    p_eval = rs.add_parser("eval")
    p_eval.add_argument("file")
    p_eval.add_argument("--json", action="store_true")
    p_eval.add_argument("--show-misses", action="store_true")
    p_bt = rs.add_parser("backtest")
    p_bt.add_argument("file")
    p_bt.add_argument("--against", required=True, help="candidate rules directory")
    p_audit = sub.add_parser("audit", help="audit log tools")
    aus = p_audit.add_subparsers(dest="audit_cmd", required=True)
    aus.add_parser("verify", help="check the audit log's hash chain")
    p_purge = sub.add_parser("purge", help="apply the retention periods in config")
    p_purge.add_argument("--dry-run", action="store_true", help="count, change nothing")
    p_purge.add_argument("--now", type=int, help=argparse.SUPPRESS)  # tests: injected clock
    args = parser.parse_args(argv)
    env = dict(__import__("os").environ)
    if args.cmd == "serve":
        if args.host:
            env["CHATSERVER_SERVER_HOST"] = args.host
        if args.port:
            env["CHATSERVER_SERVER_PORT"] = str(args.port)
    try:
        config = load_config(args.config, env)
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
