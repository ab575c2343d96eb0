"""Issue 13 § 2 over real sockets: details split over messages, grooming that adds up.

The server runs on a ``FakeClock``; every wait is for an event, never for time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatserver.moderation.engine import RuleSet
from chatserver.moderation.pipeline import Moderator
from tests.conftest import Client, FakeClock, Running, start_server

NUMBER = "07700900417"


def visible_over_time(events: list[dict[str, Any]]) -> list[str]:
    """What a peer could read after each event: their unredacted messages, joined."""
    shown: dict[int, str] = {}
    out = []
    for e in events:
        if e.get("type") == "message":
            shown[e["seq"]] = e["text"]
        elif e.get("type") == "redact":
            shown.pop(e["seq"], None)
        out.append(" ".join(shown[s] for s in sorted(shown)))
    return out


def seq_is(seq: int) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["seq"] == seq


async def _facilitator(running: Running) -> Client:
    fac = await running.client(await running.login("facilitator"))
    await fac.send(type="join", room="lounge")
    await fac.expect("room")
    return fac


@pytest.mark.parametrize("stages", ["both", "rules"])
async def test_a_phone_number_split_over_four_messages_never_reaches_a_peer_whole(
        tmp_path: Path, rules: RuleSet, stages: str) -> None:
    """With both stages the learned heads may already hold a fragment that looks like
    the start of a number; with the rules alone every fragment passes by itself, and the
    conversation context is what catches the number and takes the fragments back."""
    clock = FakeClock()
    running = await start_server(tmp_path, rules, clock=clock)
    if stages == "rules":
        running.server.core.moderator = Moderator(rules)
    try:
        fac = await _facilitator(running)
        ana = await running.client(await running.join("Ana"))
        ben = await running.client(await running.join("Ben"))
        acks = []
        for i, part in enumerate(["07700", "900", "41", "7"]):
            acks.append(await ana.say(part, f"p{i}"))
            clock.advance(2)
        sent = [a["seq"] for a in acks if a["status"] == "sent"]
        if stages == "both" and "blocked" not in [a["status"] for a in acks]:
            # Caught fragment by fragment: what reached Ben is never the number.
            for seq in sent:
                await ben.expect("message", seq_is(seq))
            for seen in visible_over_time(ben.seen):
                assert NUMBER not in re.sub(r"\D", "", seen)
            return
        caught = next(i for i, a in enumerate(acks) if a["status"] == "blocked")
        fragments = [a["seq"] for a in acks[:caught] if a["status"] == "sent"]
        assert fragments  # the peer had seen the start of it...
        for seq in fragments:  # ...and it is taken back from them
            await ben.expect("redact", seq_is(seq))
        for seq in sent[len(fragments):]:
            await ben.expect("message", seq_is(seq))
        for seen in visible_over_time(ben.seen):
            assert NUMBER not in re.sub(r"\D", "", seen)
        # Shown to the facilitator with the rule's category; audited.
        alert = await fac.expect("alert", lambda e: e["kind"] == "contact"
                                 and e["excerpt"].startswith("(split over"))
        assert {"id": "contact.phone", "category": "contact"} in alert["rules"]
        for seq in fragments:
            await fac.expect("redact", seq_is(seq))
        status, audit = await running.get("/api/audit", await running.login("ops"))
        assert status == 200
        entries = audit["entries"] if isinstance(audit, dict) else audit
        redacted = [e for e in entries if e["action"] == "message.redacted_split"]
        assert redacted and set(redacted[0]["detail"]["seqs"]) == set(fragments)
        # Someone arriving later never gets the fragments from history.
        cat = await running.client(await running.join("Cat"))
        history = [m["seq"] for m in cat.welcome["history"]["lounge"]]
        assert not set(fragments) & set(history)
    finally:
        await running.stop()


async def test_fragments_outside_the_window_are_checked_alone(
        tmp_path: Path, rules: RuleSet) -> None:
    clock = FakeClock()
    running = await start_server(tmp_path, rules, clock=clock)
    try:
        ana = await running.client(await running.join("Ana"))
        assert (await ana.say("how many", "a1"))["status"] == "sent"
        clock.advance(61)  # moderation.window_s = 60
        assert (await ana.say("to die", "a2"))["status"] == "sent"
        assert (await ana.say("how many", "a3"))["status"] == "sent"
        assert (await ana.say("to die", "a4"))["status"] == "blocked"
    finally:
        await running.stop()


async def test_grooming_signals_add_up_over_a_conversation(
        tmp_path: Path, rules: RuleSet) -> None:
    clock = FakeClock()
    running = await start_server(tmp_path, rules, clock=clock)
    try:
        fac = await _facilitator(running)
        eve = await running.client(await running.join("Eve"))
        statuses = []
        for i, line in enumerate(["so how old?", "parents out tonight?", "keep it quiet ok",
                                  "anyway lol"]):
            statuses.append((await eve.say(line, f"e{i}"))["status"])
            clock.advance(5 * 60)
        assert statuses[2:] == ["held", "held"]
        alert = await fac.expect("alert", lambda e: e["kind"] == "grooming"
                                 and "together" in e["excerpt"])
        assert alert["rules"] == [{"id": "context.grooming", "category": "grooming"}]
    finally:
        await running.stop()
