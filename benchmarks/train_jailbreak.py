"""Train the default jailbreak configuration from the shared data folder and record the result.

On the held-out test split it reports the detector metrics (recall at the saved threshold, false-
positive rate, ROC-AUC, PR-AUC, recall at 1% and 5% FPR, by length band and by source), plus the
false-positive rate on MMLU-Pro questions that are in no split at all (unseen benign questions),
and the recall on test attacks buried after over 3,000 characters of benign test questions.
In the same run and on the same split it scores a TF-IDF + logistic-regression baseline with its
threshold also chosen on validation for the same target FPR. Writes
`benchmarks/results/train_jailbreak.json` and appends a row to `train_jailbreak.md`.

    python benchmarks/train_jailbreak.py [--data-dir ../shared/data] [-- any `routeclf train` flags]
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from common import DATA_DIR, record, run_summary, train_settings
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from routeclf.data.sources import load_rows, normalise_text
from routeclf.data.split import make_split
from routeclf.evaluation.calibration import threshold_for_fpr
from routeclf.evaluation.metrics import binary_metrics
from routeclf.inference.predictor import Predictor
from routeclf.settings import TrainSettings
from routeclf.tasks import get_task
from routeclf.training.ngram import VECTORIZERS
from routeclf.training.trainer import train

UNSEEN_QUESTIONS = 2000


def baseline(settings: TrainSettings) -> dict:
    task = get_task("jailbreak")
    splits, _ = make_split(load_rows(settings.data, task), settings.split_ratios, settings.seed, settings.max_samples)
    started = time.time()
    vectorizers = [TfidfVectorizer(**params) for params in VECTORIZERS.values()]
    features = {name: None for name in splits}
    features["train"] = sp.hstack([v.fit_transform([r.text for r in splits["train"]]) for v in vectorizers]).tocsr()
    for name in ("validation", "test"):
        features[name] = sp.hstack([v.transform([r.text for r in splits[name]]) for v in vectorizers]).tocsr()
    y = {name: np.array([r.label == "jailbreak" for r in rows]) for name, rows in splits.items()}
    model = LogisticRegression(C=10, max_iter=2000).fit(features["train"], y["train"])
    risk = {name: model.predict_proba(features[name])[:, 1] for name in ("validation", "test")}
    threshold = threshold_for_fpr(risk["validation"], y["validation"], settings.target_fpr)
    result = binary_metrics(y["test"], risk["test"], risk["test"] >= threshold, threshold)
    result.pop("roc_curve", None)
    return result | {"seconds": round(time.time() - started, 1)}


def unseen_false_positive_rate(model_dir: Path, data_dir: Path, used: set[str]) -> dict:
    """Benign MMLU-Pro questions that are in no split: how many the detector flags."""
    questions = [json.loads(line)["question"] for line in (data_dir / "mmlu-pro" / "test.jsonl").read_text().split("\n") if line.strip()]
    unseen = sorted({q for q in questions if normalise_text(q) not in used})
    sample = random.Random(7).sample(unseen, min(UNSEEN_QUESTIONS, len(unseen)))
    predictions = Predictor(model_dir).predict(sample)
    flagged = sum(p["label"] == "jailbreak" for p in predictions)
    return {"n": len(sample), "flagged": flagged, "false_positive_rate": flagged / len(sample)}


def buried_attacks(model_dir: Path, splits: dict) -> dict:
    """Each test attack under 1,000 characters appended to over 3,000 characters of benign test
    questions: the share still flagged, and the share of the benign preambles alone flagged."""
    benign = [r.text for r in splits["test"] if r.label == "benign" and r.source == "mmlu-pro"]
    attacks = [r.text for r in splits["test"] if r.label == "jailbreak" and len(r.text) < 1000]
    rng = random.Random(11)
    preambles = []
    for _ in attacks:
        parts: list[str] = []
        while sum(len(p) + 1 for p in parts) < 3000:
            parts.append(rng.choice(benign))
        preambles.append("\n".join(parts))
    predictor = Predictor(model_dir)
    flagged = [p["label"] == "jailbreak" for p in predictor.predict([f"{p}\n{a}" for p, a in zip(preambles, attacks)])]
    false = [p["label"] == "jailbreak" for p in predictor.predict(preambles)]
    return {"n": len(attacks), "recall": float(np.mean(flagged)), "preamble_false_positive_rate": float(np.mean(false))}


def main() -> None:
    own, flags, settings = train_settings(__doc__, "jailbreak", str(DATA_DIR), "models/bench-jailbreak")

    base = baseline(settings)
    print("baseline TF-IDF + logistic regression:", json.dumps(base))
    started = time.time()
    out = train(settings)
    wall = time.time() - started
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "training_config.json").read_text())
    test = metrics["test"]
    binary = {k: v for k, v in test["binary"].items() if k != "roc_curve"}
    used = {normalise_text(r.text) for r in load_rows(own.data, get_task("jailbreak")).rows}
    result = {
        **run_summary(own.label, flags, wall, config),
        "test": binary,
        "test_plain_transformers": {k: v for k, v in metrics["paths"]["transformers"]["test"]["binary"].items()
                                    if k != "roc_curve"},
        "test_by_length": test["slices"]["length"],
        "test_by_source": test["slices"]["source"],
        "unseen_mmlu_pro": unseen_false_positive_rate(out, Path(own.data), used),
        "buried_attacks": buried_attacks(out, make_split(load_rows(settings.data, get_task("jailbreak")),
                                                         settings.split_ratios, settings.seed, settings.max_samples)[0]),
        "baseline_tfidf_logreg": base,
        "settings": config["settings"],
    }
    bands = test["slices"]["length"]

    def recall(band: str) -> str:
        value = bands.get(band, {}).get("recall")
        return "-" if value is None else f"{value:.4f}"

    record("train_jailbreak", result,
           ["date", "configuration", "wall (s)", "recall @thr", "FPR @thr", "ROC-AUC", "recall @1% FPR", "recall <200",
            "recall >1000", "FPR unseen MMLU-Pro", "recall buried after 3,000 chars", "baseline recall @thr / FPR"],
           [result["date"][:10], f"{own.label} {' '.join(flags)}", str(result["wall_seconds"]), f"{binary['recall']:.4f}",
            f"{binary['false_positive_rate']:.4f}", f"{binary['roc_auc']:.4f}", f"{binary['recall_at_fpr_0.01']:.4f}",
            recall("<200 chars"), recall(">1000 chars"), f"{result['unseen_mmlu_pro']['false_positive_rate']:.4f}",
            f"{result['buried_attacks']['recall']:.4f}", f"{base['recall']:.4f} / {base['false_positive_rate']:.4f}"])
    print(json.dumps({k: v for k, v in result.items() if k not in ("settings", "test_by_source")}, indent=2))


if __name__ == "__main__":
    main()
