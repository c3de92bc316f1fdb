"""Where a score becomes an answer: the one place.

A consumer path's scores (logits, or the blend's log-probabilities) and its saved policy
(temperature, threshold, fallback or positive label) give the answer a router acts on. `predict`,
`evaluate`, `validate`, cross-validation, `e2e` (through the service) and the service itself all
call `decide`, so every reported figure is a figure of the answer given.

- Classifiers answer their top label, or abstain below the confidence threshold: the answer is
  then the fallback label and `abstained` says so (a task without a fallback never abstains).
- Detectors answer their positive label when its probability reaches the threshold, else the
  fallback label; they never abstain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from routeclf.evaluation.metrics import softmax


@dataclass(frozen=True)
class Policy:
    labels: tuple[str, ...]
    temperature: float
    threshold: float
    fallback_label: str | None = None
    positive_label: str | None = None

    @property
    def fallback(self) -> int | None:
        return None if self.fallback_label is None else self.labels.index(self.fallback_label)

    @property
    def positive(self) -> int | None:
        return None if self.positive_label is None else self.labels.index(self.positive_label)


@dataclass(frozen=True)
class Decisions:
    """Per text: calibrated probabilities, the top label, the answer, and what decided it."""

    policy: Policy
    threshold: float
    probabilities: np.ndarray  # (texts, labels), temperature-scaled
    top: np.ndarray  # label index of the highest probability
    answer: np.ndarray  # label index the router acts on
    score: np.ndarray  # what the threshold is compared with: the top (detectors: positive) probability
    abstained: np.ndarray  # classifiers below the threshold, answered with the fallback label

    def labels_of(self, which: np.ndarray) -> list[str]:
        return [self.policy.labels[int(i)] for i in which]

    def row(self, i: int, top_k: int = 3) -> dict[str, Any]:
        """One text's answer as the CLI prints it."""
        labels = self.policy.labels
        ranked = np.argsort(-self.probabilities[i])[: max(1, top_k)]
        return {
            "label": labels[int(self.answer[i])],
            "abstained": bool(self.abstained[i]),
            "top_label": labels[int(self.top[i])],
            "confidence": float(self.probabilities[i, self.top[i]]),
            "score": float(self.score[i]),
            "threshold": self.threshold,
            "top_k": [{"label": labels[int(j)], "probability": float(self.probabilities[i, j])} for j in ranked],
        }


def decide(scores: np.ndarray, policy: Policy, threshold: float | None = None) -> Decisions:
    """Answers for a batch of uncalibrated scores; `threshold` overrides the policy's (per request)."""
    threshold = policy.threshold if threshold is None else float(threshold)
    probabilities = softmax(np.asarray(scores, dtype=np.float64) / policy.temperature)
    top = probabilities.argmax(axis=1)
    if policy.positive is not None:
        score = probabilities[:, policy.positive]
        answer = np.where(score >= threshold, policy.positive, policy.fallback)
        abstained = np.zeros(len(top), dtype=bool)
    else:
        score = probabilities[np.arange(len(top)), top]
        abstained = (score < threshold) if policy.fallback is not None else np.zeros(len(top), dtype=bool)
        answer = np.where(abstained, policy.fallback if policy.fallback is not None else -1, top)
    return Decisions(policy, threshold, probabilities, top, answer.astype(int), score, abstained)
