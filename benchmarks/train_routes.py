"""A router team's own routes from tens of examples: the example task, trained with the defaults,
then served and scored over HTTP on requests written separately.

Trains `examples/routes/routes.yaml` on `examples/routes/train.jsonl` (25 hand-written requests
for each of 6 routes), starts `routeclf serve --model routes=OUT` in its own process, and sends it
`eval/routes_eval.jsonl` (240 requests written apart from the training text, never used to choose
anything), one by one and in batches. Baselines on the same rows: TF-IDF + linear SVM, and a
logistic regression on frozen MiniLM sentence embeddings. Writes `benchmarks/results/train_routes.json`
and appends a row to `train_routes.md`.

    python benchmarks/train_routes.py [--label NAME] [-- any routeclf train flag]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from common import record, run_summary, train_settings
from routeclf.data.sources import Fields, load_rows
from routeclf.evaluation.evaluate import evaluate_artifact, save_evaluation
from routeclf.serving.e2e import run_e2e, start_server
from routeclf.tasks import resolve_task
from routeclf.training.trainer import train

REPO = Path(__file__).resolve().parents[1]
TASK = REPO / "examples" / "routes" / "routes.yaml"
TRAIN = REPO / "examples" / "routes" / "train.jsonl"
EVAL = REPO / "eval" / "routes_eval.jsonl"


def baselines(train_file: Path, eval_file: Path) -> dict[str, float]:
    """Accuracy on the evaluation set of two models trained on the same rows."""
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    from routeclf.training.models import resolve_base
    from routeclf.training.ngram import NgramModel

    task = resolve_task(str(TASK))
    fields = Fields.for_task(task)
    train_rows = load_rows(str(train_file), task, fields).rows
    eval_rows = load_rows(str(eval_file), task, fields, require_all_labels=False).rows
    y_train = np.array([task.label2id[r.label] for r in train_rows])
    y_eval = np.array([task.label2id[r.label] for r in eval_rows])
    ngram = NgramModel.fit([r.text for r in train_rows], y_train, len(task.labels))
    embedder = SentenceTransformer(resolve_base("minilm").path, device="cpu")
    embed = lambda rows: embedder.encode([r.text for r in rows], normalize_embeddings=True)  # noqa: E731
    frozen = LogisticRegression(C=10, max_iter=2000).fit(embed(train_rows), y_train)
    return {
        "tfidf_linearsvc": float((ngram.decision([r.text for r in eval_rows]).argmax(1) == y_eval).mean()),
        "frozen_minilm_logistic": float((frozen.predict(embed(eval_rows)) == y_eval).mean()),
    }


def main() -> None:
    own, train_flags, settings = train_settings(__doc__, str(TASK), str(TRAIN), "models/bench-routes")
    started = time.time()
    out = train(settings)
    wall = time.time() - started
    save_evaluation(out, "routes_eval", evaluate_artifact(out, str(EVAL), "all"))

    port = 18000 + int(time.time()) % 1000
    server = start_server(["--model", f"routes={out}"], port)
    try:
        http = run_e2e(f"http://127.0.0.1:{port}", str(EVAL), "routes")
    finally:
        server.terminate()
        server.wait(timeout=30)
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "training_config.json").read_text())
    cv = metrics["cross_validation"]
    evaluation = metrics["routes_eval"]
    base = baselines(TRAIN, EVAL)
    result = {
        **run_summary(own.label, train_flags, wall, config),
        "train_steps": config["train_steps"],
        "schedule": config["schedule"],
        "cv_accuracy_mean": cv["accuracy_mean"],
        "cv_accuracy_std": cv["accuracy_std"],
        "cv_pooled": cv["pooled"],
        "test_accuracy": metrics["test"]["accuracy"],
        "http_answer_accuracy": http["accuracy_single"],
        "http_answer_accuracy_batch": http["accuracy_batch"],
        "http_top_label_accuracy": http["top_label_accuracy"],
        "http_per_route_answer_accuracy": http["per_class_accuracy"],
        "http_errors": http["errors"],
        "eval_macro_f1": evaluation["macro_f1"],
        "eval_coverage": evaluation["abstention"]["coverage"],
        "eval_by_length": evaluation["slices"]["length"],
        "baselines_eval_accuracy": base,
        "threshold": json.loads((out / "calibration.json").read_text())["paths"]["routeclf"]["threshold"],
        "settings": config["settings"],
    }
    record("train_routes", result,
           ["date", "configuration", "wall (s)", "steps", "CV acc (mean +- sd)", "test acc (24 rows)",
            "HTTP answer acc", "HTTP top-label acc", "answered share", "eval macro-F1", "TF-IDF+SVC", "frozen MiniLM+LR"],
           [result["date"][:10], f"{own.label} {' '.join(train_flags)}".strip(), str(result["wall_seconds"]),
            str(result["train_steps"]), f"{cv['accuracy_mean']:.3f} +- {cv['accuracy_std']:.3f}",
            f"{result['test_accuracy']:.3f}", f"{http['accuracy_single']:.3f}", f"{http['top_label_accuracy']:.3f}",
            f"{result['eval_coverage']:.3f}", f"{evaluation['macro_f1']:.3f}", f"{base['tfidf_linearsvc']:.3f}",
            f"{base['frozen_minilm_logistic']:.3f}"])
    print(json.dumps({k: v for k, v in result.items() if k not in ("settings",)}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
