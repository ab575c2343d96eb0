"""Every shipped rule's own examples, the acceptance verdicts, and the loader's errors."""

from __future__ import annotations

import subprocess
import sys
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


def test_every_slur_is_masked_when_quoted_in_a_report(rules: RuleSet) -> None:
    """abuse.slur's `unless` lets a report through to abuse.slur-reported, which masks:
    a word in the first list only would reach the room unmasked inside a report."""
    by_id = {r.id: r for r in rules.rules}
    assert set(by_id["abuse.slur"].words) == set(by_id["abuse.slur-reported"].words)
