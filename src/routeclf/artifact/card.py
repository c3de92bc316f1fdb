"""The model card (README.md) rendered into every artifact."""

from __future__ import annotations

from pathlib import Path
from string import Template
from typing import Any

from routeclf.artifact.writer import read_json
from routeclf.tasks import Task

SEQUENCE_RESULTS = Template("""## Results

Every figure is of the answer a router acts on: the fallback label when the model abstains, the
detector's verdict at its threshold. The top label's accuracy, without the fallback rule, is
beside it.

| data | n | accuracy (answer) | macro-F1 | weighted-F1 | top-label accuracy | loss | ECE (calibrated) | ECE before |
|---|---|---|---|---|---|---|---|---|
$summary

`validation` chose the checkpoint, the blend weight, the temperatures and the thresholds; `test`
was held out from all of it.$extra_note

## Every way to use this model

Each consumer path has its own scores, so each has its own temperature and threshold, fitted on
validation, and its own test figures.

$paths

## Calibration and abstaining

Temperature $temperature, fitted on validation. $threshold_rule

$operating$detector

![reliability diagram](reliability_diagram.png)$coverage_plot

## Slices (test)

$slices

Per class (test, the answer given):

| label | precision | recall | F1 | support |
|---|---|---|---|---|
$per_class

![confusion matrix](confusion_matrix.png)
$across
""")

# How each consumer path reaches the model.
PATH_USE = {
    "routeclf": "`routeclf serve` / `predict` (torch)",
    "onnx": "`routeclf serve --backend onnx`",
    "onnx-int8": "`routeclf serve --backend onnx-int8`",
    "transformers": "plain transformers / the vLLM semantic router: `model.safetensors` alone, truncation at 512 tokens",
}


def _path_use(name: str, blended: bool) -> str:
    return PATH_USE[name] + (", with the n-gram blend" if blended and name != "transformers" else "")


TOKEN_RESULTS = Template("""## Results

Entities count only with exact character span and type. The boundary-relaxed F1 beside it counts
an entity that overlaps one of the same type (enough to mask it); the gap between the two is
boundary errors. Word-level ECE is over each word's tag.

| data | texts | entities | micro precision | micro recall | micro-F1 | macro-F1 | boundary-relaxed F1 | word ECE (calibrated) | before |
|---|---|---|---|---|---|---|---|---|---|
$summary

`validation` chose the checkpoint, the temperature and the threshold; `test` was held out from
all of it (its templates are in no other split).$extra_note
$parts$paths
## Calibration

Temperature $temperature, fitted on validation words. Entities whose mean word confidence is
below $threshold are dropped (the threshold with the best validation micro-F1).

![reliability diagram](reliability_diagram.png)

## Entity types (test)

| type | precision | recall | F1 | support | predicted |
|---|---|---|---|---|---|
$per_class

Source types mapped to these (`source_type_map.json`; `None` is left unlabelled): $type_map

## Slices (test)

$slices

![type confusion, word level](confusion_matrix.png)

""")

CARD = Template("""---
library_name: transformers
pipeline_tag: $pipeline_tag
base_model: $base
license: apache-2.0
tags: [routeclf, llm-router, $task]
---

# routeclf $task $kind

$purpose

The task (labels, decision rule, fields, mapping layout, window settings) is saved in `task.json`:
`routeclf evaluate`, `validate`, `export-onnx` and `serve --model $task=PATH` read it from this
directory, with no code of the task needed.

$trust

## Data and split

- Data: `$data` (sha256 of the loaded rows `$sha256`, $n_rows rows$sampled)
- Split: $split_rule, ratios $ratios, seed $seed. Ids of every split are in `split.json`.
- Rows: $split_sizes
- Leakage audit: 0 shared ids, 0 exact and 0 normalised duplicate texts across splits;
  $near near-duplicate pairs (TF-IDF cosine >= $near_threshold) reported in `split.json`.

Checkpoints were chosen on the validation split; the test split was read once, for the figures below.

## Training

- Base: `$base` (sha256 of weights `$base_sha`)
- Method: $method; epochs up to $epochs (best epoch $best_epoch, early stopping on validation $selection);
  learning rate $lr, batch size $batch_size, max length $max_length tokens$lora
- $ngram$augmented
- Wall time: $seconds s

$results
## How to load

```python
from transformers import $auto_class, AutoTokenizer
model = $auto_class.from_pretrained("PATH")
tokenizer = AutoTokenizer.from_pretrained("PATH")
```

Plain transformers loads the encoder alone (no peft needed; LoRA weights are merged). $predict_note The vLLM semantic router reads `label_mapping.json`$mapping_note.

Versions: $versions
""")


