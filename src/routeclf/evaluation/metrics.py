"""Classification metrics, computed the same way after training and in `routeclf evaluate`."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, precision_recall_fscore_support


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def classification_metrics(labels: tuple[str, ...], y_true: np.ndarray, y_pred: np.ndarray,
                           probabilities: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class scores and the confusion matrix of `y_pred`, and the
    loss of `probabilities`.

    Per-class rows cover every label of the task, so a class the data lacks shows support 0.
    """
    indices = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=indices, zero_division=0
    )
    present = sorted(set(y_true.tolist()))
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # Macro scores average over the labels present in the data, so a subset file is not
        # punished for classes it cannot contain.
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=present, average="weighted", zero_division=0)),
        "loss": float(log_loss(y_true, np.clip(probabilities, 1e-12, 1.0), labels=indices)),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=indices).tolist(),
        "confusion_matrix_labels": list(labels),
    }


def proportion_ci(successes: int, n: int) -> list[float] | None:
    """The 95% Wilson score interval of a proportion."""
    from scipy.stats import binomtest

    if not n:
        return None
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def answer_metrics(task, y: np.ndarray, decisions) -> dict[str, Any]:
    """Every figure of the answers a consumer path gives (`Decisions`): the answer's
    classification metrics, the top label's, calibration, and the operating point."""
    from routeclf.evaluation.calibration import reliability

    probabilities = decisions.probabilities
    metrics = classification_metrics(task.labels, y, decisions.answer, probabilities)
    metrics["accuracy_ci95"] = proportion_ci(int((decisions.answer == y).sum()), len(y))
    metrics["top_label"] = {
        "accuracy": float((decisions.top == y).mean()),
        "macro_f1": float(f1_score(y, decisions.top, labels=sorted(set(y.tolist())), average="macro",
                                   zero_division=0)),
    }
    curve = reliability(probabilities, y)
    metrics["ece"] = curve["ece"]
    metrics["reliability_bins"] = curve["bins"]
    positive = decisions.policy.positive
    if positive is None:
        answered = ~decisions.abstained
        metrics["abstention"] = {
            "threshold": decisions.threshold,
            "coverage": float(answered.mean()),
            "answered_accuracy": float((decisions.top[answered] == y[answered]).mean()) if answered.any() else None,
            "n_answered": int(answered.sum()),
            "fallback_label": decisions.policy.fallback_label,
        }
        metrics["coverage_curve"] = coverage_curve(decisions.score, decisions.top == y)
    else:
        metrics["binary"] = binary_metrics(y == positive, decisions.score, decisions.answer == positive,
                                           decisions.threshold)
    return metrics


def coverage_curve(confidence: np.ndarray, correct: np.ndarray, points: int = 20) -> list[dict[str, float]]:
    """Accuracy of the most confident answers at each coverage (5%, 10%, ... 100%)."""
    order = np.argsort(-confidence, kind="stable")
    running = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    curve = []
    for k in range(1, points + 1):
        n = max(1, int(round(k / points * len(order))))
        curve.append({"coverage": n / len(order), "answered_accuracy": float(running[n - 1]),
                      "threshold": float(confidence[order][n - 1])})
    return curve


def detector_rates(is_attack: np.ndarray, flagged: np.ndarray) -> dict[str, Any]:
    """Recall and false-positive rate of a detector's verdicts, with 95% (Wilson) intervals."""
    attacks, benign = int(is_attack.sum()), int((~is_attack).sum())
    caught, false = int((flagged & is_attack).sum()), int((flagged & ~is_attack).sum())
    return {
        "n_attacks": attacks,
        "n_benign": benign,
        "recall": caught / attacks if attacks else None,
        "recall_ci95": proportion_ci(caught, attacks),
        "false_positive_rate": false / benign if benign else None,
        "false_positive_rate_ci95": proportion_ci(false, benign),
    }


