"""Rows for taggers: a text column and a spans column of `{entity_type, start, end}` objects.

The data's entity types are mapped to the task's by its `source_type_map` (types mapped to None
are left unlabelled, `O`); without a map, every type must be one of the task's entity types.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from routeclf.errors import DataError

if TYPE_CHECKING:
    from routeclf.data.sources import Fields, LoadedData, Row
    from routeclf.tasks.base import Task

NO_ENTITY = "none"  # the split stratum of a row without entities


def type_map(task: Task) -> dict[str, str | None]:
    return dict(task.source_type_map) if task.source_type_map is not None else {t: t for t in task.entity_types}


def _spans(record: dict, field: str, text: str, where: str, types: dict[str, str | None]) -> tuple[tuple[int, int, str], ...]:
    spans = []
    for span in record.get(field) or []:
        try:
            start, end = int(span["start"]), int(span["end"])
            kind = str(span["entity_type"] if "entity_type" in span else span["type"])  # presidio's name, or `type`
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: a span lacks start, end or entity_type (or type): {span!r}") from exc
        if kind not in types:
            raise DataError(f"{where}: unknown entity type {kind!r}; known: {', '.join(sorted(types))} "
                            "(map it in the task's source_type_map)")
        if not 0 <= start < end <= len(text):
            raise DataError(f"{where}: span {start}-{end} lies outside the text ({len(text)} characters)")
        if types[kind]:
            spans.append((start, end, types[kind]))
    spans.sort()
    for (_, end, _), (start, _, _) in zip(spans, spans[1:]):
        if start < end:
            raise DataError(f"{where}: overlapping spans at character {start}")
    return tuple(spans)


def span_rows(records: list[dict], source: str, task: Task, text_field: str, spans_field: str,
              group: Callable[[dict, str], str] | None = None) -> list[Row]:
    """One row per record; `group(record, text)` gives the split group (default: the normalised text)."""
    from routeclf.data.sources import Row, normalise_text

    types = type_map(task)
    rows = []
    for index, record in enumerate(records):
        text = record.get(text_field)
        where = f"{source} row {index}"
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: empty or missing {text_field!r}")
        key = group(record, text) if group else normalise_text(text)
        rows.append(Row(f"{source}-{index}", text, NO_ENTITY, key, source, _spans(record, spans_field, text, where, types)))
    return rows


def finish(rows: list[Row], source: str) -> LoadedData:
    """One row per normalised text, each with its split stratum: its rarest entity type, so that
    rare types reach every split."""
    from routeclf.data.sources import LoadedData, normalise_text, rows_sha256

    unique, seen = [], set()
    for row in rows:
        key = normalise_text(row.text)
        if key not in seen:
            seen.add(key)
            unique.append(row)
    frequency = Counter(kind for row in unique for _, _, kind in row.spans)
    unique = [
        replace(row, label=min((s[2] for s in row.spans), key=lambda k: (frequency[k], k), default=NO_ENTITY))
        for row in unique
    ]
    return LoadedData(rows=unique, source=source, sha256=rows_sha256(unique))


def load_records(records: list[dict], source: str, task: Task, fields: Fields | None = None) -> LoadedData:
    """Rows from a file's or hub dataset's records: a text column and a spans column
    (`--text-field`, `--label-field`; default `text` and `spans`)."""
    text_field, spans_field = (fields.text, fields.label) if fields else (task.text_field, task.label_field)
    if records and spans_field not in records[0]:
        raise DataError(f"{source}: no spans column {spans_field!r}; columns are: {', '.join(sorted(records[0]))} "
                        "(choose another with --label-field)")
    return finish(span_rows(records, Path(source).stem, task, text_field, spans_field), source)


def read_conll(path: Path) -> list[dict]:
    """CoNLL `token<TAB>tag` sentences (WNUT-17) as records with a text and character spans."""
    if not path.is_file():
        raise DataError(f"CoNLL file not found: {path}")
    records, tokens, tags = [], [], []
    for line in path.read_text(encoding="utf-8").split("\n") + [""]:
        line = line.strip("\r")
        if line.strip():
            token, _, tag = line.rpartition("\t") if "\t" in line else line.rpartition(" ")
            tokens.append(token)
            tags.append(tag.strip())
            continue
        if tokens:
            text, spans, position = "", [], 0
            for token, tag in zip(tokens, tags):
                start = position + (1 if text else 0)
                text = f"{text} {token}" if text else token
                position = start + len(token)
                if tag.startswith("B-") or (tag.startswith("I-") and (not spans or spans[-1]["entity_type"] != tag[2:])):
                    spans.append({"entity_type": tag[2:], "start": start, "end": position})
                elif tag.startswith("I-"):
                    spans[-1]["end"] = position
            records.append({"text": text, "spans": spans})
            tokens, tags = [], []
    return records
