"""A task is a small declarative object; everything else in the pipeline is shared."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from routeclf.data.sources import Fields, LoadedData, Row

ProblemType = Literal["sequence", "token"]


@dataclass(frozen=True)
class Task:
    """What differs between classifiers: labels, fields, data defaults and mapping file names."""

    name: str
    labels: tuple[str, ...]
    fallback_label: str
    problem_type: ProblemType
    text_field: str
    label_field: str
    id_field: str
    default_data: str
    hub_split: str = "train"
    source_field: str | None = None
    # The vLLM semantic router loads a task-specific mapping file beside label_mapping.json.
    mapping_file: str | None = None
    mapping_keys: tuple[str, str] = ("label_to_idx", "idx_to_label")
    min_examples_per_label: int = 3
    # Builds the task's rows from a folder laid out like the shared data folder (several sources).
    folder_loader: Callable[[Path, Task], LoadedData] | None = None
    # Builds rows from a file's or hub dataset's records when a label column is not enough
    # (token tasks read entity spans).
    records_loader: Callable[[list[dict], str, Task, Fields], LoadedData] | None = None
    # Extra rows made from one split's rows alone: more training rows, and (jailbreak) the
    # validation rows that choose the n-gram blend weight. Never test rows.
    augment: Callable[[list[Row], int], list[Row]] | None = None
    # Token tasks: the data's entity types -> the model's (None: left unlabelled).
    source_type_map: Mapping[str, str | None] | None = None
    # Detectors (one label is "the attack"): binary metrics, a threshold set for a false-positive
    # rate, and long texts scored over windows with the most alarming window winning.
    positive_label: str | None = None
    # Training defaults that depend on the data (used when the user gives none).
    default_max_length: int = 64
    default_epochs: float = 4.0
    default_lr: float = 8e-5
    default_ngram: bool = True
    # Length bands for sliced reports: (name, lowest, highest or None), counted in `length_unit`.
    length_unit: Literal["words", "chars"] = "words"
    length_bands: tuple[tuple[str, int, int | None], ...] = (
        ("<=20 words", 0, 20), ("21-60 words", 21, 60), (">60 words", 61, None)
    )

    def __post_init__(self) -> None:
        if list(self.labels) != sorted(set(self.labels)):
            raise ValueError(f"task {self.name}: labels must be unique and sorted")
        if self.fallback_label not in self.labels:
            raise ValueError(f"task {self.name}: fallback label {self.fallback_label!r} is not a label")
        if self.positive_label is not None and self.positive_label not in self.labels:
            raise ValueError(f"task {self.name}: positive label {self.positive_label!r} is not a label")

    def length_band(self, text: str) -> str:
        size = len(text.split()) if self.length_unit == "words" else len(text)
        return next(name for name, low, high in self.length_bands if size >= low and (high is None or size <= high))

    @property
    def entity_types(self) -> tuple[str, ...]:
        """Token tasks: the entity types behind the BIO labels."""
        return tuple(sorted({label[2:] for label in self.labels if label[:2] in ("B-", "I-")}))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))
