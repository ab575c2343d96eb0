"""Issue 15 § 4: the complaints route. A young person's feedback over real HTTP: kept
moderated (contact details masked, method and abuse refused), audited, read by ops only,
budgeted per address and bounded in size."""

from __future__ import annotations

from pathlib import Path

from aiohttp import ClientSession

from chatserver.moderation.engine import RuleSet
from tests.conftest import Running, start_server


async def test_feedback_is_read_by_ops_and_nobody_else(running: Running) -> None:
    status, body = await running.post("/api/feedback", {
        "text": "The facilitator paused the room when we were only talking about exams."})
    assert status == 201, body
    assert body["notice"].startswith("Thank you for telling us")
    assert body["signpost"] is False

    ops = await running.login("ops")
    status, listed = await running.get("/api/feedback", ops)
    assert status == 200
    assert [(f["id"], f["text"]) for f in listed["feedback"]] == [
        (body["id"], "The facilitator paused the room when we were only talking about exams.")]

    # Feedback may be about a facilitator: they cannot read it, nor can a young person.
    for token in (await running.join("Ana"), await running.login("facilitator")):
        status, refused = await running.get("/api/feedback", token)
        assert (status, refused["error"]["code"]) == (403, "forbidden")
        status, _ = await running.get("/api/audit?action=feedback", token)
        assert status == 403
    status, _ = await running.get("/api/feedback")
    assert status == 401

    # Audited: the feedback itself (nobody identified) and every reading of it.
    _, audit = await running.get("/api/audit?action=feedback", ops)
    assert [(e["actor"], e["detail"]["id"]) for e in audit["entries"]] == [
        ("anonymous", body["id"])]
    _, reads = await running.get("/api/audit?action=feedback_read", ops)
    assert len(reads["entries"]) == 1


async def test_contact_details_are_masked_and_abuse_is_refused(running: Running) -> None:
    status, body = await running.post("/api/feedback", {
        "text": "my message with my number 07700 900 123 was blocked and I was upset"})
    assert status == 201, body
    assert "07700" not in body["text"] and "900 123" not in body["text"]
    assert body["text"].startswith("my message with my number *")

    status, refused = await running.post("/api/feedback", {"text": "kys"})
    assert (status, refused["error"]["code"]) == (400, "bad_request")
    assert "try saying it another way" in refused["error"]["message"]

    ops = await running.login("ops")
    _, listed = await running.get("/api/feedback", ops)
    assert [f["text"] for f in listed["feedback"]] == [body["text"]]
    assert listed["feedback"][0]["masked"]
    _, blocked = await running.get("/api/audit?action=feedback_blocked", ops)
    assert len(blocked["entries"]) == 1 and "text" not in blocked["entries"][0]["detail"]


async def test_a_risk_disclosure_in_feedback_shows_crisis_support(running: Running) -> None:
    status, body = await running.post("/api/feedback", {
        "text": "nobody listened to me in there and honestly i want to kill myself"})
    assert status == 201, body
    assert body["signpost"] is True
    assert {r["name"] for r in body["resources"]} >= {"Childline", "Samaritans"}
    ops = await running.login("ops")
    _, listed = await running.get("/api/feedback", ops)
    (kept,) = listed["feedback"]
    assert "kill myself" in kept["text"]  # readable for ops, flagged
    assert "risk" in kept["categories"] and kept["signpost"] is True


async def test_the_address_budget_answers_429(tmp_path: Path, rules: RuleSet) -> None:
    server = await start_server(tmp_path, rules, feedback_per_address=2)
    try:
        for n in range(2):
            status, _ = await server.post("/api/feedback", {"text": f"idea number {n}"})
            assert status == 201
        status, body = await server.post("/api/feedback", {"text": "one more idea"})
        assert (status, body["error"]["code"]) == (429, "rate_limited")
        ops = await server.login("ops")
        _, listed = await server.get("/api/feedback", ops)
        assert len(listed["feedback"]) == 2
    finally:
        await server.stop()


async def test_oversized_bodies_are_refused_413(running: Running) -> None:
    limits = running.server.config.limits
    async with ClientSession() as s:
        # Over a frame's bound, refused on its declared length.
        big = b'{"text": "' + b"a" * limits.max_frame_bytes + b'"}'
        async with s.post(running.http + "/api/feedback", data=big,
                          headers={"Content-Type": "application/json"}) as r:
            assert r.status == 413
            assert (await r.json())["error"]["code"] == "too_large"
    status, body = await running.post("/api/feedback",
                                      {"text": "b" * (limits.max_text_chars + 1)})
    assert (status, body["error"]["code"]) == (413, "too_large")
    status, body = await running.post("/api/feedback", {"text": "   "})
    assert (status, body["error"]["code"]) == (400, "bad_request")
    ops = await running.login("ops")
    _, listed = await running.get("/api/feedback", ops)
    assert listed["feedback"] == []
