"""How far to trust a model's figures: intervals on the test split, and cross-validated figures
when the test split is small (a router team's first task has tens of examples per label)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from routeclf.evaluation.metrics import proportion_ci

from routeclf.data.sources import Row
from routeclf.tasks.base import Task


def fold_answers(predictor, rows: list[Row], task: Task) -> list[dict[str, Any]]:
    """Per row: the gold label, the top label and the answer the service gives."""
    results = predictor.predict([r.text for r in rows], top_k=1)
    return [{"label": r.label, "top_label": p["top_label"], "answer": p["label"], "abstained": p["abstained"]}
            for r, p in zip(rows, results)]


def cv_summary(per_fold: list[dict[str, Any]], answers: list[dict[str, Any]], task: Task) -> dict[str, Any]:
    """Fold figures and their spread, and the answers pooled over every row."""
    gold = [a["label"] for a in answers]
    top = [a["top_label"] for a in answers]
    given = [a["answer"] for a in answers]
    n = len(answers)
    correct = sum(g == a for g, a in zip(gold, given))
    accuracy = np.array([f["accuracy"] for f in per_fold])
    summary: dict[str, Any] = {
        "folds": len(per_fold),
        "rule": "fold i tests, fold i+1 validates (checkpoint, blend, temperature, threshold), the rest trains; "
                "grouped by normalised text, stratified by label",
        "per_fold": per_fold,
        "accuracy_mean": float(accuracy.mean()),
        "accuracy_std": float(accuracy.std(ddof=1)) if len(accuracy) > 1 else 0.0,
        "accuracy_range": [float(accuracy.min()), float(accuracy.max())],
        "pooled": {
            "n": n,
            "accuracy": correct / n,
            "accuracy_ci95": proportion_ci(correct, n),
            "macro_f1": float(f1_score(gold, given, average="macro", zero_division=0)),
            "top_label_accuracy": sum(g == t for g, t in zip(gold, top)) / n,
            "per_class_accuracy": {
                label: float(np.mean([a == label for g, a in zip(gold, given) if g == label]))
                for label in task.labels if label in set(gold)
            },
        },
    }
    if task.fallback_label is not None and task.positive_label is None:
        summary["pooled"]["abstained_share"] = float(np.mean([a["abstained"] for a in answers]))
    return summary


def trust_note(metrics: dict[str, Any], task: Task) -> str:
    """One paragraph for the terminal and the model card: how much the figures can be trusted."""
    test = metrics["test"]
    if task.problem_type == "token":
        n = test["n_entities"]
        level = "low" if n < 100 else "moderate" if n < 1000 else "good"
        return (f"How far to trust these figures: {level}. The test split holds {test['n']} texts with {n} "
                f"entities; types with fewer than 20 test entities are too few to judge alone.")
    n = test["n"]
    correct = round(test["accuracy"] * n)
    ci = proportion_ci(correct, n)
    per_label = Counter()
    for label, row in test["per_class"].items():
        per_label[label] = row["support"]
    smallest = min(per_label.values()) if per_label else 0
    level = "low" if n < 100 else "moderate" if n < 1000 else "good"
    note = (f"How far to trust these figures: {level}. The test split holds {n} rows (as few as {smallest} of one "
            f"label): one error moves its accuracy by {100 / n:.1f} points, and its 95% interval is "
            f"{ci[0]:.3f}-{ci[1]:.3f}.")
    cv = metrics.get("cross_validation")
    if cv:
        pooled = cv["pooled"]
        note += (f" Cross-validated over {cv['folds']} folds (every one of {pooled['n']} rows tested once, by a "
                 f"model that never saw it): accuracy {cv['accuracy_mean']:.3f} +- {cv['accuracy_std']:.3f} "
                 f"across folds (range {cv['accuracy_range'][0]:.3f}-{cv['accuracy_range'][1]:.3f}); pooled "
                 f"{pooled['accuracy']:.3f} (95% interval {pooled['accuracy_ci95'][0]:.3f}-"
                 f"{pooled['accuracy_ci95'][1]:.3f}). Prefer these to the test split's figure.")
    if level != "good":
        note += (" Rows written like the training rows score higher than real traffic: also evaluate on requests "
                 "written separately (routeclf evaluate DIR --data FILE --split all --save-as NAME).")
    return note