def _sections(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: m for name, m in metrics.items() if isinstance(m, dict) and "accuracy" in m and "n" in m}


def _summary_rows(metrics: dict[str, Any]) -> str:
    return "\n".join(
        f"| {name} | {m['n']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['weighted_f1']:.4f} | "
        f"{m['top_label']['accuracy']:.4f} | {m['loss']:.4f} | {m.get('ece', float('nan')):.4f} | "
        f"{m.get('ece_uncalibrated', float('nan')):.4f} |"
        for name, m in _sections(metrics).items()
    )


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _paths_table(metrics: dict[str, Any], calibration: dict[str, Any], task: Task, blended: bool) -> str:
    tests = {"routeclf": metrics["test"]} | {name: m["test"] for name, m in metrics.get("paths", {}).items() if "test" in m}
    detector = task.kind == "detector"
    head = ("| path | how | temperature | threshold | accuracy (answer) | macro-F1 | "
            + ("recall | false-positive rate |" if detector else "answered | accuracy when answered |")
            + " top-label accuracy |")
    rows = [head, "|---" * (9 if not detector else 9) + "|"]
    for name, test in tests.items():
        section = calibration.get("paths", {}).get(name, {})
        if detector:
            b = test["binary"]
            point = f"{_fmt(b['recall'])} | {_fmt(b['false_positive_rate'])} |"
        else:
            a = test["abstention"]
            point = f"{a['coverage']:.3f} | {_fmt(a['answered_accuracy'])} |"
        rows.append(f"| {name} | {_path_use(name, blended)} | {_fmt(section.get('temperature'), 3)} | "
                    f"{_fmt(section.get('threshold'), 3)} | {test['accuracy']:.4f} | {test['macro_f1']:.4f} | {point} "
                    f"{test['top_label']['accuracy']:.4f} |")
    if "onnx" not in tests:
        rows.append("\nONNX paths appear here once `routeclf export-onnx` has measured them.")
    return "\n".join(rows)


def _operating_rows(metrics: dict[str, Any]) -> str:
    rows = []
    for name, m in _sections(metrics).items():
        if "abstention" in m:
            t = m["abstention"]
            rows.append(f"| {name} | {t['coverage']:.3f} | {1 - t['coverage']:.3f} | {_fmt(t['answered_accuracy'])} |")
    if not rows:
        return ""
    return ("| data | answered | sent to the fallback | accuracy when answered |\n|---|---|---|---|\n"
            + "\n".join(rows))


def _detector_rows(metrics: dict[str, Any]) -> str:
    from routeclf.evaluation.metrics import format_binary

    rows = [f"- `{name}`: {format_binary(m['binary'])}" for name, m in _sections(metrics).items() if "binary" in m]
    return ("Detector operating point (threshold on the attack probability; 95% bootstrap intervals in "
            "`metrics.json`):\n\n" + "\n".join(rows)) if rows else ""


def _slice_tables(test: dict[str, Any]) -> str:
    parts = []
    for kind, slices in test.get("slices", {}).items():
        if all("micro_f1" in v for v in slices.values()):
            head = [f"| {kind} | texts | entities | micro-F1 |", "|---|---|---|---|"]
            body = [f"| {key} | {v['n']} | {v['n_entities']} | {v['micro_f1']:.4f} |" for key, v in slices.items()]
        else:
            head = [f"| {kind} | n | accuracy | macro-F1 |", "|---|---|---|---|"]
            body = [f"| {key} | {v['n']} | {v['accuracy']:.4f} | {v['macro_f1']:.4f} |" for key, v in slices.items()]
        parts.append("\n".join([f"By {kind}:", "", *head, *body]))
    return "\n\n".join(parts)


