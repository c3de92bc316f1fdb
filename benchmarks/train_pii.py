"""Train the default PII configuration from the shared data folder and record the result.

Reports entity-level precision/recall/F1 (exact character span and type) per type, micro and
macro, on the template-held-out presidio test split, and on the WNUT-17 test set (real user text)
for PERSON, LOCATION and ORGANIZATION, in one run. Writes `benchmarks/results/train_pii.json` and
appends a row to `train_pii.md`.

`--seen-templates` is a diagnostic, not a result: the same presidio sentences without their
templates, so the split groups only identical texts and a template's sentences sit in every
split. The gap between its test F1 and the default's is what generalising to unseen sentence
shapes costs.

    python benchmarks/train_pii.py [--data-dir ../shared/data] [--seen-templates] [-- any `routeclf train` flags]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from common import DATA_DIR, record, run_summary, train_settings

from routeclf.artifact.validate import MIN_TYPE_SUPPORT
from routeclf.data.sources import read_records
from routeclf.evaluation.entities import format_entity_table, score_entity_rows
from routeclf.inference.entities import EntityPredictor
from routeclf.tasks import load_task
from routeclf.tasks.pii import PRESIDIO_FILES
from routeclf.tasks.spans import load_records, read_conll
from routeclf.training.trainer import train

WNUT_TEST = Path("pii/wnut17/emerging.test.annotated")
WNUT_TYPES = ("LOCATION", "ORGANIZATION", "PERSON")


def without_templates(data_dir: Path, path: Path) -> str:
    """The presidio sentences as one file with no `masked` template column."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for relative in PRESIDIO_FILES:
            for r in read_records(str(data_dir / relative)):
                handle.write(json.dumps({"text": r["text"], "spans": r["spans"]}) + "\n")
    return str(path)


def main() -> None:
    def own_flags(parser) -> None:
        parser.add_argument("--seen-templates", action="store_true",
                            help="diagnostic: split by sentence, so test templates are also trained on")

    own, flags, settings = train_settings(__doc__, "pii", str(DATA_DIR), "models/bench-pii", own_flags)
    if own.seen_templates:
        settings.data = without_templates(Path(own.data), Path(f"{settings.out}.sentences.jsonl"))
        flags = ["--seen-templates", *flags]

    started = time.time()
    out = train(settings)
    wall = time.time() - started
    test = json.loads((out / "metrics.json").read_text())["test"]
    config = json.loads((out / "training_config.json").read_text())
    task = load_task(out)
    wnut_path = Path(own.data) / WNUT_TEST
    wnut = score_entity_rows(EntityPredictor(out), load_records(read_conll(wnut_path), str(wnut_path), task).rows,
                             task, WNUT_TYPES)
    judged = {k: v["f1"] for k, v in test["per_class"].items() if v["support"] >= MIN_TYPE_SUPPORT}
    result = {
        **run_summary(own.label, flags, wall, config),
        "test": {k: v for k, v in test.items() if k not in ("reliability_bins", "confusion_matrix")},
        "worst_type_with_20_entities": min(judged.items(), key=lambda kv: kv[1]) if judged else None,
        "wnut17_test": {k: v for k, v in wnut.items() if k not in ("reliability_bins", "confusion_matrix")},
        "settings": config["settings"],
    }
    worst = result["worst_type_with_20_entities"]
    record("train_pii", result,
           ["date", "configuration", "wall (s)", "best epoch", "test micro P / R / F1", "test macro-F1",
            "worst type (>= 20 entities)", "WNUT-17 PER/LOC/ORG micro-F1", "test boundary-relaxed F1"],
           [result["date"][:10], f"{own.label} {' '.join(flags)}", str(result["wall_seconds"]), str(result["best_epoch"]),
            f"{test['micro_precision']:.4f} / {test['micro_recall']:.4f} / {test['micro_f1']:.4f}", f"{test['macro_f1']:.4f}",
            f"{worst[0]} {worst[1]:.4f}" if worst else "-", f"{wnut['micro_f1']:.4f}", f"{test['overlap_f1']:.4f}"])
    print("presidio test (template held out):\n" + format_entity_table(test))
    print("\nWNUT-17 test, PERSON / LOCATION / ORGANIZATION:\n" + format_entity_table(wnut))


if __name__ == "__main__":
    main()
