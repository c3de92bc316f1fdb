"""The `pii` loader: the presidio-research synthetic sentences (`pii/presidio-synth/*.jsonl`).

The synthetic sentences come from a few hundred templates, and the two presidio files share most
of them, so rows are grouped by their canonical template: a template's sentences never sit in two
splits, and the test split measures templates the model has not seen.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from routeclf.errors import DataError
from routeclf.tasks.spans import finish, span_rows

if TYPE_CHECKING:
    from routeclf.data.sources import LoadedData, Row
    from routeclf.tasks.base import Task

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


def load_folder(root: Path, task: Task) -> LoadedData:
    from routeclf.data.sources import read_records

    rows: list[Row] = []
    for relative in PRESIDIO_FILES:
        if not (root / relative).is_file():
            raise DataError(f"{root} is not laid out like the shared data folder: {relative} is missing")
        records = read_records(str(root / relative))
        rows += span_rows(records, relative.stem, task, task.text_field, task.label_field, _template_group)
    return finish(rows, str(root))
