"""Every shipped rule's own examples, the acceptance verdicts, and the loader's errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chatserver.config import read_rule_files
from chatserver.moderation.engine import RuleSet, load_rules
from chatserver.moderation.rules import Action, RuleLoadError, parse_rule_files
from tests.conftest import ROOT, RULES_DIR

_RULES, _ = parse_rule_files(read_rule_files(RULES_DIR))


@pytest.mark.parametrize(
    ("rule_id", "text"),
    [(r.id, t) for r in _RULES for t in r.examples_match],
)
def test_rule_matches_its_examples(rules: RuleSet, rule_id: str, text: str) -> None:
    assert rule_id in rules.matching_rules(text)


@pytest.mark.parametrize(
    ("rule_id", "text"),
    [(r.id, t) for r in _RULES for t in r.examples_no_match],
)
def test_rule_does_not_match_its_counter_examples(rules: RuleSet, rule_id: str,
                                                  text: str) -> None:
    assert rule_id not in rules.matching_rules(text)


@pytest.mark.parametrize(("text", "action", "category", "alerts", "signpost"), [
    ("add me on sn4p: j.smith_07", Action.BLOCK, "contact", {"contact", "evasion"}, False),
    ("call me on 07700 900 123", Action.BLOCK, "contact", {"contact"}, False),
    ("ｋｉｌｌ ｙｏｕｒｓｅｌｆ", Action.BLOCK, "abuse", {"abuse", "evasion"}, False),
    ("i wanna end it all tonight", Action.HOLD, "risk", {"risk"}, True),
    ("i'm 30 days clean from cutting 💪", Action.ALLOW, "risk", set(), False),
    ("that class was boring", Action.ALLOW, None, set(), False),
])
def test_acceptance_verdicts(rules: RuleSet, text: str, action: Action, category: str | None,
                             alerts: set[str], signpost: bool) -> None:
    v = rules.check(text, "participant")
    assert v.action == action
    assert set(v.alerts) == alerts
    assert v.signpost is signpost
    if category is None:
        assert v.hits == ()
    else:
        assert v.hits[0].rule.category == category


def test_recovery_talk_is_seen_but_never_held(rules: RuleSet) -> None:
    v = rules.check("i used to want to die but it's better now")
    assert v.action == Action.ALLOW
    assert [h.rule.id for h in v.hits] == ["risk.past-ideation"]


def test_mask_replaces_only_the_matched_span(rules: RuleSet) -> None:
    v = rules.check("what the fuck is this")
    assert (v.action, v.text_out) == (Action.MASK, "what the **** is this")
    assert rules.check("what the fuck", "facilitator").action == Action.ALLOW  # staff unfiltered
    assert rules.check("what the fuck", disabled=frozenset({"profanity"})).action == Action.ALLOW


def test_mask_maps_back_through_normalization(rules: RuleSet) -> None:
    text = "ugh f\u200bu\u200bc\u200bk that"
    v = rules.check(text)
    assert v.action == Action.MASK
    assert v.text_out.startswith("ugh ") and v.text_out.endswith(" that")
    assert "u" not in v.text_out[4:-5]


BAD = '''
[[rule]]
id = "contact.one"
category = "contact"
action = "explode"
alert = "nonsense"
colour = "red"
regex = ['(unclosed']
examples.match = ["x"]
examples.no_match = ["y"]

[[rule]]
id = "contact.two"
category = "contact"
action = "block"
phrases = ["meet me"]
examples.match = ["this does not say it"]
examples.no_match = ["ok"]

[[rule]]
id = "contact.two"
category = "contact"
action = "block"
phrases = ["again"]
examples.match = ["again"]
examples.no_match = ["ok"]
'''


def test_a_bad_rule_file_reports_every_problem_with_file_and_rule() -> None:
    with pytest.raises(RuleLoadError) as err:
        load_rules({"contact.toml": BAD, "other.toml": "not = [valid"})
    found = {(p.file, p.rule, p.message.split(" ")[0]) for p in err.value.problems}
    messages = " | ".join(str(p) for p in err.value.problems)
    assert ("other.toml", "-", "not") in found
    assert "unknown key 'colour'" in messages
    assert "unknown action 'explode'" in messages
    assert "unknown alert kind 'nonsense'" in messages
    assert "bad regex" in messages
    assert "duplicate id" in messages
    assert all(p.file in ("contact.toml", "other.toml") for p in err.value.problems)


def test_failing_example_is_reported() -> None:
    good_but_wrong = BAD.split("[[rule]]")[2]
    with pytest.raises(RuleLoadError) as err:
        load_rules({"contact.toml": "[[rule]]" + good_but_wrong})
    (problem,) = err.value.problems
    assert (problem.file, problem.rule) == ("contact.toml", "contact.two")
    assert "should match" in problem.message


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chatserver", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_rules_check_cli_passes_on_shipped_rules() -> None:
    result = _cli("rules", "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok:")


def test_rules_check_cli_fails_naming_file_and_rule(tmp_path: Path) -> None:
    (tmp_path / "contact.toml").write_text("[[rule]]" + BAD.split("[[rule]]")[2])
    result = _cli("rules", "--dir", str(tmp_path), "check")
    assert result.returncode == 1
    assert "contact.toml: contact.two: example should match" in result.stdout


def test_rules_try_cli_explains(tmp_path: Path) -> None:
    result = _cli("rules", "try", "call me on 07700 900 123")
    assert result.returncode == 0
    assert "verdict:    block" in result.stdout
    assert "contact.phone" in result.stdout
    assert "normalized:" in result.stdout


def test_every_slur_is_masked_in_a_report_and_blocked_when_aimed(rules: RuleSet) -> None:
    """abuse.slur's `reported` table: a report masks the word and sends the rest."""
    by_id = {r.id: r for r in rules.rules}
    for word in by_id["abuse.slur"].words:
        report = rules.check(f"a lad at school called me a {word} today")
        assert report.action == Action.MASK, word
        assert word not in report.text_out.lower().split(), word
        assert rules.check(f"ur such a {word}").action == Action.BLOCK, word


