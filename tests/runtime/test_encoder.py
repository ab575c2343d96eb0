"""The sentence encoder in a process of its own (``moderation.model.encoder = "process"``):
the same vectors and verdicts as the in-thread encoder, and fail closed when it dies."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from chatserver.config import ModelConfig
from chatserver.moderation.classifier import Classifier, load_classifier
from chatserver.moderation.engine import RuleSet
from chatserver.moderation.features import prepare
from chatserver.moderation.pipeline import Moderator
from chatserver.runtime.encoder import EncoderDown, ProcessEncoder
from chatserver.runtime.vectors import VectorBatcher
from tests import conftest
from tests.conftest import Running, classifier, start_server

CORPUS = Path(__file__).parents[1] / "moderation" / "corpus.jsonl"


def _lines() -> list[str]:
    """A handful of corpus lines of every label, the second stage's business among them."""
    rows = [orjson.loads(line) for line in CORPUS.read_text().splitlines() if line]
    picked: dict[str, list[str]] = {}
    for row in rows:
        bucket = picked.setdefault(row["label"], [])
        if len(bucket) < 3:
            bucket.append(row["text"])
    return [t for texts in picked.values() for t in texts]


@pytest.fixture(scope="module")
def process_encoder() -> Iterator[ProcessEncoder]:
    encoder = ProcessEncoder().wait()
    yield encoder
    encoder.close()


@pytest.fixture(scope="module")
def process_classifier(process_encoder: ProcessEncoder) -> Classifier:
    return load_classifier(None, lambda: process_encoder)


async def test_vectors_and_verdicts_are_the_in_thread_ones(
        rules: RuleSet, process_classifier: Classifier) -> None:
    lines = _lines()
    folded = [prepare(t) for t in lines]
    here = classifier().embed(folded)
    assert isinstance(process_classifier.encoder, ProcessEncoder)
    there = await process_classifier.encoder.encode_async(folded)
    assert there.dtype == np.float32 and np.array_equal(here, there)

    # The server's path (prepared, the vector from the batcher) against a check that
    # computes everything inline in this process.
    config = ModelConfig()
    served = Moderator(rules, process_classifier, config)
    batcher = VectorBatcher(process_classifier.encoder.encode_async)
    inline = Moderator(rules, classifier(), config)
    needed = 0
    for text in lines:
        want = served.needs_vector(text)
        if want is not None:
            needed += 1
            served.remember(text, "participant", [await batcher.vector(w) for w in want])
        assert served.check(text) == inline.check(text), text
    assert needed >= 3  # the slow tier was really used


@pytest.fixture
async def served(tmp_path: Path, rules: RuleSet,
                 process_classifier: Classifier) -> AsyncIterator[Running]:
    original = conftest.classifier
    conftest.classifier = lambda: process_classifier  # type: ignore[assignment]
    try:
        running = await start_server(tmp_path, rules)
    finally:
        conftest.classifier = original
    yield running
    await running.stop()


HELPER_REPLY = "if ur feeling suicidal tonight pls ring samaritans 116 123, we want u here x"
"""A rule holds it and the full heads clear it (tests/moderation/test_pipeline.py): only
the second stage, which needs the encoder, lets it through."""
EVERYDAY = "anyone watching the match later"


async def test_a_dead_encoder_process_holds_the_line_and_is_replaced(
        served: Running, process_encoder: ProcessEncoder) -> None:
    token = await served.join("Mo")
    ws = await served.client(token)
    assert (await ws.say(HELPER_REPLY, "m1"))["status"] == "sent"
    restarts = process_encoder.restarts

    os.kill(await process_encoder.pid(), signal.SIGKILL)
    # The line that needed the encoder while it was down: held for a facilitator (not
    # let through unread), ops alerted, and a new process started.
    assert (await ws.say(HELPER_REPLY + " honestly", "m2"))["status"] == "held"
    assert served.server.metrics.ops_alerts.labels("encoder")._value.get() >= 1
    assert process_encoder.restarts == restarts + 1
    # A line under every gate never needed it: delivered as ever.
    assert (await ws.say(EVERYDAY, "m3"))["status"] == "sent"

    await process_encoder.pid()  # the new process is up (it answers)
    assert (await ws.say(HELPER_REPLY + " tbh", "m4"))["status"] == "sent"


def test_a_stopped_encoder_refuses_rather_than_waits() -> None:
    encoder = ProcessEncoder().wait()
    encoder.close()
    with pytest.raises(EncoderDown):
        encoder.encode(["anything"])
