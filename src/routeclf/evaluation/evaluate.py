"""`routeclf evaluate`: metrics of a saved artifact on its saved split, or on another data set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from routeclf.artifact.writer import read_json
from routeclf.data.sources import Fields, LoadedData, Row, load_rows
from routeclf.data.split import SPLITS, apply_manifest, read_manifest
from routeclf.errors import RouteclfError
from routeclf.evaluation.metrics import classification_metrics
from routeclf.inference.predictor import Predictor
from routeclf.tasks import Task, get_task


def artifact_task(directory: Path) -> tuple[Task, dict[str, Any]]:
    path = directory / "training_config.json"
    if not path.is_file():
        raise RouteclfError(f"{directory} has no training_config.json; is it a routeclf artifact?")
    config = read_json(path)
    return get_task(config["task"]), config


def rows_for(
    directory: Path, data: LoadedData, split: str
) -> list[Row]:
    """The rows to score: a saved split of the training data, or every row of `data`."""
    if split == "all":
        return data.rows
    if split not in SPLITS:
        raise RouteclfError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} or all")
    return apply_manifest(data, read_manifest(directory / "split.json"))[split]


def evaluate_artifact(
    directory: Path,
    data_source: str | None = None,
    split: str = "test",
    fields: dict[str, str | None] | None = None,
    predictor: Predictor | None = None,
) -> dict[str, Any]:
    task, config = artifact_task(directory)
    saved = config.get("fields", {})
    fields = fields or {}
    chosen = Fields.for_task(
        task,
        fields.get("text") or (saved.get("text") if split != "all" else None),
        fields.get("label") or (saved.get("label") if split != "all" else None),
        fields.get("id") or (saved.get("id") if split != "all" else None),
    )
    data = load_rows(data_source or config["settings"]["data"], task, chosen, require_all_labels=False)
    rows = rows_for(directory, data, split)
    predictor = predictor or Predictor(directory)
    probabilities = predictor.predict_proba([r.text for r in rows], progress=True)
    y = np.array([task.label2id[r.label] for r in rows])
    metrics = classification_metrics(task.labels, y, probabilities)
    metrics["data"] = {"source": data.source, "sha256": data.sha256, "split": split}
    return metrics
