"""Bad input gets a clear one-line error and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from routeclf.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_missing_data_file(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "train", "category", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "m"))
    assert code == 2 and "data file not found" in err
    assert not (tmp_path / "m").exists()


def test_unknown_task(capsys, synthetic_file: Path) -> None:
    code, _, err = run(capsys, "split", "weather", "--data", str(synthetic_file))
    assert code == 2 and "unknown task 'weather'" in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs", "0"], "--epochs must be positive"),
        (["--max-samples", "10"], "too few to keep 3 rows of each of the 14 labels"),
        (["--split-ratios", "0.8", "0.3", "0.1"], "split ratios must be three positive numbers summing to 1"),
    ],
)
def test_bad_settings(capsys, tmp_path: Path, synthetic_file: Path, flags: list[str], message: str) -> None:
    code, _, err = run(capsys, "train", "category", "--data", str(synthetic_file), "--out", str(tmp_path / "m"), *flags)
    assert code == 2 and message in err


def test_existing_output_needs_overwrite(capsys, tmp_path: Path, synthetic_file: Path) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run(capsys, "train", "category", "--data", str(synthetic_file), "--out", str(out))
    assert code == 2 and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "mine"


def test_config_file_and_unknown_keys(capsys, tmp_path: Path, synthetic_file: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 2\ncolour: blue\n")
    code, _, err = run(capsys, "train", "category", "--data", str(synthetic_file), "--config", str(config))
    assert code == 2 and "unknown settings colour" in err


def test_config_file_values_and_flag_precedence(tmp_path: Path) -> None:
    from routeclf.cli import build_parser
    from routeclf.settings import settings_from_args

    config = tmp_path / "c.yaml"
    config.write_text("epochs: 2\nlr: 0.001\nmethod: lora\nsplit-ratios: [0.8, 0.1, 0.1]\n")
    args = build_parser().parse_args(["train", "category", "--config", str(config), "--lr", "0.002"])
    settings = settings_from_args(args)
    assert (settings.epochs, settings.lr, settings.method, settings.split_ratios) == (2, 0.002, "lora", (0.8, 0.1, 0.1))


def test_split_command_writes_manifest(capsys, tmp_path: Path, synthetic_file: Path) -> None:
    out = tmp_path / "split.json"
    code, stdout, _ = run(capsys, "split", "category", "--data", str(synthetic_file), "--out", str(out))
    assert code == 0 and "audit: passed" in stdout
    manifest = json.loads(out.read_text())
    assert sum(len(ids) for ids in manifest["ids"].values()) == manifest["n_rows"] == 280


def test_predict_and_evaluate_need_an_artifact(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "predict", str(tmp_path), "hello")
    assert code == 2 and "not a model directory" in err
    code, _, err = run(capsys, "evaluate", str(tmp_path))
    assert code == 2 and "no training_config.json" in err


def test_task_defaults_fill_what_the_user_left_unset() -> None:
    from routeclf.cli import build_parser
    from routeclf.settings import settings_from_args

    settings = settings_from_args(build_parser().parse_args(["train", "pii", "--epochs", "3"]))
    assert (settings.epochs, settings.lr, settings.max_length, settings.ngram) == (3, 2e-4, 128, False)
    category = settings_from_args(build_parser().parse_args(["train", "category"]))
    assert (category.epochs, category.lr, category.max_length, category.ngram, category.distil_ngram) == \
        (4, 8e-5, 64, False, 0.5)
    assert category.data == "TIGER-Lab/MMLU-Pro"  # the built-in task file's own data
