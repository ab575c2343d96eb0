"""`rules eval` floors on our own labelled corpus (README § Moderation quality).

The corpus is built from tests/moderation/corpus/*.txt (one file per label); the
reviewers' held-out set is separate and encrypted, so these floors are ours, not theirs.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from chatserver.moderation.engine import RuleSet
from chatserver.moderation.evaluation import Report, evaluate
from chatserver.moderation.pipeline import Moderator

CORPUS = Path(__file__).with_name("corpus.jsonl")
SOURCES = Path(__file__).with_name("corpus")
RECALL_FLOORS = {"contact": 0.95, "method": 0.95, "risk": 0.90, "grooming": 0.90,
                 "abuse": 0.90}
MAX_FALSE_POSITIVE_RATE = 0.03


def _rows() -> list[dict[str, str]]:
    return [orjson.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]


def test_corpus_jsonl_is_built_from_the_sources() -> None:
    expected = [{"text": line, "label": f.stem} for f in sorted(SOURCES.glob("*.txt"))
                for line in f.read_text().splitlines() if line.strip()]
    assert _rows() == expected, "run: make corpus"


def test_corpus_is_big_enough() -> None:
    rows = _rows()
    assert len(rows) >= 400
    assert sum(r["label"] == "allow" for r in rows) >= 150


@pytest.fixture(scope="module")
def report(rules: RuleSet) -> Report:
    """The rules stage alone on the corpus the rules were written against."""
    return evaluate(Moderator(rules), _rows())


@pytest.mark.parametrize(("category", "floor"), sorted(RECALL_FLOORS.items()))
def test_recall_floor(report: Report, category: str, floor: float) -> None:
    assert report.recall("rules", category) >= floor, report.stages["rules"].misses


def test_false_positive_rate_on_must_allow_lines(report: Report) -> None:
    assert report.false_positive_rate("rules") <= MAX_FALSE_POSITIVE_RATE, \
        report.stages["rules"].misses
