"""PII detection: token classification (BIO tags) over the entity types a router must find.

Rows are texts with character spans. From a folder laid out like the shared data folder the rows
are the presidio-research synthetic sentences (`pii/presidio-synth/*.jsonl`); a file or hub
dataset needs a text column and a `spans` column of `{entity_type, start, end}` objects.

Source types are mapped to the router's types by `TYPE_MAP` (written into the artifact as
`source_type_map.json`); types mapped to None are left unlabelled (`O`).

The synthetic sentences come from a few hundred templates, and the two presidio files share most
of them, so rows are grouped by their canonical template: a template's sentences never sit in two
splits, and the test split measures templates the model has not seen.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from routeclf.errors import DataError
from routeclf.tasks.base import Task

if TYPE_CHECKING:
    from routeclf.data.sources import Fields, LoadedData, Row

PRESIDIO_FILES = (Path("pii/presidio-synth/synth_dataset_v2.jsonl"), Path("pii/presidio-synth/generated_large.jsonl"))

# Source entity type -> the router's type (None: not an identifier on its own, left as `O`).
TYPE_MAP: dict[str, str | None] = {
    "PERSON": "PERSON",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "CREDIT_CARD": "CREDIT_CARD",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
    "STREET_ADDRESS": "STREET_ADDRESS",
    "ADDRESS": "STREET_ADDRESS",
    "LOCATION": "LOCATION",
    "GPE": "LOCATION",
    "DATE_TIME": "DATE_TIME",
    "ORGANIZATION": "ORGANIZATION",
    "IBAN_CODE": "IBAN_CODE",
    "US_DRIVER_LICENSE": "US_DRIVER_LICENSE",
    "DOMAIN_NAME": "DOMAIN_NAME",
    "ZIP_CODE": "ZIP_CODE",
    "AGE": "AGE",
    # Honorifics, job titles and nationality / religious / political groups describe people
    # without identifying one.
    "TITLE": None,
    "PREFIX": None,
    "NRP": None,
    # WNUT-17 (lower-case types).
    "person": "PERSON",
    "location": "LOCATION",
    "corporation": "ORGANIZATION",
    "group": "ORGANIZATION",
    "product": None,
    "creative-work": None,
}
ENTITY_TYPES = tuple(sorted({t for t in TYPE_MAP.values() if t}))
NO_ENTITY = "none"
_PLACEHOLDERS = re.compile(r"\{\{[^}]*\}\}(?:[\s,]*\{\{[^}]*\}\})*")


def canonical_template(masked: str) -> str:
    """A template's grouping key: placeholders (and runs of them) blanked, case and spaces folded.
    `{{first_name}} {{last_name}}` in one file and `{{PERSON}}` in the other become the same."""
    from routeclf.data.sources import normalise_text

    return "template: " + normalise_text(_PLACEHOLDERS.sub("{{}}", masked))


def _spans(record: dict, field: str, text: str, where: str) -> tuple[tuple[int, int, str], ...]:
    spans = []
    for span in record.get(field) or []:
        try:
            start, end, kind = int(span["start"]), int(span["end"]), str(span["entity_type"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: a span lacks start, end or entity_type: {span!r}") from exc
        if kind not in TYPE_MAP:
            raise DataError(f"{where}: unknown entity type {kind!r}; known: {', '.join(sorted(TYPE_MAP))}")
        if not 0 <= start < end <= len(text):
            raise DataError(f"{where}: span {start}-{end} lies outside the text ({len(text)} characters)")
        if TYPE_MAP[kind]:
            spans.append((start, end, TYPE_MAP[kind]))
    spans.sort()
    for (_, end, _), (start, _, _) in zip(spans, spans[1:]):
        if start < end:
            raise DataError(f"{where}: overlapping spans at character {start}")
    return tuple(spans)


def _rows(records: list[dict], source: str, text_field: str, spans_field: str) -> list[Row]:
    from routeclf.data.sources import Row, normalise_text

    rows = []
    for index, record in enumerate(records):
        text = record.get(text_field)
        where = f"{source} row {index}"
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: empty or missing {text_field!r}")
        masked = record.get("masked")
        group = canonical_template(masked) if isinstance(masked, str) else normalise_text(text)
        rows.append(Row(f"{source}-{index}", text, NO_ENTITY, group, source, _spans(record, spans_field, text, where)))
    return rows


def _finish(rows: list[Row], source: str) -> LoadedData:
    """One row per normalised text (the presidio files share sentences), each with its split
    stratum: its rarest entity type, so that rare types reach every split."""
    from dataclasses import replace

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
    return _finish(_rows(records, Path(source).stem, text_field, spans_field), source)


def load_folder(root: Path, task: Task) -> LoadedData:
    from routeclf.data.sources import read_records

    rows: list[Row] = []
    for relative in PRESIDIO_FILES:
        if not (root / relative).is_file():
            raise DataError(f"{root} is not laid out like the shared data folder: {relative} is missing")
        rows += _rows(read_records(str(root / relative)), relative.stem, task.text_field, task.label_field)
    return _finish(rows, str(root))


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


def _bio_labels(types: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(["O"] + [f"{prefix}-{t}" for t in types for prefix in ("B", "I")]))


PII = Task(
    name="pii",
    labels=_bio_labels(ENTITY_TYPES),
    fallback_label="O",
    problem_type="token",
    text_field="text",
    label_field="spans",
    id_field="id",
    default_data="",  # no public hub set in this layout; pass --data
    mapping_file="pii_type_mapping.json",
    mapping_keys=("label_to_idx", "idx_to_label"),
    folder_loader=load_folder,
    records_loader=load_records,
    source_type_map=TYPE_MAP,
    default_max_length=128,
    # About 75 steps an epoch: token labels need more steps, and a higher rate, than a text label.
    default_epochs=12.0,
    default_lr=2e-4,
    default_ngram=False,
    length_unit="chars",
    length_bands=(("<100 chars", 0, 99), ("100-300 chars", 100, 300), (">300 chars", 301, None)),
)