def format_table(metrics: dict[str, Any]) -> str:
    """A per-class table for the terminal."""
    width = max(len(label) for label in metrics["per_class"]) + 2
    lines = [f"{'label':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for label, row in metrics["per_class"].items():
        lines.append(
            f"{label:<{width}}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>10d}"
        )
    lines.append(
        f"n={metrics['n']}  accuracy={metrics['accuracy']:.4f}  macro-F1={metrics['macro_f1']:.4f}  "
        f"weighted-F1={metrics['weighted_f1']:.4f}  loss={metrics['loss']:.4f}"
    )
    return "\n".join(lines)


def format_report(metrics: dict[str, Any]) -> str:
    """The answer's per-class table, the top label, calibration, the operating point and slices."""
    lines = [format_table(metrics)]
    top = metrics["top_label"]
    lines.append(f"the answer given (above); the top label alone: accuracy {top['accuracy']:.4f}, "
                 f"macro-F1 {top['macro_f1']:.4f}; ECE {metrics['ece']:.4f} (uncalibrated "
                 f"{metrics['ece_uncalibrated']:.4f})")
    if "conversation" in metrics:
        c = metrics["conversation"]
        lines.append(f"conversations: the earlier user turns were read for {c['context_used']:.1%}; reading the latest "
                     f"turn alone would score {c['accuracy_latest_turn_only']:.4f}, always with them "
                     f"{c['accuracy_always_with_context']:.4f}")
    if "abstention" in metrics:
        t = metrics["abstention"]
        answered = "-" if t["answered_accuracy"] is None else f"{t['answered_accuracy']:.4f}"
        lines.append(f"at threshold {t['threshold']:.3f}: answered {t['coverage']:.3f} (accuracy when answered "
                     f"{answered}); the rest abstained, answered {t['fallback_label']!r}")
    if "binary" in metrics:
        lines.append(format_binary(metrics["binary"]))
    for kind, slices in metrics.get("slices", {}).items():
        if len(slices) > 1:
            lines.append(f"by {kind}:")
            lines += [f"  {key:<40} n={v['n']:<6} accuracy={v['accuracy']:.4f}" for key, v in slices.items()]
    return "\n".join(lines)


BOOTSTRAP_SAMPLES = 1000


def binary_metrics(is_attack: np.ndarray, risk: np.ndarray, flagged: np.ndarray, threshold: float,
                   seed: int = 0) -> dict[str, Any]:
    """Detector metrics: the operating point of the verdicts given (`flagged`, at `threshold`):
    recall, precision and false-positive rate, each with a bootstrap 95% interval; and the
    ranking quality of `risk`."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    attacks, benign = is_attack.sum(), (~is_attack).sum()
    result: dict[str, Any] = {
        "threshold": threshold,
        "n_attacks": int(attacks),
        "n_benign": int(benign),
        "recall": float((flagged & is_attack).sum() / attacks) if attacks else None,
        "precision": float((flagged & is_attack).sum() / flagged.sum()) if flagged.sum() else None,
        "false_positive_rate": float((flagged & ~is_attack).sum() / benign) if benign else None,
    }
    p, r = result["precision"], result["recall"]
    result["f1"] = 2 * p * r / (p + r) if p and r else 0.0
    result |= _bootstrap_intervals(is_attack, flagged, seed)
    if attacks and benign:
        result["roc_auc"] = float(roc_auc_score(is_attack, risk))
        result["pr_auc"] = float(average_precision_score(is_attack, risk))
        fpr, tpr, _ = roc_curve(is_attack, risk)
        for target in (0.01, 0.05):
            result[f"recall_at_fpr_{target:g}"] = float(tpr[fpr <= target].max())
        result["roc_curve"] = {"fpr": fpr[:: max(1, len(fpr) // 200)].tolist(), "tpr": tpr[:: max(1, len(tpr) // 200)].tolist()}
    return result


def _bootstrap_intervals(is_attack: np.ndarray, flagged: np.ndarray, seed: int) -> dict[str, list[float] | None]:
    """Percentile bootstrap 95% intervals of recall, precision and false-positive rate: the rows
    are resampled through the four cells of the confusion matrix (memory stays constant)."""
    cells = np.array([(flagged & is_attack).sum(), (~flagged & is_attack).sum(),
                      (flagged & ~is_attack).sum(), (~flagged & ~is_attack).sum()], dtype=float)
    n = int(cells.sum())
    if not n:
        return {"recall_ci95": None, "precision_ci95": None, "false_positive_rate_ci95": None}
    caught, missed, false, clean = np.random.default_rng(seed).multinomial(n, cells / n, size=BOOTSTRAP_SAMPLES).T
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = {
            "recall_ci95": caught / (caught + missed),
            "precision_ci95": caught / (caught + false),
            "false_positive_rate_ci95": false / (false + clean),
        }
    intervals = {}
    for name, values in rates.items():
        values = values[np.isfinite(values)]
        intervals[name] = [round(float(q), 4) for q in np.percentile(values, [2.5, 97.5])] if len(values) else None
    return intervals


def format_binary(b: dict[str, Any]) -> str:
    def show(key: str) -> str:
        value = b.get(key)
        return "-" if value is None else f"{value:.4f}"

    return (
        f"at threshold {b['threshold']:.4f}: recall {show('recall')}, precision {show('precision')}, "
        f"false-positive rate {show('false_positive_rate')}; ROC-AUC {show('roc_auc')}, PR-AUC {show('pr_auc')}, "
        f"recall at FPR 1% {show('recall_at_fpr_0.01')}, at 5% {show('recall_at_fpr_0.05')}"
    )
