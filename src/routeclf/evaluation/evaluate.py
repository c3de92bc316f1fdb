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
from routeclf.evaluation.calibration import reliability
from routeclf.evaluation.entities import score_entity_rows
from routeclf.evaluation.metrics import answer_metrics, detector_rates, softmax
from routeclf.evaluation.perturb import TYPOS_SECTION
from routeclf.inference import load_predictor
from routeclf.inference.decision import decide
from routeclf.inference.predictor import Predictor
from routeclf.tasks import Task, load_task


def slice_metrics(y: np.ndarray, answer: np.ndarray, keys: list[str], positive: int | None) -> dict[str, dict[str, Any]]:
    """The answer's figures per slice (length band, source); detectors add recall and
    false-positive rate with their 95% intervals."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        members[key].append(i)
    slices = {}
    for key, index in sorted(members.items()):
        entry: dict[str, Any] = {
            "n": len(index),
            "accuracy": float((answer[index] == y[index]).mean()),
            "macro_f1": float(f1_score(y[index], answer[index], average="macro", zero_division=0)),
        }
        if positive is not None:
            entry.update(detector_rates(y[index] == positive, answer[index] == positive))
        slices[key] = entry
    return slices


def score_rows(predictor: Predictor, rows: list[Row], task: Task) -> dict[str, Any]:
    """The figures of the answers a consumer path gives on labelled rows: the answer's accuracy,
    F1 and confusion matrix, the top label's, calibration, the operating point (abstention or
    detector rates) and slices."""
    if task.problem_type == "token":
        return score_entity_rows(predictor, rows, task)
    texts = [r.text for r in rows]
    y = np.array([task.label2id[r.label] for r in rows])
    windows = predictor.windows(texts, progress=len(texts) > 1000)
    scores = predictor.scores(windows)
    decisions = decide(scores, predictor.fitted_policy())
    return {
        **answer_metrics(task, y, decisions),
        "ece_uncalibrated": reliability(softmax(scores), y)["ece"],
        **({"encoder_only_accuracy": float((predictor.reduce(windows, windows.encoder).argmax(1) == y).mean())}
           if predictor.ngram is not None else {}),
        "slices": {
            "length": slice_metrics(y, decisions.answer, [task.length_band(t) for t in texts], decisions.policy.positive),
            "source": slice_metrics(y, decisions.answer, [r.source for r in rows], decisions.policy.positive),
        },
    }


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
    path: str = "routeclf",
) -> dict[str, Any]:
    """A consumer path's figures on a saved split or on other data."""
    from routeclf.inference.predictor import path_backend

    task, _ = artifact_task(directory)
    if predictor is None:
        backend, plain = path_backend(path)
        predictor = load_predictor(directory, backend=backend, plain=plain)
    records = conversation_records(data_source, task, fields) if split == "all" and data_source else None
    if records:
        from routeclf.evaluation.conversations import read_conversations, score_conversations

        label = (fields or {}).get("label") or task.label_field
        conversations, y = read_conversations(records, data_source, task, label)
        metrics = score_conversations(predictor, conversations, y, task)
        metrics["data"] = {"source": data_source, "split": split, "path": path, "rows": "conversations"}
        return metrics
    data, rows = load_for_artifact(directory, data_source, split, fields)
    metrics = score_rows(predictor, rows, task)
    metrics["data"] = {"source": data.source, "sha256": data.sha256, "split": split, "path": path}
    return metrics


def conversation_records(data_source: str, task: Task,
                         fields: dict[str, str | None] | None) -> list[dict[str, Any]] | None:
    """The rows of a file of `messages` rows (and no text column), read once; None for any other data."""
    from routeclf.data.sources import read_records

    if not Path(data_source).is_file():
        return None
    records = read_records(data_source)
    text = (fields or {}).get("text") or task.text_field
    return records if records and "messages" in records[0] and text not in records[0] else None


def save_evaluation(directory: Path, name: str, metrics: dict[str, Any], path: str = "routeclf") -> None:
    """Store an evaluation on other data in metrics.json under `name` (a consumer path's under
    `paths.PATH.name`) and re-render the model card."""
    from routeclf.artifact.card import write_model_card
    from routeclf.artifact.writer import write_json_atomic

    if name in (*SPLITS, TYPOS_SECTION, "data_sha256", "trust", "cross_validation", "paths", "hashes"):
        raise RouteclfError(f"--save-as {name!r} would overwrite the training run's own figures; choose another name")
    task, _ = artifact_task(directory)
    saved = read_json(directory / "metrics.json")
    (saved if path == "routeclf" else saved.setdefault("paths", {}).setdefault(path, {}))[name] = metrics
    write_json_atomic(directory / "metrics.json", saved)
    write_model_card(directory, task)
