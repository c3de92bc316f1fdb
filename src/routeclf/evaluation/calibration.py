"""Temperature scaling, calibration error and the abstain threshold, all fitted on validation."""

from __future__ import annotations

from typing import Any

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature that minimises negative log-likelihood (a 1-D search over log-space)."""
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 241))
    losses = [-log_softmax(logits / t)[np.arange(len(y)), y].mean() for t in grid]
    return float(grid[int(np.argmin(losses))])


def reliability(probabilities: np.ndarray, y: np.ndarray, bins: int = 15) -> dict[str, Any]:
    """Expected calibration error of the top label over equal-width confidence bins, and the bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    table = []
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if not mask.any():
            continue
        accuracy, mean_confidence = float(correct[mask].mean()), float(confidence[mask].mean())
        ece += mask.mean() * abs(accuracy - mean_confidence)
        table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": int(mask.sum()),
                      "accuracy": accuracy, "confidence": mean_confidence})
    return {"ece": float(ece), "bins": table}


def choose_threshold(probabilities: np.ndarray, y: np.ndarray, target_accuracy: float, min_coverage: float = 0.0) -> float:
    """The lowest confidence threshold whose answered predictions reach `target_accuracy`, but
    never one that leaves fewer than `min_coverage` of the rows answered.

    Lowest means most coverage. A router that abstains sends the request to its fallback route,
    so the coverage floor keeps a model that misses the accuracy target from sending most
    ordinary requests there. If even the most confident predictions miss the target and there is
    no floor, the threshold is set just above every observed confidence: the model abstains on
    everything until it is retrained, which `routeclf validate` then reports as zero coverage.
    """
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == y).astype(float)
    order = np.argsort(-confidence, kind="stable")
    ranked = confidence[order]
    running = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    # Only thresholds at distinct confidence values are achievable.
    distinct = np.r_[ranked[1:] != ranked[:-1], True]
    ok = np.where((running >= target_accuracy) & distinct)[0]
    threshold = float(ranked[ok[-1]]) if len(ok) else float(np.nextafter(ranked[0], np.inf))
    if min_coverage > 0:
        floor = float(ranked[max(0, int(np.ceil(min_coverage * len(ranked))) - 1)])
        threshold = min(threshold, floor)
    return threshold


def threshold_for_fpr(risk: np.ndarray, is_attack: np.ndarray, target_fpr: float) -> float:
    """The lowest attack-score threshold whose false-positive rate on benign rows is <= target."""
    benign = np.sort(risk[~is_attack])[::-1]
    if not len(benign):
        return 0.5
    allowed = int(np.floor(target_fpr * len(benign)))  # benign rows that may score at or above it
    # Just above the (allowed+1)-th highest benign score, so at most `allowed` benign rows reach it.
    return float(np.nextafter(benign[allowed], np.inf)) if allowed < len(benign) else 0.0


def decision_rule(task, settings) -> dict[str, Any]:
    """What every consumer path's threshold is fitted for, as `calibration.json` records it."""
    rule: dict[str, Any] = {"fallback_label": task.fallback_label, "positive_label": task.positive_label}
    if task.positive_label is not None:
        rule["target_fpr"] = settings.target_fpr
    elif task.fallback_label is not None:
        rule |= {"target_accuracy": settings.abstain_accuracy, "min_coverage": settings.min_coverage}
    return rule


def fit_path(predictor, rows, task, rule: dict[str, Any], where: str | None = None) -> dict[str, Any]:
    """One consumer path's policy, fitted on validation rows from that path's own scores: its
    temperature, then its threshold (classifiers: the lowest confidence whose answers reach the
    target accuracy, kept under the coverage floor; detectors: the lowest attack probability whose
    false-positive rate is within the target). A plain transformers consumer applies no
    temperature, so its path keeps temperature 1: its threshold is on plain softmax."""
    from routeclf.inference.decision import Policy, decide

    y = np.array([task.label2id[r.label] for r in rows])
    scores = np.asarray(predictor.raw_scores([r.text for r in rows]), dtype=np.float64)
    if predictor.plain:
        temperature, method = 1.0, "none: a plain consumer reads softmax(logits)"
    else:
        temperature, method = fit_temperature(scores, y), f"temperature scaling on {where or f'{len(rows)} validation rows'}"
    # The probabilities exactly as `decide` computes them, so the threshold lands where it acts.
    probabilities = decide(scores, Policy(tuple(task.labels), temperature, 0.0)).probabilities
    section: dict[str, Any] = {"method": method, "temperature": temperature}
    if task.positive_label is not None:
        positive = task.label2id[task.positive_label]
        # Easy padding (benign rows no detector ever flags) would dilute the false-positive budget.
        pool = np.array([task.counts_for_threshold(r) for r in rows], dtype=bool)
        section["threshold"] = threshold_for_fpr(probabilities[pool, positive], (y == positive)[pool], rule["target_fpr"])
        section["threshold_rule"] = (f"lowest {task.positive_label} probability whose validation false-positive rate "
                                     f"is <= {rule['target_fpr']}" + (
                                         f" (benign rows of {', '.join(task.threshold_excludes_sources)} left out: "
                                         f"{int((~pool).sum())} of {len(rows)})" if not pool.all() else ""))
    elif task.fallback_label is not None:
        section["threshold"] = choose_threshold(probabilities, y, rule["target_accuracy"], rule["min_coverage"])
        section["threshold_rule"] = (f"lowest confidence whose answered validation predictions reach accuracy "
                                     f"{rule['target_accuracy']}, capped so that at least {rule['min_coverage']:.0%} "
                                     "of validation requests are answered")
    else:
        section["threshold"] = 0.0
        section["threshold_rule"] = "the task has no fallback label: the top label is always answered"
    return section
