"""The learned second stage: features (``features.py``) → one score per head.

The heads are one-vs-rest logistic regressions trained by ``training.py`` from the
project's corpus and committed as one small ``.npz`` (``model/heads.npz``), with the
corpus hash, the encoder's version, the seed and the thresholds chosen in training.
Loading checks the encoder installed is the one the heads were trained with, so a
different package version stops the server instead of scoring with the wrong inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from chatserver.moderation.features import (
    HASH_SIZE,
    EncoderError,
    Featurizer,
    Vocabulary,
    encoder_version,
)

__all__ = ["DEFAULT_MODEL", "HEADS", "Classifier", "ModelInfo", "ModelLoadError",
           "load_classifier"]

HEADS: Final = ("risk", "method", "support", "abuse", "contact", "grooming", "everyday")
"""``risk``: the sender's own risk (a method question counts too); ``support``: recovery
and supportive talk, its own class so that it is recognised, not merely "not risk"."""
DEFAULT_MODEL: Final = "model/heads.npz"
"""Inside the ``chatserver.moderation`` package (so a wheel carries it)."""


class ModelLoadError(RuntimeError):
    """The heads cannot be used: missing, corrupt, or trained for another encoder."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    version: str
    """Content hash of the artifact: written into every audit entry beside the rules'."""
    encoder: str
    corpus_hash: str
    seed: int
    thresholds: Mapping[str, float]
    """Per head, chosen in training on the training authors only (cross-validated)."""
    trained: Mapping[str, object]


class Classifier:
    def __init__(self, featurizer: Featurizer, w_embed: npt.NDArray[np.float32],
                 w_hash: npt.NDArray[np.float32], bias: npt.NDArray[np.float32],
                 heads: tuple[str, ...], info: ModelInfo) -> None:
        self.featurizer = featurizer
        self.w_embed = w_embed
        self.w_hash = w_hash
        self.bias = bias
        self.heads = heads
        self.info = info

    @property
    def version(self) -> str:
        return self.info.version

    def score(self, text: str) -> dict[str, float]:
        """Each head's probability for one message."""
        sent, idx, val = self.featurizer.features(text)
        z = sent @ self.w_embed + val @ self.w_hash[idx] + self.bias
        p = 1.0 / (1.0 + np.exp(-z))
        return {h: round(float(s), 4) for h, s in zip(self.heads, p, strict=True)}


def _path(where: str | None) -> Path:
    if where:
        return Path(where)
    return Path(str(resources.files("chatserver.moderation").joinpath(DEFAULT_MODEL)))


def load_classifier(where: str | None = None) -> Classifier:
    """Load the committed heads (or ``where``).

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
            vocab = Vocabulary(
                token_idf=dict(zip(z["token_ids"].tolist(), z["token_idf"].tolist(),
                                   strict=True)),
                default_idf=float(meta["default_idf"]),
                bucket_idf=z["bucket_idf"].astype(np.float32),
                embed_weight=float(meta["embed_weight"]))
            w_embed = z["w_embed"].astype(np.float32)
            w_hash = z["w_hash"].astype(np.float32)
            bias = z["bias"].astype(np.float32)
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise ModelLoadError(f"moderation model {path}: cannot be read ({e}); "
                             "run `make model`") from e
    if w_hash.shape != (HASH_SIZE, len(heads)) or w_embed.shape[1] != len(heads):
        raise ModelLoadError(f"moderation model {path}: shapes do not match the features")
    try:
        installed = encoder_version()
    except EncoderError as e:
        raise ModelLoadError(str(e)) from e
    if installed != meta["encoder"]:
        raise ModelLoadError(f"moderation model {path} was trained with {meta['encoder']}, "
                             f"but {installed} is installed")
    try:
        featurizer = Featurizer(vocab)
    except EncoderError as e:
        raise ModelLoadError(str(e)) from e
    info = ModelInfo(version=digest.hexdigest()[:12], encoder=meta["encoder"],
                     corpus_hash=meta["corpus_hash"], seed=int(meta["seed"]),
                     thresholds=dict(meta["thresholds"]), trained=dict(meta["trained"]))
    return Classifier(featurizer, w_embed, w_hash, bias, heads, info)
