"""Issue 14's remaining findings over real sockets against a real server: report spam
coalesced and rate-limited, forbidden commands summarised, departed participants
dropped from a room's state, and privacy between roles (cases, staff names, audit)."""

from __future__ import annotations

from pathlib import Path

from chatserver.core.ids import RoomId
from chatserver.moderation.engine import RuleSet
from chatserver.ports import UserRow
from chatserver.transport.auth import Passwords
from tests.conftest import Client, FakeClock, Running, start_server


async def _lounge_with_message(running: Running) -> tuple[int, Client, Client]:
    fac = await running.client(await running.login("facilitator"))
    await fac.send(type="join", room="lounge")
    await fac.expect("room")
    ana = await running.client(await running.join("Ana"))
    ben = await running.client(await running.join("Ben"))
    assert (await ana.say("hello all", "m1"))["status"] == "sent"
    seq = (await ben.expect("message", lambda e: e["id"] == "m1"))["seq"]
    return seq, fac, ben


async def test_report_spam_is_one_counted_alert_and_then_rate_limited(
        running: Running) -> None:
    seq, fac, ben = await _lounge_with_message(running)
    for _ in range(5):  # limits.reports_per_window
        await ben.send(type="report", room="lounge", seq=seq, reason="spam")
        await ben.expect("notice", lambda e: e["kind"] == "report_received")
    await ben.send(type="report", room="lounge", seq=seq, reason="spam")
    assert (await ben.expect("error"))["code"] == "rate_limited"
    first = await fac.expect("alert", lambda e: e["kind"] == "report")
    counts = [(await fac.expect("alert_update"))["count"] for _ in range(4)]
    assert counts == [2, 3, 4, 5]
    assert running.server.core.alerts.open[first["id"]].count == 5
    assert len(running.server.core.alerts.open) == 1  # one alert, not five
    # The backlog a facilitator signing in now gets says how many.
    late = await running.client(await running.login("facilitator"))
    backlog = await late.expect("alert", lambda e: e.get("backlog") is True)
    assert (backlog["id"], backlog["count"]) == (first["id"], 5)
    reports = [e for e in await running.server.store.audit("lounge", 0, 100)
               if e.action == "report"]
    assert len(reports) == 5  # the sixth was refused, not stored


async def test_forbidden_commands_audit_the_first_and_one_summary(
        tmp_path: Path, rules: RuleSet) -> None:
    clock = FakeClock()  # a frozen clock: the frame budget must hold 101 frames
    running = await start_server(tmp_path, rules, clock=clock, frame_burst=200.0)
    try:
        ana = await running.client(await running.join("Ana"))
        for i in range(100):
            await ana.send(type="pause" if i % 2 else "mute", room="lounge",
                           participant="p_x")
            assert (await ana.expect("error"))["code"] == "forbidden"
        rows = await running.server.store.audit(None, 0, 1000)
        assert [e.action for e in rows if e.action.startswith("denied")] == ["denied"]
        clock.advance(61)  # limits.denied_audit_window_s ends; the next tick writes it
        await ana.send(type="pause", room="lounge")
        assert (await ana.expect("error"))["code"] == "forbidden"
        rows = await running.server.store.audit(None, 0, 1000)
        denied = [e for e in rows if e.action.startswith("denied")]
        assert [e.action for e in denied] == ["denied", "denied_summary", "denied"]
        assert denied[1].detail["denied"] == 100
        assert denied[1].detail["commands"] == ["mute", "pause"]
    finally:
        await running.stop()


async def test_departed_participants_leave_the_rooms_state_but_resume_and_removal_hold(
        tmp_path: Path, rules: RuleSet) -> None:
    clock = FakeClock()
    running = await start_server(tmp_path, rules, clock=clock)
    try:
        room = running.server.core.rooms[RoomId("lounge")]
        fac = await running.client(await running.login("facilitator"))
        await fac.send(type="join", room="lounge")
        await fac.expect("room")
        stay = await running.client(await running.join("Stay"))
        tokens = []
        for i in range(30):
            token = await running.join(f"Visitor {i}")
            tokens.append(token)
            visitor = await running.client(token)
            if i == 0:  # ignores someone; must still do so after a resume
                bully = stay.welcome["you"]["id"]
                await visitor.send(type="ignore", room="lounge", participant=bully)
                await visitor.expect("room")
            await visitor.close()
            name = f"Visitor {i}"
            await fac.expect("room", lambda e: all(m["name"] != name  # noqa: B023
                                                   for m in e["members"]))
        # Gone from the members every message is fanned out over.
        assert set(room.members) == {fac.welcome["you"]["id"], stay.welcome["you"]["id"]}
        assert len(room.departed) == 30
        # A resume within the window finds the ignore list as it was.
        back = await running.client(tokens[0], resume={"lounge": 0})
        me = back.welcome["you"]["id"]
        assert room.ignores[me] == {stay.welcome["you"]["id"]}
        await back.close()
        await fac.expect("room", lambda e: all(m["id"] != me for m in e["members"]))
        # Staff can still remove someone who just dropped; it sticks.
        gone = next(iter(room.departed))
        await fac.send(type="remove", room="lounge", participant=gone, reason="abuse")
        await fac.expect("room")
        assert gone in room.removed
        # After limits.departed_keep_s the room forgets them; the removal stays.
        # A mute's expiry runs on the same tick: its notice says the tick has run.
        await fac.send(type="mute", room="lounge", participant=stay.welcome["you"]["id"],
                       minutes=1)
        await stay.expect("notice", lambda e: e["kind"] == "muted")
        clock.advance(601)
        await stay.expect("notice", lambda e: e["kind"] == "unmuted")
        assert not room.departed and me not in room.ignores
        assert gone in room.removed
        assert not running.server.core.remembers(me)  # nor does the node
    finally:
        await running.stop()


