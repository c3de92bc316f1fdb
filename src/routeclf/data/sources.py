"""Data source (hub id or local file) -> validated rows.

A row carries `id`, `text`, `label`, `group` (normalised text: copies of one text share it) and
`source` (where the row came from, for sliced reports). The label set comes from the task, never
from the data, so a file that lost classes fails here instead of producing a model that lacks them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routeclf.data.alignment import Span
from routeclf.errors import DataError
from routeclf.tasks.base import Task

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Row:
    id: str
    text: str
    label: str  # the class; for token tasks the stratum the split balances (see tasks/pii.py)
    group: str
    source: str
    spans: tuple[Span, ...] = ()  # token tasks: the entities in `text`


@dataclass(frozen=True)
class LoadedData:
    rows: list[Row]
    source: str
    sha256: str


@dataclass(frozen=True)
class Fields:
    text: str
    label: str
    id: str
    source: str | None

    @classmethod
    def for_task(
        cls, task: Task, text: str | None = None, label: str | None = None, id: str | None = None
    ) -> Fields:
        return cls(text or task.text_field, label or task.label_field, id or task.id_field, task.source_field)


def normalise_text(text: str) -> str:
    """The grouping key: lower case, whitespace collapsed. Copies of one text share it."""
    return _WHITESPACE.sub(" ", text.lower()).strip()


def rows_sha256(rows: list[Row]) -> str:
    """Fingerprint of what was loaded (ids, texts, labels), independent of the file's format."""
    digest = hashlib.sha256()
    for row in rows:
        fields = [row.id, row.text, row.label] + ([list(map(list, row.spans))] if row.spans else [])
        digest.update(json.dumps(fields, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def read_records(data: str, hub_split: str = "train") -> list[dict[str, Any]]:
    """Read a local .jsonl/.json/.csv/.parquet file, or a dataset from the Hugging Face hub
    (a hub id, or a local directory laid out like a hub dataset repository)."""
    import datasets

    path = Path(data)
    # A directory is read like a hub dataset repository (a local clone of one), split by file name.
    if path.suffix.lower() in LOCAL_FORMATS or path.is_file():
        if not path.is_file():
            raise DataError(f"data file not found: {data}")
        builder = LOCAL_FORMATS.get(path.suffix.lower())
        if builder is None:
            raise DataError(f"unsupported data file type {path.suffix!r}: use one of {', '.join(LOCAL_FORMATS)}")
        if path.stat().st_size == 0:
            raise DataError(f"data file is empty: {data}")
        try:
            table = datasets.load_dataset(builder, data_files=str(path.resolve()), split="train")
        except Exception as exc:  # the datasets library raises many kinds on malformed files
            raise DataError(f"cannot read {data} as {builder}: {exc}") from exc
    else:
        try:
            table = datasets.load_dataset(data, split=hub_split)
        except Exception as exc:  # offline, unknown id, missing split: all end the same way for the user
            raise DataError(
                f"cannot load dataset {data!r} (split {hub_split!r}) from the Hugging Face hub: "
                f"{type(exc).__name__}: {exc}. Without network access, pass --data with a local file, "
                "for example ../shared/data/mmlu-pro/test.jsonl"
            ) from exc
    return table.to_list()


def load_rows(
    data: str,
    task: Task,
    fields: Fields | None = None,
    require_all_labels: bool = True,
) -> LoadedData:
    """Load and validate rows for a task.

    `require_all_labels` is for training data: every label of the task must be present with at
    least `task.min_examples_per_label` rows. Evaluation data (an out-of-distribution file) may
    hold a subset, but never an unknown label.
    """
    if not data:
        raise DataError(f"no data given for the {task.name} task; pass --data")
    if not task.labels:
        raise DataError(f"the {task.name} task has no labels yet: take them from the data first (resolve_labels)")
    if task.folder_loader is not None and Path(data).is_dir():
        loaded = task.folder_loader(Path(data), task)
        if require_all_labels:
            check_label_coverage(loaded.rows, task, data)
        return loaded
    fields = fields or Fields.for_task(task)
    records = read_records(data, task.hub_split)
    if not records:
        raise DataError(f"{data} holds no rows")
    if task.records_loader is not None:
        loaded = task.records_loader(records, data, task, fields)
        if require_all_labels:
            check_label_coverage(loaded.rows, task, data)
        return loaded
    columns = set(records[0])
    for role, column in (("text", fields.text), ("label", fields.label)):
        if column not in columns:
            raise DataError(
                f"{data} has no {role} column {column!r}; columns are: {', '.join(sorted(columns))} "
                f"(choose another with --{role}-field)"
            )
    use_ids = fields.id in columns
    source_field = fields.source if fields.source in columns else None

    rows: list[Row] = []
    empty: list[str] = []
    unknown: Counter[str] = Counter()
    allowed = set(task.labels)
    for index, record in enumerate(records):
        row_id = str(record[fields.id]) if use_ids else str(index)
        text = record[fields.text]
        label = record[fields.label]
        if not isinstance(text, str) or not text.strip():
            empty.append(row_id)
            continue
        label = str(label).strip() if label is not None else ""
        if label not in allowed:
            unknown[label] += 1
            continue
        source = str(record[source_field]) if source_field else Path(data).name
        rows.append(Row(row_id, text, label, normalise_text(text), source))

    if empty:
        raise DataError(f"{data}: {len(empty)} rows have an empty {fields.text!r} (ids: {', '.join(empty[:10])})")
    if unknown:
        found = ", ".join(f"{label!r} ({n} rows)" for label, n in unknown.most_common())
        raise DataError(
            f"{data}: labels not in the {task.name} task: {found}; its labels are: {', '.join(task.labels)}. "
            "Fix: list them in your task file's `labels` (or leave `labels` out to take the data's; for the "
            "built-in tasks, write a task file of your own), remove those rows, or name another label column with "
            f"--label-field (now {fields.label!r})"
        )
    duplicate_ids = [i for i, n in Counter(r.id for r in rows).items() if n > 1]
    if duplicate_ids:
        raise DataError(
            f"{data}: ids in {fields.id!r} are not unique (e.g. {', '.join(duplicate_ids[:5])}); "
            "choose a unique column with --id-field"
        )
    if require_all_labels:
        check_label_coverage(rows, task, data)
    return LoadedData(rows=rows, source=data, sha256=rows_sha256(rows))


def check_label_coverage(rows: list[Row], task: Task, where: str) -> None:
    """Every label (token tasks: every entity type) has at least `min_examples_per_label` rows
    (entities)."""
    if task.problem_type == "token":
        counts, required, kind = Counter(s[2] for row in rows for s in row.spans), task.entity_types, "entity types"
    else:
        counts, required, kind = Counter(row.label for row in rows), task.labels, "labels"
    missing = [label for label in required if counts[label] == 0]
    if missing:
        raise DataError(
            f"{where}: {len(missing)} of the {len(required)} {task.name} {kind} have no examples: "
            f"{', '.join(missing)}. A model trained on it could never predict them. Fix: add examples of them, "
            f"or remove them from the task's {kind}"
        )
    scarce = {label: counts[label] for label in required if counts[label] < task.min_examples_per_label}
    if scarce:
        listed = ", ".join(f"{label} ({n})" for label, n in scarce.items())
        raise DataError(
            f"{where}: {kind} with fewer than {task.min_examples_per_label} examples cannot be split into "
            f"train, validation and test: {listed}. Fix: add examples (25 or more per label make a useful "
            "model), or merge or drop those labels"
        )


def resolve_labels(task: Task, data: str, fields: Fields) -> Task:
    """A task whose file omits `labels` takes the data's label values (sorted) and keeps them."""
    if task.labels:
        return task
    if task.kind == "tagger":
        raise DataError(f"the {task.name} task lists no entity_types")
    if task.data_code.labels is not None:
        values = set(task.data_code.labels)
    elif task.folder_loader is not None and Path(data).is_dir():
        values = {row.label for row in task.folder_loader(Path(data), task).rows}
    else:
        records = read_records(data, task.hub_split)
        if records and fields.label not in records[0]:
            raise DataError(f"{data} has no label column {fields.label!r}; columns are: "
                            f"{', '.join(sorted(records[0]))} (choose another with --label-field)")
        values = {str(r[fields.label]).strip() for r in records if r.get(fields.label) is not None}
    values.discard("")
    try:
        return task.with_labels(sorted(values))
    except ValueError as exc:
        raise DataError(f"cannot take the labels from {data}: {exc}") from None