def test_a_report_of_kys_is_held_and_kys_aimed_at_someone_is_blocked(rules: RuleSet) -> None:
    """abuse.kys's `reported` table: a report is held (the model may release it), never
    let through unread; the same words aimed at someone are blocked."""
    for report in ("some lad said kys to me in the lobby, reported him",
                   "my stepdad used to say 'nobody would miss you'",
                   "got 'neck urself' in my dms again",
                   "whoever keeps telling her to kys, grow up"):
        v = rules.check(report)
        assert v.action == Action.HOLD, report
        assert {h.rule.id for h in v.hits} == {"abuse.kys-reported"}, report
    for aimed in ("kys", "reported u lol. kys", "nobody would miss you"):
        v = rules.check(aimed)
        assert v.action == Action.BLOCK, aimed
        assert "abuse.kys" in {h.rule.id for h in v.hits}, aimed


def test_a_reported_table_is_checked_like_a_rule() -> None:
    """A `reported` table's problems are named, and its examples are proved: the rule
    must stand aside on each (a `when` phrase in it), the lighter rule deciding."""
    rule = textwrap.dedent("""
        [[rule]]
        id = "abuse.x"
        category = "abuse"
        action = "block"
        phrases = ["go away"]
        reported.when = ["told me to"]
        reported.action = "%s"
        reported.examples = ["%s"]
        examples.match = ["go away"]
        examples.no_match = ["hello"]
    """)
    _, problems = parse_rule_files({"a.toml": rule % ("block", "he told me to go away")})
    assert [str(p) for p in problems] == [
        "a.toml: abuse.x: reported: 'action' must be lighter than the rule's own (or a "
        "hold the model may clear), and not allow"]
    with pytest.raises(RuleLoadError) as err:
        load_rules({"a.toml": rule % ("hold", "he said go away")})
    assert sorted(str(p) for p in err.value.problems) == [
        "a.toml: abuse.x: example should not match but does: 'he said go away'"]
    ok = load_rules({"a.toml": rule % ("hold", "he told me to go away")})
    assert ok.check("he told me to go away").action == Action.HOLD
    assert ok.check("go away").action == Action.BLOCK


def test_a_grooming_warning_is_held_for_the_model_to_release_and_a_request_is_not(
        rules: RuleSet) -> None:
    """A young person telling the room what a stranger asked, or a helper warning about
    it, is still held and alerted, but the model may release it; the request itself is
    held for a facilitator whatever the model says."""
    for report, rule in (("a stranger asked me r u home alone?? i blocked him", "location"),
                         ("if someone online says send a pic, thats a red flag", "photos"),
                         ("free robux from strangers is always a scam", "gifts")):
        v = rules.check(report)
        assert v.action == Action.HOLD and "grooming" in v.alerts, report
        held = [h.rule for h in v.hits if h.rule.action == Action.HOLD]
        assert [r.id for r in held] == [f"grooming.{rule}-reported"], report
        assert held[0].model_may_clear, report
    for request in ("r u home alone??", "send a pic x", "want free robux?"):
        v = rules.check(request)
        assert v.action == Action.HOLD, request
        assert not all(h.rule.model_may_clear for h in v.hits
                       if h.rule.action == Action.HOLD), request


def test_a_reported_table_may_take_another_rules_markers() -> None:
    """`reported.like`: the markers, action and notice of another rule's table in the
    same file, its own examples; a name that is not such a rule is refused."""
    rules = textwrap.dedent("""
        [[rule]]
        id = "grooming.a"
        category = "grooming"
        action = "hold"
        phrases = ["send a pic"]
        reported.when = ["red flag"]
        reported.action = "hold"
        reported.model_may_clear = true
        reported.examples = ["send a pic is a red flag"]
        examples.match = ["send a pic"]
        examples.no_match = ["hello"]

        [[rule]]
        id = "grooming.b"
        category = "grooming"
        action = "hold"
        phrases = ["free robux"]
        reported.like = "%s"
        reported.examples = ["free robux is a red flag"]
        examples.match = ["free robux"]
        examples.no_match = ["hello"]
    """)
    ok = load_rules({"g.toml": rules % "grooming.a"})
    v = ok.check("free robux is a red flag")
    assert [(h.rule.id, h.rule.model_may_clear) for h in v.hits] == [("grooming.b-reported", True)]
    _, problems = parse_rule_files({"g.toml": rules % "grooming.c"})
    assert [str(p) for p in problems] == [
        "g.toml: grooming.b: reported: 'like' must name a rule of this file with a table of "
        "its own: 'grooming.c'"]
