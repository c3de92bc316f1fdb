"""Train the default category configuration on the full local MMLU-Pro file and record the result.

Besides the test split (and its typo-perturbed copy, made in training), it evaluates the model on
traffic-like sets it never trained or tuned on: the MMLU held-out set (mmlu-ood), the hand-written
chat requests (eval/category_chat.jsonl) and conversations (eval/category_conversations.jsonl),
for the routeclf path (serve, predict) and the plain transformers path, and stores them in the
artifact (metrics.json, model card).

Writes `benchmarks/results/train_category.json` (`train_category-LABEL.json` for `--label LABEL`)
and appends a row to `benchmarks/results/train_category.md`. On the same split, in the same run,
it also scores a TF-IDF (word 1-2 + char 2-5 grams) + LinearSVC baseline, the number the encoder
has to beat.

    python benchmarks/train_category.py [--data FILE] [--out DIR] [--label NAME] [-- any `routeclf train` flags]
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

EVAL = Path(__file__).resolve().parents[1] / "eval"
PATHS = ("routeclf", "transformers")


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def sets_summary(metrics: dict) -> dict[str, dict]:
    """Per evaluation set: the answer's accuracy and macro-F1, the top label's accuracy, the share
    answered, and the weakest category's recall."""
    summary = {}
    for name in ("test", "test_typos", "ood", "chat", "conversations"):
        m = metrics.get(name)
        if not m:
            continue
        recalls = {label: r["recall"] for label, r in m["per_class"].items() if r["support"]}
        worst = min(recalls, key=recalls.get)
        summary[name] = {"n": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                         "top_label_accuracy": m["top_label"]["accuracy"],
                         "answered": m.get("abstention", {}).get("coverage"),
                         "worst_category": f"{worst} {recalls[worst]:.2f}",
                         "recall_by_category": recalls,
                         **({"conversation": m["conversation"]} if "conversation" in m else {})}
    return summary


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
             "chat": (str(EVAL / "category_chat.jsonl"), {"text": "text", "id": "id"}),
             "conversations": (str(EVAL / "category_conversations.jsonl"), {})}
    for name, (path, fields) in extra.items():
        if Path(path).is_file():
            for consumer in PATHS:
                save_evaluation(out, name, evaluate_artifact(out, path, "all", fields, path=consumer), consumer)
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "training_config.json").read_text())
    by_path = {"routeclf": metrics, "transformers": metrics["paths"]["transformers"]}
    figures = {consumer: sets_summary(m) for consumer, m in by_path.items()}
    test, plain = metrics["test"], by_path["transformers"]["test"]
    result = {
        **run_summary(own.label, train_flags, wall, config),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {__import__('torch').get_num_threads()}",
        "train_steps": config["train_steps"],
        "steps_per_second": round(config["train_steps"] / wall, 3),
        "epoch_history": config["epoch_history"],
        "ngram_blend": config["ngram_blend"],
        "distillation": config.get("distillation"),
        "augmented_train_rows": config.get("augmented_train_rows"),
        # The answer given (fallback below the threshold) on every set, per consumer path.
        "sets": figures,
        "test_abstention": test["abstention"],
        "test_plain_transformers_abstention": plain["abstention"],
        "test_encoder_only_accuracy": test.get("encoder_only_accuracy"),
        "validation_accuracy": metrics["validation"]["accuracy"],
        "test_ece": test["ece"],
        "test_ece_uncalibrated": test["ece_uncalibrated"],
        "baseline_tfidf_linearsvc": base,
        "settings": config["settings"],
    }
    served, plain_sets = figures["routeclf"], figures["transformers"]

    def both(name: str, key: str = "accuracy") -> str:
        return f"{_fmt(served.get(name, {}).get(key))} / {_fmt(plain_sets.get(name, {}).get(key))}"

    record("train_category" + ("" if own.label == "default" else f"-{own.label}"), result,
           ["date", "configuration", "wall (s)", "test acc (serve / plain)", "test top label (serve / plain)",
            "typos acc (serve / plain)", "OOD macro-F1 (serve / plain)", "chat acc (serve / plain)",
            "chat worst category (serve)", "conversations acc (serve / plain)", "test ECE (serve)"],
           [result["date"][:10], f"{own.label} {' '.join(train_flags)}", str(result["wall_seconds"]),
            both("test"), both("test", "top_label_accuracy"), both("test_typos"), both("ood", "macro_f1"),
            both("chat"), f"{served.get('chat', {}).get('worst_category', '-')}", both("conversations"),
            f"{test['ece']:.4f}"], table="train_category")
    print(json.dumps({k: v for k, v in result.items() if k not in ("settings", "epoch_history")}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
