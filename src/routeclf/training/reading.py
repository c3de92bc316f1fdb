"""How a trained model reads a request: the window length of a detector and the weight of the
n-gram companion, chosen together after the encoder is trained.

A detector's threshold is set where benign requests that talk about prompts and safety score
highest, so both choices are judged there: on the rows the threshold is fitted on (validation and
the written rows kept back, easy padding left out) and on validation mixtures (an attack inside
benign text), by the standardised partial ROC AUC up to a 5% false-positive rate. Classifiers keep
their training length and judge the weight by validation accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from routeclf.artifact.writer import read_json, write_json
from routeclf.data.sources import Row
from routeclf.inference.cost import window_stride
from routeclf.inference.predictor import PLAIN_MAX_LENGTH, Predictor
from routeclf.tasks import TASK_FILE, Task
from routeclf.training.ngram import PARTIAL_AUC_MAX_FPR, WEIGHTS, choose_weight


@dataclass(frozen=True)
class Reading:
    window_length: int
    ngram_weight: float
    criterion: str
    score_by_window: dict[str, dict[str, float]]  # window length -> n-gram weight -> score


def window_candidates(task: Task, training_length: int) -> tuple[int, ...]:
    """A detector may read windows as long as it was trained on, or as long as a plain consumer
    reads (the encoder's position limit); other tasks read what they were trained on."""
    if task.positive_label is None or not task.windowed:
        return (training_length,)
    return tuple(sorted({training_length, PLAIN_MAX_LENGTH}))


def selection_rows(task: Task, threshold_rows: list[Row], validation_mixtures: list[Row]) -> list[Row]:
    """Detectors: the threshold's own rows and the validation mixtures, easy padding left out."""
    return [r for r in threshold_rows + validation_mixtures if task.counts_for_threshold(r)]


def choose_reading(predictor: Predictor, selection: list[Row], task: Task, candidates: tuple[int, ...],
                   use_ngram: bool) -> Reading:
    """The window length and n-gram weight with the best score on `selection` (ties: the shorter
    window, the smaller weight). Leaves `predictor` reading the chosen windows."""
    y = np.array([task.label2id[r.label] for r in selection])
    positive = task.label2id[task.positive_label] if task.positive_label else None
    texts = [r.text for r in selection]
    scored: dict[str, dict[str, float]] = {}
    best: tuple[float, int, float] | None = None
    for length in candidates:
        predictor.max_length = length
        windows = predictor.windows(texts)
        weight, by_weight = choose_weight(lambda w: predictor.scores(windows, w), y, positive,
                                          WEIGHTS if use_ngram else (0.0,))
        scored[str(length)] = by_weight
        if best is None or by_weight[f"{weight:.2f}"] > best[0]:
            best = (by_weight[f"{weight:.2f}"], length, weight)
    assert best is not None
    predictor.max_length = best[1]
    criterion = "accuracy" if positive is None else f"partial ROC AUC up to FPR {PARTIAL_AUC_MAX_FPR}"
    return Reading(best[1], best[2], f"{criterion} on {len(selection)} rows", scored)


def write_window(directory: Path, task: Task, reading: Reading) -> None:
    """The window a model reads long texts in, as `task.json` records it for every consumer path."""
    payload = read_json(directory / TASK_FILE)
    payload["window"] = window_settings(task, reading.window_length) | {
        "chosen_by": reading.criterion, "score_by_window_and_ngram_weight": reading.score_by_window}
    write_json(directory / TASK_FILE, payload)


def window_settings(task: Task, length: int) -> dict[str, Any]:
    return {"enabled": task.windowed, "max_length": length, "stride": window_stride(length)}
