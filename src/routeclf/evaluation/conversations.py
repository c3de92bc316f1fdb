"""Scoring labelled conversations (`messages` rows) the way the service reads them."""

from __future__ import annotations

from typing import Any

import numpy as np

from routeclf.errors import RouteclfError
from routeclf.evaluation.calibration import reliability
from routeclf.evaluation.evaluate import slice_metrics
from routeclf.evaluation.metrics import answer_metrics, softmax
from routeclf.inference.conversation import Conversation, gated_scores, read_messages
from routeclf.inference.decision import decide
from routeclf.inference.predictor import Predictor
from routeclf.tasks import Task


def read_conversations(records: list[dict[str, Any]], data: str, task: Task,
                       label_field: str) -> tuple[list[Conversation], np.ndarray]:
    """Conversations and their labels (the label of the latest user turn); bad rows are named."""
    conversations, y = [], []
    for n, record in enumerate(records):
        label = record.get(label_field)
        if label not in task.label2id:
            raise RouteclfError(f"{data}: row {n}: label {label!r} is not one of the {task.name} task's labels")
        try:
            conversations.append(read_messages(record.get("messages") or []))
        except ValueError as exc:
            raise RouteclfError(f"{data}: row {n}: {exc}") from None
        y.append(task.label2id[label])
    return conversations, np.array(y)


def score_conversations(predictor: Predictor, conversations: list[Conversation], y: np.ndarray,
                        task: Task) -> dict[str, Any]:
    """The figures of the answer given (the latest turn, with context when it alone is unsure),
    and for comparison the accuracy of two fixed readings: the latest turn alone, and always
    with context."""
    if task.kind != "classifier":
        raise RouteclfError("conversations are read by classifiers; a detector or tagger reads texts")
    policy = predictor.fitted_policy()
    # Both readings once; the service's rule picks between them per conversation.
    latest = predictor.raw_scores([c.latest for c in conversations])
    always = predictor.raw_scores([c.context or c.latest for c in conversations])
    scores, used = gated_scores(latest, always, conversations, policy)
    decisions = decide(scores, policy)
    metrics = answer_metrics(task, y, decisions)
    metrics["ece_uncalibrated"] = reliability(softmax(scores), y)["ece"]
    metrics["slices"] = {
        "length": slice_metrics(y, decisions.answer, [task.length_band(c.latest) for c in conversations], None),
        "read": slice_metrics(y, decisions.answer, ["with context" if u else "latest turn alone" for u in used], None),
    }
    metrics["conversation"] = {
        "context_used": float(used.mean()),
        "accuracy_latest_turn_only": float((decide(latest, policy).answer == y).mean()),
        "accuracy_always_with_context": float((decide(always, policy).answer == y).mean()),
    }
    return metrics
