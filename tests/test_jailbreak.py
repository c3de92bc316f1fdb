"""The jailbreak task on the shared pipeline: the multi-source folder loader and a tiny run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import DATA_DIR
from routeclf.cli import main
from routeclf.data.sources import load_rows
from routeclf.errors import DataError
from routeclf.tasks import get_task

JAILBREAK = get_task("jailbreak")


@pytest.fixture(scope="module")
def data_dir() -> Path:
    if not (DATA_DIR / "jailbreak" / "jackhhao" / "default_full.csv").is_file():
        pytest.skip(f"jailbreak data not found under {DATA_DIR}; set ROUTECLF_DATA_DIR")
    return DATA_DIR


def test_folder_combines_sources_with_short_benign_negatives(data_dir: Path) -> None:
    data = load_rows(str(data_dir), JAILBREAK)
    by_source = Counter((r.source, r.label) for r in data.rows)
    assert {source for source, _ in by_source} == {"jackhhao", "deepset", "mmlu-pro"}
    assert by_source[("mmlu-pro", "jailbreak")] == 0 and by_source[("mmlu-pro", "benign")] > 500
    assert len({r.group for r in data.rows}) == len(data.rows), "normalised copies were kept"
    assert len({r.id for r in data.rows}) == len(data.rows)
    # Short texts of both labels exist, so length alone cannot separate them.
    short = Counter(r.label for r in data.rows if len(r.text) < 200)
    assert short["jailbreak"] > 100 and short["benign"] > 500
    assert load_rows(str(data_dir), JAILBREAK).sha256 == data.sha256


def test_folder_missing_a_source_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="jailbreak/jackhhao/default_full.csv is missing"):
        load_rows(str(tmp_path), JAILBREAK)


def test_tiny_jailbreak_model_passes_the_gate(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "jailbreak"
    flags = ["--max-samples", "160", "--epochs", "1", "--max-length", "32", "--batch-size", "16"]
    assert main(["train", "jailbreak", "--data", str(data_dir), "--out", str(out), *flags]) == 0
    mapping = json.loads((out / "jailbreak_type_mapping.json").read_text())
    assert mapping == {"label_to_idx": {"benign": 0, "jailbreak": 1}, "idx_to_label": {"0": "benign", "1": "jailbreak"}}
    assert json.loads((out / "calibration.json").read_text())["fallback_label"] == "benign"
    assert main(["validate", str(out)]) == 0
