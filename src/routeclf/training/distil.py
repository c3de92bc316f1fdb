"""Moving the n-gram model's knowledge into the encoder, so that `model.safetensors` alone (what
plain transformers, the vLLM semantic router and ONNX load) carries it.

The encoder trains towards a mix of each row's label and the n-gram model's probabilities for the
row. Those probabilities are out of fold: the n-gram model that scores a row never trained on it
(nor on its copies), so they show where it is unsure or differs from the label, not what it
memorised. The temperature that turns its decision values into probabilities is fitted on the
same out-of-fold values.
"""

from __future__ import annotations

import numpy as np

from routeclf.data.sources import Row
from routeclf.evaluation.calibration import fit_temperature
from routeclf.evaluation.metrics import softmax
from routeclf.tasks.base import Task
from routeclf.training.ngram import NgramModel

DISTIL_FOLDS = 5


def ngram_soft_targets(rows: list[Row], task: Task, weight: float, seed: int) -> tuple[np.ndarray, dict[str, float]]:
    """Per row, `(1 - weight) * one-hot label + weight * out-of-fold n-gram probabilities`, and a
    summary (the n-gram model's out-of-fold accuracy, its temperature)."""
    from sklearn.model_selection import GroupKFold

    texts = [r.text for r in rows]
    y = np.array([task.label2id[r.label] for r in rows])
    n_labels = len(task.labels)
    decisions = np.zeros((len(rows), n_labels))
    splitter = GroupKFold(n_splits=DISTIL_FOLDS, shuffle=True, random_state=seed)
    for fitted, held in splitter.split(texts, y, [r.group for r in rows]):
        model = NgramModel.fit([texts[i] for i in fitted], y[fitted], n_labels, seed=seed)
        decisions[held] = model.decision([texts[i] for i in held])
    temperature = fit_temperature(decisions, y)
    probabilities = softmax(decisions / temperature)
    targets = (1 - weight) * np.eye(n_labels)[y] + weight * probabilities
    summary = {"weight": weight, "folds": DISTIL_FOLDS, "ngram_out_of_fold_accuracy": float((decisions.argmax(1) == y).mean()),
               "ngram_temperature": temperature}
    return targets.astype(np.float32), summary
