"""Entity-level metrics for token tasks: exact character span and type, never token accuracy.

A predicted entity counts only when its start, end and type all equal a gold entity's. Word-level
figures (type confusion, calibration) are reported beside them, not instead of them.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from routeclf.data.alignment import Span, token_tags
from routeclf.evaluation.calibration import reliability
from routeclf.evaluation.metrics import softmax

if TYPE_CHECKING:
    from routeclf.data.sources import Row
    from routeclf.inference.entities import EntityPredictor
    from routeclf.tasks import Task


PART_FIGURES = ("micro_precision", "micro_recall", "micro_f1", "overlap_f1", "macro_f1")


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _overlaps(span: Span, others: set[Span]) -> bool:
    return any(kind == span[2] and start < span[1] and span[0] < end for start, end, kind in others)


def entity_metrics(gold: list[set[Span]], predicted: list[set[Span]], types: tuple[str, ...]) -> dict[str, Any]:
    """Per-type precision/recall/F1 with exact span-and-type matching; micro and macro averages
    (macro over the types present in the gold data). Beside them, boundary-relaxed micro figures:
    an entity counts when it overlaps one of the same type (what masking needs), which tells
    boundary errors from missed entities."""
    hits, gold_counts, predicted_counts = Counter(), Counter(), Counter()
    found, matched = 0, 0  # gold entities overlapped by a prediction; predictions overlapping gold
    for g, p in zip(gold, predicted):
        gold_counts.update(kind for *_, kind in g)
        predicted_counts.update(kind for *_, kind in p)
        hits.update(kind for *_, kind in g & p)
        found += sum(_overlaps(span, p) for span in g)
        matched += sum(_overlaps(span, g) for span in p)
    per_type = {}
    for kind in types:
        precision = hits[kind] / predicted_counts[kind] if predicted_counts[kind] else 0.0
        recall = hits[kind] / gold_counts[kind] if gold_counts[kind] else 0.0
        per_type[kind] = {"precision": precision, "recall": recall, "f1": _f1(precision, recall),
                          "support": gold_counts[kind], "predicted": predicted_counts[kind]}
    tp, n_gold, n_pred = sum(hits.values()), sum(gold_counts.values()), sum(predicted_counts.values())
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    present = [per_type[k]["f1"] for k in types if gold_counts[k]]
    overlap_precision = matched / n_pred if n_pred else 0.0
    overlap_recall = found / n_gold if n_gold else 0.0
    return {
        "n": len(gold),
        "n_entities": n_gold,
        "n_predicted": n_pred,
        "micro_precision": precision,
        "micro_recall": recall,
        "micro_f1": _f1(precision, recall),
        "macro_f1": float(np.mean(present)) if present else 0.0,
        "overlap_precision": overlap_precision,
        "overlap_recall": overlap_recall,
        "overlap_f1": _f1(overlap_precision, overlap_recall),
        "per_class": per_type,
    }


def word_targets(rows: list[Row], scores: list, labels: tuple[str, ...],
                 types: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every word's raw logits and gold label index, texts one after another. A word's gold tag
    is that of the entity it starts in (entities of `types` only, when given)."""
    index = {label: i for i, label in enumerate(labels)}
    logits, y = [], []
    for row, words in zip(rows, scores):
        if not len(words.offsets):
            continue
        spans = [s for s in row.spans if types is None or s[2] in types]
        # Each word on its own: token_tags then tags every word by the entity it starts in.
        y += [index[tag] for tag in token_tags(words.offsets, list(range(len(words.offsets))), spans)]
        logits.append(words.logits)
    return (np.concatenate(logits) if logits else np.zeros((0, len(labels)))), np.array(y, dtype=int)


