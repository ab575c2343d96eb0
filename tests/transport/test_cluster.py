"""Issue 6 acceptance 1 and 2: two server processes, one Redis, one PostgreSQL.

Young people and staff on different nodes of one room: one seq order, one member list,
and a facilitator's action on node A takes effect at once for someone on node B.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Node, cluster_of
from tests.conftest import RULES_DIR, Client

pytestmark = pytest.mark.slow

ROOM = "demo"


def names(event: dict[str, Any]) -> set[str]:
    return {m["name"] for m in event["members"]}


def _ref(ref: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: bool(e["ref"] == ref)


async def _messages(client: Client, n: int) -> list[tuple[int, str]]:
    got = []
    for _ in range(n):
        m = await client.expect("message", timeout=15)
        got.append((m["seq"], m["id"]))
    return got


async def test_members_on_two_nodes_see_one_seq_order_and_one_member_list(
        tmp_path: Path) -> None:
    async with cluster_of(tmp_path, "a", "b") as cluster:
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        nodes = (a, b, a, b)
        clients = [await node.client(await node.join(f"Kid{i}", room=ROOM))
                   for i, node in enumerate(nodes)]
        everyone = {f"Kid{i}" for i in range(4)}
        lists = [await c.expect("room", lambda e: names(e) == everyone, timeout=10)
                 for c in clients]
        # The same list, in the same order, whichever node a member is on.
        assert all(s["members"] == lists[0]["members"] for s in lists)

        per_client = 10

        async def chatter(i: int, c: Client) -> dict[str, int]:
            for k in range(per_client):
                await c.send(type="send", room=ROOM, id=f"k{i}-{k}", text=f"hello {k} from {i}")
            acks = []
            for k in range(per_client):
                acks.append(await c.expect("ack", _ref(f"k{i}-{k}"), timeout=15))
            assert all(a["status"] == "sent" for a in acks), acks
            return {a["ref"]: a["seq"] for a in acks}

        acked: dict[str, int] = {}
        for part in await asyncio.gather(*(chatter(i, c) for i, c in enumerate(clients))):
            acked |= part
        total = per_client * len(clients)
        views = await asyncio.gather(*(_messages(c, total) for c in clients))
        expected = sorted((seq, mid) for mid, seq in acked.items())
        for view in views:
            assert view == expected  # every message, once, in seq order, on both nodes
        assert [s for s, _ in expected] == list(range(expected[0][0], expected[0][0] + total))


async def _facilitator_on(node: Node) -> Client:
    fac = await node.client(await node.login("fac"))
    await fac.send(type="join", room=ROOM)
    await fac.expect("room")
    return fac


async def test_a_facilitator_on_node_a_acts_on_a_young_person_on_node_b(
        tmp_path: Path) -> None:
    async with cluster_of(tmp_path, "a", "b") as cluster:
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        fac = await _facilitator_on(a)
        kid = await b.client(await b.join("Kid", room=ROOM))
        ben = await b.client(await b.join("Ben", room=ROOM))
        pid = kid.welcome["you"]["id"]
        await fac.expect("room", lambda e: {"Kid", "Ben"} <= names(e), timeout=10)
        # A name in use on node B is in use on node A too (no impersonation across nodes).
        status, _ = await a.post("/api/join", {"room": ROOM, "name": "kid",
                                               "age_band": "16-17"})
        assert status == 409

        # Mute: the notice and the refusal come from node B at once.
        await fac.send(type="mute", room=ROOM, participant=pid, minutes=5, reason="calm")
        await kid.expect("notice", lambda e: e["kind"] == "muted")
        assert (await kid.say("can i talk?", "m1", room=ROOM))["code"] == "muted"
        await fac.send(type="unmute", room=ROOM, participant=pid)
        await kid.expect("notice", lambda e: e["kind"] == "unmuted")
        assert (await kid.say("thanks", "m2", room=ROOM))["status"] == "sent"
        await fac.expect("message", lambda e: e["id"] == "m2")

        # Pause and resume.
        kid.forget("room")
        await fac.send(type="pause", room=ROOM, reason="a breather")
        await kid.expect("room", lambda e: e["paused"] is True)
        assert (await kid.say("hello?", "m3", room=ROOM))["code"] == "paused"
        kid.forget("room")
        await fac.send(type="resume", room=ROOM)
        await kid.expect("room", lambda e: e["paused"] is False)
        assert (await kid.say("hello again", "m4", room=ROOM))["status"] == "sent"

        # Escalate to a counsellor on node A, who claims the case: the one-to-one room
        # reaches the young person on node B.
        couns = await a.client(await a.login("couns"))
        await fac.send(type="escalate", room=ROOM, participant=pid, urgency="urgent",
                       note="asked to talk privately")
        await kid.expect("notice", lambda e: e["kind"] == "escalated")
        case = (await couns.expect("case", lambda e: e["case"]["participant"] == pid))["case"]
        await couns.send(type="claim", case=case["id"])
        note = await kid.expect("notice", lambda e: e["kind"] == "escalated" and "room" in e)
        private = note["room"]
        await kid.expect("room", lambda e: e["room"] == private, timeout=10)
        assert (await couns.say("i'm here", "c1", room=private))["status"] == "sent"
        await kid.expect("message", lambda e: e["id"] == "c1")
        assert (await kid.say("thank you", "p1", room=private))["status"] == "sent"
        await couns.expect("message", lambda e: e["id"] == "p1")

        # A held message from node B is reviewed on node A: approved, it reaches node B.
        assert (await kid.say("i want to kill myself", "r1", room=ROOM))["status"] == "held"
        held = (await fac.expect("held", lambda e: e["held"]["from"]["id"] == pid))["held"]
        assert not any(e.get("id") == "r1" for e in ben.seen)
        await fac.send(type="approve", room=ROOM, held=held["id"])
        await ben.expect("message", lambda e: e["id"] == "r1")

        # Remove someone on node B: told, closed 4403, gone from the list on node A.
        await fac.send(type="remove", room=ROOM, participant=ben.welcome["you"]["id"],
                       reason="abusive")
        await ben.expect("notice", lambda e: e["kind"] == "removed")
        assert await ben.closed_with() == 4403
        await fac.expect("room", lambda e: "Ben" not in names(e) and "Kid" in names(e))


async def _version(node: Node, token: str) -> str:
    _, body = await node.post("/api/rules/try", {"text": "hello"}, token)
    return str(body["version"])


async def test_a_room_opened_and_rules_reloaded_through_one_node_apply_on_the_other(
        tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    async with cluster_of(tmp_path, "a", "b",
                          CHATSERVER_MODERATION_RULES_DIR=str(rules)) as cluster:
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        ops = await a.login("ops1")
        status, _ = await a.post("/api/rooms", {"id": "night-owls", "title": "Night owls",
                                                "age_bands": ["16-17"]}, ops)
        assert status == 201
        kid = await b.client(await b.join("Kid", room="night-owls"))
        assert [r["room"] for r in kid.welcome["rooms"]] == ["night-owls"]
        watcher = await a.client(ops)
        await watcher.send(type="join", room="night-owls")
        await watcher.expect("room", lambda e: "Kid" in names(e), timeout=10)
        _, listed = await a.get("/api/rooms", ops)  # the dashboard counts every node
        owls = next(r for r in listed["rooms"] if r["id"] == "night-owls")
        assert owls["participants"] == 1

        probe = {"text": "a purple elephant"}
        _, before = await b.post("/api/rules/try", probe, ops)
        assert before["action"] == "allow"
        (rules / "zz_local.toml").write_text(
            '[[rule]]\nid = "local.elephant"\ncategory = "abuse"\naction = "block"\n'
            'words = ["elephant"]\nexamples.match = ["an elephant"]\n'
            'examples.no_match = ["an element"]\n')
        status, reloaded = await a.post("/api/rules/reload", {}, ops)
        assert status == 200
        async with asyncio.timeout(20):  # node B reloads in the background: ask it
            while await _version(b, ops) != reloaded["version"]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # polled over HTTP, as ops would
        assert (await b.post("/api/rules/try", probe, ops))[1]["action"] == "block"


async def test_sec19_fl03_one_budget_and_one_socket_cap_per_person_across_nodes(
        tmp_path: Path) -> None:
    async with cluster_of(tmp_path, "a", "b", CHATSERVER_LIMITS_RATE_MESSAGES="5") as cluster:
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        token = await a.join("Many", room=ROOM)
        on_a = [await a.client(token), await a.client(token)]
        on_b = await b.client(token)
        await a.client(await a.join("Other", room=ROOM))
        # Node B has heard from node A once it lists someone connected only to A.
        await on_b.expect("room", lambda e: "Other" in names(e), timeout=10)
        fourth = await b.client_raw(token)
        assert await fourth.closed_with(10) == 1008  # 2 on A + 1 on B: the cap is 3
        # One budget of 5 messages per 10 s, whichever node each send goes through.
        results = []
        for i in range(6):
            client = on_a[i % 2] if i % 3 else on_b
            results.append((await client.say(f"hello {i}", f"m{i}", room=ROOM))["status"])
        assert results == ["sent"] * 5 + ["rejected"]


async def test_a_node_that_had_nobody_in_a_room_starts_hearing_it_when_someone_joins(
        tmp_path: Path) -> None:
    """Nodes subscribe only to rooms they serve someone in: the first member on node B
    gets the room's history, then every later message live, once, in order."""
    async with cluster_of(tmp_path, "a", "b") as cluster:
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        first = await a.client(await a.join("First", room=ROOM))
        for i in range(3):
            assert (await first.say(f"before {i}", f"b{i}", room=ROOM))["status"] == "sent"
        late = await b.client(await b.join("Late", room=ROOM))
        assert [m["id"] for m in late.welcome["history"][ROOM]][-3:] == ["b0", "b1", "b2"]
        for i in range(3):
            assert (await first.say(f"after {i}", f"a{i}", room=ROOM))["status"] == "sent"
        live = [(await late.expect("message"))["id"] for _ in range(3)]
        assert live == ["a0", "a1", "a2"]
        assert [e["id"] for e in late.seen if e.get("type") == "message"] == live
        await late.close()
        # Nobody left on node B; someone comes back there later and resumes.
        assert (await first.say("while away", "w0", room=ROOM))["status"] == "sent"
        back = await b.client(await b.join("Back", room=ROOM), resume={ROOM: 0})
        assert "w0" in [m["id"] for m in back.welcome["history"][ROOM]]
        assert (await first.say("welcome back", "w1", room=ROOM))["status"] == "sent"
        assert (await back.expect("message"))["id"] == "w1"


