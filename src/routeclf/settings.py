"""Every training knob in one dataclass: CLI flags and YAML config files are both made from it."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from routeclf.errors import RouteclfError
from routeclf.tasks.base import Task


@dataclass
class TrainSettings:
    task: str = field(
        default="category",
        metadata={"help": "task to train: category, jailbreak, pii, or a task file (.yaml) of your own labels",
                  "positional": True},
    )
    data: str | None = field(
        default=None, metadata={"help": "hub dataset id or local .jsonl/.json/.csv/.parquet (default: the task's hub id)"}
    )
    out: str | None = field(default=None, metadata={"help": "artifact directory (default: models/<task>)"})
    method: Literal["full", "lora"] = field(default="full", metadata={"help": "full fine-tuning or LoRA (PEFT)"})
    base: str = field(default="minilm", metadata={"help": "base model: minilm (bundled, offline), a local path or a hub id"})
    epochs: float = field(
        default=4.0,
        metadata={"help": "maximum training epochs (early stopping may end sooner; small data trains longer, see "
                          "--min-steps); pii's default: 12"},
    )
    lr: float = field(
        default=8e-5,
        metadata={"help": "peak learning rate (linear warmup, then linear decay); pii's default: 2e-4"},
    )
    batch_size: int = field(default=32, metadata={"help": "training batch size"})
    eval_batch_size: int = field(default=64, metadata={"help": "evaluation batch size"})
    max_length: int = field(
        default=64,
        metadata={"help": "maximum tokens per text (window) for the encoder; jailbreak's and pii's default: 128"},
    )
    min_steps: int = field(
        default=50,
        metadata={"help": "small data: train at least this many optimizer steps (more epochs when the train split "
                          "is small); 0 keeps --epochs as given"},
    )
    warmup_ratio: float = field(default=0.06, metadata={"help": "share of steps spent warming up the learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout"})
    patience: int = field(
        default=2,
        metadata={"help": "early stopping: evaluations (each epoch, or every --save-steps) without a better validation "
                          "macro-F1 (token tasks: entity micro-F1; a small validation split: loss), counted only "
                          "after --min-steps"},
    )
    max_samples: int | None = field(
        default=None, metadata={"help": "train on a seeded, label-stratified sample of this many rows (every label kept)"}
    )
    cv_folds: int | None = field(
        default=None,
        metadata={"help": "also report k-fold cross-validated figures of this recipe (k trainings); default: 5 when "
                          "the test split would hold fewer than 10 rows of some label, else 0 (off)"},
    )
    seed: int = field(default=42, metadata={"help": "seed for the split, sampling and training"})
    split_ratios: tuple[float, float, float] = field(
        default=(0.7, 0.15, 0.15), metadata={"help": "train, validation and test shares"}
    )
    text_field: str | None = field(default=None, metadata={"help": "text column (default: the task's)"})
    label_field: str | None = field(default=None, metadata={"help": "label column (default: the task's)"})
    id_field: str | None = field(default=None, metadata={"help": "id column (default: the task's; row number if absent)"})
    ngram: bool = field(
        default=True,
        metadata={"help": "also fit a word+char n-gram linear model and blend it with the encoder (weight chosen on "
                          "validation); not available for taggers (pii)"},
    )
    distil_ngram: float = field(
        default=0.0,
        metadata={"help": "train the encoder towards this share of the n-gram model's out-of-fold probabilities "
                          "(the rest: the label), so model.safetensors alone carries what the blend knows; 0: labels "
                          "alone"},
    )
    preserve_base: float = field(
        default=0.0,
        metadata={"help": "full fine-tuning: add this weight times half the squared distance of the encoder's "
                          "weights from the base's to the loss (L2-SP), keeping the base's sentence geometry; 0: off"},
    )
    recognizers: bool = field(
        default=False,
        metadata={"help": "taggers: fuse Presidio's pattern recognizers and the cased spaCy NER with the model, "
                          "by a rule chosen on validation (docs/pii.md)"},
    )
    augment: bool = field(
        default=True,
        metadata={"help": "add the task's extra training rows: made from the train split alone (category: questions "
                          "without exam cues, long ones' endings; jailbreak: attacks after benign text and benign "
                          "texts joined, also used on validation to choose the n-gram weight), and written for "
                          "training (category: chat-style requests); --no-augment: the split alone"},
    )
    abstain_accuracy: float = field(
        default=0.95,
        metadata={"help": "the confidence threshold is the lowest whose validation predictions reach this accuracy"},
    )
    min_coverage: float = field(
        default=0.9,
        metadata={"help": "classifiers: the confidence threshold never leaves fewer than this share of validation "
                          "requests answered (the rest go to the fallback label); 0: no floor"},
    )
    target_fpr: float = field(
        default=0.01,
        metadata={"help": "detectors (jailbreak): the threshold keeps the validation false-positive rate at most this"},
    )
    device: Literal["auto", "cpu", "cuda"] = field(
        default="auto", metadata={"help": "auto: CUDA when present (bf16 where supported), else CPU"}
    )
    save_steps: int = field(
        default=0, metadata={"help": "checkpoint (and evaluate) every this many steps; 0: once per epoch"}
    )
    resume: bool = field(
        default=False, metadata={"help": "continue an interrupted run from its last checkpoint (same data and flags)"}
    )
    overwrite: bool = field(default=False, metadata={"help": "replace an existing artifact directory"})

    def resolved_out(self, task: Task) -> Path:
        return Path(self.out or f"models/{task.name}")


SETTING_NAMES = tuple(f.name for f in dataclasses.fields(TrainSettings))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_type(annotation: Any) -> tuple[Any, dict[str, Any]]:
    """argparse keyword arguments for a dataclass field's type."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _parse_type(inner[0])
    if origin is Literal:
        return str, {"choices": list(typing.get_args(annotation))}
    if origin is tuple:
        args = typing.get_args(annotation)
        return args[0], {"nargs": len(args)}
    return annotation, {}


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field, defaulting to None so that explicit flags can override a config file."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        help_text = f.metadata.get("help", "")
        kind, extra = _parse_type(hints[f.name])
        if f.metadata.get("positional"):
            parser.add_argument(f.name, nargs="?", default=None, help=help_text, **extra)
        elif kind is bool:
            parser.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{help_text} (default: {f.default})")
        else:
            default = f.default if f.default is not dataclasses.MISSING else None
            parser.add_argument(_flag(f.name), dest=f.name, type=kind, default=None,
                                help=f"{help_text} (default: {default})", **extra)
    parser.add_argument("--config", type=Path, default=None, help="YAML file of settings; explicit flags win")


