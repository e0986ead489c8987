"""The slide classifier: a small logistic model over map features, in a versioned file.

It is fitted by ``wsi-slide-classifier`` on the maps of training and validation slides (never
test slides) and travels with the network: the file ``slide_classifier.json`` sits in the
model repository and its text is the ``slide_classifier`` parameter of both detectors'
configs, which the client reads with the model's other parameters. A map's features
(:mod:`wsi_tumor.evaluation.slide_features`) are standardised with the fitting set's mean and
scale and go through the fitted linear model and a logistic function.

A file of another format version, of another feature definition version, or naming a
feature this version does not compute is refused with one line naming where it came from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from wsi_tumor.errors import ModelMismatchError
from wsi_tumor.evaluation.slide_features import FEATURE_NAMES, FEATURES_VERSION
from wsi_tumor.fileio import write_json

FORMAT: Final = "wsi-tumor slide classifier"
VERSION: Final = 1
FILE_NAME: Final = "slide_classifier.json"
DEFAULT_FEATURES: Final = ("max_logit", "top_mean", "log_area_090", "log_largest_050")
"""Few features, not many (a random forest on 28 has been reported to overfit): how high the
map peaks, how wide its high plateau is, and how large the biggest suspicious region."""
DEFAULT_C: Final = 1.0
"""Inverse L2 strength of the logistic regression (scikit-learn's ``C``)."""


@dataclass(frozen=True)
class SlideClassifier:
    """A fitted scorer: standardise the chosen features, then a logistic model.

    Attributes:
        features: Feature names, in the order of the vectors below.
        mean: The fitting set's mean of each feature.
        scale: Its standard deviation (1 where a feature was constant).
        coef: Logistic coefficients on the standardised features.
        intercept: Logistic intercept.
        fitted_on: Where it was fitted (slides, counts, settings), for the record.
    """

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def probability(self, values: Mapping[str, float]) -> float:
        """Tumour probability of one slide from its features (:func:`map_features`)."""
        x = np.asarray([values[name] for name in self.features], np.float64)
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        logit = float(z @ np.asarray(self.coef) + self.intercept)
        return 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The file's content."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "features_version": FEATURES_VERSION,
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "fitted_on": self.fitted_on,
        }

    def to_text(self) -> str:
        """The file's content as compact JSON (the repository parameter's value)."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: Any, source: str) -> SlideClassifier:
        """Check and load a file's content.

        Raises:
            ModelMismatchError: the content is not this format, version or feature set
                (``source`` names where it came from).
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ModelMismatchError(f"{source}: not a {FORMAT} file")
        for key, expected in (("version", VERSION), ("features_version", FEATURES_VERSION)):
            if data.get(key) != expected:
                raise ModelMismatchError(
                    f"{source}: slide classifier {key} {data.get(key)!r}, this wsi-tumor "
                    f"reads {expected}: refit it with wsi-slide-classifier"
                )
        try:
            features = tuple(str(f) for f in data["features"])
            vectors = [tuple(float(v) for v in data[k]) for k in ("mean", "scale", "coef")]
            intercept = float(data["intercept"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelMismatchError(f"{source}: malformed slide classifier ({exc})") from None
        unknown = sorted(set(features) - set(FEATURE_NAMES))
        if unknown or not features:
            raise ModelMismatchError(
                f"{source}: slide classifier uses features this wsi-tumor does not compute: "
                f"{unknown or 'none given'}"
            )
        if any(len(v) != len(features) for v in vectors) or min(vectors[1]) <= 0:
            raise ModelMismatchError(
                f"{source}: slide classifier vectors do not match its features"
            )
        mean, scale, coef = vectors
        return cls(features, mean, scale, coef, intercept, dict(data.get("fitted_on", {})))

    @classmethod
    def from_text(cls, text: str, source: str) -> SlideClassifier:
        """:meth:`from_json` of a JSON string."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ModelMismatchError(f"{source}: slide classifier is not JSON ({exc})") from None
        return cls.from_json(data, source)


def read_classifier(path: Path) -> SlideClassifier:
    """Read a ``slide_classifier.json``.

    Raises:
        ModelMismatchError: the file is missing, unreadable or does not match (file named).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelMismatchError(f"{path}: cannot read the slide classifier ({exc})") from None
    return SlideClassifier.from_text(text, str(path))


def write_classifier(classifier: SlideClassifier, path: Path) -> Path:
    """Write the file (atomically)."""
    return write_json(path, classifier.to_json())


def fit_classifier(
    rows: Sequence[Mapping[str, float]],
    labels: Sequence[int],
    features: Sequence[str] = DEFAULT_FEATURES,
    c: float = DEFAULT_C,
    fitted_on: dict[str, Any] | None = None,
) -> SlideClassifier:
    """Fit the scorer on slides' features and labels (1 tumour, 0 normal).

    Args:
        rows: One feature mapping per slide.
        labels: The slides' labels.
        features: Which features the model uses.
        c: Inverse regularisation strength.
        fitted_on: Recorded in the file.

    Raises:
        ValueError: fewer than two slides of a class, or an unknown feature.
    """
    from sklearn.linear_model import LogisticRegression

    unknown = sorted(set(features) - set(FEATURE_NAMES))
    if unknown:
        raise ValueError(f"unknown features {unknown}; known: {', '.join(FEATURE_NAMES)}")
    y = np.asarray(labels, np.int64)
    if min(int(y.sum()), int(len(y) - y.sum())) < 2:
        raise ValueError(
            f"fitting needs at least two tumour and two normal slides, got {int(y.sum())} "
            f"tumour and {int(len(y) - y.sum())} normal"
        )
    x = np.asarray([[row[name] for name in features] for row in rows], np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=1000)
    model.fit((x - mean) / scale, y)
    return SlideClassifier(
        tuple(features),
        tuple(float(v) for v in mean),
        tuple(float(v) for v in scale),
        tuple(float(v) for v in model.coef_[0]),
        float(model.intercept_[0]),
        {"c": c, **(fitted_on or {})},
    )
