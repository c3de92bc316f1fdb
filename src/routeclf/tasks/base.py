"""A task is a small declarative object; everything else in the pipeline is shared."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from routeclf.data.sources import LoadedData

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

    def __post_init__(self) -> None:
        if list(self.labels) != sorted(set(self.labels)):
            raise ValueError(f"task {self.name}: labels must be unique and sorted")
        if self.fallback_label not in self.labels:
            raise ValueError(f"task {self.name}: fallback label {self.fallback_label!r} is not a label")

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))