async def _claim_outcome(client: Client) -> dict[str, Any]:
    """The private room's state (this counsellor got the case) or an error (did not)."""
    def decided(e: dict[str, Any]) -> bool:
        return bool(e["type"] == "error" or
                    (e["type"] == "room" and e["room"].endswith("-room")))
    async with asyncio.timeout(10):
        while True:
            event = await client.next(10)
            if decided(event):
                return event


async def test_two_counsellors_on_two_nodes_claim_one_case_and_one_gets_it(
        tmp_path: Path) -> None:
    async with cluster_of(tmp_path, "a", "b") as cluster:
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        fac = await _facilitator_on(a)
        kid = await b.client(await b.join("Kid", room=ROOM))
        pid = kid.welcome["you"]["id"]
        await fac.expect("room", lambda e: "Kid" in names(e), timeout=10)
        one, two = await a.client(await a.login("couns")), await b.client(await b.login("couns2"))
        await fac.send(type="escalate", room=ROOM, participant=pid, urgency="emergency",
                       note="needs someone now")
        case = (await one.expect("case", lambda e: e["case"]["participant"] == pid))["case"]
        await two.expect("case", lambda e: e["case"]["id"] == case["id"])
        await asyncio.gather(one.send(type="claim", case=case["id"]),
                             two.send(type="claim", case=case["id"]))
        outcomes = await asyncio.gather(_claim_outcome(one), _claim_outcome(two))
        assert sorted(o["type"] for o in outcomes) == ["error", "room"], outcomes
        loser_error = next(o for o in outcomes if o["type"] == "error")
        assert loser_error["code"] in ("conflict", "not_found")
        winner, loser = (one, two) if outcomes[0]["type"] == "room" else (two, one)
        private = next(o for o in outcomes if o["type"] == "room")["room"]
        # The young person is with the winner alone; the loser cannot speak in that room.
        await kid.expect("room", lambda e: e["room"] == private and
                         len(e["members"]) == 2, timeout=10)
        assert (await winner.say("i'm here for you", "w1", room=private))["status"] == "sent"
        await kid.expect("message", lambda e: e["id"] == "w1")
        assert (await loser.say("hello?", "l1", room=private))["code"] == "forbidden"
        assert not [e for e in kid.seen if e.get("id") == "l1"]


