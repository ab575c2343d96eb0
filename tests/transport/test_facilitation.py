"""Issue 4 acceptance over real sockets: a facilitator, young people and a counsellor."""

from __future__ import annotations

import time
from pathlib import Path

from chatserver.moderation.engine import RuleSet
from tests.conftest import Client, FakeClock, Running, start_server


async def _facilitator(running: Running) -> Client:
    fac = await running.client(await running.login("facilitator"))
    await fac.send(type="join", room="lounge")
    await fac.expect("room")
    return fac


async def test_mute_then_timed_mute_lifts_by_itself(tmp_path: Path, rules: RuleSet) -> None:
    clock = FakeClock()
    running = await start_server(tmp_path, rules, clock=clock)
    try:
        fac = await _facilitator(running)
        ana = await running.client(await running.join("Ana"))
        pid = ana.welcome["you"]["id"]
        await fac.send(type="mute", room="lounge", participant=pid, minutes=2, reason="pause")
        await ana.expect("notice", lambda e: e["kind"] == "muted")
        ack = await ana.say("can i talk?", "m1")
        assert (ack["status"], ack["code"]) == ("rejected", "muted")
        clock.advance(120)  # the server's timer tick notices, no sleep here
        await ana.expect("notice", lambda e: e["kind"] == "unmuted")
        assert (await ana.say("thanks", "m2"))["status"] == "sent"
    finally:
        await running.stop()


async def test_pause_and_resume(running: Running) -> None:
    fac = await _facilitator(running)
    ana = await running.client(await running.join("Ana"))
    ben = await running.client(await running.join("Ben"))
    await fac.send(type="pause", room="lounge", reason="a breather")
    for c in (fac, ana, ben):
        await c.expect("room", lambda e: e["paused"] is True)
    assert (await ana.say("hello?", "a1"))["code"] == "paused"
    assert (await fac.say("back in five", "f1"))["status"] == "sent"
    await ben.expect("message", lambda e: e["id"] == "f1")
    await fac.send(type="resume", room="lounge")
    await ana.expect("room", lambda e: e["paused"] is False)
    assert (await ana.say("hello again", "a2"))["status"] == "sent"


async def test_risk_message_is_supported_held_and_alerted_within_a_second(
        running: Running) -> None:
    fac = await _facilitator(running)
    ana = await running.client(await running.join("Ana"))
    ben = await running.client(await running.join("Ben"))
    started = time.monotonic()
    await ana.send(type="send", room="lounge", id="r1", text="i want to kill myself")
    signpost = await ana.expect("notice", lambda e: e["kind"] == "signpost")
    ack = await ana.expect("ack", lambda e: e["ref"] == "r1")
    alert = await fac.expect("alert", lambda e: e["kind"] == "risk")
    held = await fac.expect("held")
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"SG-06: alert after {elapsed:.3f}s"
    assert ack["status"] == "held"
    assert {r["name"] for r in signpost["resources"]} >= {"Childline", "Samaritans"}
    assert alert["held"] == held["held"]["id"]
    assert held["held"]["text"] == "i want to kill myself"
    # Nothing reaches the peer until a facilitator approves it.
    assert (await ana.say("sorry", "r2"))["status"] == "sent"
    await ben.expect("message", lambda e: e["id"] == "r2")
    assert not any(e.get("id") == "r1" for e in ben.seen)
    await fac.send(type="approve", room="lounge", held=held["held"]["id"])
    approved = await ben.expect("message", lambda e: e["id"] == "r1")
    assert approved["text"] == "i want to kill myself"


async def test_rejected_and_pending_held_messages_never_leak_and_survive_restart(
        tmp_path: Path, rules: RuleSet) -> None:
    running = await start_server(tmp_path, rules)
    fac = await _facilitator(running)
    ana_token = await running.join("Ana")
    ana = await running.client(ana_token)
    await ana.say("how old are you?", "g1")
    await ana.say("send me a pic", "g2")
    first = await fac.expect("held", lambda e: e["held"]["text"] == "how old are you?")
    await fac.send(type="reject", room="lounge", held=first["held"]["id"], reason="age")
    await ana.expect("notice", lambda e: e["kind"] == "held_rejected")
    await running.stop()

    again = await start_server(tmp_path, rules)
    try:
        fac2 = await again.client(await again.login("facilitator"))
        await fac2.send(type="join", room="lounge")
        pending = await fac2.expect("held")
        assert pending["held"]["text"] == "send me a pic"  # survived the restart
        ben = await again.client(await again.join("Ben"))
        texts = [m["text"] for m in ben.welcome["history"]["lounge"]]
        assert "how old are you?" not in texts and "send me a pic" not in texts
        resumed = await again.client(ana_token, resume={"lounge": 0})
        assert all(m["id"] not in ("g1", "g2") for m in resumed.welcome["history"]["lounge"])
    finally:
        await again.stop()


