"""Ops tune rules over HTTP: try, reload, and a bad set refused with the old one kept."""

from __future__ import annotations

import shutil
from pathlib import Path

from chatserver.moderation.engine import RuleSet
from tests.conftest import RULES_DIR, Running, start_server

BROKEN = '''
[[rule]]
id = "contact.broken"
category = "contact"
action = "block"
alert = "not-a-kind"
phrases = ["zebra crossing"]
examples.match = ["this line has no animal"]
examples.no_match = ["fine"]

[[rule]]
id = "contact.phone"
category = "contact"
action = "allow"
regex = ['(']
examples.match = ["x"]
examples.no_match = ["y"]
'''


async def test_rules_try_explains_a_verdict(running: Running) -> None:
    ops = await running.login("ops")
    status, body = await running.post("/api/rules/try", {"text": "call me on 07700 900 123"},
                                      ops)
    assert status == 200
    assert body["action"] == "block"
    assert body["rules"][0]["id"] == "contact.phone"
    assert body["rules"][0]["span"] == [11, 24]
    assert body["normalized"] == "call me on 07700 900 123"
    status, body = await running.post("/api/rules/try", {"text": "what the fuck"}, ops)
    assert (body["action"], body["text_out"]) == ("mask", "what the ****")


async def test_rules_routes_are_for_ops_only(running: Running) -> None:
    facilitator = await running.login("facilitator")
    status, _ = await running.post("/api/rules/try", {"text": "hi"}, facilitator)
    assert status == 403
    status, _ = await running.post("/api/rules/reload", {}, facilitator)
    assert status == 403


async def test_bad_reload_is_refused_with_every_problem_and_old_rules_keep_working(
        tmp_path: Path, rules: RuleSet) -> None:
    rules_dir = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules_dir)
    running = await start_server(tmp_path / "data", rules, rules_dir=rules_dir)
    try:
        ops = await running.login("ops")
        young = await running.client(await running.join("Kai"))
        (rules_dir / "zz_broken.toml").write_text(BROKEN)
        status, body = await running.post("/api/rules/reload", {}, ops)
        assert status == 400
        problems = body["error"]["problems"]
        found = {(p["file"], p["rule"]) for p in problems}
        assert ("zz_broken.toml", "contact.broken") in found
        assert any("duplicate id" in p["message"] for p in problems)
        assert any("bad regex" in p["message"] for p in problems)
        assert any("not-a-kind" in p["message"] for p in problems)
        # The running rules still block a phone number.
        ack = await young.say("call me on 07700 900 123", "p1")
        assert ack["status"] == "blocked"
        old_version = running.server.core.rules.version

        (rules_dir / "zz_broken.toml").unlink()
        (rules_dir / "zz_new.toml").write_text('''
[[rule]]
id = "contact.zebra"
category = "contact"
action = "block"
alert = "contact"
phrases = ["zebra crossing"]
examples.match = ["meet at the zebra crossing"]
examples.no_match = ["a zebra"]
''')
        status, body = await running.post("/api/rules/reload", {}, ops)
        assert status == 200
        assert body["version"] != old_version
        assert body["rules"] == len(rules) + 1
        assert (await young.say("see you at the zebra crossing", "z1"))["status"] == "blocked"
        status, audit = await running.get("/api/audit", ops)
        actions = [e["action"] for e in audit["entries"]]
        assert "rules_reload_refused" in actions and "rules_reload" in actions
    finally:
        await running.stop()
