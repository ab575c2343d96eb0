"""SECURITY.md § Requirements, the SG rows: those the embedded server answers today."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import ClientSession

from chatserver.config import Config
from chatserver.moderation.engine import RuleSet
from chatserver.observability import configure_logging
from tests.conftest import ROOT, Running, start_server
from tests.logscan import use_session_log


def run_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line against a data directory, as an operator would run it."""
    return subprocess.run([sys.executable, "-m", "chatserver", *args], cwd=ROOT,
                          env={"CHATSERVER_SERVER_DATA_DIR": str(data_dir),
                               "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60, check=False)


BANNED_WORDS = ("violation", "banned", "ban ", "punish", "offence", "offense", "warning:",
                "illegal", "report you")


async def test_sg01_join_keeps_only_name_and_band(running: Running, tmp_path: Path) -> None:
    status, body = await running.post("/api/join", {
        "room": "lounge", "name": "Quiet Fox", "age_band": "16-17",
        "email": "fox@example.com", "phone": "07700900123", "dob": "2009-01-02",
        "location": "Leeds LS1"})
    assert status == 200
    assert set(body) == {"token", "participant", "room"}
    alex = await running.client(body["token"])
    await alex.say("hello", "h1")
    db = sqlite3.connect(tmp_path / "chat.db")
    dump = "\n".join(db.iterdump())
    db.close()
    for secret in ("fox@example.com", "07700900123", "2009-01-02", "Leeds LS1"):
        assert secret not in dump
        assert secret not in json.dumps(body)


# Allowlists per event type a participant may receive (SG-02): nothing else, ever.
ALLOWED = {
    "welcome": {"type", "you", "rooms", "history"},
    "room": {"type", "room", "title", "paused", "slow_mode_s", "members", "closed", "gap"},
    "message": {"type", "room", "seq", "id", "from", "text", "ts"},
    "ack": {"type", "ref", "status", "seq", "text", "held", "notice", "code", "room"},
    "notice": {"type", "kind", "text", "room", "resources", "case"},
    "redact": {"type", "room", "seq"},
    "error": {"type", "code", "message", "ref"},
}
PERSON = {"id", "name", "role"}
MEMBER = {"id", "name", "role", "muted"}


async def test_sg02_participants_only_ever_see_allowlisted_fields(running: Running) -> None:
    fac = await running.client(await running.login("facilitator"))
    await fac.send(type="join", room="lounge")
    await fac.expect("room")
    a_token = await running.join("Ana")
    ana = await running.client(a_token)
    ben = await running.client(await running.join("Ben"))
    await ana.say("hi ben", "a1")
    await ben.say("i want to end it all", "b1")
    await ben.say("how old are you", "b2")
    await ana.send(type="report", room="lounge", seq=1)
    await ana.expect("notice", lambda e: e["kind"] == "report_received")
    await fac.send(type="mute", room="lounge", participant=ben.welcome["you"]["id"])
    await ben.expect("notice", lambda e: e["kind"] == "muted")
    await ana.say("bye", "a2")
    frames = [ana.welcome, ben.welcome, *ana.seen, *ben.seen]
    for frame in frames:
        assert set(frame) <= ALLOWED[frame["type"]], frame
        if frame["type"] == "message":
            assert set(frame["from"]) == PERSON
        if frame["type"] == "room":
            assert all(set(m) == MEMBER for m in frame["members"])
        text = json.dumps(frame)
        assert a_token not in text and "127.0.0.1" not in text


@pytest.mark.parametrize("name", ["Admin", "childline", "Samaritans", "M0derator",
                                  "facilitator 2", "Counsel1or", "Staff", "the_admin",
                                  "Mod", "sn4p jsmith07"])
async def test_sg21_reserved_and_unsafe_names_are_refused(running: Running, name: str) -> None:
    status, body = await running.post("/api/join", {"room": "lounge", "name": name,
                                                    "age_band": "16-17"})
    assert (status, body["error"]["code"]) == (400, "bad_request")


async def test_sg20_age_bands_are_kept_apart(running: Running) -> None:
    status, body = await running.post("/api/join", {"room": "lounge", "name": "Older",
                                                    "age_band": "18-25"})
    assert (status, body["error"]["code"]) == (403, "forbidden")


def test_sg10_notice_wording_is_kind_and_from_config(rules: RuleSet) -> None:
    notices = dict(Config().notices)
    notices.update({r.id: r.notice for r in rules.rules if r.notice})
    snapshot = Path(__file__).with_name("notices.snapshot.json")
    if not snapshot.exists():  # first run writes it; review changes in the diff
        snapshot.write_text(json.dumps(notices, indent=2, sort_keys=True) + "\n")
    assert notices == json.loads(snapshot.read_text()), "notice wording changed: review it"
    for key, text in notices.items():
        lowered = text.lower()
        assert not any(w in lowered for w in BANNED_WORDS), (key, text)
    # SG-14: the complaints route names the page that exists (no placeholder address).
    assert "'Tell us' page" in notices["complaints"] and "@" not in notices["complaints"]


async def test_sg10_block_notices_carry_the_complaints_route(running: Running) -> None:
    ana = await running.client(await running.join("Ana"))
    ack = await ana.say("call me on 07700 900 123", "c1")
    assert ack["status"] == "blocked"
    assert "'Tell us' page" in ack["notice"]
    async with ClientSession() as s, s.get(running.http + "/feedback") as page:
        assert page.status == 200 and "Tell us" in await page.text()


async def test_sg18_reading_the_audit_is_audited(running: Running) -> None:
    ops = await running.login("ops")
    await running.get("/api/audit", ops)
    _, body = await running.get("/api/audit", ops)
    assert any(e["action"] == "audit_read" for e in body["entries"])
    counsellor = await running.login("counsellor")
    status, _ = await running.get("/api/audit", counsellor)
    assert status == 403


async def test_sg19_disabled_staff_lose_sockets_and_http_at_once(running: Running) -> None:
    token = await running.login("facilitator")
    fac = await running.client(token)
    assert await running.server.store.set_disabled("facilitator", True)
    assert await fac.closed_with(timeout=5) == 4401
    status, _ = await running.get("/api/rooms", token)
    assert status == 401


async def test_sg23_operational_logs_hold_no_text_tokens_or_ips(tmp_path: Path,
                                                               rules: RuleSet) -> None:
    sink = io.StringIO()
    configure_logging("debug", stream=sink)
    try:
        running = await start_server(tmp_path, rules)
        token = await running.join("Logger")
        c = await running.client(token)
        seeded = "zebra-unique-7719 my secret thoughts"
        await c.say(seeded, "s1")
        await c.say('break "}\n\r\x1b[31m the log', "s2")
        await c.say("i want to end it all zebra-unique-7719", "s3")
        bad = await running.client(token)
        await bad.raw("not json at all zebra-unique-7719")
        await bad.expect("error")
        await running.stop()
    finally:
        use_session_log()
    lines = sink.getvalue().splitlines()
    assert lines, "the run logged nothing"
    for line in lines:
        event = json.loads(line)  # SEC-26: one JSON object per line, always
        assert isinstance(event, dict)
    text = sink.getvalue()
    assert "zebra-unique-7719" not in text and token not in text and "127.0.0.1" not in text


async def test_sg16_audit_verify_passes_then_fails_after_an_edit(tmp_path: Path,
                                                                 rules: RuleSet) -> None:
    running = await start_server(tmp_path, rules)
    fac = await running.client(await running.login("facilitator"))
    await fac.send(type="join", room="lounge")
    ana = await running.client(await running.join("Ana"))
    await ana.say("hello", "a1")
    await ana.say("how old are you", "a2")
    await fac.send(type="mute", room="lounge", participant=ana.welcome["you"]["id"])
    await ana.expect("notice", lambda e: e["kind"] == "muted")
    await running.stop()

    ok = run_cli(tmp_path, "audit", "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "hash chain intact" in ok.stdout
    db = sqlite3.connect(tmp_path / "chat.db")
    db.execute("UPDATE audit SET actor='someone-else' WHERE action='mute'")
    db.commit()
    db.close()
    broken = run_cli(tmp_path, "audit", "verify")
    assert broken.returncode == 1
    assert "chain breaks" in broken.stdout



async def test_sg24_purge_cli_dry_run_then_purge(tmp_path: Path, rules: RuleSet) -> None:
    running = await start_server(tmp_path, rules)
    ana = await running.client(await running.join("Ana"))
    await ana.say("call me on 07700 900 123", "c1")  # blocked: its text kept in the audit
    await ana.say("an ordinary message", "o1")
    await running.stop()

    far_future = str(10**13)
    dry = run_cli(tmp_path, "purge", "--now", far_future, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove      1 messages" in dry.stdout
    assert "would remove      1 audit text" in dry.stdout
    db = sqlite3.connect(tmp_path / "chat.db")
    assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 1
    db.close()
    done = run_cli(tmp_path, "purge", "--now", far_future)
    assert done.returncode == 0 and "removed      1 messages" in done.stdout
    db = sqlite3.connect(tmp_path / "chat.db")
    assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM audit WHERE text IS NOT NULL").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM audit WHERE action='retention_purge'"
                      ).fetchone()[0] == 1
    db.close()
    verified = run_cli(tmp_path, "audit", "verify")
    assert verified.returncode == 0, verified.stdout