async def test_escalation_to_a_counsellor_one_to_one(running: Running) -> None:
    fac = await _facilitator(running)
    ana = await running.client(await running.join("Ana"))
    ben = await running.client(await running.join("Ben"))
    cou = await running.client(await running.login("counsellor"))
    pid = ana.welcome["you"]["id"]
    await fac.send(type="escalate", room="lounge", participant=pid, urgency="urgent",
                   note="asked to talk privately")
    case = (await cou.expect("case"))["case"]
    assert (case["participant"], case["status"]) == (pid, "open")
    await cou.send(type="claim", case=case["id"])
    note = await ana.expect("notice", lambda e: e["kind"] == "escalated" and "room" in e)
    private = note["room"]
    await ana.expect("room", lambda e: e["room"] == private)
    await cou.expect("room", lambda e: e["room"] == private)
    assert (await ana.say("hi, thanks", "p1", room=private))["status"] == "sent"
    await cou.expect("message", lambda e: e["id"] == "p1")
    assert (await cou.say("i'm here", "c1", room=private))["status"] == "sent"
    await ana.expect("message", lambda e: e["id"] == "c1")
    # Only the two of them: Ben sends to the group and sees nothing private.
    await ana.say("still in the group too", "g1")
    await ben.expect("message", lambda e: e["id"] == "g1")
    assert not any(e.get("room") == private for e in ben.seen)
    await cou.send(type="close_case", case=case["id"])
    assert (await cou.expect("error"))["code"] == "bad_request"  # an outcome is required
    await cou.send(type="close_case", case=case["id"], outcome="referred to GP")
    closed = await cou.expect("case", lambda e: e["case"]["status"] == "closed")
    assert closed["case"]["id"] == case["id"]
    ops = await running.login("ops")
    _, audit = await running.get("/api/audit", ops)
    actions = [e["action"] for e in audit["entries"]
               if e["action"] in ("escalate", "claim", "close_case")]
    assert actions == ["escalate", "claim", "close_case"]
    status, cases = await running.get("/api/cases", await running.login("counsellor"))
    assert status == 200 and cases["cases"][0]["status"] == "closed"


async def test_redact_report_and_ignore_over_sockets(running: Running) -> None:
    fac = await _facilitator(running)
    ana = await running.client(await running.join("Ana"))
    ben = await running.client(await running.join("Ben"))
    cat = await running.client(await running.join("Cat"))
    seq = (await ana.say("something i regret", "a1"))["seq"]
    await ben.send(type="report", room="lounge", seq=seq, reason="upsetting")
    await ben.expect("notice", lambda e: e["kind"] == "report_received")
    report = await fac.expect("alert", lambda e: e["kind"] == "report")
    assert report["seq"] == seq
    await fac.send(type="redact", room="lounge", seq=seq, reason="swift removal")
    for c in (ana, ben, cat):
        await c.expect("redact", lambda e: e["seq"] == seq)
    later = await running.client(await running.join("Dee"))
    assert all(m["seq"] != seq for m in later.welcome["history"]["lounge"])
    await ben.send(type="ignore", room="lounge", participant=ana.welcome["you"]["id"])
    await ana.say("hello all", "a2")
    await cat.expect("message", lambda e: e["id"] == "a2")
    await ana.say("and again", "a3")
    await cat.expect("message", lambda e: e["id"] == "a3")
    assert (await ben.say("marker", "b1"))["status"] == "sent"
    await ben.expect("message", lambda e: e["id"] == "b1")
    assert not any(e.get("id") in ("a2", "a3") for e in ben.seen)


async def test_a_participant_cannot_enter_another_case_room(running: Running) -> None:
    fac = await _facilitator(running)
    ana = await running.client(await running.join("Ana"))
    ben = await running.client(await running.join("Ben"))
    cou = await running.client(await running.login("counsellor"))
    await fac.send(type="escalate", room="lounge", participant=ana.welcome["you"]["id"],
                   urgency="routine")
    case = (await cou.expect("case"))["case"]
    await cou.send(type="claim", case=case["id"])
    private = (await ana.expect("notice", lambda e: "room" in e and
                                e["kind"] == "escalated"))["room"]
    assert (await ben.say("let me in", "b1", room=private))["code"] == "forbidden"
    await ben.send(type="join", room=private)
    assert (await ben.expect("error"))["code"] == "forbidden"


async def test_a_facilitator_joining_sees_the_recent_conversation(running: Running) -> None:
    ana = await running.client(await running.join("Ana"))
    for n in range(3):
        await ana.say(f"earlier message {n}", f"e{n}")
    fac = await running.client(await running.login("facilitator"))
    await fac.send(type="join", room="lounge")
    await fac.expect("room")
    got = [await fac.expect("message") for _ in range(3)]
    assert [m["text"] for m in got] == [f"earlier message {n}" for n in range(3)]
