"""The one training path: split -> fine-tune (full or LoRA) -> evaluate -> write the artifact."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoTokenizer,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)

from routeclf.artifact.card import write_model_card
from routeclf.artifact.version import deciding_hashes
from routeclf.artifact.writer import (
    SOURCE_TYPE_MAP_FILE,
    check_destination,
    staged_directory,
    write_json,
    write_label_mappings,
)
from routeclf.data.alignment import decode_tags, merge_units, token_tags
from routeclf.data.sources import Fields, Row, load_rows, resolve_labels
from routeclf.data.split import make_split, write_manifest
from routeclf.errors import TrainingError
from routeclf.evaluation.calibration import decision_rule, fit_path, fit_temperature
from routeclf.evaluation.crossval import cv_summary, fold_answers, trust_note
from routeclf.evaluation.entities import entity_metrics, fit_entity_path
from routeclf.evaluation.evaluate import score_rows
from routeclf.evaluation.perturb import TYPO_RATE, TYPOS_SECTION, typo_copy
from routeclf.evaluation.plots import plot_confusion_matrix, plot_coverage, plot_reliability, plot_roc
from routeclf.inference import load_predictor
from routeclf.inference.entities import EntityPredictor
from routeclf.inference.predictor import CALIBRATION_FILE, NGRAM_DIR, Predictor
from routeclf.settings import TrainSettings
from routeclf.tasks import TASK_FILE, Task, resolve_task
from routeclf.training.distil import ngram_soft_targets
from routeclf.training.models import build_model, resolve_base
from routeclf.inference.cost import window_stride
from routeclf.training.ngram import NgramModel
from routeclf.training.reading import choose_reading, selection_rows, window_candidates, window_settings, write_window
from routeclf.versions import library_versions

IGNORE_INDEX = -100  # positions the loss skips (special tokens, later sub-tokens of a word)


class FiniteLossTrainer(Trainer):
    """Stops at the first non-finite training loss instead of training on garbage. Rows whose
    label is a probability distribution (distillation, see `training.distil`) train by the cross
    entropy against it. With `anchor` set, the loss also pulls the encoder's weights back towards
    the base's (L2-SP), so the sentence geometry the base learned survives fine-tuning."""

    def __init__(self, *args, anchor: dict[str, torch.Tensor] | None = None, anchor_weight: float = 0.0,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.anchor, self.anchor_weight = anchor or {}, anchor_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        labels = inputs.get("labels")
        if labels is None or labels.dim() != 2 or not labels.is_floating_point():
            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        else:
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            loss = -(labels * torch.log_softmax(outputs.logits.float(), dim=-1)).sum(-1).mean()
        if self.anchor and model.training:
            parameters = dict(model.named_parameters())
            drift = sum(((parameters[name] - start.to(parameters[name].device)) ** 2).sum()
                        for name, start in self.anchor.items())
            loss = loss + self.anchor_weight / 2 * drift
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):  # type: ignore[override]
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            raise TrainingError(
                f"training loss became {loss.item()} at step {self.state.global_step + 1}; stopping, "
                "nothing is exported. Lower --lr, check the data, or keep fp32."
            )
        return loss


