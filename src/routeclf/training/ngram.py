"""A word + character n-gram linear model, blended with the encoder.

Its errors differ from the encoder's (it keys on rare terms and spellings; the encoder on meaning),
so a blend beats both. It is stored without pickles: vocabularies as JSON, weights as safetensors,
and rebuilt with scikit-learn at load time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

from routeclf.evaluation.calibration import log_softmax
from routeclf.evaluation.metrics import softmax

VECTORIZERS = {
    "word": {"analyzer": "word", "ngram_range": (1, 2), "sublinear_tf": True, "min_df": 2, "lowercase": True},
    "char": {"analyzer": "char_wb", "ngram_range": (2, 5), "sublinear_tf": True, "min_df": 2, "lowercase": True},
}


@dataclass
class NgramModel:
    vectorizers: dict[str, TfidfVectorizer]
    coef: np.ndarray  # (labels, features)
    intercept: np.ndarray  # (labels,)
    temperature: float = 1.0

    def __post_init__(self) -> None:
        # sparse @ dense.T would copy the whole (features x labels) matrix on every call.
        self._coef_t = np.ascontiguousarray(self.coef.T, dtype=np.float64)  # the features are float64

    @classmethod
    def fit(cls, texts: list[str], y: np.ndarray, n_labels: int, c: float = 0.5, seed: int = 42) -> NgramModel:
        vectorizers = {name: TfidfVectorizer(**params) for name, params in VECTORIZERS.items()}
        features = sp.hstack([v.fit_transform(texts) for v in vectorizers.values()]).tocsr()
        svm = LinearSVC(C=c, random_state=seed).fit(features, y)
        coef = np.zeros((n_labels, features.shape[1]), dtype=np.float32)
        intercept = np.zeros(n_labels, dtype=np.float32)
        if len(svm.classes_) == 2:
            # A binary LinearSVC keeps one weight vector, for the second class; split it as +-1/2
            # so the two columns' difference is the SVM's own decision value.
            negative, positive = svm.classes_
            coef[positive], coef[negative] = svm.coef_[0] / 2, -svm.coef_[0] / 2
            intercept[positive], intercept[negative] = svm.intercept_[0] / 2, -svm.intercept_[0] / 2
        else:
            coef[svm.classes_] = svm.coef_
            intercept[svm.classes_] = svm.intercept_
        # Labels absent from the training data can never win.
        missing = np.setdiff1d(np.arange(n_labels), svm.classes_)
        intercept[missing] = -1e4
        return cls(vectorizers, coef, intercept)

    def decision(self, texts: list[str]) -> np.ndarray:
        features = sp.hstack([v.transform(texts) for v in self.vectorizers.values()]).tocsr()
        return np.asarray(features @ self._coef_t) + self.intercept

    def logits(self, texts: list[str]) -> np.ndarray:
        """Calibrated log-probabilities."""
        return log_softmax(self.decision(texts) / self.temperature)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        config = {"temperature": self.temperature, "vectorizers": {}}
        tensors = {"coef": self.coef, "intercept": self.intercept}
        for name, vectorizer in self.vectorizers.items():
            params = {k: v for k, v in VECTORIZERS[name].items()}
            vocabulary = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
            config["vectorizers"][name] = {"params": params, "vocabulary": vocabulary}
            tensors[f"idf_{name}"] = vectorizer.idf_.astype(np.float64)
        (directory / "ngram_config.json").write_text(json.dumps(config, ensure_ascii=False))
        save_file(tensors, str(directory / "ngram.safetensors"))

    @classmethod
    def load(cls, directory: Path) -> NgramModel:
        config = json.loads((directory / "ngram_config.json").read_text())
        tensors = load_file(str(directory / "ngram.safetensors"))
        vectorizers = {}
        for name, spec in config["vectorizers"].items():
            params = dict(spec["params"], ngram_range=tuple(spec["params"]["ngram_range"]))
            vocabulary = {term: i for i, term in enumerate(spec["vocabulary"])}
            vectorizer = TfidfVectorizer(**params, vocabulary=vocabulary)
            vectorizer.idf_ = tensors[f"idf_{name}"]
            vectorizers[name] = vectorizer
        return cls(vectorizers, tensors["coef"], tensors["intercept"], float(config["temperature"]))


PARTIAL_AUC_MAX_FPR = 0.05


def blend(encoder_logits: np.ndarray, ngram_logits: np.ndarray, weight: float) -> np.ndarray:
    """Log of the weighted mean of the two probability distributions (weight on the n-gram model)."""
    mixed = (1 - weight) * softmax(encoder_logits) + weight * np.exp(ngram_logits)
    return np.log(np.clip(mixed, 1e-12, None))


WEIGHTS = tuple(float(w) for w in np.round(np.linspace(0, 1, 21), 2))


def choose_weight(score: Callable[[float], np.ndarray], y: np.ndarray, positive: int | None = None,
                  weights: tuple[float, ...] = WEIGHTS) -> tuple[float, dict[str, float]]:
    """The n-gram weight with the best validation score (ties: the smaller weight).

    `score(weight)` gives blended logits per row. Classifiers are judged by accuracy; detectors
    (`positive` set) by the standardised partial ROC AUC up to a 5% false-positive rate, the
    region their threshold is chosen in.
    """
    from sklearn.metrics import roc_auc_score

    scores = {}
    for weight in weights:
        logits = score(weight)
        if positive is None:
            value = float((logits.argmax(1) == y).mean())
        else:
            value = float(roc_auc_score(y == positive, softmax(logits)[:, positive], max_fpr=PARTIAL_AUC_MAX_FPR))
        scores[f"{weight:.2f}"] = value
    best = max(scores, key=lambda w: (scores[w], -float(w)))
    return float(best), scores
