"""The artifact directory: written beside its final place and renamed only when complete."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from routeclf.errors import RouteclfError
from routeclf.tasks import Task

# Files every artifact holds; `routeclf validate` checks the same list.
REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer_config.json",
    "task.json",
    "label_mapping.json",
    "split.json",
    "training_config.json",
    "metrics.json",
    "calibration.json",
    "confusion_matrix.png",
    "reliability_diagram.png",
    "README.md",
)


# Token tasks: how the data's entity types were mapped to the model's (None: left unlabelled).
SOURCE_TYPE_MAP_FILE = "source_type_map.json"


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def write_json_atomic(path: Path, payload: Any) -> None:
    """Replace a file of a finished artifact without a moment where it is half-written."""
    temporary = path.with_name(f".{path.name}.tmp")
    write_json(temporary, payload)
    temporary.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def label_mappings(task: Task) -> dict[str, dict[str, Any]]:
    """The mapping files the vLLM semantic router loads, all derived from the task's label order."""
    label2id = task.label2id
    id2label = {str(i): label for i, label in task.id2label.items()}
    files = {"label_mapping.json": {"label2id": label2id, "id2label": id2label}}
    if task.mapping_file:
        to_idx, to_label = task.mapping_keys
        files[task.mapping_file] = {to_idx: label2id, to_label: id2label}
    return files


def write_label_mappings(directory: Path, task: Task) -> None:
    for name, payload in label_mappings(task).items():
        write_json(directory / name, payload)


def check_destination(out: Path, overwrite: bool) -> None:
    """Fail before any work if the destination is taken."""
    if out.exists() and not out.is_dir():
        raise RouteclfError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise RouteclfError(f"{out} already holds files; pass --overwrite to replace it")


@contextlib.contextmanager
def staged_directory(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield an empty directory beside `out`; rename it to `out` only if the block succeeds.

    A failure (an exception, a non-finite loss, Ctrl-C) removes the staging directory, so no
    half-written artifact that looks valid is ever left at `out`.
    """
    check_destination(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = None
    if out.exists():
        previous = out.with_name(f".{out.name}.previous-{staging.name.rsplit('-', 1)[-1]}")
        out.rename(previous)
    staging.rename(out)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