def _dataset(rows: list[Row], task: Task, tokenizer, max_length: int, targets: np.ndarray | None = None):
    """Tokenized rows; `targets` (one probability distribution per row) replace the labels."""
    import datasets

    if task.problem_type == "token":
        return _token_dataset(rows, task, tokenizer, max_length)
    label2id = task.label2id
    labels = targets.tolist() if targets is not None else [label2id[r.label] for r in rows]
    table = datasets.Dataset.from_dict({"text": [r.text for r in rows], "label": labels})

    def encode(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    return table.map(encode, batched=True, remove_columns=["text"], desc="tokenize")


def _token_dataset(rows: list[Row], task: Task, tokenizer, max_length: int):
    """Token labels from character spans; a long text becomes several overlapping windows."""
    import datasets

    label2id = task.label2id
    encoded = tokenizer(
        [r.text for r in rows], truncation=True, max_length=max_length, stride=window_stride(max_length),
        return_overflowing_tokens=True, return_offsets_mapping=True,
    )
    labels = []
    for window, row_index in enumerate(encoded["overflow_to_sample_mapping"]):
        tags = token_tags(encoded["offset_mapping"][window], encoded.word_ids(window), rows[row_index].spans)
        labels.append([IGNORE_INDEX if tag is None else label2id[tag] for tag in tags])
    columns = {name: encoded[name] for name in tokenizer.model_input_names if name in encoded}
    columns["labels"] = labels
    columns["length"] = [len(ids) for ids in encoded["input_ids"]]
    return datasets.Dataset.from_dict(columns)


def _compute_metrics(prediction) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    y_pred = prediction.predictions.argmax(axis=-1)
    return {
        "accuracy": float(accuracy_score(prediction.label_ids, y_pred)),
        "macro_f1": float(f1_score(prediction.label_ids, y_pred, average="macro", zero_division=0)),
        "predicted_classes": len(np.unique(y_pred)),
    }


def check_learned(history: list[dict[str, float]], best_epoch: float | None, validation: list[Row],
                  settings: TrainSettings) -> None:
    """A run whose chosen checkpoint answers one class for every validation row has learned
    nothing but the class balance (a diverged or stalled fine-tune); it is refused rather than
    written as a model whose figures alone would show it."""
    if best_epoch is None or len({r.label for r in validation}) < 2:
        return
    best = next(e for e in history if e["epoch"] == best_epoch)
    if best.get("predicted_classes", 2) > 1:  # absent: a checkpoint evaluated before the count was kept
        return
    raise TrainingError(
        f"training collapsed: at its best epoch ({best_epoch:g}) the encoder answers one class for all "
        f"{len(validation)} validation rows (macro-F1 {best['macro_f1']:.3f}); nothing was written. Try a lower "
        f"--lr (now {settings.lr:g}) or a longer --warmup-ratio (now {settings.warmup_ratio:g})")


class EarlyStoppingAfter(EarlyStoppingCallback):
    """Early stopping that starts counting only after `min_steps` optimizer steps, so a small
    validation split whose loss wobbles early cannot end a small-data run before its minimum."""

    def __init__(self, patience: int, min_steps: int) -> None:
        super().__init__(early_stopping_patience=patience)
        self.min_steps = min_steps

    def on_evaluate(self, args, state, control, metrics, **kwargs):  # type: ignore[override]
        if state.global_step < self.min_steps:
            return
        super().on_evaluate(args, state, control, metrics, **kwargs)


# The validation figure that picks the checkpoint, per problem type.
SELECTION_METRIC = {"sequence": "macro_f1", "token": "micro_f1"}


def _token_metrics(task: Task):
    """Entity micro/macro F1 over the labelled positions of each window (checkpoint selection)."""
    labels = task.labels

    def compute(prediction) -> dict[str, float]:
        gold, predicted = [], []
        for logits, ids in zip(prediction.predictions, prediction.label_ids):
            keep = np.flatnonzero(ids != IGNORE_INDEX)
            path = decode_tags(logits[keep], labels)
            for tags, out in ((ids[keep], gold), (path, predicted)):
                tagged = [(i, i + 1, labels[int(t)], 1.0) for i, t in enumerate(tags)]
                out.append({(e.start, e.end, e.type) for e in merge_units("", tagged)})
        metrics = entity_metrics(gold, predicted, task.entity_types)
        return {"micro_f1": metrics["micro_f1"], "macro_f1": metrics["macro_f1"]}

    return compute


def use_cuda(device: str) -> bool:
    """`--device auto` takes CUDA when there is one; `cuda` insists on it; `cpu` never uses it."""
    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        raise TrainingError("--device cuda was asked for, but no CUDA device is available")
    return available and device != "cpu"


SMALL_SPLIT_PER_LABEL = 10  # a split with fewer rows of some label is too small to judge by its scores alone
MAX_SMALL_DATA_EVALUATIONS = 10


@dataclass(frozen=True)
class Schedule:
    """How long to train, how often to evaluate, and which validation figure picks the checkpoint."""

    epochs: float
    eval_steps: int | None  # None: once per epoch
    metric: str
    greater_is_better: bool = True

    @property
    def strategy(self) -> str:
        return "epoch" if self.eval_steps is None else "steps"


def small_split(rows: list[Row], task: Task) -> bool:
    counts = Counter(r.label for r in rows)
    return task.problem_type == "sequence" and min(counts.get(label, 0) for label in task.labels) < SMALL_SPLIT_PER_LABEL


def plan_schedule(settings: TrainSettings, task: Task, n_train: int, validation: list[Row], world_size: int) -> Schedule:
    """`--epochs` and per-epoch evaluation by the task's F1, except on small data:

    - training lasts at least `--min-steps` optimizer steps (25 examples of 6 labels make 4 steps an
      epoch: 4 epochs would leave the model half-trained), evaluated at most 10 times;
    - a validation split with fewer than 10 rows of some label picks the checkpoint by its loss,
      which moves smoothly, where its F1 jumps by whole examples.
    """
    steps_per_epoch = math.ceil(n_train / (settings.batch_size * world_size))
    epochs, eval_steps = settings.epochs, settings.save_steps or None
    if settings.min_steps and settings.epochs * steps_per_epoch < settings.min_steps:
        epochs = float(math.ceil(settings.min_steps / steps_per_epoch))
        if eval_steps is None:
            eval_steps = math.ceil(epochs * steps_per_epoch / MAX_SMALL_DATA_EVALUATIONS)
    if small_split(validation, task):
        return Schedule(epochs, eval_steps, "loss", greater_is_better=False)
    return Schedule(epochs, eval_steps, SELECTION_METRIC[task.problem_type])


def _training_arguments(s: TrainSettings, output_dir: Path, schedule: Schedule, cuda: bool,
                        resumable: bool = True) -> TrainingArguments:
    """Hugging Face Trainer settings. Under torchrun or accelerate launch the Trainer runs
    data-parallel (DDP): NCCL on GPUs, gloo on CPUs; bf16 where the GPU supports it."""
    return TrainingArguments(
        output_dir=str(output_dir),
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        num_train_epochs=schedule.epochs,
        learning_rate=s.lr,
        per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=s.eval_batch_size,
        warmup_steps=s.warmup_ratio,
        weight_decay=s.weight_decay,
        lr_scheduler_type="linear",
        eval_strategy=schedule.strategy,
        eval_steps=schedule.eval_steps or 500,
        save_strategy=schedule.strategy,
        save_steps=schedule.eval_steps or 500,
        save_total_limit=2,
        save_only_model=not resumable,  # optimizer and scheduler too: --resume needs them
        load_best_model_at_end=True,
        metric_for_best_model=schedule.metric,
        greater_is_better=schedule.greater_is_better,
        train_sampling_strategy="group_by_length",
        logging_strategy="steps",
        logging_steps=50,
        logging_nan_inf_filter=False,
        report_to="none",
        seed=s.seed,
        data_seed=s.seed,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
    )


def _best_epoch(trainer: Trainer, schedule: Schedule) -> tuple[float | None, list[dict[str, float]]]:
    history = [
        {"epoch": e["epoch"], **{k[5:]: v for k, v in e.items() if k.startswith("eval_") and "per_second" not in k
                                 and k != "eval_runtime"}}
        for e in trainer.state.log_history
        if f"eval_{schedule.metric}" in e
    ]
    if not history:
        return None, history
    sign = 1 if schedule.greater_is_better else -1
    return max(history, key=lambda e: sign * e[schedule.metric])["epoch"], history


def _fit_ngram(train: list[Row], selection: list[Row], task: Task, seed: int, directory: Path) -> NgramModel:
    """The n-gram companion, fitted on the training rows; its temperature on the selection rows."""
    ngram = NgramModel.fit([r.text for r in train], np.array([task.label2id[r.label] for r in train]),
                           len(task.labels), seed=seed)
    ngram.temperature = fit_temperature(ngram.decision([r.text for r in selection]),
                                        np.array([task.label2id[r.label] for r in selection]))
    ngram.save(directory)
    return ngram


def _fit_reading(predictor: Predictor, directory: Path, task: Task, settings: TrainSettings,
                 splits: dict[str, list[Row]], extras: Extras, pool: list[Row]) -> dict[str, Any] | None:
    """The n-gram companion (unless `--no-ngram`), then the window length and blend weight the
    model reads requests with (`routeclf.training.reading`). Returns the blend."""
    candidates = window_candidates(task, settings.max_length)
    if not settings.ngram and len(candidates) == 1:
        return None
    if task.positive_label is None:
        selection = splits["validation"]
    else:
        # Detectors also judge on validation mixtures: an attack inside benign text is exactly
        # where a bag of n-grams and the encoder's windows disagree.
        mixed = extras.train and task.data_code.augment_validation
        selection = selection_rows(task, pool, task.augment(splits["validation"], settings.seed) if mixed else [])
    ngram = None
    if settings.ngram:
        ngram = predictor.ngram = _fit_ngram(splits["train"] + extras.train, selection, task, settings.seed,
                                             directory / NGRAM_DIR)
    reading = choose_reading(predictor, selection, task, candidates, settings.ngram)
    if len(candidates) > 1:
        write_window(directory, task, reading)
    if ngram is None:
        return None
    blend = {"weight": reading.ngram_weight, "criterion": reading.criterion, "temperature": ngram.temperature,
             "validation_score_by_weight": reading.score_by_window[str(reading.window_length)]}
    write_json(directory / NGRAM_DIR / "blend.json", blend)
    return blend


def checkpoint_directory(out: Path) -> Path:
    """Where checkpoints live while training: beside `out`, hidden, kept after an interruption
    so that `--resume` can continue, removed once the artifact is written."""
    return out.parent / f".{out.name}.checkpoints"


# Settings a resumed run may change: they act only after the encoder is trained.
RESUME_IGNORES = ("resume", "overwrite", "cv_folds", "min_coverage", "abstain_accuracy", "target_fpr", "ngram")


def _check_resumable(checkpoints: Path, manifest: dict[str, Any], settings: TrainSettings, task: Task) -> None:
    """A resumed run must find checkpoints made from the same data, split and settings."""
    if not list(checkpoints.glob("checkpoint-*")):
        raise TrainingError(f"--resume: no checkpoint in {checkpoints}; start without --resume")
    split_file, settings_file = checkpoints / "split.json", checkpoints / "settings.json"
    if not split_file.is_file() or not settings_file.is_file():
        raise TrainingError(f"--resume: {checkpoints} lacks split.json or settings.json; start without --resume")
    previous = json.loads(split_file.read_text())
    if previous.get("data_sha256") != manifest["data_sha256"]:
        raise TrainingError("--resume: the data changed since the interrupted run (sha256 differs)")
    if previous.get("ids") != manifest["ids"]:
        raise TrainingError("--resume: the split differs from the interrupted run's")
    before, now = json.loads(settings_file.read_text()), _resumable_settings(settings, task)
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        listed = ", ".join("the task's definition (labels, kind, fields...)" if k == "task_definition" else
                           f"{k} ({before.get(k)!r} then, {now.get(k)!r} now)" for k in changed)
        raise TrainingError(f"--resume: settings differ from the interrupted run's: {listed}")


def _resumable_settings(settings: TrainSettings, task: Task) -> dict[str, Any]:
    values = {k: v for k, v in asdict(settings).items() if k not in RESUME_IGNORES}
    values["task_definition"] = task.to_json()  # a task file edited between runs is caught too
    return json.loads(json.dumps(values))  # tuples become lists, as they are read back


def _prepare_checkpoints(checkpoints: Path, manifest: dict[str, Any], settings: TrainSettings, task: Task) -> None:
    """A fresh run starts from an empty checkpoint directory that records its split and settings."""
    shutil.rmtree(checkpoints, ignore_errors=True)
    checkpoints.mkdir(parents=True)
    write_manifest(manifest, checkpoints / "split.json")
    write_json(checkpoints / "settings.json", _resumable_settings(settings, task))


def _fit(task: Task, settings: TrainSettings, train_rows: list[Row], validation_rows: list[Row], tokenizer, base,
         checkpoints: Path, cuda: bool, resume: bool = False, resumable: bool = True,
         before_training: Callable[[TrainingArguments], None] | None = None):
    """Fine-tune the encoder on `train_rows`, keeping the checkpoint that does best on `validation_rows`."""
    lora = {"r": settings.lora_r, "alpha": settings.lora_alpha, "dropout": settings.lora_dropout}
    model = build_model(base, task.labels, settings.method, lora, task.problem_type)
    token_task = task.problem_type == "token"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    schedule = plan_schedule(settings, task, len(train_rows), validation_rows, world_size)
    arguments = _training_arguments(settings, checkpoints, schedule, cuda, resumable)
    if before_training is not None:
        before_training(arguments)
    targets, distillation = None, None
    if settings.distil_ngram and task.problem_type == "sequence":
        targets, distillation = ngram_soft_targets(train_rows, task, settings.distil_ngram, settings.seed)
        print(f"distillation: n-gram out-of-fold accuracy {distillation['ngram_out_of_fold_accuracy']:.4f} on "
              f"{len(train_rows)} training rows, weight {settings.distil_ngram}")
    anchor = ({name: p.detach().clone() for name, p in model.base_model.named_parameters() if "pooler" not in name}
              if settings.preserve_base and settings.method == "full" else None)
    if anchor is not None:  # names as the whole model spells them
        prefix = model.base_model_prefix + "."
        anchor = {prefix + name: start for name, start in anchor.items()}
    trainer = FiniteLossTrainer(
        model=model,
        anchor=anchor,
        anchor_weight=settings.preserve_base,
        args=arguments,
        train_dataset=_dataset(train_rows, task, tokenizer, settings.max_length, targets),
        eval_dataset=_dataset(validation_rows, task, tokenizer, settings.max_length),
        processing_class=tokenizer,
        data_collator=DataCollatorForTokenClassification(tokenizer) if token_task else DataCollatorWithPadding(tokenizer),
        compute_metrics=_token_metrics(task) if token_task else _compute_metrics,
        callbacks=[EarlyStoppingAfter(settings.patience, settings.min_steps)],
    )
    output = trainer.train(resume_from_checkpoint=True if resume else None)
    return trainer, output, schedule, distillation


def _write_model(directory: Path, trainer: Trainer, tokenizer, task: Task, settings: TrainSettings) -> None:
    """The encoder (LoRA merged, the adapter kept beside it), its tokenizer and the resolved task."""
    trained = trainer.model
    if settings.method == "lora":
        trained.save_pretrained(directory / "adapter")
        trained = trained.merge_and_unload()
    trained.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    write_json(directory / TASK_FILE, task.to_json() | {"window": window_settings(task, settings.max_length)})


def _companions_and_calibration(directory: Path, task: Task, settings: TrainSettings, splits: dict[str, list[Row]],
                                extras: Extras, device: str) -> dict[str, Any] | None:
    """The n-gram companion (sequence tasks), then temperature and threshold, all fitted on
    validation; writes `ngram/` and `calibration.json`. Returns the blend."""
    def load() -> Predictor | EntityPredictor:
        return load_predictor(directory, batch_size=settings.eval_batch_size, device=device)

    predictor = load()
    rows, where = threshold_rows(splits["validation"], extras.calibration)
    blend = None
    if task.problem_type == "sequence":
        blend = _fit_reading(predictor, directory, task, settings, splits, extras, rows)
        predictor = load()
    if task.problem_type == "token":
        calibration = {"fallback_label": task.fallback_label,
                       "paths": {"routeclf": fit_entity_path(predictor, rows, task, settings.recognizers, where)}}
    else:
        rule = decision_rule(task, settings)
        plain = load_predictor(directory, batch_size=settings.eval_batch_size, device=device, plain=True)
        calibration = rule | {"paths": {p.path: fit_path(p, rows, task, rule, where) for p in (predictor, plain)}}
    write_json(directory / CALIBRATION_FILE, calibration)
    if task.source_type_map:
        write_json(directory / SOURCE_TYPE_MAP_FILE, dict(task.source_type_map))
    return blend


@dataclass(frozen=True)
class Extras:
    """A task's training-only rows, and the share of its written rows kept back for calibration."""

    train: list[Row]
    calibration: list[Row]
    written_train: int = 0  # rows of `train` written for training (the rest made from the train split)


CALIBRATION_SHARE = 0.2  # of the rows written for training: they join validation where thresholds are fitted


def training_extras(task: Task, settings: TrainSettings, splits: dict[str, list[Row]]) -> Extras:
    """The rows made from the train split, and those written for training (any whose text is also
    in validation or test is left out). A fifth of the written rows, by group, is kept back: the
    validation split of an exam-like data set does not look like a router's traffic, so the
    temperature and threshold are fitted on validation and these rows together."""
    if not settings.augment:
        return Extras([], [])
    made = task.augment(splits["train"], settings.seed) if task.augment else []
    written = task.train_only() if task.train_only else []
    held_out = {r.group for name in ("validation", "test") for r in splits.get(name, [])}
    kept = [r for r in written if r.group not in held_out]
    if len(kept) < len(written):
        print(f"train: {len(written) - len(kept)} written training rows left out: their text is in validation or test")
    if len(kept) < 10:
        return Extras(made + kept, [], len(kept))
    from sklearn.model_selection import GroupShuffleSplit

    splitter = GroupShuffleSplit(n_splits=1, test_size=CALIBRATION_SHARE, random_state=settings.seed)
    trained, calibration = next(splitter.split(kept, groups=[r.group for r in kept]))
    return Extras(made + [kept[i] for i in trained], [kept[i] for i in calibration], len(trained))


def calibration_rows(validation: list[Row], written: list[Row]) -> list[Row]:
    """Validation, with the written rows repeated to weigh as much as it does together."""
    if not written:
        return validation
    return validation + written * max(1, round(len(validation) / len(written)))


def threshold_rows(validation: list[Row], written: list[Row]) -> tuple[list[Row], str]:
    """The rows every consumer path's temperature and threshold are fitted on, and their description."""
    where = f"{len(validation)} validation rows" + (
        f" and {len(written)} rows written for training, weighted to count as much" if written else "")
    return calibration_rows(validation, written), where


def saved_threshold_rows(directory: Path, task: Task, splits: dict[str, list[Row]]) -> tuple[list[Row], str]:
    """`threshold_rows` of a trained model, rebuilt from its saved settings and split (for paths
    added after training, such as an ONNX export)."""
    from routeclf.artifact.writer import read_json

    settings = TrainSettings(**read_json(directory / "training_config.json")["settings"])
    return threshold_rows(splits["validation"], training_extras(task, settings, splits).calibration)


CV_FOLDS = 5


def cv_folds(settings: TrainSettings, task: Task, test_rows: list[Row]) -> int:
    """`--cv-folds`, or by default 5 when the test split is too small to trust alone."""
    if settings.cv_folds is not None:
        return settings.cv_folds
    return CV_FOLDS if small_split(test_rows, task) else 0


def cross_validate(task: Task, settings: TrainSettings, rows: list[Row], folds: int, tokenizer, base,
                   cuda: bool, device: str, work: Path) -> dict[str, Any]:
    """The whole recipe k times: fold i is the test set, fold i+1 the validation set (checkpoint,
    blend, temperature, threshold), the rest the training set. Every row is tested once, by a
    model that never saw it; the figures of the answer given are pooled over all rows."""
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=settings.seed)
    parts = [[rows[i] for i in index] for _, index in splitter.split(rows, [r.label for r in rows],
                                                                      [r.group for r in rows])]
    per_fold, answers = [], []
    with tempfile.TemporaryDirectory(prefix=".cv-", dir=work) as scratch:
        for i in range(folds):
            scored, fold = _cross_validation_fold(task, settings, parts, i, tokenizer, base, cuda, device, Path(scratch))
            per_fold.append(scored)
            answers += fold
    return cv_summary(per_fold, answers, task)


