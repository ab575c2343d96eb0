"""Issue 14 § Identities and volume, over real sockets: removal that sticks, budgets
per client address for joins and hellos, a bounded welcome."""

from __future__ import annotations

from pathlib import Path

import orjson
import websockets

from chatserver.moderation.engine import RuleSet
from tests.conftest import Client, FakeClock, Running, start_server
from tests.security.test_login import post_from


async def _facilitator(running: Running) -> Client:
    fac = await running.client(await running.login("facilitator"))
    await fac.send(type="join", room="lounge")
    await fac.expect("room")
    return fac


def _join(name: str) -> dict[str, str]:
    return {"room": "lounge", "name": name, "age_band": "16-17"}


async def test_a_removal_sticks_for_the_room_under_the_same_name_or_the_same_token(
        running: Running) -> None:
    fac = await _facilitator(running)
    token = await running.join("Robin")
    robin = await running.client(token)
    await fac.send(type="remove", room="lounge", participant=robin.welcome["you"]["id"],
                   reason="asked to leave")
    assert await robin.closed_with() == 4403
    for name in ("Robin", "robin", " ROBIN "):
        status, body = await running.post("/api/join", _join(name))
        assert (status, body["error"]["code"]) == (403, "forbidden")
    # A fresh identity asked for with the removed token, under another name: refused.
    status, _ = await running.post("/api/join", _join("Robin Again"), token)
    assert status == 403
    # Nobody else is affected.
    assert (await running.client(await running.join("Sky"))).welcome["you"]["name"] == "Sky"


async def test_joins_per_address_are_budgeted_and_other_addresses_still_join(
        tmp_path: Path, rules: RuleSet) -> None:
    clock = FakeClock()
    running = await start_server(tmp_path, rules, clock=clock,
                                 joins_per_address=3)
    try:
        codes = [(await post_from(running, "127.0.0.2", "/api/join", _join(f"Kid{i}")))[0]
                 for i in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        assert (await post_from(running, "127.0.0.3", "/api/join", _join("Other")))[0] == 200
        clock.advance(60)  # the window ends
        assert (await post_from(running, "127.0.0.2", "/api/join", _join("Kid9")))[0] == 200
    finally:
        await running.stop()


async def test_hellos_per_address_are_budgeted_then_rate_limited_and_closed_1008(
        tmp_path: Path, rules: RuleSet) -> None:
    running = await start_server(tmp_path, rules,
                                 hellos_per_address=2)
    try:
        token = await running.join("Hal")
        first = [await running.client(token) for _ in range(2)]
        late = await running.client_raw(token)
        error = await late.expect("error")
        assert error["code"] == "rate_limited"
        assert await late.closed_with() == 1008
        assert (await first[0].say("still here", "s1"))["status"] == "sent"
    finally:
        await running.stop()


async def test_a_resume_welcome_is_bounded_in_bytes_and_marked_gap(
        tmp_path: Path, rules: RuleSet) -> None:
    running = await start_server(tmp_path, rules,
                                 welcome_bytes=8192, rate_messages=1000, frame_rate=1e6,
                                 frame_burst=1e6)
    try:
        talker = await running.client(await running.join("Talker"))
        for i in range(40):
            assert (await talker.say(f"{i} " + "long line of talk " * 50, f"m{i}")
                    )["status"] == "sent"
        # A hello of ~150 bytes with resume from the very start.
        ws = await websockets.connect(running.ws_url)
        hello = orjson.dumps({"type": "hello", "token": await running.join("Peek"),
                              "resume": {"lounge": 0}})
        await ws.send(hello.decode())
        raw = await ws.recv()
        await ws.close()
        welcome = orjson.loads(raw)
        assert welcome["type"] == "welcome" and len(raw) < 8192 + 4096
        history = welcome["history"]["lounge"]
        assert history and history[-1]["id"] == "m39"  # the newest are the ones kept
        assert len(history) < 40
        room = next(r for r in welcome["rooms"] if r["room"] == "lounge")
        assert room.get("gap") is True  # cut short: the client knows to reload
    finally:
        await running.stop()
