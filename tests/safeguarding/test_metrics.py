"""Issue 15 § 5, acceptance 4: the safeguarding metrics move as a real server over real
sockets holds and decides messages, escalates and claims a case, leaves a post
unanswered and shows crisis support; ``/metrics`` is served on the metrics listener
only. The server's clock is a ``FakeClock``: waits of minutes take no time."""

from __future__ import annotations

from pathlib import Path

from aiohttp import ClientSession
from prometheus_client.parser import text_string_to_metric_families

from chatserver.moderation.engine import RuleSet
from tests.conftest import Client, FakeClock, Running, start_server

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(running: Running) -> tuple[str, Series]:
    """The metrics listener's page, and every sample by (name, labels)."""
    async with ClientSession() as s, s.get(running.metrics_url) as r:
        assert r.status == 200
        text = await r.text()
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, series


def at(series: Series, name: str, **labels: str) -> float | None:
    return series.get((name, frozenset(labels.items())))


async def _facilitator(running: Running) -> Client:
    fac = await running.client(await running.login("facilitator"))
    await fac.send(type="join", room="lounge")
    await fac.expect("room")
    return fac


async def test_the_public_port_does_not_serve_metrics(running: Running) -> None:
    async with ClientSession() as s:
        async with s.get(running.http + "/metrics") as r:
            assert r.status == 404
        async with s.get(running.metrics_url) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")


async def test_safeguarding_series_move_with_what_staff_and_young_people_do(
        tmp_path: Path, rules: RuleSet) -> None:
    clock = FakeClock()
    running = await start_server(tmp_path, rules, clock=clock)
    try:
        fac = await _facilitator(running)
        cou = await running.client(await running.login("counsellor"))
        ana = await running.client(await running.join("Ana"))
        ben = await running.client(await running.join("Ben"))
        cara = await running.client(await running.join("Cara"))
        ana_id = ana.welcome["you"]["id"]

        # A risk line: crisis support shown at once, and held for a facilitator.
        await ana.send(type="send", room="lounge", id="r1", text="i want to kill myself")
        await ana.expect("notice", lambda e: e["kind"] == "signpost")
        assert (await ana.expect("ack", lambda e: e["ref"] == "r1"))["status"] == "held"
        risk = (await fac.expect("held", lambda e: e["held"]["text"].startswith("i want")))
        assert (await ben.say("how old are you?", "g1"))["status"] == "held"
        grooming = await fac.expect("held", lambda e: e["held"]["text"] == "how old are you?")
        clock.advance(30)
        _, m = await scrape(running)
        assert at(m, "chat_signposts_total", profile="default") == 1
        assert at(m, "chat_held_waiting", profile="default") == 2
        assert at(m, "chat_held_oldest_seconds", profile="default") == 30

        await fac.send(type="reject", room="lounge", held=grooming["held"]["id"], reason="age")
        await ben.expect("notice", lambda e: e["kind"] == "held_rejected")
        clock.advance(60)
        await fac.send(type="approve", room="lounge", held=risk["held"]["id"])
        await cara.expect("message", lambda e: e["id"] == "r1")
        _, m = await scrape(running)
        assert at(m, "chat_held_decision_seconds_count", profile="default",
                  decision="reject") == 1
        assert at(m, "chat_held_decision_seconds_sum", profile="default",
                  decision="reject") == 30
        assert at(m, "chat_held_decision_seconds_sum", profile="default",
                  decision="approve") == 90
        # Within the 120 s bucket (the alert rule's two minutes), not within 60 s.
        assert at(m, "chat_held_decision_seconds_bucket", profile="default",
                  decision="approve", le="120.0") == 1
        assert at(m, "chat_held_decision_seconds_bucket", profile="default",
                  decision="approve", le="60.0") == 0
        assert at(m, "chat_held_waiting", profile="default") == 0
        assert at(m, "chat_held_oldest_seconds", profile="default") == 0

        # An emergency escalation waits 45 s for a counsellor.
        assert (await fac.say("we're here for you, Ana", "f1"))["status"] == "sent"
        await fac.send(type="escalate", room="lounge", participant=ana_id,
                       urgency="emergency", note="said goodbye")
        case = (await cou.expect("case"))["case"]
        clock.advance(45)
        _, m = await scrape(running)
        assert at(m, "chat_cases_unclaimed", profile="default", urgency="emergency") == 1
        assert at(m, "chat_case_oldest_unclaimed_seconds", profile="default",
                  urgency="emergency") == 45
        await cou.send(type="claim", case=case["id"])
        await ana.expect("notice", lambda e: e["kind"] == "escalated" and "room" in e)
        _, m = await scrape(running)
        assert at(m, "chat_case_claim_seconds_count", profile="default",
                  urgency="emergency") == 1
        assert at(m, "chat_case_claim_seconds_sum", profile="default",
                  urgency="emergency") == 45
        assert at(m, "chat_cases_unclaimed", profile="default", urgency="emergency") == 0

        # A young person's post nobody answers for rooms.unanswered_s (120 s).
        assert at(m, "chat_unanswered_posts_total", profile="default") == 0
        assert (await cara.say("is anyone around tonight?", "c1"))["status"] == "sent"
        clock.advance(121)
        await fac.expect("alert", lambda e: e["kind"] == "unanswered")
        text, m = await scrape(running)
        assert at(m, "chat_unanswered_posts_total", profile="default") == 1
        assert at(m, "chat_signposts_total", profile="default") == 1

        # Nothing acknowledged yet: registered, with no made-up samples.
        assert "# TYPE chat_alert_ack_seconds histogram" in text
        assert not any(name.startswith("chat_alert_ack_seconds") for name, _ in m)
        # The risk alert, raised at the start (30 + 60 + 45 + 121 s ago), acknowledged.
        alert = await fac.expect("alert", lambda e: e["kind"] == "risk")
        await fac.send(type="alert_ack", room="lounge", alert=alert["id"])
        await fac.expect("alert_update", lambda e: e["alert"] == alert["id"])
        text, m = await scrape(running)
        assert at(m, "chat_alert_ack_seconds_count", profile="default") == 1
        assert at(m, "chat_alert_ack_seconds_sum", profile="default") == 256
        # Labels say which kind of room, never which room or who.
        for secret in ("lounge", "Ana", "Cara", ana_id, case["id"]):
            assert secret not in text
    finally:
        await running.stop()


async def test_each_send_is_counted_once_by_its_outcome(running: Running) -> None:
    ana = await running.client(await running.join("Ana"))
    assert (await ana.say("anyone watching the match later?", "m1"))["status"] == "sent"
    assert (await ana.say("anyone else got mocks next week", "m2"))["status"] == "sent"
    assert (await ana.say("kys", "m3"))["status"] == "blocked"
    assert (await ana.say("i want to kill myself", "m4"))["status"] == "held"
    _, m = await scrape(running)
    assert at(m, "chat_messages_total", outcome="sent") == 2
    assert at(m, "chat_messages_total", outcome="blocked") == 1
    assert at(m, "chat_messages_total", outcome="held") == 1