def check_settings(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Training settings from a file, type-checked and converted (`lr: 8e-5`, which YAML reads as
    a string, becomes a number); every wrong value is named."""
    from pydantic import TypeAdapter, ValidationError

    unknown = sorted(set(values) - set(SETTING_NAMES))
    if unknown:
        raise RouteclfError(f"{where}: unknown settings {', '.join(unknown)}; known: {', '.join(SETTING_NAMES)}")
    try:
        checked = TypeAdapter(TrainSettings).validate_python(values)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()]
        raise RouteclfError(f"{where}: " + "; ".join(problems)) from None
    return {name: getattr(checked, name) for name in values}


def _read_config(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RouteclfError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise RouteclfError(f"config {path} must be a mapping of setting: value")
    loaded = {str(k).replace("-", "_"): v for k, v in loaded.items()}
    return check_settings(loaded, f"config {path}")


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    """Defaults <- the task's own settings <- YAML config <- explicit flags."""
    from routeclf.tasks import resolve_task

    config = _read_config(args.config) if getattr(args, "config", None) else {}
    flags = {k: v for k, v in vars(args).items() if k in SETTING_NAMES and v is not None}
    task_file = getattr(args, "task_file", None)
    if task_file and flags.get("task") and flags["task"] != task_file:
        raise RouteclfError(f"two tasks given: {flags['task']!r} and --task {task_file!r}; give one")
    spec = task_file or flags.get("task") or config.get("task") or TrainSettings.task
    task = resolve_task(spec)
    values = {**task.settings, **config, **flags, "task": spec}
    if "split_ratios" in values:
        values["split_ratios"] = tuple(float(x) for x in values["split_ratios"])
    settings = TrainSettings(**check_settings(values, "settings"))
    if task.problem_type == "token":  # the n-gram companion scores whole texts, not words
        if settings.distil_ngram:
            raise RouteclfError("--distil-ngram is for classifiers and detectors; an n-gram model scores whole texts")
        settings = dataclasses.replace(settings, ngram=False)
        if settings.cv_folds:
            raise RouteclfError("--cv-folds is for classifiers and detectors; a tagger's figures are per entity")
    elif settings.recognizers:
        raise RouteclfError("--recognizers is for taggers (pii); Presidio finds spans, not a text's label")
    validate_settings(settings)
    return settings


def validate_settings(s: TrainSettings) -> None:
    positive = {"batch_size": s.batch_size, "eval_batch_size": s.eval_batch_size, "lora_r": s.lora_r,
                "lora_alpha": s.lora_alpha, "epochs": s.epochs, "lr": s.lr, "max_length": s.max_length}
    for name, value in positive.items():
        if not value > 0:
            raise RouteclfError(f"{_flag(name)} must be positive, got {value}")
    if s.cv_folds is not None and s.cv_folds not in (0,) and not 3 <= s.cv_folds <= 20:
        raise RouteclfError(f"--cv-folds must be 0 (off) or between 3 and 20, got {s.cv_folds}")
    if s.min_steps < 0:
        raise RouteclfError(f"--min-steps must be 0 or positive, got {s.min_steps}")
    if s.max_samples is not None and s.max_samples <= 0:
        raise RouteclfError(f"--max-samples must be positive, got {s.max_samples}")
    if not 0 <= s.lora_dropout < 1 or not 0 <= s.warmup_ratio < 1:
        raise RouteclfError("--lora-dropout and --warmup-ratio must be in [0, 1)")
    if not 0 < s.target_fpr < 1:
        raise RouteclfError(f"--target-fpr must be in (0, 1), got {s.target_fpr}")
    if not 0 <= s.distil_ngram < 1:
        raise RouteclfError(f"--distil-ngram must be in [0, 1), got {s.distil_ngram}")
    if s.preserve_base < 0:
        raise RouteclfError(f"--preserve-base must be 0 (off) or positive, got {s.preserve_base}")
    if not 0 <= s.min_coverage <= 1:
        raise RouteclfError(f"--min-coverage must be in [0, 1], got {s.min_coverage}")
    if not 0 < s.abstain_accuracy <= 1:
        raise RouteclfError(f"--abstain-accuracy must be in (0, 1], got {s.abstain_accuracy}")
    if s.save_steps < 0:
        raise RouteclfError(f"--save-steps must be 0 (every epoch) or positive, got {s.save_steps}")
    if s.patience < 1:
        raise RouteclfError(f"--patience must be at least 1, got {s.patience}")
