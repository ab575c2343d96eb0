"""Issue 4 in the pure core: every facilitation command, with explicit time."""

from __future__ import annotations

import pytest

from chatserver.core import commands as c
from chatserver.core.ids import CaseId, HeldId, MessageId, ParticipantId, RoomId
from chatserver.core.roles import Role
from chatserver.moderation.engine import RuleSet, Verdict
from chatserver.moderation.pipeline import Moderator
from tests.core.harness import RoomHarness

R = RoomId("r")
MIN = 60_000


def pid(name: str) -> ParticipantId:
    return ParticipantId(f"id-{name}")


@pytest.fixture
def h(rules: RuleSet) -> RoomHarness:
    return RoomHarness(rules)


def test_mute_rejects_sends_and_a_timed_mute_lifts_by_itself(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    h.send(fac, c.Mute(R, pid("Ana"), minutes=5, reason="cool off"), now=1_000)
    assert "muted" in h.notices(ana)
    assert h.of(ana, "room")[-1]["members"][-1]["muted"] is True
    ack = h.say(ana, "hello?", "m1", now=2 * MIN)
    assert (ack["status"], ack["code"]) == ("rejected", "muted")
    h.tick(now=1_000 + 5 * MIN - 1)
    assert "unmuted" not in h.notices(ana)
    h.tick(now=1_000 + 5 * MIN)
    assert "unmuted" in h.notices(ana)
    assert h.say(ana, "back again", "m2", now=6 * MIN)["status"] == "sent"
    assert [e.action for e in h.audit if e.action.startswith(("mute", "unmute"))] == \
        ["mute", "mute_expired"]


def test_untimed_mute_until_unmute(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    h.send(fac, c.Mute(R, pid("Ana")))
    h.tick(now=10**9)
    assert h.say(ana, "hi", "m1", now=10**9)["code"] == "muted"
    h.send(fac, c.Unmute(R, pid("Ana")))
    assert h.say(ana, "hi", "m2", now=10**9 + 1)["status"] == "sent"


def test_pause_stops_participants_not_staff(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    ben = h.connect("Ben")
    h.send(fac, c.Pause(R, reason="taking a breath"))
    for conn in (fac, ana, ben):
        assert h.of(conn, "room")[-1]["paused"] is True
    assert h.say(ana, "hello", "a1")["code"] == "paused"
    assert h.say(fac, "we'll be back in a moment", "f1")["status"] == "sent"
    assert "we'll be back in a moment" in h.texts(ben)
    h.send(fac, c.Resume(R))
    assert h.of(ben, "room")[-1]["paused"] is False
    assert h.say(ana, "hello", "a2")["status"] == "sent"


def test_a_paused_room_still_lets_a_young_person_at_risk_reach_staff(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    h.send(fac, c.Pause(R))
    ack = h.say(ana, "i want to kill myself", "r1")
    assert ack["status"] == "held"
    assert "signpost" in h.notices(ana)
    assert [a["kind"] for a in h.of(fac, "alert")] == ["risk"]


def test_no_facilitator_present_pauses_the_room(rules: RuleSet) -> None:
    h = RoomHarness(rules, require_facilitator=True)
    ana = h.connect("Ana")
    assert h.say(ana, "is anyone here?", "a1")["code"] == "paused"
    fac = h.connect("Fac", Role.FACILITATOR)
    assert h.of(ana, "room")[-1]["paused"] is False
    assert h.say(ana, "is anyone here?", "a2")["status"] == "sent"
    assert h.texts(fac) == ["is anyone here?"]


def test_risk_message_signposts_holds_and_alerts(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    ben = h.connect("Ben")
    ack = h.say(ana, "i wanna end it all tonight", "r1")
    assert ack["status"] == "held"
    signpost = h.of(ana, "notice")[0]
    assert signpost["kind"] == "signpost" and len(signpost["resources"]) >= 3
    # The signpost comes before the ack: support first.
    kinds = [f["type"] for f in h.got[ana]]
    assert kinds.index("notice") < kinds.index("ack")
    held = h.of(fac, "held")[0]["held"]
    assert held["text"] == "i wanna end it all tonight"
    alert = h.of(fac, "alert")[0]
    assert (alert["kind"], alert["participant"]) == ("risk", pid("Ana"))
    assert h.texts(ben) == [] and h.of(ben, "held") == [] and h.of(ben, "alert") == []
    # The facilitator approves so peers can respond with support.
    h.send(fac, c.Approve(R, HeldId(held["id"])))
    assert h.texts(ben) == ["i wanna end it all tonight"]
    # Audited in order: the hold (the sender's), then the approval (the facilitator's,
    # naming the held message and the rules that held it).
    assert [(e.action, e.actor) for e in h.audit] == [("message.hold", pid("Ana")),
                                                      ("approve", pid("Fac"))]
    assert h.audit[-1].target == pid("Ana")
    assert h.audit[-1].detail["held"] == held["id"]
    assert h.audit[-1].detail["rules"] == h.audit[0].detail["rules"]


def test_rejected_held_message_is_never_delivered(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    ben = h.connect("Ben")
    h.say(ana, "how old are you?", "g1")
    held = h.of(fac, "held")[0]["held"]
    h.send(fac, c.Reject(R, HeldId(held["id"]), reason="grooming signal"))
    assert "held_rejected" in h.notices(ana)
    assert h.texts(ben) == []
    h.send(fac, c.Approve(R, HeldId(held["id"])))
    assert h.of(fac, "error")[-1]["code"] == "not_found"
    assert h.texts(ben) == []


def test_method_detail_is_blocked_and_alert_hides_it(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    ben = h.connect("Ben")
    ack = h.say(ana, "how many paracetamol would it take", "x1")
    assert ack["status"] == "blocked"
    assert "signpost" in h.notices(ana)
    alert = h.of(fac, "alert")[0]
    assert alert["kind"] == "risk"
    assert "paracetamol" not in str(alert["excerpt"])
    assert h.texts(ben) == [] and h.of(fac, "held") == []


def test_escalate_claim_one_to_one_and_close(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    ben = h.connect("Ben")
    h.say(ana, "i've had a really hard week", "a1")
    cou = h.connect("Cou", Role.COUNSELLOR)
    h.send(fac, c.Escalate(R, pid("Ana"), c.Urgency.URGENT, note="wants to talk"))
    case = h.of(cou, "case")[-1]["case"]
    assert (case["urgency"], case["status"]) == ("urgent", "open")
    assert [m["text"] for m in case["context"]] == ["i've had a really hard week"]
    h.send(cou, c.Claim(CaseId(case["id"])))
    escalated = [n for n in h.of(ana, "notice") if n["kind"] == "escalated"][-1]
    private = RoomId(str(escalated["room"]))
    assert escalated["case"] == case["id"]
    h.send(ana, c.Send(private, MessageId("p1"), "thank you for talking to me"))
    h.send(cou, c.Send(private, MessageId("c1"), "i'm here for you"))
    assert "thank you for talking to me" in h.texts(cou)
    assert "i'm here for you" in h.texts(ana)
    for other in (fac, ben):
        assert "i'm here for you" not in h.texts(other)
        assert "thank you for talking to me" not in h.texts(other)
    # Ben cannot get into the private room.
    h.send(ben, c.Send(private, MessageId("b1"), "let me in"))
    assert h.ack(ben, "b1")["code"] == "forbidden"
    h.send(cou, c.CloseCase(CaseId(case["id"]), outcome="safety plan agreed"))
    assert h.of(cou, "case")[-1]["case"]["status"] == "closed"
    assert h.of(ana, "room")[-1]["closed"] is True
    actions = [e.action for e in h.audit if e.action in
               ("escalate", "claim", "close_case")]
    assert actions == ["escalate", "claim", "close_case"]
    close = next(e for e in h.audit if e.action == "close_case")
    assert close.detail["outcome"] == "safety plan agreed"


def test_case_queue_orders_by_urgency_then_age(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    for name in ("A", "B", "C"):
        h.connect(name)
    h.send(fac, c.Escalate(R, pid("A"), c.Urgency.ROUTINE), now=1)
    h.send(fac, c.Escalate(R, pid("B"), c.Urgency.EMERGENCY), now=2)
    h.send(fac, c.Escalate(R, pid("C"), c.Urgency.URGENT), now=3)
    assert [n["kind"] for n in h.of(fac, "notice")] == ["emergency_procedure"]
    cou = h.connect("Cou", Role.COUNSELLOR, now=4)
    assert [f["case"]["participant"] for f in h.of(cou, "case")] == \
        [pid("B"), pid("C"), pid("A")]


def test_unclaimed_emergency_alerts_everyone_again(rules: RuleSet) -> None:
    h = RoomHarness(rules, emergency_unclaimed_s=60)
    fac = h.connect("Fac", Role.FACILITATOR)
    h.connect("Ana")
    h.send(fac, c.Escalate(R, pid("Ana"), c.Urgency.EMERGENCY), now=0)
    h.tick(59_999)
    assert h.of(fac, "alert") == []
    h.tick(60_000)
    assert h.of(fac, "alert")[-1]["kind"] == "risk"
    assert "emergency_unclaimed" in h.ops_alerts


def test_redact_report_and_ignore(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    ben = h.connect("Ben")
    cat = h.connect("Cat")
    seq = h.say(ana, "that was mean of them", "a1")["seq"]
    h.send(ben, c.Report(R, int(seq), "not nice"))
    assert "report_received" in h.notices(ben)
    report = h.of(fac, "alert")[-1]
    assert (report["kind"], report["participant"]) == ("report", pid("Ana"))
    # The reported participant never learns who reported them.
    assert "id-Ben" not in str([f for f in h.got[ana] if f["type"] != "room"])
    h.send(fac, c.Redact(R, int(seq), "unkind"))
    for conn in (ana, ben, cat):
        assert h.of(conn, "redact")[-1] == {"type": "redact", "room": "r", "seq": seq}
    h.send(ben, c.Ignore(R, pid("Ana")))
    h.say(ana, "hello again", "a2")
    assert "hello again" not in h.texts(ben)
    assert "hello again" in h.texts(cat)
    h.send(ben, c.Unignore(R, pid("Ana")))
    h.say(ana, "third time", "a3")
    assert "third time" in h.texts(ben)
    h.send(ben, c.Ignore(R, pid("Fac")))
    assert h.of(ben, "error")[-1]["code"] == "forbidden"  # staff cannot be ignored


def test_remove_closes_4403_and_the_token_cannot_rejoin(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    h.send(fac, c.Remove(R, pid("Ana"), reason="repeated abuse"))
    assert "removed" in h.notices(ana)
    assert h.closed[ana] == 4403
    again = h.connect("Ana")
    assert h.closed[again] == 4403


STAFF_COMMANDS = [
    c.Mute(R, pid("Ben")), c.Unmute(R, pid("Ben")), c.Pause(R), c.Resume(R),
    c.SlowMode(R, 10), c.Remove(R, pid("Ben")), c.Escalate(R, pid("Ben"), c.Urgency.URGENT),
    c.Claim(CaseId("case_1")), c.CloseCase(CaseId("case_1"), "x"), c.Redact(R, 1),
    c.Approve(R, HeldId("h_1")), c.Reject(R, HeldId("h_1")), c.Join(R),
]


@pytest.mark.parametrize("command", STAFF_COMMANDS, ids=lambda x: type(x).__name__)
def test_participants_cannot_give_staff_commands(h: RoomHarness, command: c.Command) -> None:
    ana = h.connect("Ana")
    h.connect("Ben")
    h.send(ana, command)
    assert h.of(ana, "error")[-1]["code"] == "forbidden"
    assert any(e.action == "denied" for e in h.audit)


def test_participants_never_see_held_text(h: RoomHarness) -> None:
    h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    ben = h.connect("Ben")
    h.say(ana, "send me a pic", "g1")
    assert "send me a pic" not in str(h.got[ben])


def test_unanswered_and_break_reminders_fire_at_configured_times(rules: RuleSet) -> None:
    h = RoomHarness(rules, unanswered_s=120, break_after_min=30)
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    h.say(ana, "does anyone else feel like this?", "a1", now=0)
    h.tick(119_999)
    assert h.of(fac, "alert") == []
    h.tick(120_000)
    assert h.of(fac, "alert")[-1]["kind"] == "unanswered"
    # An answered message raises nothing.
    ben = h.connect("Ben")
    h.say(ana, "anyone?", "a2", now=200_000)
    h.say(ben, "yes, me too", "b1", now=210_000)
    h.tick(400_000)
    assert len([a for a in h.of(fac, "alert") if a["kind"] == "unanswered"]) == 1
    # Chatting steadily for 30 minutes brings a gentle break reminder, once.
    for minute in range(0, 31, 2):
        h.say(ben, f"still here {minute}", f"s{minute}", now=300_000 + minute * MIN)
    h.tick(300_000 + 30 * MIN)
    h.tick(300_000 + 31 * MIN)
    assert h.notices(ben).count("break_reminder") == 1


def test_flooding_alerts_then_closes_1008(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    for n in range(15):
        h.say(ana, f"spam {n}", f"f{n}", now=n)
    assert [a["kind"] for a in h.of(fac, "alert")] == ["flood"]
    assert h.closed[ana] == 1008


def test_moderation_failure_holds_and_alerts_ops(h: RoomHarness) -> None:
    h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    ben = h.connect("Ben")

    class Broken(Moderator):
        def check(self, *args: object, **kwargs: object) -> Verdict:
            raise RuntimeError("boom")

    h.core.moderator = Broken(h.core.rules)
    assert h.say(ana, "hello there", "a1")["status"] == "held"
    assert "moderation_failed" in h.ops_alerts
    assert h.texts(ben) == []


def test_slow_mode(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    h.send(fac, c.SlowMode(R, 30))
    assert h.say(ana, "one", "a1", now=0)["status"] == "sent"
    assert h.say(ana, "two", "a2", now=29_999)["code"] == "slow_mode"
    assert h.say(ana, "three", "a3", now=30_000)["status"] == "sent"
    assert h.say(fac, "staff are not slowed", "f1", now=30_001)["status"] == "sent"


def test_a_clock_stepping_back_never_locks_anyone_out(h: RoomHarness) -> None:
    """SECURITY.md F-14: limits use the injected time; a step back must not block sends."""
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    hour = 3_600_000
    for n in range(5):
        assert h.say(ana, f"m{n}", f"m{n}", now=10 * hour + n)["status"] == "sent"
    assert h.say(ana, "sixth", "m5", now=10 * hour + 10)["code"] == "rate_limited"
    # NTP steps the clock back an hour: the next send is judged afresh, not blocked.
    assert h.say(ana, "after the step", "m6", now=9 * hour)["status"] == "sent"
    h.send(fac, c.SlowMode(R, 30), now=9 * hour)
    assert h.say(ana, "slow", "m7", now=9 * hour + 1)["code"] == "slow_mode"
    assert h.say(ana, "stepped back again", "m8", now=8 * hour)["status"] == "sent"
