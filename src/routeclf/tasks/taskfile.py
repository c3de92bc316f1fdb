"""Task files: a YAML mapping -> a `Task`, with every mistake named and its fix said.

A task file holds task keys (below) and, beside them, any `routeclf train` setting (`epochs`,
`lr`, `max_length`, ...), which become the task's training defaults. The built-in tasks are task
files too (`routeclf/tasks/builtin/*.yaml`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from routeclf.errors import RouteclfError
from routeclf.tasks.base import TAGGER_FALLBACK, Task, bio_labels


def _label(value: Any) -> Any:
    """YAML reads `yes`, `no`, `on`, `off` as booleans and `1` as a number; labels are strings."""
    if isinstance(value, bool):
        raise ValueError(f"YAML read this label as {str(value).lower()}; quote it (for example 'yes')")
    return str(value) if isinstance(value, int | float) else value


Label = Annotated[str, BeforeValidator(_label)]


class TaskKeys(BaseModel):
    """The task keys of a task file; anything else must be a training setting."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    kind: Literal["classifier", "detector", "tagger"] = "classifier"
    labels: list[Label] | None = Field(default=None, min_length=2)
    entity_types: list[str] | None = Field(default=None, min_length=1)
    fallback_label: Label | None = None
    positive_label: Label | None = None
    text_field: str = "text"
    label_field: str | None = None
    id_field: str = "id"
    source_field: str | None = None
    hub_split: str = "train"
    mapping_file: str | None = None
    mapping_keys: tuple[str, str] = ("label_to_idx", "idx_to_label")
    min_examples_per_label: int = Field(default=3, ge=3)
    loader: str | None = None
    source_type_map: dict[str, str | None] | None = None
    windows: bool | None = None
    deobfuscate: bool = False
    threshold_excludes_sources: list[str] = Field(default_factory=list)
    length_unit: Literal["words", "chars"] = "words"
    length_bands: list[tuple[str, int, int | None]] | None = Field(default=None, min_length=1)


TASK_KEYS = tuple(TaskKeys.model_fields)
# Settings that belong to one run, not to a task.
NOT_TASK_SETTINGS = ("task", "out", "resume", "overwrite")


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    got = f" (got {error['input']!r})" if "input" in error and not isinstance(error["input"], dict) else ""
    return f"{where}: {error['msg']}{got}"


def task_from_mapping(values: dict[str, Any], where: str, default_name: str | None = None) -> Task:
    """A task from a task file's mapping; settings are checked against `routeclf train`'s."""
    from routeclf.settings import SETTING_NAMES, check_settings
    from routeclf.tasks.loaders import LOADERS

    if not isinstance(values, dict):
        raise RouteclfError(f"{where} must be a YAML mapping of key: value (see docs/training-guide.md, section 8)")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    settable = [k for k in SETTING_NAMES if k not in NOT_TASK_SETTINGS]
    unknown = sorted(k for k in values if k not in TASK_KEYS and k not in settable)
    if unknown:
        raise RouteclfError(
            f"{where}: unknown keys {', '.join(unknown)}. Task keys: {', '.join(TASK_KEYS)}; "
            f"training settings: {', '.join(settable)}"
        )
    try:
        keys = TaskKeys.model_validate({k: v for k, v in values.items() if k in TASK_KEYS})
    except ValidationError as exc:
        raise RouteclfError(f"{where}: " + "; ".join(_describe(e) for e in exc.errors())) from None
    settings = check_settings({k: v for k, v in values.items() if k not in TASK_KEYS}, where)

    name = keys.name or default_name
    if not name:
        raise RouteclfError(f"{where}: give the task a name (it is also the model's serving name)")
    if keys.loader is not None and keys.loader not in LOADERS:
        raise RouteclfError(f"{where}: unknown loader {keys.loader!r}; built-in loaders: {', '.join(LOADERS)}")
    if keys.kind == "tagger":
        if keys.labels is not None or not keys.entity_types:
            raise RouteclfError(f"{where}: a tagger lists its entity_types (its BIO labels follow from them), "
                                "not labels")
        labels, fallback = bio_labels(keys.entity_types), TAGGER_FALLBACK
        unmapped = sorted({t for t in (keys.source_type_map or {}).values() if t} - set(keys.entity_types))
        if unmapped:
            raise RouteclfError(f"{where}: source_type_map maps to types not in entity_types: {', '.join(unmapped)}")
    else:
        if keys.entity_types is not None or keys.source_type_map is not None:
            raise RouteclfError(f"{where}: entity_types and source_type_map are for taggers (kind: tagger)")
        labels = tuple(sorted(keys.labels or ()))
        if len(set(labels)) != len(labels):
            raise RouteclfError(f"{where}: labels are listed more than once: "
                                f"{', '.join(sorted({x for x in labels if labels.count(x) > 1}))}")
        fallback = keys.fallback_label
        if keys.kind == "detector" and fallback is None and keys.positive_label and len(labels) == 2:
            fallback = next(label for label in labels if label != keys.positive_label)
    bands = tuple(tuple(band) for band in keys.length_bands) if keys.length_bands else None
    try:
        return Task(
            name=name,
            labels=labels,
            kind=keys.kind,
            fallback_label=fallback,
            positive_label=keys.positive_label,
            text_field=keys.text_field,
            label_field=keys.label_field or ("spans" if keys.kind == "tagger" else "label"),
            id_field=keys.id_field,
            source_field=keys.source_field,
            hub_split=keys.hub_split,
            mapping_file=keys.mapping_file,
            mapping_keys=keys.mapping_keys,
            min_examples_per_label=keys.min_examples_per_label,
            loader=keys.loader,
            source_type_map=keys.source_type_map,
            windows=keys.windows,
            deobfuscate=keys.deobfuscate,
            threshold_excludes_sources=tuple(keys.threshold_excludes_sources),
            length_unit=keys.length_unit,
            settings=settings,
            **({"length_bands": bands} if bands else {}),
        )
    except ValueError as exc:
        raise RouteclfError(f"{where}: {exc}") from None


def read_task_file(path: Path) -> Task:
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RouteclfError(f"cannot read task file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RouteclfError(f"task file {path} is not valid YAML: {exc}") from exc
    return task_from_mapping(values, f"task file {path}", default_name=path.stem)


def task_from_json(payload: dict[str, Any], where: str) -> Task:
    """The task saved in a model directory (`task.json`, written by `Task.to_json`). Its training
    defaults are kept as they were saved: a later version's settings must not make it unreadable."""
    import dataclasses

    values = {k: v for k, v in payload.items() if k not in ("settings", "window")}
    if values.get("kind") == "tagger":
        values.pop("labels", None)  # they follow from entity_types
    else:
        values.pop("entity_types", None)
    task = task_from_mapping(values, where)
    return dataclasses.replace(task, settings=dict(payload.get("settings") or {}))
