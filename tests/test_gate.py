"""The gate: a small real model passes `routeclf validate`, and each check can fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from routeclf.cli import main
from routeclf.tasks import get_task

CATEGORY = get_task("category")
# What the small model (GATE_FLAGS) must reach on every consumer path, plain transformers included
# (the weakest: the encoder alone, reading up to 512 tokens, with no temperature: this briefly
# trained model is underconfident there, so its ECE is gated on its own test); it measures above these.
GATE = ["--min-accuracy", "0.5", "--min-macro-f1", "0.4"]


def validate(capsys, directory: Path, *flags: str) -> tuple[int, str]:
    code = main(["validate", str(directory), *flags])
    return code, capsys.readouterr().out


@pytest.fixture
def copy(gate_model: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(gate_model, target)
    return target


def test_good_model_passes_the_gate(gate_model: Path, capsys, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    code, out = validate(capsys, gate_model, *GATE, "--report", str(report))
    assert code == 0, out
    result = json.loads(report.read_text())
    assert result["passed"] and all(c["status"] == "pass" for c in result["checks"])
    calibration = json.loads((gate_model / "calibration.json").read_text())
    metrics = json.loads((gate_model / "metrics.json").read_text())
    assert metrics["test"]["ece"] < metrics["test"]["ece_uncalibrated"] or metrics["test"]["ece"] < 0.05
    assert calibration["fallback_label"] == "other" and set(calibration["paths"]) == {"routeclf", "transformers"}
    assert all(0 < section["threshold"] < 1 for section in calibration["paths"].values())
    # The answer given: below the threshold the fallback, counted as the answer, not as the top label.
    test = metrics["test"]
    assert 0.5 < test["abstention"]["coverage"] <= 1 and test["top_label"]["accuracy"] >= test["accuracy"] - 0.1
    assert (gate_model / "coverage_curve.png").stat().st_size > 1000
    assert set(metrics["test"]["slices"]["length"]) <= {"<=20 words", "21-60 words", ">60 words"}
    assert any(src.startswith("ori_mmlu-") for src in metrics["test"]["slices"]["source"])
    assert (gate_model / "reliability_diagram.png").stat().st_size > 1000


def test_three_category_model_fails_naming_the_missing(copy: Path, capsys) -> None:
    from transformers import AutoModelForSequenceClassification

    kept = ["law", "math", "physics"]
    model = AutoModelForSequenceClassification.from_pretrained(
        copy, num_labels=3, id2label=dict(enumerate(kept)), label2id={l: i for i, l in enumerate(kept)},
        ignore_mismatched_sizes=True,
    )
    model.save_pretrained(copy)
    # The published models of the old scripts: a plain 3-class encoder, nothing blended.
    shutil.rmtree(copy / "ngram", ignore_errors=True)
    config = json.loads((copy / "training_config.json").read_text())
    config["ngram_blend"] = None
    (copy / "training_config.json").write_text(json.dumps(config))
    mapping = {"label2id": {l: i for i, l in enumerate(kept)}, "id2label": {str(i): l for i, l in enumerate(kept)}}
    (copy / "label_mapping.json").write_text(json.dumps(mapping))
    (copy / "category_mapping.json").write_text(
        json.dumps({"category_to_idx": mapping["label2id"], "idx_to_category": mapping["id2label"]})
    )
    code, out = validate(capsys, copy)
    assert code == 1
    line = next(l for l in out.splitlines() if l.startswith("required labels present"))
    assert "FAIL" in line and "11 required labels are missing" in line
    for label in set(CATEGORY.labels) - set(kept):
        assert label in line


def test_shuffled_id2label_fails(copy: Path, capsys) -> None:
    config = json.loads((copy / "config.json").read_text())
    labels = [config["id2label"][str(i)] for i in range(14)]
    config["id2label"] = {str(i): label for i, label in enumerate(reversed(labels))}
    (copy / "config.json").write_text(json.dumps(config))
    code, out = validate(capsys, copy)
    assert code == 1
    assert "FAIL" in next(l for l in out.splitlines() if l.startswith("label mappings agree"))


def test_nan_weight_fails(copy: Path, capsys) -> None:
    tensors = load_file(str(copy / "model.safetensors"))
    tensors["classifier.weight"] = tensors["classifier.weight"].copy()
    tensors["classifier.weight"][0, 0] = np.nan
    save_file(tensors, str(copy / "model.safetensors"), metadata={"format": "pt"})
    code, out = validate(capsys, copy)
    assert code == 1
    assert "classifier.weight" in next(l for l in out.splitlines() if l.startswith("weights finite"))


def test_missing_file_fails(copy: Path, capsys) -> None:
    (copy / "calibration.json").unlink()
    code, out = validate(capsys, copy)
    assert code == 1
    assert "missing calibration.json" in next(l for l in out.splitlines() if l.startswith("artifact contract"))


def test_metrics_on_the_wrong_split_fail(copy: Path, capsys) -> None:
    split = json.loads((copy / "split.json").read_text())
    split["ids"]["test"] = split["ids"]["validation"]  # as if metrics.json came from another split
    (copy / "split.json").write_text(json.dumps(split))
    code, out = validate(capsys, copy)
    assert code == 1
    assert "does not match the saved test ids" in out


def test_changed_data_file_fails(copy: Path, mmlu_pro: Path, tmp_path: Path, capsys) -> None:
    lines = mmlu_pro.read_text().split("\n")  # not splitlines(): texts hold U+2028
    row = json.loads(lines[10])
    row["question"] += " (edited)"
    lines[10] = json.dumps(row)
    changed = tmp_path / "changed.jsonl"
    changed.write_text("\n".join(lines))
    code, out = validate(capsys, copy, "--data", str(changed))
    assert code == 1
    assert "the data changed since training" in out


def test_calibration_is_gated_on_every_path(gate_model: Path, capsys) -> None:
    metrics = json.loads((gate_model / "metrics.json").read_text())
    routeclf, plain = metrics["test"]["ece"], metrics["paths"]["transformers"]["test"]["ece"]
    limit = (routeclf + plain) / 2 if abs(routeclf - plain) > 0.01 else None
    if limit is None:
        pytest.skip("both paths are calibrated alike on this model")
    code, out = validate(capsys, gate_model, "--max-ece", f"{limit:.4f}")
    line = next(l for l in out.splitlines() if l.startswith("quality thresholds"))
    worse = "transformers" if plain > routeclf else "routeclf"
    assert code == 1 and f"{worse}: ECE" in line


def test_thresholds_fail(gate_model: Path, capsys) -> None:
    code, out = validate(capsys, gate_model, "--min-accuracy", "0.99", "--min-class-f1", "0.99")
    assert code == 1
    assert "accuracy" in next(l for l in out.splitlines() if l.startswith("quality thresholds"))


def test_cannot_run(copy: Path, tmp_path: Path, capsys) -> None:
    code = main(["validate", str(tmp_path / "absent")])
    assert code == 2
    (copy / "config.json").write_text("{not json")
    code, out = validate(capsys, copy)
    assert code == 2 and "ERROR" in out


def test_push_dry_run_and_refusal(gate_model: Path, copy: Path, capsys) -> None:
    assert main(["push", str(gate_model), "--repo-id", "org/category", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would upload" in out and "model.safetensors" in out
    (copy / "metrics.json").unlink()
    assert main(["push", str(copy), "--repo-id", "org/category", "--dry-run"]) == 2
    assert "refusing to push" in capsys.readouterr().err


def test_ood_and_chat_reports_are_saved_in_the_artifact(copy: Path, tmp_path: Path, capsys) -> None:
    import pandas as pd

    from conftest import DATA_DIR, REPO

    ood = DATA_DIR / "mmlu-ood" / "mmlu_test_heldout_from_mmlu_pro.csv"
    if not ood.is_file():
        pytest.skip(f"{ood} not found")
    subset = tmp_path / "ood.csv"
    pd.read_csv(ood).groupby("category").head(10).to_csv(subset, index=False)
    assert main(["evaluate", str(copy), "--data", str(subset), "--split", "all", "--save-as", "ood"]) == 0
    chat = REPO / "eval" / "category_chat.jsonl"
    assert main(["evaluate", str(copy), "--data", str(chat), "--split", "all", "--text-field", "text",
                 "--id-field", "id", "--save-as", "chat"]) == 0
    metrics = json.loads((copy / "metrics.json").read_text())
    assert metrics["ood"]["n"] == 140 and metrics["chat"]["n"] == 560
    card = (copy / "README.md").read_text()
    assert "| ood | 140 |" in card and "| chat | 560 |" in card
    # The gate still passes: saving other evaluations does not touch the test section.
    assert validate(capsys, copy)[0] == 0


def test_plain_transformers_reproduces_the_recorded_figure(gate_model: Path, mmlu_pro: Path) -> None:
    """What a vLLM semantic router user gets: the encoder alone, the tokenizer's defaults,
    truncation at 512 tokens, the top label."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rows = {json.loads(line)["question_id"]: json.loads(line) for line in mmlu_pro.read_text().split("\n")
            if line.strip()}
    test_ids = json.loads((gate_model / "split.json").read_text())["ids"]["test"]
    tokenizer = AutoTokenizer.from_pretrained(gate_model)
    model = AutoModelForSequenceClassification.from_pretrained(gate_model).eval()
    correct = 0
    for start in range(0, len(test_ids), 32):
        batch = [rows[int(i)] for i in test_ids[start : start + 32]]
        encoded = tokenizer([r["question"] for r in batch], truncation=True, max_length=512, padding=True,
                            return_tensors="pt")
        with torch.no_grad():
            predicted = model(**encoded).logits.argmax(-1).tolist()
        correct += sum(model.config.id2label[p] == r["category"] for p, r in zip(predicted, batch))
    recorded = json.loads((gate_model / "metrics.json").read_text())["paths"]["transformers"]["test"]
    assert abs(correct / len(test_ids) - recorded["top_label"]["accuracy"]) <= 0.005
    assert "transformers" in (gate_model / "README.md").read_text()


@pytest.mark.parametrize("key, value", [("threshold", 0.99), ("temperature", 3.0)])
@pytest.mark.parametrize("path", ["routeclf", "transformers"])
def test_a_policy_edited_after_evaluation_fails(copy: Path, capsys, key: str, value: float, path: str) -> None:
    calibration = json.loads((copy / "calibration.json").read_text())
    calibration["paths"][path][key] = value
    (copy / "calibration.json").write_text(json.dumps(calibration))
    code, out = validate(capsys, copy)
    assert code == 1
    line = next(l for l in out.splitlines() if l.startswith("deciding files unchanged"))
    assert "FAIL" in line and "changed after evaluation: calibration.json" in line


def test_operating_point_thresholds(gate_model: Path, capsys) -> None:
    assert validate(capsys, gate_model, "--min-coverage", "0.5", "--min-answered-accuracy", "0.5")[0] == 0
    code, out = validate(capsys, gate_model, "--min-coverage", "0.9999", "--min-answered-accuracy", "0.9999")
    line = next(l for l in out.splitlines() if l.startswith("quality thresholds"))
    assert code == 1 and "coverage (answered share)" in line and "accuracy when answered" in line
