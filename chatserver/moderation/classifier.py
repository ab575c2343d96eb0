"""The learned second stage: features (``features.py``) → one score per head.

Two sets of one-vs-rest logistic heads, trained together by ``training.py``:

* **fast** heads read the n-grams alone (~0.2 ms). Each acting head has a *gate*: a
  line under every gate is one no full head would flag (chosen in training so that at
  most ``training.GATE_LOSS`` of harmful training lines fall under it, out of fold).
* **full** heads read the n-grams and the USE sentence vector (~3.5 ms). Their
  thresholds are the ones that act. Each full score is the mean of two readings of the
  same features: the head's own one-vs-rest logistic regression, and a *joint*
  (multinomial) one over the seven labels, where a head's score is the probability of
  its labels. The joint reading makes "method" and "everyday" compete for "how do i hang
  a picture", which one-vs-rest heads, each trained alone, cannot; out of fold by
  author the mean caught 3.5 points more risk lines at a lower false-positive rate than
  either reading alone.

Committed as one small ``.npz`` (``model/heads.npz``) with the corpus hash, the
encoder's version, the seed, the gates and the thresholds. Loading checks the encoder
installed is the one the heads were trained with, so a different package version stops
the server instead of scoring with the wrong inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from chatserver.moderation.features import (
    EMBED_DIM,
    HASH_SIZE,
    EncoderError,
    Featurizer,
    SentenceEncoder,
    Vocabulary,
    encoder_version,
    windows,
)
from chatserver.moderation.normalize import normalize

__all__ = ["DEFAULT_MODEL", "HEADS", "SAFE_HEADS", "Classifier", "Encoder", "Heads",
           "JointHead", "ModelInfo", "ModelLoadError", "combine", "load_classifier"]

HEADS: Final = ("risk", "method", "support", "abuse", "contact", "grooming", "everyday")
"""``risk``: the sender's own risk (a method question counts too); ``support``: recovery
and supportive talk, its own class so that it is recognised, not merely "not risk"."""
SAFE_HEADS: Final = ("support", "everyday")
"""The heads that say a line is safe (clearing reads them); the others say it is not."""
DEFAULT_MODEL: Final = "model/heads.npz"
"""Inside the ``chatserver.moderation`` package (so a wheel carries it)."""

FloatArray = npt.NDArray[np.float32]
NGrams = tuple[npt.NDArray[np.int64], FloatArray]
"""Hashed n-gram indices and their weights (``Featurizer.ngrams``)."""


def combine(per_window: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """One message's scores from its windows' (``features.windows``): each harmful head
    as the window that scores it highest, and the safe heads as the least safe window
    (the one whose better safe score is lowest). A long post is as harmful as its worst
    part, and only as safe as its least safe part: one supportive paragraph does not
    clear a goodbye in the next."""
    if len(per_window) == 1:
        return dict(per_window[0])
    least_safe = min(per_window, key=lambda s: max(s[h] for h in SAFE_HEADS if h in s))
    return {h: least_safe[h] if h in SAFE_HEADS else max(s[h] for s in per_window)
            for h in per_window[0]}


class Encoder(Protocol):
    """Prepared texts → sentence vectors, (n, 512): ``SentenceEncoder`` in this process,
    or the server's encoder process (``runtime/encoder.py``), which loads the same one."""

    def encode(self, folded: Sequence[str]) -> FloatArray: ...


class ModelLoadError(RuntimeError):
    """The heads cannot be used: missing, corrupt, or trained for another encoder."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    version: str
    """Hash of the arrays: written into every audit entry beside the rules' version."""
    encoder: str
    corpus_hash: str
    seed: int
    thresholds: Mapping[str, float]
    """Full heads, per head: chosen in training on the training authors, out of fold."""
    gates: Mapping[str, float]
    """Fast heads, per acting head: under every gate, the full heads are not consulted."""
    trained: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class Heads:
    """One set of linear heads: n-gram weights, optional sentence weights, bias."""

    w_hash: FloatArray
    bias: FloatArray
    w_embed: FloatArray | None = None

    def __call__(self, idx: npt.NDArray[np.int64], val: FloatArray,
                 embedding: FloatArray | None = None) -> FloatArray:
        z: FloatArray = val @ self.w_hash[idx] + self.bias
        if self.w_embed is not None and embedding is not None:
            z = z + embedding @ self.w_embed
        out: FloatArray = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
        return out


@dataclass(frozen=True, slots=True)
class JointHead:
    """A multinomial logistic regression over the labels; ``members`` maps each head
    to the labels whose probabilities make its score (risk: risk and method)."""

    w_hash: FloatArray
    w_embed: FloatArray
    bias: FloatArray
    members: FloatArray
    """(labels, heads): 1 where a label counts towards a head."""

    def __call__(self, idx: npt.NDArray[np.int64], val: FloatArray,
                 embedding: FloatArray) -> FloatArray:
        z = val @ self.w_hash[idx] + embedding @ self.w_embed + self.bias
        e = np.exp(z - z.max())
        out: FloatArray = ((e / e.sum()) @ self.members).astype(np.float32)
        return out


