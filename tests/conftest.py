"""Shared fixtures: the real data folder (skipped when absent) and small synthetic data sets."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from routeclf.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("ROUTECLF_DATA_DIR", REPO.parent / "shared" / "data"))
MMLU_PRO = DATA_DIR / "mmlu-pro" / "test.jsonl"

# A few words per category, enough for a tiny model to learn something in one epoch.
KEYWORDS = {
    "biology": ["cell", "gene", "protein", "enzyme", "species"],
    "business": ["revenue", "marketing", "invoice", "profit", "shareholder"],
    "chemistry": ["molar", "reaction", "acid", "electron", "compound"],
    "computer science": ["algorithm", "compiler", "array", "binary", "runtime"],
    "economics": ["inflation", "demand", "supply", "tariff", "gdp"],
    "engineering": ["beam", "torque", "circuit", "voltage", "turbine"],
    "health": ["patient", "symptom", "dose", "clinic", "diagnosis"],
    "history": ["empire", "treaty", "dynasty", "revolution", "century"],
    "law": ["plaintiff", "statute", "court", "contract", "defendant"],
    "math": ["integral", "matrix", "prime", "equation", "derivative"],
    "other": ["recipe", "travel", "hobby", "weather", "garden"],
    "philosophy": ["ethics", "kant", "virtue", "metaphysics", "socrates"],
    "physics": ["momentum", "photon", "gravity", "quantum", "velocity"],
    "psychology": ["behavior", "memory", "cognitive", "freud", "emotion"],
}
FILLER = ["what", "is", "the", "about", "explain", "how", "does", "a", "why", "this", "question"]


def synthetic_rows(per_label: int = 20, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for label in get_task("category").labels:
        for i in range(per_label):
            words = rng.sample(KEYWORDS[label], 3) + rng.sample(FILLER, 4)
            rng.shuffle(words)
            rows.append({"question_id": len(rows), "question": " ".join(words) + f" number {i}?", "category": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def synthetic_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "synthetic.jsonl", synthetic_rows())


@pytest.fixture(scope="session")
def mmlu_pro() -> Path:
    if not MMLU_PRO.is_file():
        pytest.skip(f"MMLU-Pro not found at {MMLU_PRO}; set ROUTECLF_DATA_DIR to the shared data folder")
    return MMLU_PRO


@pytest.fixture(scope="session")
def gate_model(mmlu_pro, tmp_path_factory) -> Path:
    """A small real category model: a stratified subset of MMLU-Pro, two short epochs."""
    from routeclf.cli import main

    out = tmp_path_factory.mktemp("gate") / "category"
    argv = ["train", "category", "--data", str(mmlu_pro), "--out", str(out), *GATE_FLAGS]
    assert main(argv) == 0
    return out


# Also used by the gate test's thresholds: keep both in one place.
GATE_FLAGS = ["--max-samples", "1400", "--epochs", "2", "--max-length", "64", "--lr", "2e-4", "--seed", "42",
              "--min-steps", "0", "--cv-folds", "0", "--no-augment"]


# Tests keep training short: no small-data schedule, no cross-validation, no extra training rows
# (each is tested on its own).
TINY = ["--epochs", "1", "--batch-size", "16", "--max-length", "32", "--lr", "3e-4", "--seed", "42", "--min-steps", "0",
        "--cv-folds", "0", "--no-augment"]


def train_tiny(tmp_path_factory, method: str, extra: list[str] = ()) -> Path:
    """One epoch on the synthetic data: seconds, yet a real artifact."""
    from routeclf.cli import main

    root = tmp_path_factory.mktemp(method)
    data = write_jsonl(root / "data.jsonl", synthetic_rows())
    out = root / "model"
    code = main(["train", "category", "--data", str(data), "--out", str(out), "--method", method, *TINY, *extra])
    assert code == 0
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory, "full")
