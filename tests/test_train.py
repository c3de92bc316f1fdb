"""A tiny real training run per method, checked against the artifact contract."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from routeclf.cli import main
from routeclf.evaluation.evaluate import evaluate_artifact
from routeclf.inference.predictor import Predictor
from routeclf.tasks import get_task
from routeclf.training.models import resolve_base
from conftest import TINY, train_tiny

CATEGORY = get_task("category")


@pytest.fixture(scope="module")
def full_model(tiny_model: Path) -> Path:
    return tiny_model


@pytest.fixture(scope="module")
def lora_model(tmp_path_factory) -> Path:
    # The category default is distilled with no blend; the LoRA model keeps the blend tested.
    return train_tiny(tmp_path_factory, "lora", ["--lora-r", "8", "--ngram", "--distil-ngram", "0"])


def check_contract(directory: Path, method: str) -> None:
    for name in (
        "model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "label_mapping.json",
        "category_mapping.json", "split.json", "training_config.json", "metrics.json", "confusion_matrix.png",
        "README.md",
    ):
        assert (directory / name).is_file(), name
    assert (directory / "adapter" / "adapter_config.json").is_file() == (method == "lora")
    config = json.loads((directory / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(14)] == list(CATEGORY.labels)
    assert config["label2id"] == CATEGORY.label2id
    mapping = json.loads((directory / "label_mapping.json").read_text())
    category = json.loads((directory / "category_mapping.json").read_text())
    assert mapping["id2label"] == category["idx_to_category"] == config["id2label"]
    assert mapping["label2id"] == category["category_to_idx"] == config["label2id"]
    metrics = json.loads((directory / "metrics.json").read_text())
    for split in ("validation", "test"):
        section = metrics[split]
        assert set(section["per_class"]) == set(CATEGORY.labels)
        assert section["confusion_matrix_labels"] == list(CATEGORY.labels)
        assert np.array(section["confusion_matrix"]).sum() == section["n"]
        assert {"accuracy", "macro_f1", "weighted_f1", "loss"} <= set(section)
    training = json.loads((directory / "training_config.json").read_text())
    assert training["settings"]["method"] == method
    assert training["settings"]["max_length"] == 32  # flags are honoured exactly
    assert training["base_model"]["sha256"]
    split = json.loads((directory / "split.json").read_text())
    assert split["audit"]["passed"] and split["data_sha256"] == metrics["data_sha256"]
    # Plain transformers loads it, without peft.
    model = AutoModelForSequenceClassification.from_pretrained(directory)
    assert model.config.num_labels == 14
    assert not list(directory.parent.glob(".model.partial-*")), "staging directory left behind"


def test_full_artifact_contract(full_model: Path) -> None:
    check_contract(full_model, "full")
    training = json.loads((full_model / "training_config.json").read_text())
    assert training["distillation"]["weight"] == 0.5 and training["ngram_blend"] is None
    assert not (full_model / "ngram").exists()  # the encoder alone serves


def test_lora_artifact_contract(lora_model: Path) -> None:
    check_contract(lora_model, "lora")
    assert (lora_model / "ngram" / "blend.json").is_file()


@pytest.mark.parametrize("fixture", ["full_model", "lora_model"])
def test_head_and_pooler_were_trained(fixture: str, request) -> None:
    directory = request.getfixturevalue(fixture)
    trained = load_file(str(directory / "model.safetensors"))
    base = load_file(str(Path(resolve_base("minilm").path) / "model.safetensors"))
    pooler = "bert.pooler.dense.weight"
    base_pooler = base.get(pooler, base.get("pooler.dense.weight"))
    assert not torch.allclose(trained[pooler], base_pooler), "pooler was not trained"
    torch.manual_seed(0)
    fresh = AutoModelForSequenceClassification.from_pretrained(resolve_base("minilm").path, num_labels=14)
    assert trained["classifier.weight"].shape == (14, 384)
    assert not torch.allclose(trained["classifier.weight"], fresh.classifier.weight)


def _encoder_drift(directory: Path) -> float:
    trained = load_file(str(directory / "model.safetensors"))
    base = load_file(str(Path(resolve_base("minilm").path) / "model.safetensors"))
    return sum(float(((trained["bert." + name] - weight) ** 2).sum())
               for name, weight in base.items() if "pooler" not in name and "bert." + name in trained)


def test_preserve_base_keeps_the_encoder_nearer_the_base(full_model: Path, tmp_path_factory) -> None:
    anchored = train_tiny(tmp_path_factory, "full", ["--preserve-base", "50"])
    free, kept = _encoder_drift(full_model), _encoder_drift(anchored)
    assert 0 < kept < free / 2, (kept, free)
    assert json.loads((anchored / "training_config.json").read_text())["settings"]["preserve_base"] == 50


def test_saved_metrics_are_reproduced_after_reload(full_model: Path) -> None:
    saved = json.loads((full_model / "metrics.json").read_text())["test"]
    again = evaluate_artifact(full_model, split="test")
    assert again["accuracy"] == saved["accuracy"]
    assert again["confusion_matrix"] == saved["confusion_matrix"]
    assert again["loss"] == pytest.approx(saved["loss"], abs=1e-6)
    texts = ["what is the derivative of a matrix equation", "the court ruled for the plaintiff"]
    first, second = Predictor(full_model).raw_scores(texts), Predictor(full_model).raw_scores(texts)
    np.testing.assert_array_equal(first, second)


def test_merged_equals_adapter_on_base(lora_model: Path) -> None:
    from peft import PeftModel

    texts = ["the enzyme binds the protein in the cell", "what is the gdp after inflation rises"]
    tokenizer = AutoTokenizer.from_pretrained(lora_model)
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    merged = AutoModelForSequenceClassification.from_pretrained(lora_model).eval()
    base = AutoModelForSequenceClassification.from_pretrained(
        resolve_base("minilm").path, num_labels=14, id2label=CATEGORY.id2label, label2id=CATEGORY.label2id
    )
    unmerged = PeftModel.from_pretrained(base, lora_model / "adapter").eval()
    with torch.no_grad():
        a, b = merged(**encoded).logits, unmerged(**encoded).logits
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_nan_loss_stops_and_exports_nothing(tmp_path: Path, synthetic_file: Path, monkeypatch, capsys) -> None:
    from routeclf.training.trainer import FiniteLossTrainer

    original = FiniteLossTrainer.compute_loss
    calls = {"n": 0}

    def poisoned(self, model, inputs, *args, **kwargs):
        loss = original(self, model, inputs, *args, **kwargs)
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(FiniteLossTrainer, "compute_loss", poisoned)
    out = tmp_path / "model"
    code = main(["train", "category", "--data", str(synthetic_file), "--out", str(out), *TINY])
    assert code == 1
    assert "training loss became nan at step 2" in capsys.readouterr().err
    assert not out.exists()
    assert not list(tmp_path.glob(".model.partial-*"))


def test_a_collapsed_run_is_refused_and_writes_nothing(tmp_path: Path, synthetic_file: Path, monkeypatch,
                                                       capsys) -> None:
    """An encoder that answers one class for every validation row (as a diverged fine-tune does)
    is not written as a model."""
    import routeclf.training.trainer as trainer

    original = trainer.build_model

    def stuck(*args, **kwargs):
        model = original(*args, **kwargs)
        model.classifier.bias.data[3] = 1e4  # one class wins every row, and training cannot move it
        model.classifier.bias.requires_grad_(False)
        return model

    monkeypatch.setattr(trainer, "build_model", stuck)
    out = tmp_path / "model"
    code = main(["train", "category", "--data", str(synthetic_file), "--out", str(out), *TINY])
    assert code == 1
    assert "training collapsed" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".model.partial-*"))
    assert not (tmp_path / ".model.checkpoints").exists()


def test_a_run_stopped_by_sigterm_leaves_nothing_half_written(tmp_path: Path, synthetic_file: Path) -> None:
    """SIGTERM while the artifact is being written (as a job scheduler stops a run) removes the
    staging directory, as Ctrl-C does."""
    out = tmp_path / "model"
    run = subprocess.Popen([sys.executable, "-m", "routeclf", "train", "category", "--data", str(synthetic_file),
                            "--out", str(out), *TINY], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not list(tmp_path.glob(".model.partial-*")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.poll() is None, "the run ended before its artifact was staged"
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130 and "interrupted" in err, err[-2000:]
    assert not out.exists() and not list(tmp_path.glob(".model.partial-*"))


def test_predict_prints_json_lines(full_model: Path, tmp_path: Path, capsys) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("the court ruled for the plaintiff\n\nwhat is the momentum of a photon\n")
    assert main(["predict", str(full_model), "what is a prime number", "--file", str(texts), "--top-k", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == [
        "what is a prime number", "the court ruled for the plaintiff", "what is the momentum of a photon",
    ]
    for line in lines:
        assert line["label"] in CATEGORY.labels
        assert len(line["top_k"]) == 2 and line["top_k"][0]["label"] == line["label"]
        assert line["top_k"][0]["probability"] == pytest.approx(line["confidence"])


def test_evaluate_other_data_on_every_row(full_model: Path, tmp_path: Path, capsys) -> None:
    """An out-of-distribution file with its own columns and a subset of the labels."""
    from conftest import synthetic_rows

    import pandas as pd

    rows = [r for r in synthetic_rows(per_label=5, seed=9) if r["category"] in {"math", "law", "biology"}]
    path = tmp_path / "ood.csv"
    pd.DataFrame({"question": [r["question"] for r in rows], "category": [r["category"] for r in rows]}).to_csv(path)
    output = tmp_path / "ood.json"
    assert main(["evaluate", str(full_model), "--data", str(path), "--split", "all", "--output", str(output)]) == 0
    assert "macro-F1" in capsys.readouterr().out
    metrics = json.loads(output.read_text())
    assert metrics["n"] == 15 and metrics["data"]["split"] == "all"
    assert metrics["per_class"]["physics"]["support"] == 0
