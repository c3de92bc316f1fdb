"""PII detectors side by side, with the project's entity metrics (exact span and type; boundary-
relaxed beside it): the token model alone, Presidio (its recognizers and the offline spaCy
pipeline, as shipped and with spaCy's ORG kept), and the fused detector the service uses.

Sets: the template-held-out test split of a trained PII model (its `split.json`), the WNUT-17
test set (PERSON, LOCATION, ORGANIZATION only), and the hand-written chat messages
(`eval/pii_messages.jsonl`, never trained or tuned on). Presidio's score threshold is chosen on
the model's validation split (micro-F1), like every other setting. Writes
`benchmarks/results/pii_detectors.json` and `.md`.

    python benchmarks/pii_detectors.py --model models/bench-pii [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

from common import DATA_DIR, RESULTS

from routeclf.artifact.writer import read_json
from routeclf.data.sources import Fields, load_rows, read_records
from routeclf.data.split import apply_manifest
from routeclf.evaluation.entities import entity_metrics
from routeclf.inference.entities import EntityPredictor
from routeclf.inference.hybrid import FusionRule, fuse
from routeclf.inference.recognizers import presidio_alone, recognize
from routeclf.tasks import load_task
from routeclf.tasks.spans import load_records, read_conll

EVAL = Path(__file__).resolve().parents[1] / "eval"
WNUT_TEST = Path("pii/wnut17/emerging.test.annotated")
WNUT_TYPES = ("LOCATION", "ORGANIZATION", "PERSON")
THRESHOLDS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85)


def score(rows, found, types) -> dict:
    gold = [{s for s in r.spans if s[2] in types} for r in rows]
    predicted = [{(e.start, e.end, e.type) for e in entities if e.type in types} for entities in found]
    m = entity_metrics(gold, predicted, types)
    return {k: m[k] for k in ("n", "n_entities", "micro_precision", "micro_recall", "micro_f1", "macro_f1",
                              "overlap_f1")} | {"per_type_f1": {k: round(v["f1"], 4) for k, v in m["per_class"].items()
                                                                if v["support"]}}


def saved_calibration(directory: Path) -> dict:
    return read_json(directory / "calibration.json")["paths"]["routeclf"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/bench-pii"))
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args()
    task = load_task(args.model)
    config = read_json(args.model / "training_config.json")
    splits = apply_manifest(load_rows(str(args.data_dir), task, Fields(**config["fields"])),
                            read_json(args.model / "split.json"))
    wnut_path = args.data_dir / WNUT_TEST
    sets = {
        "validation (chooses the settings)": (splits["validation"], task.entity_types),
        "test (held-out templates)": (splits["test"], task.entity_types),
        "WNUT-17 test": (load_records(read_conll(wnut_path), str(wnut_path), task).rows, WNUT_TYPES),
        "chat messages (eval/)": (load_records(read_records(str(EVAL / "pii_messages.jsonl")),
                                               "pii_messages", task).rows, task.entity_types),
    }
    model = EntityPredictor(args.model)
    readings = {}
    for set_name, (rows, _) in sets.items():
        texts = [r.text for r in rows]
        started = time.perf_counter()
        found = model.entities(texts, fused=False)  # the model alone; fused below
        model_ms = (time.perf_counter() - started) * 1000 / len(texts)
        started = time.perf_counter()
        findings = [recognize(t) for t in texts]
        presidio_ms = (time.perf_counter() - started) * 1000 / len(texts)
        readings[set_name] = (found, findings, model_ms, presidio_ms)

    # Every setting is chosen on the validation split.
    rows, types = sets["validation (chooses the settings)"]
    found, findings, *_ = readings["validation (chooses the settings)"]
    chosen = {organizations: max(THRESHOLDS, key=lambda t: score(
        rows, [presidio_alone(f, t, organizations) for f in findings], types)["micro_f1"])
        for organizations in (False, True)}
    # The fused rows use the rule the model was trained with: the answer the service gives.
    rule = model.fusion or FusionRule()
    trace = saved_calibration(args.model).get("fusion_validation_micro_f1", {})
    detectors = {
        "token model": lambda m, f: m,
        f"Presidio as shipped (threshold {chosen[False]})": lambda m, f: presidio_alone(f, chosen[False], False),
        f"Presidio with spaCy ORG (threshold {chosen[True]})": lambda m, f: presidio_alone(f, chosen[True], True),
        "fused: model + Presidio patterns": lambda m, f: fuse(m, f, FusionRule(pattern_threshold=rule.pattern_threshold)),
        f"fused, the model's rule (+ spaCy {', '.join(rule.ner_types) or 'none'}; the answer given)":
            lambda m, f: fuse(m, f, rule),
    }
    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": str(args.model),
               "presidio_thresholds_chosen_on_validation": {"as shipped": chosen[False], "with ORG": chosen[True]},
               "fusion_rule": rule.to_json(), "fusion_choice_on_validation": trace, "sets": {}}
    for set_name, (rows, types) in sets.items():
        found, findings, model_ms, presidio_ms = readings[set_name]
        results["sets"][set_name] = {"ms_per_text": {"token model": round(model_ms, 2), "presidio": round(presidio_ms, 2)}}
        for name, detect in detectors.items():
            predicted = [detect(m, f) for m, f in zip(found, findings)]
            results["sets"][set_name][name] = score(rows, predicted, types)
            print(set_name, name, json.dumps(results["sets"][set_name][name]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pii_detectors.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| set | detector | entities | micro P / R / F1 | boundary-relaxed F1 | macro-F1 | weakest types (F1) |",
             "|---|---|---|---|---|---|---|"]
    for set_name, by_detector in results["sets"].items():
        for name, m in by_detector.items():
            if name == "ms_per_text":
                continue
            weakest = ", ".join(f"{k} {v:.2f}" for k, v in sorted(m["per_type_f1"].items(), key=lambda kv: kv[1])[:3])
            lines.append(f"| {set_name} | {name} | {m['n_entities']} | {m['micro_precision']:.4f} / "
                         f"{m['micro_recall']:.4f} / {m['micro_f1']:.4f} | {m['overlap_f1']:.4f} | {m['macro_f1']:.4f} | "
                         f"{weakest} |")
    timing = "; ".join(f"{k}: model {v['ms_per_text']['token model']} ms/text, Presidio {v['ms_per_text']['presidio']}"
                       for k, v in results["sets"].items())
    (RESULTS / "pii_detectors.md").write_text(
        f"Measured {results['date']}, model {args.model}. Presidio thresholds and the fusion rule chosen on the "
        f"validation split: {json.dumps(results['fusion_rule'])}.\n\n" + "\n".join(lines) + f"\n\nTime (in-process, "
        f"this CPU): {timing}.\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
