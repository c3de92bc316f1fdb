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
