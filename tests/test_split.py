from __future__ import annotations

import random
from collections import Counter

import pytest
from sklearn.model_selection import train_test_split

from routeclf.data.sources import LoadedData, Row, load_rows, normalise_text
from routeclf.data.split import SPLITS, apply_manifest, audit_splits, make_split, split_rows
from routeclf.errors import DataError, LeakageError
from routeclf.tasks import get_task

CATEGORY = get_task("category")


@pytest.fixture(scope="module")
def mmlu(mmlu_pro) -> LoadedData:
    return load_rows(str(mmlu_pro), CATEGORY)


def test_stratified_within_one_example_per_class(mmlu: LoadedData) -> None:
    splits = split_rows(mmlu.rows)
    totals = Counter(r.label for r in mmlu.rows)
    for name, ratio in zip(SPLITS, (0.7, 0.15, 0.15)):
        counts = Counter(r.label for r in splits[name])
        for label, total in totals.items():
            assert abs(counts[label] - total * ratio) <= 1, (name, label, counts[label], total * ratio)


def test_no_group_in_two_splits_on_real_duplicates(mmlu: LoadedData) -> None:
    groups = Counter(r.group for r in mmlu.rows)
    assert sum(1 for n in groups.values() if n > 1) > 300  # the data really has repeated questions
    splits = split_rows(mmlu.rows)
    owner: dict[str, str] = {}
    for name, rows in splits.items():
        for row in rows:
            assert owner.setdefault(row.group, name) == name, f"group {row.group[:60]!r} in two splits"
    assert sum(len(rows) for rows in splits.values()) == len(mmlu.rows)


def test_deterministic_and_order_independent(mmlu: LoadedData) -> None:
    first = split_rows(mmlu.rows, seed=7)
    shuffled = list(mmlu.rows)
    random.Random(1).shuffle(shuffled)
    again = split_rows(shuffled, seed=7)
    assert {k: [r.id for r in v] for k, v in first.items()} == {k: [r.id for r in v] for k, v in again.items()}
    other = split_rows(mmlu.rows, seed=8)
    assert [r.id for r in other["test"]] != [r.id for r in first["test"]]


def test_double_split_leak_is_caught(mmlu: LoadedData) -> None:
    """The replaced scripts split train/val/test, merged train+val and split again.

    Reproduce that procedure and show the audit rejects what it produces.
    """
    rows = mmlu.rows
    labels = [r.label for r in rows]
    train_val, test = train_test_split(rows, test_size=0.15, stratify=labels, random_state=42)
    train, val = train_test_split(train_val, test_size=0.15 / 0.85, stratify=[r.label for r in train_val], random_state=42)
    merged = train + val  # the bug: validation goes back into the pool
    new_train, new_val = train_test_split(merged, test_size=0.15, random_state=0)
    leaked = {"train": new_train, "validation": val, "test": test}
    with pytest.raises(LeakageError, match="shared ids between train/validation"):
        audit_splits(leaked)
    # A row split that ignores groups leaks copies of one question even without the merge.
    with pytest.raises(LeakageError, match="normalised duplicates"):
        audit_splits({"train": train, "validation": val, "test": test})


def test_audit_reports_near_duplicates() -> None:
    def row(i: str, text: str, label: str = "math") -> Row:
        return Row(i, text, label, normalise_text(text), "t")

    base = "what is the derivative of x squared plus three x minus seven with respect to x"
    splits = {
        "train": [row("1", base), row("2", "name the capital of france", "other")],
        "validation": [row("3", base + " please")],
        "test": [row("4", "who wrote the critique of pure reason", "philosophy")],
    }
    report = audit_splits(splits)
    assert report["passed"]
    assert report["near_duplicates"]["count"] == 1
    assert report["near_duplicates"]["examples"][0]["train_id"] == "1"


def test_manifest_is_reapplied_and_detects_changed_data(synthetic_file, tmp_path) -> None:
    from conftest import synthetic_rows, write_jsonl

    data = load_rows(str(synthetic_file), CATEGORY)
    splits, manifest = make_split(data)
    assert manifest["audit"]["passed"]
    again = apply_manifest(load_rows(str(synthetic_file), CATEGORY), manifest)
    assert [r.id for r in again["test"]] == [r.id for r in splits["test"]]
    changed_rows = synthetic_rows()
    changed_rows[0]["question"] += " changed"
    changed = load_rows(str(write_jsonl(tmp_path / "changed.jsonl", changed_rows)), CATEGORY)
    with pytest.raises(DataError, match="not the data this split was made from"):
        apply_manifest(changed, manifest)


def test_max_samples_keeps_every_class_and_is_seeded(mmlu: LoadedData) -> None:
    splits, manifest = make_split(mmlu, max_samples=300, seed=3)
    rows = [r for part in splits.values() for r in part]
    assert len(rows) == 300
    assert set(r.label for r in rows) == set(CATEGORY.labels)
    for name in SPLITS:
        assert set(manifest["label_counts"][name]) == set(CATEGORY.labels)
    # Not "the first N rows" of a category-sorted file: every class is in proportion.
    counts = Counter(r.label for r in rows)
    assert counts["math"] > counts["history"]
    again, _ = make_split(mmlu, max_samples=300, seed=3)
    assert [r.id for r in again["train"]] == [r.id for r in splits["train"]]
    other, _ = make_split(mmlu, max_samples=300, seed=4)
    assert [r.id for r in other["train"]] != [r.id for r in splits["train"]]