def _across_sets(metrics: dict[str, Any]) -> str:
    """Per label and per length band, the answer's recall / accuracy on every data set the
    model was evaluated on (shown when there is more than the two splits)."""
    sections = {name: m for name, m in _sections(metrics).items() if name != "validation"}
    if len(sections) < 2:
        return ""
    names = list(sections)
    head = "| {} | " + " | ".join(names) + " |\n|---" + "|---" * len(names) + "|\n"
    labels = list(next(iter(sections.values()))["per_class"])
    by_label = "\n".join(
        f"| {label} | " + " | ".join(
            f"{m['per_class'][label]['recall']:.2f} ({m['per_class'][label]['support']})"
            if m["per_class"].get(label, {}).get("support") else "-" for m in sections.values()) + " |"
        for label in labels)
    bands = list(dict.fromkeys(band for m in sections.values() for band in m.get("slices", {}).get("length", {})))
    by_length = "\n".join(
        f"| {band} | " + " | ".join(
            f"{m['slices']['length'][band]['accuracy']:.2f} ({m['slices']['length'][band]['n']})"
            if band in m.get("slices", {}).get("length", {}) else "-" for m in sections.values()) + " |"
        for band in bands)
    return ("\n## Every data set, by label and by length\n\nRecall of the answer given per label (rows of that "
            "label):\n\n" + head.format("label") + by_label +
            ("\n\nAccuracy of the answer given per length band (rows):\n\n" + head.format("length") + by_length
             if bands else "") + "\n")


def _extra_note(sections: dict[str, dict[str, Any]]) -> str:
    others = [f"`{name}`: {m['data']['source']}" for name, m in sections.items() if "data" in m]
    return (" Other rows are evaluation-only data sets (never trained or tuned on): " + "; ".join(others)) if others else ""


def _trust_section(metrics: dict[str, Any]) -> str:
    note = metrics.get("trust")
    cv = metrics.get("cross_validation")
    if not note:
        return ""
    section = f"## How far to trust the figures\n\n{note}\n"
    if cv:
        rows = "\n".join(f"| {i + 1} | {f['n']} | {f['accuracy']:.4f} | {f['macro_f1']:.4f} |"
                         for i, f in enumerate(cv["per_fold"]))
        pooled = cv["pooled"]
        section += (f"\nCross-validation ({cv['rule']}):\n\n| fold | test rows | accuracy | macro-F1 |\n"
                    f"|---|---|---|---|\n{rows}\n\nPooled over all {pooled['n']} rows: accuracy "
                    f"{pooled['accuracy']:.4f} (95% interval {pooled['accuracy_ci95'][0]:.3f}-"
                    f"{pooled['accuracy_ci95'][1]:.3f}), macro-F1 {pooled['macro_f1']:.4f} (the answer given); "
                    f"top label {pooled['top_label_accuracy']:.4f}.\n")
    return section


def _sequence_results(metrics: dict[str, Any], calibration: dict[str, Any], task: Task, blended: bool) -> str:
    test = metrics["test"]
    return SEQUENCE_RESULTS.substitute(
        summary=_summary_rows(metrics),
        extra_note=_extra_note(_sections(metrics)),
        temperature=f"{calibration['paths']['routeclf']['temperature']:.3f}",
        paths=_paths_table(metrics, calibration, task, blended),
        coverage_plot="\n\n![coverage and accuracy](coverage_curve.png)" if task.kind == "classifier" else "",
        threshold_rule=(
            f"Threshold {calibration['paths']['routeclf']['threshold']:.3f} on the `{task.positive_label}` probability: at or above "
            f"it the answer is `{task.positive_label}`, below it `{task.fallback_label}`."
            if task.kind == "detector" else
            f"Confidence threshold {calibration['paths']['routeclf']['threshold']:.3f}: below it the answer is the fallback label "
            f"`{task.fallback_label}` (the raw top label is still reported)."
            if task.fallback_label is not None else "No fallback label: the top label is always answered."
        ),
        operating=_operating_rows(metrics),
        detector=_detector_rows(metrics),
        slices=_slice_tables(test),
        across=_across_sets(metrics),
        per_class="\n".join(
            f"| {label} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
            for label, r in test["per_class"].items()
        ),
    )


