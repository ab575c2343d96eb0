"""Issue 16 in the pure core: stored alerts (backlog at sign-in, acknowledge, resolve)
and a young person asking for a one-to-one themselves (``request_support``)."""

from __future__ import annotations

import pytest

from chatserver.core import commands as c
from chatserver.core.audit import AuditAction
from chatserver.core.effects import AlertRecord, CaseRecord, Persist, RoomRecord
from chatserver.core.ids import AlertId, ConnId, ParticipantId, RoomId
from chatserver.core.roles import Role
from chatserver.core.session import Identity
from chatserver.core.vocabulary import RoomKind
from chatserver.moderation.engine import RuleSet
from tests.core.harness import RoomHarness

R = RoomId("r")
OTHER = RoomId("other")
RISK = "i want to kill myself"


def pid(name: str) -> ParticipantId:
    return ParticipantId(f"id-{name}")


@pytest.fixture
def h(rules: RuleSet) -> RoomHarness:
    h = RoomHarness(rules)
    h.core.add_room(RoomRecord(OTHER, "Other", ("16-17",), "default", RoomKind.GROUP, False, 0, {},
                               (), False))
    return h


def staff_in(h: RoomHarness, name: str, room: RoomId, role: Role = Role.FACILITATOR,
             now: int = 0) -> ConnId:
    """A member of staff signed in and in ``room`` (the harness puts staff in ``r``)."""
    h._next += 1
    conn = ConnId(h._next)
    h.core.connect(conn)
    h.run(h.core.hello(conn, Identity(pid(name), name, role), {}, now))
    h.send(conn, c.Join(room), now)
    return conn


def raise_risk(h: RoomHarness, name: str = "Ana", now: int = 1_000) -> ConnId:
    """A young person discloses risk in room ``r`` (no facilitator need be there)."""
    ana = h.connect(name)
    assert h.say(ana, RISK, f"{name}-1", now=now)["status"] == "held"
    return ana


def test_an_alert_raised_with_nobody_signed_in_is_in_the_backlog_at_sign_in(
        h: RoomHarness) -> None:
    raise_risk(h, now=1_000)
    record = next(r for r in h.stored if isinstance(r, AlertRecord))
    assert (record.kind, record.name, record.status) == ("risk", "Ana", "open")
    fac = h.connect("Fac", Role.FACILITATOR, now=5_000)
    [alert] = h.of(fac, "alert")
    assert alert["backlog"] is True
    assert (alert["kind"], alert["room"], alert["name"], alert["ts"], alert["status"]) == \
        ("risk", "r", "Ana", 1_000, "open")
    assert alert["message"] == "Ana-1" and alert["held"]  # the message it concerns
    assert alert["id"] == record.id
    assert "kill myself" in str(alert["excerpt"])


def test_live_alerts_reach_every_facilitator_whichever_room_they_have_open(
        h: RoomHarness) -> None:
    here = h.connect("Fac", Role.FACILITATOR)
    elsewhere = staff_in(h, "Eli", OTHER)
    raise_risk(h)
    for conn in (here, elsewhere):
        [alert] = h.of(conn, "alert")
        assert (alert["kind"], alert["name"], alert["status"]) == ("risk", "Ana", "open")
        assert "backlog" not in alert


def test_acknowledge_is_seen_by_every_facilitator_and_audited(h: RoomHarness) -> None:
    raise_risk(h, now=1_000)
    fac = h.connect("Fac", Role.FACILITATOR, now=2_000)
    other = h.connect("Oli", Role.FACILITATOR, now=2_000)
    alert = AlertId(str(h.of(fac, "alert")[0]["id"]))
    h.send(fac, c.AlertAck(R, alert), now=61_000)
    for conn in (fac, other):
        [update] = h.of(conn, "alert_update")
        assert (update["alert"], update["status"], update["ts"]) == (alert, "acknowledged",
                                                                       61_000)
        assert update["by"] == {"id": "id-Fac", "name": "Fac", "role": "facilitator"}
    entry = next(e for e in h.audit if e.action == "alert_ack")
    assert (entry.actor, entry.target, entry.detail["alert"], entry.detail["raised"]) == \
        ("id-Fac", "id-Ana", alert, 1_000)
    # Someone signing in later sees who has it.
    late = h.connect("Lou", Role.FACILITATOR, now=70_000)
    [backlog] = h.of(late, "alert")
    assert backlog["status"] == "acknowledged"
    assert backlog["acknowledged_by"]["name"] == "Fac"
    # A second acknowledge is a conflict that names who has it; nothing changes.
    h.send(other, c.AlertAck(R, alert), now=71_000)
    error = h.of(other, "error")[-1]
    assert error["code"] == "conflict" and "Fac" in str(error["message"])
    assert [e.action for e in h.audit].count(AuditAction.ALERT_ACK) == 1