def score_entity_rows(predictor: EntityPredictor, rows: list[Row], task: Task,
                      types: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Entity metrics (optionally only `types`, for data annotated with fewer types), per-type
    table, word-level type confusion and calibration, and per length band and source."""
    types = types or task.entity_types
    texts = [r.text for r in rows]
    scores = predictor.word_scores(texts)
    found = predictor.entities(texts, scores=scores, types=types)
    gold = [{s for s in r.spans if s[2] in types} for r in rows]
    predicted = [{(e.start, e.end, e.type) for e in entities} for entities in found]
    metrics = entity_metrics(gold, predicted, types)

    # Word level: each word's gold tag against the predicted one.
    kinds = list(types) + ["O"]
    logits, y_true = word_targets(rows, scores, predictor.labels, types)
    if len(y_true):
        probabilities, raw = softmax(logits / predictor.temperature), softmax(logits)
        kind_of = [label[2:] if label != "O" else "O" for label in predictor.labels]
        true_kind = [kind_of[i] for i in y_true]
        predicted_kind = [kind_of[i] for i in probabilities.argmax(1)]
        confusion = np.zeros((len(kinds), len(kinds)), dtype=int)
        position = {k: i for i, k in enumerate(kinds)}
        for t, p in zip(true_kind, predicted_kind):
            if t in position and p in position:
                confusion[position[t], position[p]] += 1
        curve = reliability(probabilities, y_true)
        metrics.update(
            n_words=int(len(y_true)),
            confusion_matrix=confusion.tolist(),
            confusion_matrix_labels=kinds,
            ece=curve["ece"],
            ece_uncalibrated=reliability(raw, y_true)["ece"],
            reliability_bins=curve["bins"],
        )
    if predictor.fusion is not None:  # each part of the fused detector on its own
        from routeclf.inference.recognizers import presidio_alone, recognize

        alone = {
            "token model": predictor.entities(texts, scores=scores, types=types, fused=False),
            "Presidio alone": [presidio_alone(recognize(t), predictor.fusion.pattern_threshold) for t in texts],
        }
        metrics["parts"] = {}
        for name, found_alone in alone.items():
            m = entity_metrics(gold, [{(e.start, e.end, e.type) for e in f if e.type in types} for f in found_alone],
                               types)
            metrics["parts"][name] = {k: m[k] for k in PART_FIGURES} | {
                "f1_by_type": {k: v["f1"] for k, v in m["per_class"].items() if v["support"]}}
    metrics["slices"] = {
        "length": _slices(gold, predicted, [task.length_band(t) for t in texts], types),
        "source": _slices(gold, predicted, [r.source for r in rows], types),
    }
    return metrics


def _slices(gold: list[set[Span]], predicted: list[set[Span]], keys: list[str],
            types: tuple[str, ...]) -> dict[str, dict[str, float]]:
    out = {}
    for key in sorted(set(keys)):
        index = [i for i, k in enumerate(keys) if k == key]
        m = entity_metrics([gold[i] for i in index], [predicted[i] for i in index], types)
        out[key] = {k: m[k] for k in ("n", "n_entities", "micro_precision", "micro_recall", "micro_f1")}
    return out


def format_entity_table(metrics: dict[str, Any]) -> str:
    """The per-type table for the terminal."""
    width = max([len(k) for k in metrics["per_class"]] + [6]) + 2
    lines = [f"{'type':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for kind, row in metrics["per_class"].items():
        lines.append(f"{kind:<{width}}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>10d}")
    lines.append(
        f"n={metrics['n']} entities={metrics['n_entities']}  micro P/R/F1={metrics['micro_precision']:.4f}/"
        f"{metrics['micro_recall']:.4f}/{metrics['micro_f1']:.4f}  macro-F1={metrics['macro_f1']:.4f}"
    )
    if "overlap_f1" in metrics:
        lines.append(f"boundary-relaxed (same type, overlapping) micro P/R/F1={metrics['overlap_precision']:.4f}/"
                     f"{metrics['overlap_recall']:.4f}/{metrics['overlap_f1']:.4f}")
    return "\n".join(lines)


THRESHOLD_GRID = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def fit_entity_path(predictor: EntityPredictor, rows: list[Row], task: Task, recognizers: bool,
                    where: str = "the validation split") -> dict[str, Any]:
    """A tagger path's calibration, fitted on validation rows and applied to `predictor`: the
    temperature on the words' tags, then the entity confidence threshold with the best micro-F1
    (ties: the lower threshold), then (with `recognizers`) the rule fusing the model with
    Presidio's recognizers (`inference.hybrid`)."""
    from routeclf.errors import TrainingError
    from routeclf.evaluation.calibration import fit_temperature

    texts = [r.text for r in rows]
    scores = predictor.word_scores(texts)
    logits, y = word_targets(rows, scores, task.labels)
    if not len(y):
        raise TrainingError("the validation split holds no words to calibrate on")
    predictor.temperature = fit_temperature(logits, y)
    gold = [set(r.spans) for r in rows]

    def micro_f1(found: list) -> float:
        predicted = [{(e.start, e.end, e.type) for e in entities} for entities in found]
        return entity_metrics(gold, predicted, task.entity_types)["micro_f1"]

    by_threshold = {f"{t:.2f}": micro_f1(predictor.entities(texts, threshold=t, scores=scores, fused=False))
                    for t in THRESHOLD_GRID}
    best = max(by_threshold, key=lambda t: (by_threshold[t], -float(t)))
    path = {
        "method": f"temperature scaling on the words of {where}",
        "temperature": predictor.temperature,
        "threshold": float(best),
        "threshold_rule": f"entity confidence threshold with the best micro-F1 on {where}",
        "validation_micro_f1_by_threshold": by_threshold,
    }
    if recognizers:
        from routeclf.inference.hybrid import choose_rule
        from routeclf.inference.recognizers import recognize

        model = predictor.entities(texts, threshold=float(best), scores=scores, fused=False)
        rule, trace = choose_rule(model, [recognize(t) for t in texts], micro_f1)
        path |= {"fusion": rule.to_json(), "fusion_validation_micro_f1": trace}
    predictor.apply_calibration(path)
    return path