def _token_results(metrics: dict[str, Any], calibration: dict[str, Any], task: Task) -> str:
    sections = {name: m for name, m in metrics.items() if isinstance(m, dict) and "micro_f1" in m}
    test = metrics["test"]
    return TOKEN_RESULTS.substitute(
        summary="\n".join(
            f"| {name} | {m['n']} | {m['n_entities']} | {m['micro_precision']:.4f} | {m['micro_recall']:.4f} | "
            f"{m['micro_f1']:.4f} | {m['macro_f1']:.4f} | {m.get('overlap_f1', float('nan')):.4f} | "
            f"{m.get('ece', float('nan')):.4f} | {m.get('ece_uncalibrated', float('nan')):.4f} |"
            for name, m in sections.items()
        ),
        extra_note=_extra_note(sections),
        temperature=f"{calibration['paths']['routeclf']['temperature']:.3f}",
        threshold=f"{calibration['paths']['routeclf']['threshold']:.2f}",
        per_class="\n".join(
            f"| {kind} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} | {r['predicted']} |"
            for kind, r in test["per_class"].items()
        ),
        type_map=", ".join(f"{k} -> {v}" for k, v in (task.source_type_map or {}).items()),
        slices=_slice_tables(test),
        parts=_parts_table(metrics, calibration),
        paths=_token_paths_table(metrics, calibration),
    )


def _token_paths_table(metrics: dict[str, Any], calibration: dict[str, Any]) -> str:
    """Each way the tagger is served, with its own calibration and test figures (once exported)."""
    tests = {"routeclf": metrics["test"]} | {name: m["test"] for name, m in metrics.get("paths", {}).items() if "test" in m}
    if len(tests) == 1:
        return "\nONNX paths appear here once `routeclf export-onnx` has measured them.\n"
    rows = [f"| {name} | {PATH_USE[name]} | {calibration['paths'][name]['temperature']:.3f} | "
            f"{calibration['paths'][name]['threshold']:.2f} | {test['micro_f1']:.4f} | {test['overlap_f1']:.4f} |"
            for name, test in tests.items()]
    return ("\nEach way the detector is served, calibrated on validation on its own (test):\n\n"
            "| path | how | temperature | threshold | micro-F1 | boundary-relaxed F1 |\n|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n")


def _parts_table(metrics: dict[str, Any], calibration: dict[str, Any]) -> str:
    """A fused detector's parts, each on its own, beside the whole (docs/pii.md)."""
    rule = calibration["paths"]["routeclf"].get("fusion")
    if not rule:
        return ""
    sections = {name: m for name, m in metrics.items() if isinstance(m, dict) and "parts" in m}
    rows = [f"| {name} | {part} | {p['micro_precision']:.4f} | {p['micro_recall']:.4f} | {p['micro_f1']:.4f} | "
            f"{p['overlap_f1']:.4f} |"
            for name, m in sections.items()
            for part, p in {"fused (the answer given)": m, **m["parts"]}.items()]
    return (f"\nThe answer is the token model fused with Presidio's recognizers: structured types from "
            f"pattern recognizers at or above {rule['pattern_threshold']}, spaCy's second opinion for "
            f"{', '.join(rule['ner_types']) or 'no type'} (chosen on validation; docs/pii.md). Each part alone:\n\n"
            "| data | detector | micro precision | micro recall | micro-F1 | boundary-relaxed F1 |\n|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n")


def _first_sentence(function: Any) -> str:
    sentence = " ".join((function.__doc__ or "").split()).split(". ")[0].rstrip(".")
    return sentence[:1].lower() + sentence[1:]