def test_resolve_takes_an_alert_out_of_the_backlog(h: RoomHarness) -> None:
    raise_risk(h)
    fac = h.connect("Fac", Role.FACILITATOR)
    alert = AlertId(str(h.of(fac, "alert")[0]["id"]))
    h.send(fac, c.AlertResolve(R, alert), now=3_000)  # without acknowledging first: fine
    assert h.of(fac, "alert_update")[-1]["status"] == "resolved"
    assert "alert_resolve" in [e.action for e in h.audit]
    assert h.of(h.connect("Lou", Role.FACILITATOR), "alert") == []
    h.send(fac, c.AlertResolve(R, alert), now=4_000)
    assert h.of(fac, "error")[-1]["code"] == "not_found"


@pytest.mark.parametrize("who", ["participant", "other room", "ops", "unknown id"])
def test_who_may_not_acknowledge_or_resolve(h: RoomHarness, who: str) -> None:
    ana = raise_risk(h)
    fac = h.connect("Fac", Role.FACILITATOR)
    alert = AlertId(str(h.of(fac, "alert")[0]["id"]))
    conn, expected = {
        "participant": (ana, "forbidden"),
        "other room": (staff_in(h, "Eli", OTHER), "forbidden"),
        "ops": (staff_in(h, "Ops", R, Role.OPS), "forbidden"),
        "unknown id": (fac, "not_found"),
    }[who]
    target = AlertId("al_nope") if who == "unknown id" else alert
    for command in (c.AlertAck(R, target), c.AlertResolve(R, target)):
        h.send(conn, command, now=5_000)
        assert h.of(conn, "error")[-1]["code"] == expected
    assert h.of(fac, "alert_update") == []
    assert not {"alert_ack", "alert_resolve"} & {e.action for e in h.audit}


def test_an_alert_of_another_room_is_not_found_from_this_one(h: RoomHarness) -> None:
    raise_risk(h)
    eli = staff_in(h, "Eli", OTHER)
    alert = AlertId(str(h.of(eli, "alert")[0]["id"]))
    h.send(eli, c.AlertAck(OTHER, alert))
    assert h.of(eli, "error")[-1]["code"] == "not_found"


def test_an_acknowledge_whose_audit_write_fails_is_undone(h: RoomHarness) -> None:
    raise_risk(h)
    fac = h.connect("Fac", Role.FACILITATOR)
    alert = AlertId(str(h.of(fac, "alert")[0]["id"]))
    effects = h.core.handle(fac, c.AlertAck(R, alert), 2_000)
    persist = next(e for e in effects if isinstance(e, Persist))
    h.core.undo(persist.undo)  # what the shell does when the write fails
    h.send(fac, c.AlertAck(R, alert), now=3_000)
    assert h.of(fac, "alert_update")[-1]["status"] == "acknowledged"


# A rule ops might write: masked and delivered, and facilitators told.
_MASK_AND_ALERT = """
[[rule]]
id = "test.mask-alert"
category = "abuse"
action = "mask"
alert = "abuse"
words = ["grrr"]
examples.match = ["grrr"]
examples.no_match = ["hello"]
"""


def test_alerts_learn_the_seq_of_the_message_once_delivered() -> None:
    from chatserver.config import read_rule_files
    from chatserver.moderation.engine import load_rules
    from tests.conftest import ROOT
    h = RoomHarness(load_rules({**read_rule_files(ROOT / "chatserver/moderation_rules"),
                                "test.toml": _MASK_AND_ALERT}))
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    h.say(ana, "hello", "a1")
    h.send(fac, c.Report(R, 1, reason="not nice"))  # a report names its seq at once
    assert h.of(fac, "alert")[-1]["seq"] == 1
    # Masked and delivered with an alert: the seq is known only once it is stored.
    ack = h.say(ana, "grrr this", "a2")
    assert (ack["status"], ack["seq"]) == ("sent", 2)
    live = h.of(fac, "alert")[-1]
    assert (live["kind"], live["message"]) == ("abuse", "a2") and "seq" not in live
    written = [r for r in h.stored if isinstance(r, AlertRecord) and r.message == "a2"]
    assert [r.seq for r in written] == [None, 2]
    [backlog] = [a for a in h.of(h.connect("Lou", Role.FACILITATOR), "alert")
                 if a["message"] == "a2"]
    assert backlog["seq"] == 2


