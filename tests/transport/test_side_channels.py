"""No side channel (issue 13 § 4): display names and send ids, over real sockets."""

from __future__ import annotations

import pytest

from tests.conftest import Running


@pytest.mark.parametrize("name", [
    "ChildIine", "Chi1dline", "Samar1tans", "SAMARlTANS", "Sh0ut", "M0derator", "Mod Team",
    "mod_team", "Faci1itator", "Counse11or", "Adm1n", "St4ff", "NSPCC", "the m0ds",
])
async def test_look_alike_staff_and_helpline_names_are_refused(running: Running,
                                                               name: str) -> None:
    status, body = await running.post("/api/join", {"room": "lounge", "name": name,
                                                    "age_band": "16-17"})
    assert status == 400, (name, body)
    assert body["error"]["code"] == "bad_request"


@pytest.mark.parametrize("name", [
    "jess 07911123456", "sc jess07", "sn4p lily", "jo at gmail dot com", "insta lily_x",
    "Lily 0791 112", "oh seven nine one one two",
])
async def test_names_carrying_contact_details_are_refused(running: Running, name: str) -> None:
    status, body = await running.post("/api/join", {"room": "lounge", "name": name,
                                                    "age_band": "16-17"})
    assert status == 400, (name, body)


@pytest.mark.parametrize("name", ["Alex", "Lily", "Ollie", "Isla", "Liam", "Emily", "Mia",
                                  "Sam 2009", "jo_b"])
async def test_ordinary_names_are_accepted(running: Running, name: str) -> None:
    await running.join(name)


@pytest.mark.parametrize("msg_id", ["07911 123456", "add me on snap", "a.b@c.com", "x" * 65,
                                    "id with spaces", "ünïcode", "a/b"])
async def test_a_send_id_that_is_not_a_short_token_is_bad_request(running: Running,
                                                                  msg_id: str) -> None:
    alex = await running.client(await running.join("Alex"))
    sam = await running.client(await running.join("Sam"))
    await alex.send(type="send", room="lounge", id=msg_id, text="hello")
    err = await alex.expect("error")
    assert err["code"] == "bad_request"
    # The peer never saw the id, and the sender can go on chatting with a proper one.
    ack = await alex.say("hello again", "ok-id_1")
    assert ack["status"] == "sent"
    got = await sam.expect("message", lambda e: e["id"] == "ok-id_1")
    assert got["text"] == "hello again"
    assert not any(e.get("id") == msg_id for e in sam.seen)