def _cross_validation_fold(task: Task, settings: TrainSettings, parts: list[list[Row]], i: int, tokenizer, base,
                           cuda: bool, device: str, scratch: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    folds = len(parts)
    splits = {"train": [r for j, part in enumerate(parts) if j not in (i, (i + 1) % folds) for r in part],
              "validation": parts[(i + 1) % folds], "test": parts[i]}
    print(f"cross-validation fold {i + 1}/{folds}: train {len(splits['train'])}, "
          f"validation {len(splits['validation'])}, test {len(splits['test'])}")
    extras = training_extras(task, settings, splits)
    fold_dir = scratch / f"fold{i}"
    trainer, _, _, _ = _fit(task, settings, splits["train"] + extras.train, splits["validation"], tokenizer, base,
                         fold_dir / "checkpoints", cuda, resumable=False)
    model_dir = fold_dir / "model"
    _write_model(model_dir, trainer, tokenizer, task, settings)
    del trainer  # one model in memory at a time
    release_memory()
    _companions_and_calibration(model_dir, task, settings, splits, extras, device)
    predictor = load_predictor(model_dir, batch_size=settings.eval_batch_size, device=device)
    scored = score_rows(predictor, splits["test"], task)
    answers = fold_answers(predictor, splits["test"], task)
    shutil.rmtree(fold_dir, ignore_errors=True)
    return ({k: scored[k] for k in ("n", "accuracy", "macro_f1")} |
            {"answered": scored.get("abstention", {}).get("coverage")}), answers


def release_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train(settings: TrainSettings) -> Path | None:
    """Train and publish an artifact; returns its directory (None on the other ranks of a
    distributed run: rank 0 writes). Nothing is written at `out` on failure."""
    task = resolve_task(settings.task)
    fields = Fields.for_task(task, settings.text_field, settings.label_field, settings.id_field)
    if not settings.data:
        raise TrainingError(f"no data for the {task.name} task: pass --data FILE (or a hub dataset id)")
    if not task.labels:
        task = resolve_labels(task, settings.data, fields)
        print(f"labels taken from the data and kept in the model: {', '.join(task.labels)}")
    out = settings.resolved_out(task)
    check_destination(out, settings.overwrite)
    started = time.time()
    set_seed(settings.seed)

    data = load_rows(settings.data, task, fields)
    splits, manifest = make_split(data, settings.split_ratios, settings.seed, settings.max_samples)
    print(
        f"data: {len(data.rows)} rows from {data.source}; split "
        + ", ".join(f"{name} {len(rows)}" for name, rows in splits.items())
        + f"; near-duplicates across splits: {manifest['audit']['near_duplicates']['count']}"
    )

    extras = training_extras(task, settings, splits)
    if extras.train or extras.calibration:
        print(f"train: {len(extras.train)} extra training-only rows" +
              (f"; {len(extras.calibration)} written rows kept back for calibration" if extras.calibration else "") +
              " (--no-augment to skip)")

    base = resolve_base(settings.base)
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    checkpoints = checkpoint_directory(out)
    cuda = use_cuda(settings.device)
    device = "cuda" if cuda else "cpu"
    state: dict[str, Any] = {}

    def prepare(arguments: TrainingArguments) -> None:
        state["main"] = arguments.process_index == 0  # under torchrun, only rank 0 writes
        state["world_size"] = arguments.world_size
        if settings.resume:  # every rank checks: each reads the checkpoint
            _check_resumable(checkpoints, manifest, settings, task)
        elif state["main"]:
            _prepare_checkpoints(checkpoints, manifest, settings, task)
        state["prepared"] = True

    try:
        trainer, train_output, schedule, distillation = _fit(task, settings, splits["train"] + extras.train, splits["validation"],
                                             tokenizer, base, checkpoints, cuda, settings.resume,
                                             before_training=prepare)
        best_epoch, history = _best_epoch(trainer, schedule)
        if task.problem_type == "sequence":
            check_learned(history, best_epoch, splits["validation"], settings)
    except TrainingError:
        if state.get("main") and state.get("prepared"):  # a non-finite loss or a collapse is not worth resuming
            shutil.rmtree(checkpoints, ignore_errors=True)
        raise
    if not state["main"]:
        return None
    if schedule.epochs != settings.epochs:
        print(f"small data: trained up to {schedule.epochs:g} epochs (--min-steps {settings.min_steps}) instead of "
              f"{settings.epochs:g}")
    if schedule.metric == "loss":
        print("small validation split: the checkpoint was chosen by validation loss")

    with staged_directory(out, settings.overwrite) as staging:
        _write_model(staging, trainer, tokenizer, task, settings)
        del trainer
        release_memory()
        blend = _companions_and_calibration(staging, task, settings, splits, extras, device)
        predictor = load_predictor(staging, batch_size=settings.eval_batch_size, device=device)
        metrics: dict[str, Any] = {name: score_rows(predictor, splits[name], task) for name in ("validation", "test")}
        if task.problem_type == "sequence":  # what a plain transformers consumer gets, at its own operating point
            plain = load_predictor(staging, batch_size=settings.eval_batch_size, device=device, plain=True)
            metrics["paths"] = {"transformers": {name: score_rows(plain, splits[name], task)
                                                 for name in ("validation", "test")}}
        if task.kind == "classifier":  # requests are typed in a hurry: the test split again, with typos
            typos = typo_copy(splits["test"], settings.seed)
            described = {"data": {"source": f"the test split with seeded typos ({TYPO_RATE:.0%} of words, seed "
                                            f"{settings.seed})", "split": TYPOS_SECTION}}
            metrics[TYPOS_SECTION] = score_rows(predictor, typos, task) | described
            metrics["paths"]["transformers"][TYPOS_SECTION] = score_rows(plain, typos, task) | described
        folds = cv_folds(settings, task, splits["test"])
        if folds and state["world_size"] > 1:
            print("cross-validation skipped: it runs in a single process (train without torchrun to get it)")
            folds = 0
        if folds:
            rows = [r for name in ("train", "validation", "test") for r in splits[name]]
            metrics["cross_validation"] = cross_validate(task, settings, rows, folds, tokenizer, base, cuda, device,
                                                         staging.parent)
        metrics["trust"] = trust_note(metrics, task)
        print(metrics["trust"])

        write_label_mappings(staging, task)
        write_manifest(manifest, staging / "split.json")
        training_config = {
            "task": task.name,
            "problem_type": task.problem_type,
            "labels": list(task.labels),
            "fallback_label": task.fallback_label,
            "settings": asdict(settings) | {"data": data.source, "out": str(out)},
            "schedule": asdict(schedule),
            "fields": asdict(fields),
            "base_model": {"name": base.name, "path": base.path, "sha256": base.sha256},
            "best_epoch": best_epoch,
            "epoch_history": history,
            "train_steps": train_output.global_step,
            "world_size": state["world_size"],
            "device": device,
            "resumed": settings.resume,
            "augmented_train_rows": len(extras.train),
            "written_train_rows": extras.written_train,
            "written_calibration_rows": len(extras.calibration),
            "train_seconds": round(time.time() - started, 1),
            "distillation": distillation,
            "ngram_blend": blend and {"weight": blend["weight"], "temperature": blend["temperature"]},
            "versions": library_versions(),
        }
        write_json(staging / "training_config.json", training_config)
        write_json(staging / "metrics.json", {"data_sha256": data.sha256, **metrics,
                                              "hashes": deciding_hashes(staging)})
        plot_confusion_matrix(metrics["test"], staging / "confusion_matrix.png",
                              f"{task.name}: test split, the answer given")
        plot_reliability(metrics, staging / "reliability_diagram.png", f"{task.name}: calibrated confidence")
        if task.positive_label:
            plot_roc(metrics, staging / "roc_curve.png", f"{task.name}: ROC ({task.positive_label} vs rest)")
        if task.kind == "classifier":
            plot_coverage(metrics, staging / "coverage_curve.png", f"{task.name}: coverage and accuracy (test)")
        write_model_card(staging, task)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return out