async def test_counsellors_do_not_get_each_others_cases_over_websocket(
        running: Running) -> None:
    await running.server.store.add_user(UserRow(
        "u_other", "other", "counsellor", Passwords.hash("correct horse battery"), False))
    mine = await running.client(await running.login("counsellor"))
    other = await running.client(await running.login("other"))
    fac = await running.client(await running.login("facilitator"))
    await fac.send(type="join", room="lounge")
    await fac.expect("room")
    ana = await running.client(await running.join("Ana"))
    pid = ana.welcome["you"]["id"]
    await fac.send(type="escalate", room="lounge", participant=pid, urgency="urgent",
                   note="worried about her at home")
    case = (await mine.expect("case"))["case"]
    assert (await other.expect("case"))["case"]["note"] == "worried about her at home"
    await mine.send(type="claim", case=case["id"])
    claimed = (await mine.expect("case", lambda e: e["case"]["status"] == "claimed"))["case"]
    assert claimed["note"] and claimed["counsellor"] == "u_counsellor"
    taken = (await other.expect("case", lambda e: e["case"]["status"] == "claimed"))["case"]
    assert taken == {"id": case["id"], "room": "lounge", "urgency": "urgent",
                     "status": "claimed", "ts": case["ts"]}
    await mine.send(type="close_case", case=case["id"], outcome="safe plan agreed")
    await mine.expect("case", lambda e: e["case"]["status"] == "closed")
    closed = (await other.expect("case", lambda e: e["case"]["status"] == "closed"))["case"]
    assert "outcome" not in closed and "note" not in closed and "context" not in closed
    # A counsellor signing in later gets none of it; the HTTP route agrees.
    late = await running.client(await running.login("other"))
    await late.send(type="join", room="nowhere")
    await late.expect("error")
    assert not [e for e in late.seen if e.get("type") == "case"]
    status, body = await running.get("/api/cases", await running.login("other"))
    assert (status, body["cases"]) == (200, [])


async def test_young_people_see_staff_display_names_never_logins_or_account_ids(
        running: Running) -> None:
    await running.server.store.add_user(UserRow(
        "u_k7Qz", "morwenna.k", "facilitator", Passwords.hash("correct horse battery"),
        False, display_name="Sam (facilitator)"))
    named = await running.client(await running.login("morwenna.k"))
    await named.send(type="join", room="lounge")
    await named.expect("room")
    plain = await running.client(await running.login("facilitator"))
    await plain.send(type="join", room="lounge")
    await plain.expect("room")
    ana = await running.client(await running.join("Ana"))
    assert (await named.say("welcome in", "f1"))["status"] == "sent"
    message = await ana.expect("message", lambda e: e["id"] == "f1")
    staff = {m["name"]: m for m in ana.welcome["rooms"][0]["members"]
             if m["role"] != "participant"}
    assert set(staff) == {"Sam (facilitator)", "Facilitator"}
    assert message["from"]["name"] == "Sam (facilitator)"
    assert message["from"]["id"] == staff["Sam (facilitator)"]["id"]
    seen = str([ana.welcome, *ana.seen])
    for secret in ("morwenna", "u_k7Qz", "u_facilitator"):
        assert secret not in seen


async def test_facilitators_cannot_read_counselling_from_the_audit(
        running: Running) -> None:
    cou = await running.client(await running.login("counsellor"))
    fac = await running.client(await running.login("facilitator"))
    await fac.send(type="join", room="lounge")
    await fac.expect("room")
    ana = await running.client(await running.join("Ana"))
    await fac.send(type="escalate", room="lounge", participant=ana.welcome["you"]["id"],
                   urgency="routine", note="asked for help")
    case = (await cou.expect("case"))["case"]
    await cou.send(type="claim", case=case["id"])
    room = (await cou.expect("case", lambda e: e["case"]["status"] == "claimed")
            )["case"]["private_room"]
    await ana.expect("room", lambda e: e["room"] == room)
    assert (await ana.say("thank you for talking", "c1", room=room))["status"] == "sent"
    await cou.send(type="close_case", case=case["id"], outcome="referred to GP")
    await cou.expect("case", lambda e: e["case"]["status"] == "closed")
    status, body = await running.get("/api/audit", await running.login("facilitator"))
    assert status == 200
    actions = {e["action"] for e in body["entries"]}
    assert "escalate" in actions  # their own facilitation stays readable
    assert not actions & {"claim", "close_case", "login"}
    assert all(e["room"] == "lounge" for e in body["entries"])
    assert "referred to GP" not in str(body)
    status, body = await running.get("/api/audit", await running.login("ops"))
    assert {"claim", "close_case"} <= {e["action"] for e in body["entries"]}
    status, body = await running.get("/api/audit", await running.login("counsellor"))
    assert status == 403