def _case(h: RoomHarness) -> CaseRecord:
    return next(r for r in reversed(h.stored) if isinstance(r, CaseRecord))


def test_request_support_opens_one_case_at_the_urgency_the_signals_call_for(
        h: RoomHarness) -> None:
    cou = h.connect("Cou", Role.COUNSELLOR)
    ana = raise_risk(h)  # a risk disclosure already seen in this room
    h.send(ana, c.RequestSupport(R, note="can i talk to someone"), now=2_000)
    notice = h.of(ana, "notice")[-1]
    assert notice["kind"] == "support_requested" and notice["case"]
    [case] = [f["case"] for f in h.of(cou, "case")]
    assert (case["participant"], case["urgency"], case["note"], case["status"]) == \
        ("id-Ana", "urgent", "can i talk to someone", "open")
    entry = next(e for e in h.audit if e.action == "request_support")
    assert entry.detail["urgency"] == "urgent"
    signals = entry.detail["signals"]
    assert isinstance(signals, list) and "risk" in signals
    # Asking again opens nothing new: the answer names the open case.
    h.send(ana, c.RequestSupport(R), now=3_000)
    again = h.of(ana, "notice")[-1]
    assert (again["kind"], again["case"]) == ("support_pending", notice["case"])
    assert len(h.of(cou, "case")) == 1
    assert [e.action for e in h.audit].count(AuditAction.REQUEST_SUPPORT) == 1


@pytest.mark.parametrize(("said", "urgency"), [
    (None, "routine"),
    ("how many paracetamol would it take", "emergency"),  # method detail
])
def test_request_support_urgency_follows_what_was_said(h: RoomHarness, said: str | None,
                                                       urgency: str) -> None:
    ben = h.connect("Ben")
    if said is not None:
        h.say(ben, said, "b1")
    h.send(ben, c.RequestSupport(R), now=1_000)
    assert _case(h).urgency == urgency


def test_a_risky_note_signposts_alerts_and_makes_the_case_urgent(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    ben = h.connect("Ben")
    h.send(ben, c.RequestSupport(R, note=RISK), now=1_000)
    assert h.notices(ben)[0] == "signpost"
    assert [a["kind"] for a in h.of(fac, "alert")] == ["risk"]
    assert _case(h).urgency == "urgent"


def test_request_support_note_is_moderated_and_length_limited(h: RoomHarness) -> None:
    ben = h.connect("Ben")
    h.send(ben, c.RequestSupport(R, note="x" * 281))
    assert h.of(ben, "error")[-1]["code"] == "too_large"
    h.send(ben, c.RequestSupport(R, note="call me on 07700 900123"))
    assert "07700 900123" not in _case(h).note
    assert next(e for e in h.audit if e.action == "request_support").detail.get("note_masked")


def test_staff_cannot_request_support(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    h.send(fac, c.RequestSupport(R))
    assert h.of(fac, "error")[-1]["code"] == "forbidden"


def test_the_hand_over_names_the_young_person_and_carries_what_is_still_held(
        h: RoomHarness) -> None:
    """Issue 16 § 3: the counsellor sees the display name, not only the internal id, and
    a disclosure no facilitator has decided yet (it is in no room's recent messages)."""
    cou = h.connect("Cou", Role.COUNSELLOR)
    ben = h.connect("Ben")
    ana = raise_risk(h, now=1_000)
    assert h.say(ana, "hi everyone", "Ana-2", now=1_500)["status"] == "sent"
    h.say(ben, "how old are you?", "b1", now=1_600)  # held too, but not Ana's
    h.send(ana, c.RequestSupport(R), now=2_000)
    [case] = [f["case"] for f in h.of(cou, "case")]
    assert case["name"] == "Ana"
    assert [m["text"] for m in case["context"]] == ["hi everyone"]
    assert [(x["text"], x["from"]["name"], x["ts"]) for x in case["held"]] == \
        [(RISK, "Ana", 1_000)]
    assert [r["category"] for r in case["held"][0]["rules"]] == ["risk"]
    # Stored with the case, so a restart or another node hands over the same.
    from chatserver.stores.records import case_from, dumps
    assert case_from(dumps(_case(h))) == _case(h)


def test_a_rejection_notice_names_the_held_message(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    first = h.say(ana, "how old are you?", "a1")["held"]
    second = h.say(ana, "how old are you really", "a2")["held"]
    h.send(fac, c.Reject(R, held=second))
    [notice] = [n for n in h.of(ana, "notice") if n["kind"] == "held_rejected"]
    assert notice["held"] == second != first