def _cases_of(client: Client, case_id: str) -> list[dict[str, Any]]:
    """Every ``case`` frame this client has received about one case, in order."""
    return [e["case"] for e in client.seen
            if e.get("type") == "case" and e["case"]["id"] == case_id]


async def test_a_case_claimed_on_node_a_reaches_counsellors_on_node_b_only_in_brief(
        tmp_path: Path) -> None:
    """Issue 14 § Privacy between roles across nodes: the claiming counsellor (node A)
    gets the case in full, on either node; another counsellor on node B learns only that
    it left the queue (no participant, note, context or counsellor); ops on node B see it
    in full."""
    async with cluster_of(tmp_path, "a", "b") as cluster:
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        fac = await _facilitator_on(a)
        kid = await b.client(await b.join("Kid", room=ROOM))
        pid = kid.welcome["you"]["id"]
        await fac.expect("room", lambda e: "Kid" in names(e), timeout=10)
        assert (await kid.say("things at home are bad", "k1", room=ROOM))["status"] == "sent"
        await fac.expect("message", lambda e: e["id"] == "k1", timeout=10)
        mine = await a.client(await a.login("couns"))
        mine_on_b = await b.client(await b.login("couns"))  # the same counsellor, again
        other = await b.client(await b.login("couns2"))
        ops = await b.client(await b.login("ops1"))
        await fac.send(type="escalate", room=ROOM, participant=pid, urgency="urgent",
                       note="worried about home")

        def about(status: str) -> Callable[[dict[str, Any]], bool]:
            return lambda e: bool(e["case"]["status"] == status)  # the one case there is

        opened = (await mine.expect("case", about("open"), timeout=10))["case"]
        # The open queue is every counsellor's, in full, on either node.
        queued = (await other.expect("case", about("open"), timeout=10))["case"]
        assert queued["note"] == "worried about home"
        assert "things at home are bad" in [m["text"] for m in queued["context"]]

        await mine.send(type="claim", case=opened["id"])
        full = (await mine.expect("case", about("claimed"), timeout=10))["case"]
        assert (full["id"], full["participant"], full["note"]) == (opened["id"], pid,
                                                                    "worried about home")
        assert full["counsellor"] and full["private_room"]
        assert "things at home are bad" in [m["text"] for m in full["context"]]
        brief = {"id": opened["id"], "room": ROOM, "urgency": "urgent", "ts": opened["ts"]}
        taken = (await other.expect("case", about("claimed"), timeout=10))["case"]
        assert taken == {**brief, "status": "claimed"}
        # In full on node B to whoever the rule lets see it: the envelope carries the
        # claiming counsellor, so node B tells its own session from another's.
        assert (await mine_on_b.expect("case", about("claimed"), timeout=10))["case"] == full
        assert (await ops.expect("case", about("claimed"), timeout=10))["case"] == full

        await mine.send(type="close_case", case=opened["id"], outcome="safe plan agreed")
        await mine.expect("case", about("closed"), timeout=10)
        closed = (await other.expect("case", about("closed"), timeout=10))["case"]
        assert closed == {**brief, "status": "closed"}
        assert (await ops.expect("case", about("closed"), timeout=10))["case"]["note"] \
            == "worried about home"
        # Node A publishes a case's full frame before its brief, on one channel, and
        # node B delivers them in order: by the brief, any full frame would be here.
        assert _cases_of(other, opened["id"]) == [queued, taken, closed]

        # The record synced to node B agrees: a later sign-in there is not sent the case
        # and GET /api/cases lists nothing; ops still read it in full.
        token = await b.login("couns2")
        late = await b.client(token)
        await late.send(type="join", room="nowhere")
        await late.expect("error")
        assert _cases_of(late, opened["id"]) == []
        status, body = await b.get("/api/cases", token)
        assert (status, [c["id"] for c in body["cases"]]) == (200, [])
        status, body = await b.get("/api/cases?status=closed", await b.login("ops1"))
        assert status == 200
        assert [c["note"] for c in body["cases"] if c["id"] == opened["id"]] == [
            "worried about home"]
