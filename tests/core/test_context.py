"""Issue 13 § 2 in the pure core: details split over messages, grooming that adds up.

Every send carries an explicit ``now``; the windows are the config's
(``moderation.window_messages``, ``window_s``, ``grooming_window_s``, ...).
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from chatserver.core import commands as c
from chatserver.core.ids import ConnId, ParticipantId, RoomId
from chatserver.core.roles import Role
from chatserver.moderation.engine import RuleSet
from tests.core.harness import Frame, RoomHarness

R = RoomId("r")
S = 1000
MIN = 60 * S
NUMBER = "07700900417"


@pytest.fixture
def h(rules: RuleSet) -> RoomHarness:
    return RoomHarness(rules)


def visible_over_time(frames: list[Frame]) -> list[str]:
    """What a peer could read after each frame: their unredacted messages, joined."""
    shown: dict[int, str] = {}
    out = []
    for f in frames:
        if f["type"] == "message":
            shown[f["seq"]] = f["text"]
        elif f["type"] == "redact":
            shown.pop(f["seq"], None)
        out.append(" ".join(shown[s] for s in sorted(shown)))
    return out


def digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def say_all(h: RoomHarness, conn: ConnId, lines: list[str], start: int = 0,
            step: int = 2 * S) -> list[str]:
    return [h.say(conn, text, f"m{start + i}", now=(start + i) * step)["status"]
            for i, text in enumerate(lines)]


def test_a_phone_number_split_over_four_messages_never_reaches_a_peer_whole(
        h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    ben = h.connect("Ben")
    statuses = say_all(h, ana, ["07700", "900", "41", "7"])
    assert "blocked" in statuses
    for seen in visible_over_time(h.got[ben]):
        assert NUMBER not in digits(seen)
    assert visible_over_time(h.got[ben])[-1] == "7"  # what is left: one harmless digit
    # The fragments Ben had already seen were redacted for him, and for everyone.
    redacted = {f["seq"] for f in h.of(ben, "redact")}
    assert redacted == {f["seq"] for f in h.of(ben, "message") if f["text"] in ("07700", "900")}
    assert {f["seq"] for f in h.of(fac, "redact")} == redacted
    assert {f["seq"] for f in h.of(ana, "redact")} == redacted
    # Audited, and shown to the facilitator with the rule's category.
    entry = next(e for e in h.audit if e.action == "message.redacted_split")
    assert entry.target == "id-Ana"
    assert set(entry.detail["seqs"]) == redacted  # type: ignore[call-overload]
    assert entry.detail["rules"] == ["contact.phone"]
    alert = next(a for a in h.of(fac, "alert") if a["kind"] == "contact")
    assert alert["rules"] == [{"id": "contact.phone", "category": "contact"}]
    assert alert["excerpt"].startswith("(split over 3 messages)")
    blocked = next(e for e in h.audit if e.action == "message.block")
    assert blocked.detail["stage"] == "context"
    assert blocked.detail["context"] == {"split": {"rules": ["contact.phone"],
                                                   "fragments": ["m0", "m1"]}}


def test_a_method_question_split_over_three_messages_is_blocked_and_hidden(
        h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    ben = h.connect("Ben")
    assert say_all(h, ana, ["how many", "would it take", "to die"]) == \
        ["sent", "sent", "blocked"]
    assert {f["seq"] for f in h.of(ben, "redact")} == {1, 2}
    assert visible_over_time(h.got[ben])[-1] == ""
    alert = next(a for a in h.of(fac, "alert") if a["kind"] == "risk")
    assert "would it take" not in alert["excerpt"]
    assert "not shown: method" in alert["excerpt"]
    assert alert["rules"] == [{"id": "method.overdose", "category": "method"}]


def test_a_held_split_is_held_for_a_facilitator_and_not_approvable_for_method(
        h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    eve = h.connect("Eve")
    assert say_all(h, eve, ["how old", "are you"]) == ["sent", "held"]
    held = h.of(fac, "held")[-1]
    assert {"id": "grooming.age", "category": "grooming"} in held["held"]["rules"]
    assert [f["seq"] for f in h.of(fac, "redact")] == [1]


def test_fragments_outside_the_window_are_not_joined(h: RoomHarness) -> None:
    ana = h.connect("Ana")
    assert h.say(ana, "how many", "m1", now=0)["status"] == "sent"
    assert h.say(ana, "would it take", "m2", now=30 * S)["status"] == "sent"
    # 61 s after "how many": only "would it take" is still in the window.
    assert h.say(ana, "to die", "m3", now=61 * S)["status"] == "sent"


def test_the_window_is_the_last_messages_only(rules: RuleSet) -> None:
    h = RoomHarness(rules)
    h.core.config = dataclasses.replace(h.core.config)  # the default: 4 messages
    ana = h.connect("Ana")
    statuses = say_all(h, ana, ["how many", "would it take", "one", "two", "to die"])
    assert statuses == ["sent"] * 5  # "how many" is five messages back, four are joined


def test_ordinary_chat_over_many_messages_is_untouched(h: RoomHarness) -> None:
    ana = h.connect("Ana")
    ben = h.connect("Ben")
    lines = ["hi everyone", "today was rubbish", "year 10 is hard", "exam at 9",
             "room 12", "i scored 3 goals", "my mum helped", "feel a bit better now"]
    assert say_all(h, ana, lines, step=3 * S) == ["sent"] * len(lines)
    assert h.of(ben, "redact") == []
    assert not any(e.action == "message.redacted_split" for e in h.audit)


def test_staff_messages_are_not_windowed(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    assert say_all(h, fac, ["07700", "900", "41", "7"]) == ["sent"] * 4


def test_each_sender_has_their_own_window(h: RoomHarness) -> None:
    ana = h.connect("Ana")
    ben = h.connect("Ben")
    assert h.say(ana, "how many", "a1", now=0)["status"] == "sent"
    assert h.say(ben, "would it take to die", "b1", now=S)["status"] == "sent"
    assert h.say(ana, "i dunno", "a2", now=2 * S)["status"] == "sent"


def test_a_sender_who_leaves_starts_afresh(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    h.say(fac, "07700", "f1")
    ana = h.connect("Ana")
    h.say(ana, "how many", "a1", now=0)
    h.send(ana, c.Leave(R), now=S)
    assert h.core.context.statistics().senders == 0


# ------------------------------------------------------------------ grooming
def test_grooming_signals_add_up_hold_and_alert(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    eve = h.connect("Eve")
    ana = h.connect("Ana")
    lines = ["so how old?", "parents out tonight?", "keep it quiet ok", "anyway lol",
             "see u later"]
    statuses = [h.say(eve, t, f"e{i}", now=i * 5 * MIN)["status"]
                for i, t in enumerate(lines)]
    # Each line alone passes; the third signal holds its line and the one after it.
    assert statuses == ["sent", "sent", "held", "held", "sent"]
    assert h.texts(ana) == ["so how old?", "parents out tonight?", "see u later"]
    alerts = [a for a in h.of(fac, "alert") if a["kind"] == "grooming"]
    assert len(alerts) == 2
    assert "age, alone, secrecy" in alerts[0]["excerpt"]
    assert alerts[0]["rules"] == [{"id": "context.grooming", "category": "grooming"}]
    assert alerts[0]["held"] == h.ack(eve, "e2")["held"]
    held = [e for e in h.audit if e.action == "message.hold"]
    assert held[0].detail["context"] == {"grooming": {"signals": ["age", "alone", "secrecy"],
                                                      "after_alert": False}}
    assert held[1].detail["context"]["grooming"]["after_alert"] is True  # type: ignore[index]


def test_grooming_signals_spread_over_more_than_the_window_do_not_add_up(
        h: RoomHarness) -> None:
    eve = h.connect("Eve")
    lines = ["so how old?", "parents out tonight?", "keep it quiet ok"]
    statuses = [h.say(eve, t, f"e{i}", now=i * 20 * MIN)["status"]
                for i, t in enumerate(lines)]
    assert statuses == ["sent"] * 3  # "how old" is 40 minutes before the third


def test_grooming_signals_are_per_sender(h: RoomHarness) -> None:
    eve = h.connect("Eve")
    ana = h.connect("Ana")
    assert h.say(eve, "so how old?", "e1", now=0)["status"] == "sent"
    assert h.say(ana, "parents out tonight?", "a1", now=S)["status"] == "sent"
    assert h.say(eve, "keep it quiet ok", "e2", now=2 * S)["status"] == "sent"


def test_a_rule_held_grooming_line_counts_as_a_signal(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    eve = h.connect("Eve")
    assert h.say(eve, "where do you live?", "e1", now=0)["status"] == "held"
    assert h.say(eve, "want some robux", "e2", now=MIN)["status"] == "sent"
    assert h.say(eve, "video chat later?", "e3", now=2 * MIN)["status"] == "held"
    alert = [a for a in h.of(fac, "alert") if a["rules"] == [
        {"id": "context.grooming", "category": "grooming"}]]
    assert "gifts, location, video" in alert[0]["excerpt"]


def test_facilitators_are_not_counted(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    lines = ["so how old?", "parents out tonight?", "keep it quiet ok"]
    assert say_all(h, fac, lines) == ["sent"] * 3


def pid(name: str) -> ParticipantId:
    return ParticipantId(f"id-{name}")


# ------------------------------------------- free text that reaches another person
def test_a_report_reason_is_masked_where_a_rule_would_block_and_still_reported(
        h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    ana = h.connect("Ana")
    ben = h.connect("Ben")
    h.say(ben, "hi ana", "b1")
    reason = "he asked for my number, it is 07700 900417"
    h.send(ana, c.Report(R, seq=1, reason=reason))
    assert "report_received" in h.notices(ana)
    assert [a["kind"] for a in h.of(fac, "alert")] == ["report"]
    entry = next(e for e in h.audit if e.action == "report")
    assert entry.detail["reason"] == "he asked for my number, it is " + "*" * 12
    assert entry.detail["reason_masked"] == ["contact.phone"]
    assert entry.text == reason  # kept for the retention period only, like blocked text


def test_a_report_reason_that_discloses_risk_stays_readable_and_supports_the_reporter(
        h: RoomHarness) -> None:
    ana = h.connect("Ana")
    ben = h.connect("Ben")
    h.say(ben, "hi ana", "b1")
    h.send(ana, c.Report(R, seq=1, reason="it made me want to kill myself"))
    assert "signpost" in h.notices(ana)
    entry = next(e for e in h.audit if e.action == "report")
    assert entry.detail["reason"] == "it made me want to kill myself"
    assert "reason_masked" not in entry.detail


def test_an_ordinary_report_reason_is_untouched(h: RoomHarness) -> None:
    ana = h.connect("Ana")
    ben = h.connect("Ben")
    h.say(ben, "hi ana", "b1")
    h.send(ana, c.Report(R, seq=1, reason="he keeps being mean"))
    entry = next(e for e in h.audit if e.action == "report")
    assert (entry.detail["reason"], entry.text) == ("he keeps being mean", None)


def test_an_escalation_note_reaches_the_counsellor_masked(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    h.connect("Ana")
    cou = h.connect("Cou", Role.COUNSELLOR)
    note = "she says she wants to die; her snap is add me on snap jsmith07"
    h.send(fac, c.Escalate(R, pid("Ana"), c.Urgency.URGENT, note))
    case = h.of(cou, "case")[-1]["case"]
    assert "jsmith07" not in case["note"] and "wants to die" in case["note"]
    entry = next(e for e in h.audit if e.action == "escalate")
    assert entry.detail["note_masked"] == ["contact.social"]


def test_a_staff_reason_is_masked_in_the_audit_log(h: RoomHarness) -> None:
    fac = h.connect("Fac", Role.FACILITATOR)
    h.connect("Ana")
    h.send(fac, c.Mute(R, pid("Ana"), minutes=5, reason="posted 07700 900417"))
    entry = next(e for e in h.audit if e.action == "mute")
    assert entry.detail["reason"] == "posted " + "*" * 12
    assert entry.detail["reason_masked"] == ["contact.phone"]
