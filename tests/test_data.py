from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import synthetic_rows, write_jsonl
from routeclf.data.sources import load_rows
from routeclf.errors import DataError
from routeclf.tasks import get_task

CATEGORY = get_task("category")


def test_all_local_formats_load_the_same_rows(tmp_path: Path) -> None:
    import pandas as pd

    rows = synthetic_rows(per_label=4)
    frame = pd.DataFrame(rows)
    paths = [
        write_jsonl(tmp_path / "d.jsonl", rows),
        tmp_path / "d.csv",
        tmp_path / "d.parquet",
        tmp_path / "d.json",
    ]
    frame.to_csv(paths[1], index=False)
    frame.to_parquet(paths[2], index=False)
    (tmp_path / "d.json").write_text(json.dumps(rows))
    loaded = [load_rows(str(p), CATEGORY) for p in paths]
    assert len({d.sha256 for d in loaded}) == 1
    assert len(loaded[0].rows) == len(rows)


def test_hub_style_directory_uses_the_hub_loader(tmp_path: Path) -> None:
    """A directory is read as a dataset repository, the way a hub id is, split taken by file name."""
    repo = tmp_path / "MMLU-Pro"
    repo.mkdir()
    write_jsonl(repo / "test.jsonl", synthetic_rows(per_label=3))
    data = load_rows(str(repo), CATEGORY)
    assert len(data.rows) == 14 * 3


def test_offline_hub_id_says_to_pass_data(monkeypatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="pass --data with a local file"):
        load_rows("TIGER-Lab/MMLU-Pro", CATEGORY)


def _write(tmp_path: Path, rows: list[dict]) -> str:
    return str(write_jsonl(tmp_path / "bad.jsonl", rows))


def test_missing_categories_are_named(tmp_path: Path) -> None:
    rows = [r for r in synthetic_rows() if r["category"] in {"math", "law", "physics"}]
    with pytest.raises(DataError) as error:
        load_rows(_write(tmp_path, rows), CATEGORY)
    message = str(error.value)
    assert "11 of the 14" in message
    for label in ("biology", "psychology", "computer science"):
        assert label in message
    # Evaluation data may hold a subset of the labels.
    assert len(load_rows(_write(tmp_path, rows), CATEGORY, require_all_labels=False).rows) == len(rows)


def test_unknown_label_is_named(tmp_path: Path) -> None:
    rows = synthetic_rows()
    rows[5]["category"] = "astrology"
    with pytest.raises(DataError, match="labels not in the category task: 'astrology'.*write a task file"):
        load_rows(_write(tmp_path, rows), CATEGORY, require_all_labels=False)


def test_too_few_examples_of_a_class(tmp_path: Path) -> None:
    rows = [r for r in synthetic_rows() if r["category"] != "history"]
    rows += [r for r in synthetic_rows() if r["category"] == "history"][:2]
    with pytest.raises(DataError, match=r"fewer than 3 examples.*history \(2\)"):
        load_rows(_write(tmp_path, rows), CATEGORY)


def test_missing_column_lists_the_columns(tmp_path: Path) -> None:
    rows = [{"prompt": r["question"], "category": r["category"]} for r in synthetic_rows()]
    with pytest.raises(DataError, match=r"no text column 'question'; columns are: category, prompt"):
        load_rows(_write(tmp_path, rows), CATEGORY)


def test_empty_file_and_missing_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_rows(str(empty), CATEGORY)
    with pytest.raises(DataError, match="not found"):
        load_rows(str(tmp_path / "nope.jsonl"), CATEGORY)


def test_blank_text_and_duplicate_ids(tmp_path: Path) -> None:
    rows = synthetic_rows()
    rows[3]["question"] = "   "
    with pytest.raises(DataError, match="empty 'question'"):
        load_rows(_write(tmp_path, rows), CATEGORY)
    rows = synthetic_rows()
    rows[4]["question_id"] = rows[3]["question_id"]
    with pytest.raises(DataError, match="not unique"):
        load_rows(_write(tmp_path, rows), CATEGORY)


def test_custom_fields_and_row_number_ids(tmp_path: Path) -> None:
    from routeclf.data.sources import Fields

    rows = [{"prompt": r["question"], "topic": r["category"]} for r in synthetic_rows(per_label=3)]
    data = load_rows(_write(tmp_path, rows), CATEGORY, Fields.for_task(CATEGORY, text="prompt", label="topic"))
    assert [r.id for r in data.rows[:3]] == ["0", "1", "2"]
