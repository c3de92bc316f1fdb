"""A task is data: labels, decision semantics, fields and mapping layout. It is resolved once at
training time and saved in the model directory as `task.json`, so everything after training
(evaluate, validate, export, serve, e2e) reads the task from the directory, never from code."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from routeclf.data.sources import Fields, LoadedData, Row

Kind = Literal["classifier", "detector", "tagger"]
ProblemType = Literal["sequence", "token"]
KINDS: tuple[str, ...] = ("classifier", "detector", "tagger")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# The vLLM semantic router's own endpoints beside /api/v1/classify/NAME.
RESERVED_NAMES = ("batch", "intent", "security")
TAGGER_FALLBACK = "O"  # the tag of words outside every entity
# Files of the model directory a task's mapping file must not replace.
OWN_FILES = ("config.json", "task.json", "label_mapping.json", "calibration.json", "metrics.json", "split.json",
             "training_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "source_type_map.json")


@dataclass(frozen=True)
class DataCode:
    """Data handling that a file cannot express, referenced from a task by name (`loader`)."""

    # Builds rows from a folder laid out like the shared data folder (several sources).
    folder: Callable[[Path, Task], LoadedData] | None = None
    # Extra rows made from one split's rows alone: more training rows, and (jailbreak) the
    # validation rows that choose the n-gram blend weight. Never test rows.
    augment: Callable[[list[Row], int], list[Row]] | None = None
    # Whether the validation split's own extra rows join it where the n-gram blend weight is chosen.
    augment_validation: bool = False
    # Rows written for training alone (never split, never validated or tested on).
    train_only: Callable[[], list[Row]] | None = None
    # The labels its rows carry, when the code fixes them.
    labels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Task:
    """What differs between classifiers. `settings` holds the task's training defaults (any
    `routeclf train` setting); explicit flags and `--config` files override them."""

    name: str
    labels: tuple[str, ...]  # sorted; empty until resolved from the data when a task file omits them
    kind: Kind = "classifier"
    # Classifiers: the label answered when the model abstains (None: never abstain).
    # Detectors: the label answered when the positive label's score is below the threshold.
    fallback_label: str | None = None
    positive_label: str | None = None  # detectors: the label that raises the alarm
    text_field: str = "text"
    label_field: str = "label"
    id_field: str = "id"
    source_field: str | None = None
    hub_split: str = "train"
    # The vLLM semantic router loads a task-specific mapping file beside label_mapping.json.
    mapping_file: str | None = None
    mapping_keys: tuple[str, str] = ("label_to_idx", "idx_to_label")
    min_examples_per_label: int = 3
    loader: str | None = None  # built-in data code (see routeclf.tasks.loaders)
    # Taggers: the data's entity types -> the model's (None: left unlabelled).
    source_type_map: Mapping[str, str | None] | None = None
    # Long texts read in overlapping windows (stride a quarter of the window); detectors let the
    # most alarming window speak for the text. Default: on for detectors and taggers.
    windows: bool | None = None
    # Detectors: also read each text with obfuscation undone (`routeclf.inference.deobfuscate`);
    # the riskier reading speaks for the text.
    deobfuscate: bool = False
    # Detectors: sources whose benign rows are easy padding (trained and tested on, never flagged):
    # the threshold's false-positive budget is spent on the other benign rows alone.
    threshold_excludes_sources: tuple[str, ...] = ()
    # Length bands for sliced reports: (name, lowest, highest or None), counted in `length_unit`.
    length_unit: Literal["words", "chars"] = "words"
    length_bands: tuple[tuple[str, int, int | None], ...] = (
        ("<=20 words", 0, 20), ("21-60 words", 21, 60), (">60 words", 61, None)
    )
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind == "detector" and self.fallback_label is None and len(self.labels) == 2:
            # A detector answers its other label when it does not raise the alarm.
            other = [label for label in self.labels if label != self.positive_label]
            object.__setattr__(self, "fallback_label", other[0] if len(other) == 1 else None)
        problems = self.problems()
        if problems:
            raise ValueError(f"task {self.name!r}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """What is inconsistent in this definition (empty when it is sound)."""
        found = []
        if not NAME_PATTERN.match(self.name):
            found.append("name must be lower-case letters, digits, '-' or '_' (it is also the serving name)")
        if self.name in RESERVED_NAMES:
            found.append(f"name {self.name!r} is one of the router's own endpoints ({', '.join(RESERVED_NAMES)}); "
                         "choose another")
        if self.mapping_file is not None and (
            "/" in self.mapping_file or "\\" in self.mapping_file or not self.mapping_file.endswith(".json")
            or self.mapping_file in OWN_FILES or self.mapping_file.startswith(".")
        ):
            found.append(f"mapping_file must be a plain .json file name that is not one of the model's own files "
                         f"({', '.join(OWN_FILES)}), got {self.mapping_file!r}")
        found += self._band_problems()
        if self.kind != "detector" and (self.deobfuscate or self.threshold_excludes_sources):
            found.append("deobfuscate and threshold_excludes_sources are for detectors")
        if self.kind == "tagger" and self.windows is False:
            found.append("a tagger always reads long texts in windows; leave `windows` out")
        if self.kind not in KINDS:
            found.append(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if list(self.labels) != sorted(set(self.labels)):
            found.append("labels must be unique and sorted")
        if not self.labels:
            return found  # resolved from the data later; the label checks below wait for it
        if len(self.labels) < 2:
            found.append(f"a task needs at least 2 labels, got {list(self.labels)}")
        if self.fallback_label is not None and self.fallback_label not in self.labels:
            found.append(f"fallback_label {self.fallback_label!r} is not one of the labels {list(self.labels)}")
        if self.kind == "detector":
            if len(self.labels) != 2:
                found.append(f"a detector has exactly 2 labels (the alarm and the rest), got {list(self.labels)}")
            if self.positive_label not in self.labels:
                found.append(f"a detector needs positive_label, one of {list(self.labels)}")
            elif self.fallback_label == self.positive_label:
                found.append("a detector's fallback_label is the label it answers without an alarm, not its "
                             "positive_label")
        elif self.positive_label is not None:
            found.append(f"positive_label is for detectors; this task's kind is {self.kind}")
        if self.kind == "tagger" and self.fallback_label != TAGGER_FALLBACK:
            found.append(f"a tagger's fallback label is {TAGGER_FALLBACK!r}")
        fixed = self.data_code.labels
        if fixed is not None and set(self.labels) != set(fixed):
            found.append(f"the {self.loader} loader's rows are labelled {', '.join(fixed)}; use those labels")
        return found

    def _band_problems(self) -> list[str]:
        """Length bands must cover every length: from 0, contiguous, the last one open."""
        bands = self.length_bands
        ordered = all(low <= high for _, low, high in bands[:-1] if high is not None)
        contiguous = all(a[2] is not None and b[1] == a[2] + 1 for a, b in zip(bands, bands[1:]))
        if not bands or bands[0][1] != 0 or bands[-1][2] is not None or not ordered or not contiguous:
            return [f"length_bands must start at 0, follow on without gaps ([name, low, high], the next low = "
                    f"high + 1) and end open (high null), got {[list(b) for b in bands]}"]
        return []

    # -- derived ----------------------------------------------------------------------------
    @property
    def problem_type(self) -> ProblemType:
        return "token" if self.kind == "tagger" else "sequence"

    def counts_for_threshold(self, row) -> bool:
        """Whether a row is in the pool a detector's threshold is fitted on (not easy padding)."""
        return row.source not in self.threshold_excludes_sources

    @property
    def windowed(self) -> bool:
        return self.kind != "classifier" if self.windows is None else self.windows

    @property
    def entity_types(self) -> tuple[str, ...]:
        """Taggers: the entity types behind the BIO labels."""
        return tuple(sorted({label[2:] for label in self.labels if label[:2] in ("B-", "I-")}))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def data_code(self) -> DataCode:
        from routeclf.tasks.loaders import data_code

        return data_code(self.loader)

    @property
    def folder_loader(self) -> Callable[[Path, Task], LoadedData] | None:
        return self.data_code.folder

    @property
    def augment(self) -> Callable[[list[Row], int], list[Row]] | None:
        return self.data_code.augment

    @property
    def train_only(self) -> Callable[[], list[Row]] | None:
        return self.data_code.train_only

    @property
    def records_loader(self) -> Callable[[list[dict], str, Task, Fields], LoadedData] | None:
        """Taggers read entity spans; other kinds a label column."""
        if self.kind != "tagger":
            return None
        from routeclf.tasks.spans import load_records

        return load_records

    def length_band(self, text: str) -> str:
        size = len(text.split()) if self.length_unit == "words" else len(text)
        return next(name for name, low, high in self.length_bands if size >= low and (high is None or size <= high))

    def with_labels(self, labels: list[str]) -> Task:
        return dataclasses.replace(self, labels=tuple(sorted(labels)))

    # -- task.json --------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        payload = dataclasses.asdict(self)
        payload["labels"] = list(self.labels)
        payload["mapping_keys"] = list(self.mapping_keys)
        payload["length_bands"] = [list(band) for band in self.length_bands]
        payload["threshold_excludes_sources"] = list(self.threshold_excludes_sources)
        payload["source_type_map"] = dict(self.source_type_map) if self.source_type_map is not None else None
        payload["settings"] = dict(self.settings)
        if self.kind == "tagger":
            payload["entity_types"] = list(self.entity_types)
        return payload


def bio_labels(types: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted([TAGGER_FALLBACK] + [f"{prefix}-{t}" for t in set(types) for prefix in ("B", "I")]))