def write_model_card(directory: Path, task: Task) -> None:
    """Render README.md from the artifact's own files, so it can be re-rendered after more evaluations."""
    config = read_json(directory / "training_config.json")
    manifest = read_json(directory / "split.json")
    metrics = read_json(directory / "metrics.json")
    calibration = read_json(directory / "calibration.json")
    s = config["settings"]
    blend = config.get("ngram_blend")
    token_task = task.problem_type == "token"
    if token_task:
        purpose = (f"Finds personal data in a request for an LLM router: BIO tags over {len(task.entity_types)} "
                   f"entity types ({', '.join(f'`{t}`' for t in task.entity_types)}), returned as character spans.")
        split_rule = ("grouped by template (sentences generated from one template never sit in two splits; "
                      "without a template, by normalised text), stratified by each row's rarest entity type")
        predict_note = ("The figures above are for `routeclf predict PATH \"text\"`: words are read from their first "
                        "sub-token, long texts in overlapping windows, and words merge into character spans.")
    else:
        purpose = (f"Classifies a request into one of {len(task.labels)} labels for an LLM router: "
                   + ", ".join(f"`{label}`" for label in task.labels) + ".\n")
        if task.kind == "detector":
            purpose += (f"A detector: `{task.positive_label}` when its score reaches the threshold, "
                        f"`{task.fallback_label}` otherwise.")
        elif task.fallback_label is not None:
            purpose += f"Fallback label (answered when the model is not confident enough): `{task.fallback_label}`."
        else:
            purpose += "No fallback label: the top label is always answered."
        split_rule = ("grouped by normalised text (copies of one text never sit in two splits), stratified by "
                      "label")
        plain = calibration["paths"].get("transformers", {})
        rule = (f"flag `{task.positive_label}` when its softmax probability is at least {plain['threshold']:.3f}"
                if task.kind == "detector" else
                f"answer `{task.fallback_label}` when the top softmax probability is below {plain['threshold']:.3f}"
                if task.fallback_label is not None else "take the top label") if plain else ""
        served = ("`routeclf predict` and `serve` also apply the n-gram blend (the `routeclf` path)." if blend else
                  "`routeclf predict` and `serve` read the encoder alone too, with a fitted temperature (the "
                  "`routeclf` path).")
        predict_note = (f"{served} A plain consumer reads `softmax(logits)` with no temperature; to answer as the "
                        f"`transformers` row measures, {rule}." if plain else served)
    card = CARD.substitute(
        task=task.name,
        kind=task.kind,
        purpose=purpose,
        trust=_trust_section(metrics),
        split_rule=split_rule,
        pipeline_tag="token-classification" if token_task else "text-classification",
        auto_class="AutoModelForTokenClassification" if token_task else "AutoModelForSequenceClassification",
        predict_note=predict_note,
        selection={"loss": "loss (a small validation split)", "micro_f1": "entity micro-F1"}.get(
            config.get("schedule", {}).get("metric"), "macro-F1"),
        results=(_token_results(metrics, calibration, task) if token_task
                 else _sequence_results(metrics, calibration, task, bool(blend))),
        data=manifest["data_source"],
        sha256=manifest["data_sha256"],
        n_rows=manifest["n_rows"],
        sampled=f", of which {s['max_samples']} sampled per label share" if manifest.get("max_samples") else "",
        ratios="/".join(str(r) for r in manifest["ratios"].values()),
        seed=manifest["seed"],
        split_sizes=", ".join(f"{name} {len(ids)}" for name, ids in manifest["ids"].items()),
        near=manifest["audit"]["near_duplicates"]["count"],
        near_threshold=manifest["audit"]["near_duplicates"]["threshold"],
        base=config["base_model"]["name"],
        base_sha=config["base_model"]["sha256"],
        method="LoRA (merged into the base)" if s["method"] == "lora" else "full fine-tuning",
        epochs=config.get("schedule", {}).get("epochs", s["epochs"]),
        best_epoch=config["best_epoch"],
        lr=s["lr"],
        batch_size=s["batch_size"],
        max_length=s["max_length"],
        lora=f"; LoRA r={s['lora_r']}, alpha={s['lora_alpha']}, dropout={s['lora_dropout']}" if s["method"] == "lora" else "",
        ngram=(
            f"Blended with a word+char n-gram linear model, weight {blend['weight']} (chosen on validation)"
            if blend
            else "No n-gram blend: the encoder alone"
        ) + (
            f"; trained towards {distil['weight']:.0%} of a word+char n-gram model's out-of-fold probabilities "
            f"(the rest: the label), so `model.safetensors` alone carries what the n-gram model knows"
            if (distil := config.get("distillation")) else ""
        ),
        seconds=config["train_seconds"],
        augmented=(
            f"\n- Extra training-only rows: {config['augmented_train_rows']} "
            f"({_first_sentence(task.augment)}"
            + (f"; {config['written_train_rows']} of them {_first_sentence(task.train_only)}"
               if config.get("written_train_rows") and task.train_only else "")
            + "); the validation and test figures include none"
            + ("; validation mixtures, made the same way from validation rows, chose the n-gram weight"
               if blend and task.positive_label else "")
            + (f"; {config['written_calibration_rows']} more written rows were kept back from training and joined "
               "validation, weighted to count as much, to fit the temperatures and thresholds"
               if config.get("written_calibration_rows") else "")
            if config.get("augmented_train_rows") and task.augment else ""
        ),
        mapping_note=f" and `{task.mapping_file}`" if task.mapping_file else "",
        versions=", ".join(f"{k} {v}" for k, v in config["versions"].items()),
    )
    (directory / "README.md").write_text(card)
