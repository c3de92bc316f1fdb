"""Scoring rows with an artifact: after training, in `routeclf evaluate` and in `routeclf validate`."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from routeclf.artifact.writer import read_json
from routeclf.data.sources import Fields, LoadedData, Row, load_rows
from routeclf.data.split import SPLITS, apply_manifest, read_manifest
from routeclf.errors import RouteclfError
from routeclf.evaluation.calibration import above_threshold, reliability
from routeclf.evaluation.metrics import binary_metrics, classification_metrics, softmax
from routeclf.evaluation.entities import score_entity_rows
from routeclf.inference import load_predictor
from routeclf.inference.predictor import Predictor
from routeclf.tasks import Task, load_task


def _slice_metrics(y: np.ndarray, y_pred: np.ndarray, keys: list[str], positive: int | None) -> dict[str, dict[str, float]]:
    members: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        members[key].append(i)
    slices = {}
    for key, index in sorted(members.items()):
        entry: dict[str, float] = {
            "n": len(index),
            "accuracy": float((y_pred[index] == y[index]).mean()),
            "macro_f1": float(f1_score(y[index], y_pred[index], average="macro", zero_division=0)),
        }
        if positive is not None:
            attacks, benign = y[index] == positive, y[index] != positive
            entry["n_attacks"] = int(attacks.sum())
            entry["recall"] = float((y_pred[index][attacks] == positive).mean()) if attacks.any() else None
            entry["false_positive_rate"] = float((y_pred[index][benign] == positive).mean()) if benign.any() else None
        slices[key] = entry
    return slices


def score_rows(predictor: Predictor, rows: list[Row], task: Task) -> dict[str, Any]:
    """Metrics, calibration, abstain threshold and slices for one set of labelled rows."""
    if task.problem_type == "token":
        return score_entity_rows(predictor, rows, task)
    texts = [r.text for r in rows]
    y = np.array([task.label2id[r.label] for r in rows])
    windows = predictor.windows(texts, progress=len(texts) > 1000)
    scores = predictor.scores(windows, calibrated=False)
    raw, probabilities = softmax(scores), softmax(scores / predictor.temperature)
    metrics = classification_metrics(task.labels, y, probabilities)
    curve = reliability(probabilities, y)
    metrics["ece"] = curve["ece"]
    metrics["ece_uncalibrated"] = reliability(raw, y)["ece"]
    metrics["reliability_bins"] = curve["bins"]
    if predictor.ngram is not None:
        metrics["encoder_only_accuracy"] = float((predictor.reduce(windows, windows.encoder).argmax(1) == y).mean())
    positive = task.label2id[task.positive_label] if task.positive_label else None
    if positive is None:
        metrics["above_threshold"] = above_threshold(probabilities, y, predictor.threshold)
        y_pred = probabilities.argmax(1)
    else:
        metrics["binary"] = binary_metrics(y == positive, probabilities[:, positive], predictor.threshold)
        y_pred = np.where(probabilities[:, positive] >= predictor.threshold, positive, 1 - positive)
    metrics["slices"] = {
        "length": _slice_metrics(y, y_pred, [task.length_band(t) for t in texts], positive),
        "source": _slice_metrics(y, y_pred, [r.source for r in rows], positive),
    }
    return metrics


def artifact_task(directory: Path) -> tuple[Task, dict[str, Any]]:
    """A model directory's task (`task.json`) and training record (`training_config.json`)."""
    if not directory.is_dir():
        raise RouteclfError(f"{directory} does not exist or is not a directory")
    path = directory / "training_config.json"
    if not path.is_file():
        raise RouteclfError(f"{directory} has no training_config.json; is it a routeclf artifact?")
    return load_task(directory), read_json(path)


def load_for_artifact(
    directory: Path, data_source: str | None, split: str, fields: dict[str, str | None] | None = None
) -> tuple[LoadedData, list[Row]]:
    """Load `data_source` (default: the training data) and pick the rows to score.

    A saved split uses the artifact's own column names; `all` (another data set) uses the task's
    defaults unless told otherwise.
    """
    task, config = artifact_task(directory)
    saved = config.get("fields", {}) if split != "all" else {}
    fields = fields or {}
    chosen = Fields.for_task(
        task,
        fields.get("text") or saved.get("text"),
        fields.get("label") or saved.get("label"),
        fields.get("id") or saved.get("id"),
    )
    if split != "all" and split not in SPLITS:
        raise RouteclfError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} or all")
    data = load_rows(data_source or config["settings"]["data"], task, chosen, require_all_labels=False)
    if split == "all":
        return data, data.rows
    return data, saved_splits(directory, data)[split]


def saved_splits(directory: Path, data: LoadedData) -> dict[str, list[Row]]:
    """Every split of `split.json`, rebuilt from the freshly loaded training data."""
    return apply_manifest(data, read_manifest(directory / "split.json"))


def evaluate_artifact(
    directory: Path,
    data_source: str | None = None,
    split: str = "test",
    fields: dict[str, str | None] | None = None,
    predictor: Predictor | None = None,
) -> dict[str, Any]:
    task, _ = artifact_task(directory)
    data, rows = load_for_artifact(directory, data_source, split, fields)
    metrics = score_rows(predictor or load_predictor(directory), rows, task)
    metrics["data"] = {"source": data.source, "sha256": data.sha256, "split": split}
    return metrics


def save_evaluation(directory: Path, name: str, metrics: dict[str, Any]) -> None:
    """Store an evaluation on other data in metrics.json under `name` and re-render the model card."""
    from routeclf.artifact.card import write_model_card
    from routeclf.artifact.writer import write_json_atomic

    if name in (*SPLITS, "data_sha256", "trust", "cross_validation"):
        raise RouteclfError(f"--save-as {name!r} would overwrite the training run's own figures; choose another name")
    task, _ = artifact_task(directory)
    saved = read_json(directory / "metrics.json")
    saved[name] = metrics
    write_json_atomic(directory / "metrics.json", saved)
    write_model_card(directory, task)
