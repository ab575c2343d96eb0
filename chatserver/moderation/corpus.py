"""The labelled corpus: who wrote which line, and which split it belongs to.

``corpus/authors/<author>.jsonl`` holds each independent author's lines
(``text``, ``label``, ``author``, ``template``); ``corpus/splits.toml`` says which
authors train and which test, so a test line is never written by a training author.
The project's own rule corpus (``tests/moderation/corpus/*.txt``) trains too, as author
``project``. A test line that nearly repeats a training line (same letters, or 3-gram
Jaccard ≥ ``NEAR_DUPLICATE``) is dropped from the test split, and counted.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

__all__ = ["ALLOW_LABELS", "LABELS", "Corpus", "Row", "corpus_hash", "load_corpus"]

LABELS: Final = ("risk", "method", "abuse", "contact", "grooming", "support", "everyday")
ALLOW_LABELS: Final = frozenset({"support", "everyday"})
"""Must-allow lines: holding one back leaves a young person unanswered."""
PROJECT_LABELS: Final = {"allow": "everyday", "profanity": "everyday"}
"""The rule corpus's labels, as heads see them (swearing at nobody is everyday talk;
masking it is the rules' job)."""
NEAR_DUPLICATE: Final = 0.8


@dataclass(frozen=True, slots=True)
class Row:
    text: str
    label: str
    author: str
    template: str


@dataclass(frozen=True, slots=True)
class Corpus:
    train: tuple[Row, ...]
    test: tuple[Row, ...]
    dropped: int
    """Test lines removed as near-duplicates of training lines."""

    @property
    def hash(self) -> str:
        return corpus_hash(self.train)


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def _grams(text: str) -> frozenset[str]:
    k = " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())
    return frozenset(k[i:i + 3] for i in range(max(1, len(k) - 2)))


def corpus_hash(rows: Iterable[Row]) -> str:
    """What the heads were trained on: recorded in the model, checked in CI."""
    h = hashlib.sha256()
    for r in rows:
        h.update(orjson.dumps([r.text, r.label, r.author]) + b"\n")
    return h.hexdigest()[:16]


def _read_author(path: Path) -> list[Row]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        obj = orjson.loads(line)
        if obj.get("label") not in LABELS or not isinstance(obj.get("text"), str):
            raise ValueError(f"{path}:{n}: needs 'text' and a label from {LABELS}")
        rows.append(Row(obj["text"], obj["label"], str(obj.get("author", path.stem)),
                        str(obj.get("template", ""))))
    return rows


def _project_rows(rule_corpus: Path) -> list[Row]:
    return [Row(line, PROJECT_LABELS.get(f.stem, f.stem), "project", f"project-{f.stem}")
            for f in sorted(rule_corpus.glob("*.txt"))
            for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]


def _drop_near_duplicates(test: Sequence[Row], train: Sequence[Row]) -> list[Row]:
    keys = {_key(r.text) for r in train}
    index: dict[str, list[int]] = {}
    train_grams = [_grams(r.text) for r in train]
    for i, grams in enumerate(train_grams):
        for g in grams:
            index.setdefault(g, []).append(i)
    kept = []
    for row in test:
        if _key(row.text) in keys:
            continue
        grams = _grams(row.text)
        # Prefix filter: a line sharing ≥ NEAR_DUPLICATE of these grams shares at least
        # one of the rarest len - ceil(NEAR_DUPLICATE * len) + 1 of them.
        rare = sorted(grams, key=lambda g: len(index.get(g, ())))
        probe = rare[:len(rare) - math.ceil(NEAR_DUPLICATE * len(rare)) + 1]
        # ... and its size is within NEAR_DUPLICATE of this one's.
        lo, hi = NEAR_DUPLICATE * len(grams), len(grams) / NEAR_DUPLICATE
        candidates = {i for g in probe for i in index.get(g, ())
                      if lo <= len(train_grams[i]) <= hi}
        if any(len(grams & train_grams[i]) / len(grams | train_grams[i]) >= NEAR_DUPLICATE
               for i in candidates):
            continue
        kept.append(row)
    return kept


def load_corpus(root: Path, rule_corpus: Path | None = None) -> Corpus:
    """Read ``root`` (``corpus/``): its authors, split as ``splits.toml`` says."""
    splits = tomllib.loads((root / "splits.toml").read_text(encoding="utf-8"))
    train_authors, test_authors = set(splits["train"]), set(splits["test"])
    if train_authors & test_authors:
        raise ValueError(f"authors in both splits: {sorted(train_authors & test_authors)}")
    train: list[Row] = _project_rows(rule_corpus) if rule_corpus else []
    test: list[Row] = []
    for path in sorted((root / "authors").glob("*.jsonl")):
        if path.stem in train_authors:
            train += _read_author(path)
        elif path.stem in test_authors:
            test += _read_author(path)
        else:
            raise ValueError(f"{path.name}: author in neither split (corpus/splits.toml)")
    kept = _drop_near_duplicates(test, train)
    return Corpus(tuple(train), tuple(kept), len(test) - len(kept))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m chatserver.moderation.corpus --split test``: a split as JSONL (for
    ``rules eval``), after near-duplicate removal."""
    import argparse
    import sys
    parser = argparse.ArgumentParser(prog="python -m chatserver.moderation.corpus")
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--rule-corpus", default="tests/moderation/corpus")
    args = parser.parse_args(argv)
    corpus = load_corpus(Path(args.corpus), Path(args.rule_corpus))
    for row in corpus.train if args.split == "train" else corpus.test:
        sys.stdout.write(orjson.dumps({"text": row.text, "label": row.label,
                                       "author": row.author}).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
