"""Train the default category configuration on the full local MMLU-Pro file and record the result.

It also evaluates the model on the MMLU held-out set (mmlu-ood) and the hand-written chat set
(eval/category_chat.jsonl), stores both in the artifact (metrics.json, model card), and never
trains or tunes on either.

Writes `benchmarks/results/train_category.json` (this run) and appends a row to
`benchmarks/results/train_category.md`. On the same split, in the same run, it also scores a
TF-IDF (word 1-2 + char 2-5 grams) + LinearSVC baseline, the number the encoder has to beat.

    python benchmarks/train_category.py [--data FILE] [--out DIR] [-- any `routeclf train` flags]
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from common import DATA_DIR, record, run_summary, train_settings
from sklearn.metrics import accuracy_score, f1_score

from routeclf.data.sources import load_rows
from routeclf.data.split import make_split
from routeclf.evaluation.evaluate import evaluate_artifact, save_evaluation
from routeclf.settings import TrainSettings
from routeclf.tasks import get_task
from routeclf.training.ngram import NgramModel
from routeclf.training.trainer import train

CHAT = Path(__file__).resolve().parents[1] / "eval" / "category_chat.jsonl"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def baseline(settings: TrainSettings) -> dict[str, float]:
    task = get_task("category")
    data = load_rows(settings.data, task)
    splits, _ = make_split(data, settings.split_ratios, settings.seed, settings.max_samples)
    started = time.time()
    y = {name: np.array([task.label2id[r.label] for r in rows]) for name, rows in splits.items()}
    model = NgramModel.fit([r.text for r in splits["train"]], y["train"], len(task.labels), seed=settings.seed)
    predicted = model.decision([r.text for r in splits["test"]]).argmax(1)
    return {
        "accuracy": float(accuracy_score(y["test"], predicted)),
        "macro_f1": float(f1_score(y["test"], predicted, average="macro")),
        "seconds": round(time.time() - started, 1),
    }


def main() -> None:
    own, train_flags, settings = train_settings(__doc__, "category", str(DATA_DIR / "mmlu-pro" / "test.jsonl"),
                                                "models/bench-category")

    base = baseline(settings)
    print(f"baseline TF-IDF + LinearSVC: {base}")
    started = time.time()
    out = train(settings)
    wall = time.time() - started
    # Evaluation-only data sets, stored in the artifact and its card (never trained or tuned on).
    extra = {"ood": (str(DATA_DIR / "mmlu-ood" / "mmlu_test_heldout_from_mmlu_pro.csv"), {}),
             "chat": (str(CHAT), {"text": "text", "id": "id"})}
    for name, (path, fields) in extra.items():
        if Path(path).is_file():
            save_evaluation(out, name, evaluate_artifact(out, path, "all", fields))
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "training_config.json").read_text())
    test = metrics["test"]
    plain = metrics["paths"]["transformers"]["test"]
    result = {
        **run_summary(own.label, train_flags, wall, config),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {__import__('torch').get_num_threads()}",
        "train_steps": config["train_steps"],
        "steps_per_second": round(config["train_steps"] / wall, 3),
        "epoch_history": config["epoch_history"],
        "ngram_blend": config["ngram_blend"],
        # The answer given (fallback below the threshold) and the top label, per consumer path.
        "test_accuracy": test["accuracy"],
        "test_macro_f1": test["macro_f1"],
        "test_top_label_accuracy": test["top_label"]["accuracy"],
        "test_abstention": test["abstention"],
        "test_plain_transformers": {"accuracy": plain["accuracy"], "top_label_accuracy": plain["top_label"]["accuracy"],
                                    "abstention": plain["abstention"], "ece": plain["ece"]},
        "test_encoder_only_accuracy": test.get("encoder_only_accuracy"),
        "validation_accuracy": metrics["validation"]["accuracy"],
        "test_ece": test["ece"],
        "test_ece_uncalibrated": test["ece_uncalibrated"],
        "ood_accuracy": metrics.get("ood", {}).get("accuracy"),
        "ood_macro_f1": metrics.get("ood", {}).get("macro_f1"),
        "chat_accuracy": metrics.get("chat", {}).get("accuracy"),
        "chat_top_label_accuracy": metrics.get("chat", {}).get("top_label", {}).get("accuracy"),
        "chat_macro_f1": metrics.get("chat", {}).get("macro_f1"),
        "chat_answered": metrics.get("chat", {}).get("abstention", {}).get("coverage"),
        "baseline_tfidf_linearsvc": base,
        "settings": config["settings"],
    }
    record("train_category", result,
           ["date", "configuration", "wall (s)", "steps/s", "best epoch", "test acc (answer / top label)",
            "test macro-F1", "answered", "plain transformers acc (answer / top label)", "TF-IDF+SVC acc", "test ECE",
            "OOD macro-F1", "chat acc (answer / top label)"],
           [result["date"][:10], f"{own.label} {' '.join(train_flags)}", str(result["wall_seconds"]),
            str(result["steps_per_second"]), str(result["best_epoch"]),
            f"{test['accuracy']:.4f} / {test['top_label']['accuracy']:.4f}", f"{test['macro_f1']:.4f}",
            f"{test['abstention']['coverage']:.3f}", f"{plain['accuracy']:.4f} / {plain['top_label']['accuracy']:.4f}",
            f"{base['accuracy']:.4f}", f"{test['ece']:.4f}", _fmt(result["ood_macro_f1"]),
            f"{_fmt(result['chat_accuracy'])} / {_fmt(result['chat_top_label_accuracy'])}"])
    print(json.dumps({k: v for k, v in result.items() if k not in ("settings", "epoch_history")}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
