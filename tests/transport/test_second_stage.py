"""The second stage over real sockets: what a young person, a peer and a facilitator see
when the learned heads decide, and what the audit log keeps."""

from __future__ import annotations

from tests.conftest import Running, classifier

# Written for these tests: a goodbye that no rule lists, and a helper's reply a risk
# rule would hold.
GOODBYE = "gave my console to my little brother today. wont be needing it after friday"
REPLY = "if ur feeling suicidal tonight pls ring samaritans 116 123, we want u here x"


async def test_a_disclosure_no_rule_lists_is_held_signposted_and_alerted(
        running: Running) -> None:
    fac = await running.client(await running.login("facilitator"))
    await fac.send(type="join", room="lounge")
    await fac.expect("room")
    ana = await running.client(await running.join("Ana"))
    ben = await running.client(await running.join("Ben"))
    ack = await ana.say(GOODBYE, "g1")
    assert ack["status"] == "held"
    signpost = await ana.expect("notice", lambda e: e["kind"] == "signpost")
    assert {r["name"] for r in signpost["resources"]} >= {"Childline", "Samaritans"}
    alert = await fac.expect("alert", lambda e: e["kind"] == "risk")
    assert [r["id"] for r in alert["rules"]] == ["model.risk"]
    # The peer sees nothing of it; the next ordinary line still reaches them.
    assert (await ana.say("anyway how was everyones day", "g2"))["status"] == "sent"
    await ben.expect("message", lambda e: e["id"] == "g2")
    assert not any(e.get("id") == "g1" for e in ben.seen)
    entries = await running.server.store.audit("lounge", 0, 1000)
    held = [e for e in entries if e.action == "message.hold"]
    assert held and held[-1].detail["stage"] == "model"
    assert held[-1].detail["model"] == classifier().version
    assert held[-1].detail["rules"] == ["model.risk"]
    scores = held[-1].detail["scores"]
    assert isinstance(scores, dict) and scores["risk"] >= 0.5


async def test_a_supportive_reply_reaches_the_peer_at_once(running: Running) -> None:
    ana = await running.client(await running.join("Ana"))
    ben = await running.client(await running.join("Ben"))
    ack = await ben.say(REPLY, "s1")
    assert ack["status"] == "sent"
    got = await ana.expect("message", lambda e: e["id"] == "s1")
    assert got["text"] == REPLY
    entries = await running.server.store.audit("lounge", 0, 1000)
    sent = [e for e in entries if e.target == "s1"]
    assert sent[-1].detail["stage"] == "model"
    assert sent[-1].detail["cleared"] == ["risk.suicidal-intent"]


async def test_rules_try_shows_both_stages(running: Running) -> None:
    token = await running.login("ops")
    status, body = await running.post("/api/rules/try", {"text": REPLY}, token)
    assert status == 200
    assert (body["action"], body["stage"]) == ("allow", "model")
    assert body["cleared"] == ["risk.suicidal-intent"]
    assert body["model_version"] == classifier().version
    assert body["model"]["support"]["score"] >= body["model"]["support"]["threshold"]
