"""Issue 16 over real sockets and HTTP: the alert backlog across a restart, a young
person asking for a one-to-one, and the room's public config."""

from __future__ import annotations

from pathlib import Path

from chatserver.moderation.engine import RuleSet
from chatserver.ports import UserRow
from chatserver.transport.auth import Passwords
from tests.conftest import Running, start_server


async def test_the_backlog_survives_a_restart_and_an_ack_reaches_every_facilitator(
        tmp_path: Path, rules: RuleSet) -> None:
    running = await start_server(tmp_path, rules)
    try:
        ana = await running.client(await running.join("Ana"))
        assert (await ana.say("i want to kill myself", "r1"))["status"] == "held"
    finally:
        await running.stop()
    running = await start_server(tmp_path, rules)  # the same store: the record
    try:
        fac = await running.client(await running.login("facilitator"))
        alert = await fac.expect("alert", lambda e: e.get("backlog") is True)
        assert (alert["kind"], alert["name"], alert["room"], alert["message"]) == \
            ("risk", "Ana", "lounge", "r1")
        other = await running.client(await running.login("facilitator"))
        await other.expect("alert", lambda e: e["id"] == alert["id"])
        await fac.send(type="alert_ack", room="lounge", alert=alert["id"])
        assert (await fac.expect("error"))["code"] == "forbidden"  # not in the room yet
        await fac.send(type="join", room="lounge")
        await fac.send(type="alert_ack", room="lounge", alert=alert["id"])
        update = await other.expect("alert_update")
        assert (update["alert"], update["status"], update["by"]["name"]) == \
            (alert["id"], "acknowledged", "Facilitator")  # the display name
        await fac.send(type="alert_ack", room="lounge")
        assert (await fac.expect("error"))["code"] == "bad_request"  # no alert named
        entries = await running.server.store.audit("lounge", 0, 100)
        assert [e.detail["alert"] for e in entries if e.action == "alert_ack"] == [alert["id"]]
    finally:
        await running.stop()


async def test_request_support_reaches_counsellors_once(running: Running) -> None:
    cou = await running.client(await running.login("counsellor"))
    ben = await running.client(await running.join("Ben"))
    await ben.send(type="request_support", room="lounge", note="could i talk to someone")
    notice = await ben.expect("notice", lambda e: e["kind"] == "support_requested")
    case = (await cou.expect("case"))["case"]
    assert (case["id"], case["urgency"], case["note"]) == \
        (notice["case"], "routine", "could i talk to someone")
    await ben.send(type="request_support", room="lounge")
    again = await ben.expect("notice", lambda e: e["kind"] == "support_pending")
    assert again["case"] == case["id"]
    await ben.send(type="request_support", room="lounge", note="x" * 281)
    assert (await ben.expect("error"))["code"] == "too_large"


async def test_public_room_config_has_nothing_private(running: Running) -> None:
    await running.server.store.add_user(UserRow("u_morwenna", "morwenna", "facilitator",
                                                Passwords.hash("correct horse battery"),
                                                False))
    fac = await running.client(await running.login("morwenna"))
    await fac.send(type="join", room="lounge")
    await fac.expect("room")
    await running.client(await running.join("Ana"))
    status, body = await running.get("/api/rooms/lounge/public")
    assert status == 200
    assert (body["id"], body["title"], body["age_bands"]) == ("lounge", "Lounge",
                                                              ["13-15", "16-17"])
    assert body["guidelines"] and body["resources"] and body["notices"]["held"]
    assert "morwenna" not in str(body).lower() and "Ana" not in str(body)  # nobody named
    assert not {"members", "participants", "facilitators", "paused"} & set(body)
    status, body = await running.get("/api/rooms/nowhere/public")
    assert (status, body["error"]["code"]) == (404, "not_found")
