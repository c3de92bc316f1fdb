"""The `pii` loader: the presidio-research synthetic sentences (`pii/presidio-synth/*.jsonl`).

The synthetic sentences come from a few hundred templates, and the two presidio files share most
of them, so rows are grouped by their canonical template: a template's sentences never sit in two
splits, and the test split measures templates the model has not seen.

Training only (`written_training_rows`): chat messages with character spans written for this
project (scheduling, travel, support tickets, pasted forms, international addresses and phone
formats, lower-case names), sentence shapes no template has; provenance in `data/README.md`.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from routeclf.errors import DataError
from routeclf.tasks.spans import finish, span_rows

if TYPE_CHECKING:
    from routeclf.data.sources import LoadedData, Row
    from routeclf.tasks.base import Task

WRITTEN_FILE = "pii_train_messages.jsonl"
PRESIDIO_FILES = (Path("pii/presidio-synth/synth_dataset_v2.jsonl"), Path("pii/presidio-synth/generated_large.jsonl"))
_PLACEHOLDERS = re.compile(r"\{\{[^}]*\}\}(?:[\s,]*\{\{[^}]*\}\})*")


def canonical_template(masked: str) -> str:
    """A template's grouping key: placeholders (and runs of them) blanked, case and spaces folded.
    `{{first_name}} {{last_name}}` in one file and `{{PERSON}}` in the other become the same."""
    from routeclf.data.sources import normalise_text

    return "template: " + normalise_text(_PLACEHOLDERS.sub("{{}}", masked))


def _template_group(record: dict, text: str) -> str:
    from routeclf.data.sources import normalise_text

    masked = record.get("masked")
    return canonical_template(masked) if isinstance(masked, str) else normalise_text(text)


# The templates' placeholders say more than the source types: a postcode or a state filled into
# an address slot is labelled ADDRESS, which would teach the model that a bare "64389" is a
# street address and leave ZIP_CODE unlearned.
PLACEHOLDER_TYPES = {"postcode": "ZIP_CODE", "zipcode": "ZIP_CODE", "state_abbr": "LOCATION"}
ADDRESS_TYPES = ("STREET_ADDRESS", "ADDRESS")
_UNIT = re.compile(r"(?i)^(apt|apartment|suite|ste|unit|flat|floor|room|box)\b")
_ZIP_AT_END = re.compile(r"^(?P<place>.*?)[\s,]*(?P<zip>\d{4,6}(?:-\d{4})?)$")


def _part(text: str, start: int, end: int, kind: str) -> dict:
    """A span over text[start:end] without its surrounding spaces and commas."""
    while start < end and text[start] in " ,\t":
        start += 1
    while end > start and text[end - 1] in " ,\t":
        end -= 1
    return {"type": kind, "start": start, "end": end}


def _split_address(text: str, start: int, end: int) -> list[dict]:
    """A multi-line address split into the project's convention: the street lines (with any
    apartment or suite line) a STREET_ADDRESS, each later line a LOCATION (city, state, country)
    and a postcode ending a line a ZIP_CODE."""
    lines, position = [], start
    for line in text[start:end].split("\n"):
        lines.append((position, position + len(line)))
        position += len(line) + 1
    street_end = lines[0][1]
    rest = lines[1:]
    while rest and _UNIT.match(text[rest[0][0]:rest[0][1]].strip(" ,")):
        street_end = rest.pop(0)[1]
    spans = [_part(text, start, street_end, "STREET_ADDRESS")]
    for line_start, line_end in rest:
        match = _ZIP_AT_END.match(text[line_start:line_end])
        place_end = line_start + match.end("place") if match else line_end
        position = line_start
        for piece in text[line_start:place_end].split(","):  # "Gdańsk, PL": two places
            spans.append(_part(text, position, position + len(piece), "LOCATION"))
            position += len(piece) + 1
        if match:
            spans.append(_part(text, line_start + match.start("zip"), line_end, "ZIP_CODE"))
    # "nan": an empty field of the generator's, not a place
    return [span for span in spans if span["end"] > span["start"] and text[span["start"]:span["end"]] != "nan"]


# A part of the day written right after a day ("Thursday morning") belongs to its expression.
_DAY_PART = re.compile(r"[ \t]+(?:morning|afternoon|evening|night)\b", re.IGNORECASE)


def conventional_spans(record: dict) -> list[dict]:
    """A presidio record's spans in the project's conventions (`eval/README.md`): street, place
    and postcode apart, each placeholder's own type where the template names it, a date as the
    whole expression."""
    text, spans = record["text"], sorted(record.get("spans") or [], key=lambda s: s["start"])
    names = re.findall(r"\{\{([^}]*)\}\}", record.get("masked") or "")
    names = [n.strip() for n in names] if len(names) == len(spans) else [""] * len(spans)
    converted = []
    for name, span in zip(names, spans):
        kind = PLACEHOLDER_TYPES.get(name, span["entity_type"])
        value = text[span["start"]:span["end"]].strip()
        if kind in ADDRESS_TYPES and _ZIP_AT_END.match(value) and not _ZIP_AT_END.match(value)["place"]:
            kind = "ZIP_CODE"  # a bare postcode in an address slot
        if kind in ADDRESS_TYPES and "\n" in value:
            converted += _split_address(text, span["start"], span["end"])
        else:
            end = span["end"]
            # "Thursday morning", but not "1990 evening classes"
            if kind == "DATE_TIME" and not value.isdigit() and (part := _DAY_PART.match(text, end)):
                end = part.end()
            converted.append({"type": kind, "start": span["start"], "end": end})
    return converted


def load_folder(root: Path, task: Task) -> LoadedData:
    from routeclf.data.sources import read_records

    rows: list[Row] = []
    for relative in PRESIDIO_FILES:
        if not (root / relative).is_file():
            raise DataError(f"{root} is not laid out like the shared data folder: {relative} is missing")
        records = [record | {"spans": conventional_spans(record)} for record in read_records(str(root / relative))]
        rows += span_rows(records, relative.stem, task, task.text_field, task.label_field, _template_group)
    return finish(rows, str(root))


def written_training_rows() -> list[Row]:
    """Chat messages with spans written for this project as training text (`data/README.md`);
    their spans use the task's own type names."""
    from routeclf.tasks import get_task

    text = (importlib.resources.files("routeclf.tasks") / "data" / WRITTEN_FILE).read_text(encoding="utf-8")
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return span_rows(records, WRITTEN_FILE.removesuffix(".jsonl"), get_task("pii"), "text", "spans")
