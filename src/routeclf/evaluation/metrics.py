"""Classification metrics, computed the same way after training and in `routeclf evaluate`."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, precision_recall_fscore_support


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def classification_metrics(labels: tuple[str, ...], y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, loss, per-class scores and the confusion matrix.

    Per-class rows cover every label of the task, so a class the data lacks shows support 0.
    """
    indices = list(range(len(labels)))
    y_pred = probabilities.argmax(axis=1)
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
    """The per-class table, calibration and slices, for the terminal."""
    lines = [format_table(metrics)]
    if "above_threshold" in metrics:
        t = metrics["above_threshold"]
        lines.append(
            f"ECE {metrics['ece']:.4f} (uncalibrated {metrics['ece_uncalibrated']:.4f}); at threshold "
            f"{t['threshold']:.3f}: coverage {t['coverage']:.3f}, accuracy {t['accuracy']:.4f}"
        )
    if "binary" in metrics:
        lines.append(format_binary(metrics["binary"]))
    for kind, slices in metrics.get("slices", {}).items():
        if len(slices) > 1:
            lines.append(f"by {kind}:")
            lines += [f"  {key:<40} n={v['n']:<6} accuracy={v['accuracy']:.4f}" for key, v in slices.items()]
    return "\n".join(lines)


def binary_metrics(is_attack: np.ndarray, risk: np.ndarray, threshold: float) -> dict[str, Any]:
    """Detector metrics: ranking quality, and the operating point at the saved threshold."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    predicted = risk >= threshold
    attacks, benign = is_attack.sum(), (~is_attack).sum()
    result: dict[str, Any] = {
        "threshold": threshold,
        "n_attacks": int(attacks),
        "n_benign": int(benign),
        "recall": float((predicted & is_attack).sum() / attacks) if attacks else None,
        "precision": float((predicted & is_attack).sum() / predicted.sum()) if predicted.sum() else None,
        "false_positive_rate": float((predicted & ~is_attack).sum() / benign) if benign else None,
    }
    p, r = result["precision"], result["recall"]
    result["f1"] = 2 * p * r / (p + r) if p and r else 0.0
    if attacks and benign:
        result["roc_auc"] = float(roc_auc_score(is_attack, risk))
        result["pr_auc"] = float(average_precision_score(is_attack, risk))
        fpr, tpr, _ = roc_curve(is_attack, risk)
        for target in (0.01, 0.05):
            result[f"recall_at_fpr_{target:g}"] = float(tpr[fpr <= target].max())
        result["roc_curve"] = {"fpr": fpr[:: max(1, len(fpr) // 200)].tolist(), "tpr": tpr[:: max(1, len(tpr) // 200)].tolist()}
    return result


def format_binary(b: dict[str, Any]) -> str:
    def show(key: str) -> str:
        value = b.get(key)
        return "-" if value is None else f"{value:.4f}"

    return (
        f"at threshold {b['threshold']:.4f}: recall {show('recall')}, precision {show('precision')}, "
        f"false-positive rate {show('false_positive_rate')}; ROC-AUC {show('roc_auc')}, PR-AUC {show('pr_auc')}, "
        f"recall at FPR 1% {show('recall_at_fpr_0.01')}, at 5% {show('recall_at_fpr_0.05')}"
    )