class Classifier:
    def __init__(self, featurizer: Featurizer, encoder: Encoder, fast: Heads,
                 full: Heads, heads: tuple[str, ...], info: ModelInfo,
                 joint: JointHead | None = None) -> None:
        self.featurizer = featurizer
        self.encoder = encoder
        self.fast = fast
        self.full = full
        self.joint = joint
        self.heads = heads
        self.info = info

    @property
    def version(self) -> str:
        return self.info.version

    def _named(self, p: FloatArray) -> dict[str, float]:
        return {h: round(float(s), 4) for h, s in zip(self.heads, p, strict=True)}

    def ngrams(self, folded: str) -> NGrams:
        """The hashed n-gram features both tiers read (computed once per line)."""
        return self.featurizer.ngrams(folded)

    def fast_scores(self, folded: str, grams: NGrams | None = None) -> dict[str, float]:
        return self._named(self.fast(*(grams or self.ngrams(folded))))

    def past_gate(self, fast: Mapping[str, float]) -> bool:
        """Would any full head need a look? (Otherwise the line is everyday.)"""
        return any(fast[h] >= g for h, g in self.info.gates.items())

    def embed(self, folded: Sequence[str]) -> FloatArray:
        """Sentence vectors for prepared texts (batched: the slow part)."""
        return self.encoder.encode(folded)

    def full_scores(self, folded: str, embedding: FloatArray,
                    grams: NGrams | None = None) -> dict[str, float]:
        idx, val = grams or self.ngrams(folded)
        p = self.full(idx, val, embedding)
        if self.joint is not None:
            p = ((p + self.joint(idx, val, embedding)) / 2).astype(np.float32)
        return self._named(p)

    def score(self, text: str) -> dict[str, float]:
        """The full heads' scores for one message, read in windows as the server reads
        it (tests, probes)."""
        folded = windows(normalize(text))
        vectors = self.embed(folded)
        return combine([self.full_scores(w, v) for w, v in zip(folded, vectors, strict=True)])


def _path(where: str | None) -> Path:
    if where:
        return Path(where)
    return Path(str(resources.files("chatserver.moderation").joinpath(DEFAULT_MODEL)))


def load_classifier(where: str | None = None,
                    encoder: Callable[[], Encoder] = SentenceEncoder) -> Classifier:
    """Load the committed heads (or ``where``) and the encoder they were trained with
    (``encoder`` makes it, once the installed version is checked: in this process by
    default, or the server's encoder process).

    Raises:
        ModelLoadError: with one line that says what is wrong; the server refuses to
            start rather than run without its second stage (fail closed).
    """
    path = _path(where)
    try:
        with np.load(path, allow_pickle=False) as z:
            # The version hashes the arrays, not the file: zip timestamps differ per run.
            digest = hashlib.sha256()
            for key in sorted(z.files):
                digest.update(key.encode() + z[key].tobytes())
            meta = json.loads(str(z["meta"]))
            heads = tuple(meta["heads"])
            vocab = Vocabulary(z["bucket_idf"].astype(np.float32))
            fast = Heads(z["fast_w"].astype(np.float32), z["fast_b"].astype(np.float32))
            full = Heads(z["full_w"].astype(np.float32), z["full_b"].astype(np.float32),
                         z["full_e"].astype(np.float32))
            joint = None
            if "joint_w" in z.files:
                joint = JointHead(z["joint_w"].astype(np.float32),
                                  z["joint_e"].astype(np.float32),
                                  z["joint_b"].astype(np.float32),
                                  z["joint_members"].astype(np.float32))
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise ModelLoadError(f"moderation model {path}: cannot be read ({e}); "
                             "run `make model`") from e
    for h in (fast, full):
        if h.w_hash.shape != (HASH_SIZE, len(heads)) or h.bias.shape != (len(heads),):
            raise ModelLoadError(f"moderation model {path}: shapes do not match the features")
    if full.w_embed is None or full.w_embed.shape != (EMBED_DIM, len(heads)):
        raise ModelLoadError(f"moderation model {path}: shapes do not match the encoder")
    if joint is not None:
        n = joint.bias.shape[0]
        if joint.w_hash.shape != (HASH_SIZE, n) or joint.w_embed.shape != (EMBED_DIM, n) \
                or joint.members.shape != (n, len(heads)):
            raise ModelLoadError(f"moderation model {path}: joint head shapes do not match")
    try:
        installed = encoder_version()
        if installed != meta["encoder"]:
            raise ModelLoadError(f"moderation model {path} was trained with "
                                 f"{meta['encoder']}, but {installed} is installed")
        made = encoder()
    except EncoderError as e:
        raise ModelLoadError(str(e)) from e
    info = ModelInfo(version=digest.hexdigest()[:12], encoder=meta["encoder"],
                     corpus_hash=meta["corpus_hash"], seed=int(meta["seed"]),
                     thresholds=dict(meta["thresholds"]), gates=dict(meta["gates"]),
                     trained=dict(meta["trained"]))
    return Classifier(Featurizer(vocab), made, fast, full, heads, info, joint)
