"""SG-21 and SG-05 for staff: a staff member's display name is what young people see
and trust, so it may not look like a helpline, another organisation, the moderators or
the system, nor carry a phone number, an email address or a handle. Role words are
staff's own ("Facilitator Sam"). The real ``chatserver users`` command against the data
directory of a running server, as ops would run it; the rooms are read over WebSocket.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from chatserver.ports import UserRow
from chatserver.transport.auth import Passwords
from tests.conftest import Client, Running
from tests.safeguarding.test_safeguarding import run_cli


async def _users(tmp: Path, *args: str) -> tuple[int, str, str]:
    done = await asyncio.to_thread(run_cli, tmp, "users", *args)
    return done.returncode, done.stdout, done.stderr


async def _staff_in_the_lounge(running: Running, token: str) -> Client:
    staff = await running.client(token)
    await staff.send(type="join", room="lounge")
    await staff.expect("room")
    return staff


async def _staff_names_shown(running: Running, name: str) -> set[str]:
    """The staff names the lounge shows a young person called ``name`` who joins now."""
    young: Client = await running.client(await running.join(name))
    return {m["name"] for m in young.welcome["rooms"][0]["members"]
            if m["role"] != "participant"}


async def _staff_seen_by_a_young_person(running: Running, token: str, name: str) -> set[str]:
    """Staff ``token`` joins the lounge; a young person called ``name`` joins after and
    says which staff names the room shows."""
    await _staff_in_the_lounge(running, token)
    return await _staff_names_shown(running, name)


# The whole table is tests/core/test_policy.py's; here, each kind once through the CLI.
@pytest.mark.parametrize("name", ["Chi1dline Sam", "M0d team", "Sam 07700 900123",
                                  "sam@example.org", "snap sam_j"])
async def test_users_add_refuses_an_impersonating_or_contact_name_and_saves_nothing(
        running: Running, tmp_path: Path, name: str) -> None:
    code, out, err = await _users(tmp_path, "add", "sam", "--role", "facilitator",
                                  "--display-name", name)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"display name {name!r}: A staff "
                                                   "display name"), err
    assert "password" not in out  # refused before a password is made or shown
    assert await running.server.store.user("sam") is None


async def test_users_rename_refuses_too_and_the_account_stays_as_it_was(
        running: Running, tmp_path: Path) -> None:
    before = await running.server.store.user("facilitator")
    code, out, err = await _users(tmp_path, "rename", "facilitator", "--display-name",
                                  "Childline Sam")
    assert code == 2, (out, err)
    assert "helpline" in err and "Facilitator Sam" in err  # what is refused, what is fine
    assert await running.server.store.user("facilitator") == before  # version unmoved
    code, _, err = await _users(tmp_path, "rename", "nobody", "--display-name", "Sam")
    assert (code, err.strip()) == (1, "no user nobody")


async def test_a_role_word_in_a_staff_name_is_fine_and_young_people_see_it(
        running: Running, tmp_path: Path) -> None:
    code, out, err = await _users(tmp_path, "add", "sam", "--role", "facilitator",
                                  "--display-name", "  Facilitator Sam ")
    assert code == 0, err
    found = re.search(r"password for sam: (\S+)", out)
    assert found is not None, out
    password = found.group(1)
    token = await running.login("sam", password)
    in_lounge = await _staff_in_the_lounge(running, token)
    assert await _staff_names_shown(running, "Ana") == {"Facilitator Sam"}
    # A rename keeps the password and ends the sessions that carry the old name: every
    # one of them (the server checks open sockets a few at a time, so one may close a
    # pass later than another; until it does, the room still shows the old name).
    old = await running.client(token)
    code, out, err = await _users(tmp_path, "rename", "sam", "--display-name",
                                  "Sam (evenings)")
    assert code == 0, err
    assert "'Sam (evenings)'" in out
    assert await old.closed_with(timeout=5) == 4401
    assert await in_lounge.closed_with(timeout=5) == 4401
    token = await running.login("sam", password)
    assert await _staff_seen_by_a_young_person(running, token, "Bea") == {"Sam (evenings)"}


async def test_a_stored_name_the_rule_refuses_shows_as_the_role_name(
        running: Running) -> None:
    # Written before the rule existed (or into the store by hand): never shown to anyone.
    await running.server.store.add_user(UserRow(
        "u_old", "old.hand", "facilitator", Passwords.hash("correct horse battery"), False,
        display_name="Childline"))
    with capture_logs() as logs:
        status, body = await running.post("/api/login", {"username": "old.hand",
                                                         "password": "correct horse battery"})
    assert status == 200, body
    assert body["user"]["display_name"] == "Facilitator"
    assert {"event": "staff_display_name_refused", "user": "u_old",
            "log_level": "warning"} in logs
    seen = await _staff_seen_by_a_young_person(running, body["token"], "Cal")
    assert seen == {"Facilitator"}
