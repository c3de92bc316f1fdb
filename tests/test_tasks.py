"""Tasks as files: parsing and its errors, the task saved with the model, small data, and a model of
one's own routes trained, validated and served by a process that has no code for it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from routeclf.cli import main
from routeclf.errors import RouteclfError
from routeclf.tasks import BUILTIN, get_task, load_task, resolve_task
from routeclf.tasks.taskfile import task_from_json

from conftest import REPO, TINY, served_process, write_jsonl

ROUTES_TASK = REPO / "examples" / "routes" / "routes.yaml"
ROUTES_DATA = REPO / "examples" / "routes" / "train.jsonl"
ROUTES = ["chitchat", "code", "creative", "math", "support", "translation"]


def task_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "task.yaml"
    path.write_text(text)
    return path


def test_example_task_file() -> None:
    task = resolve_task(str(ROUTES_TASK))
    assert task.name == "routes" and task.kind == "classifier" and list(task.labels) == ROUTES
    assert task.fallback_label == "chitchat" and task.positive_label is None
    assert (task.text_field, task.label_field, task.id_field) == ("text", "label", "id")


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_tasks_round_trip_through_task_json(name: str) -> None:
    task = get_task(name)
    again = task_from_json(json.loads(json.dumps(task.to_json())), "task.json")
    assert again == task


def test_settings_in_a_task_file_are_typed(tmp_path: Path) -> None:
    from routeclf.cli import build_parser
    from routeclf.settings import settings_from_args

    # YAML reads 8e-5 (no dot) as a string; it must still become a number.
    path = task_file(tmp_path, "name: r\nlabels: [a, b]\nlr: 8e-5\nepochs: 7\nmax-length: 48\n")
    task = resolve_task(str(path))
    assert task.settings == {"lr": 8e-5, "epochs": 7.0, "max_length": 48}
    settings = settings_from_args(build_parser().parse_args(["train", "--task", str(path), "--epochs", "3"]))
    assert (settings.lr, settings.epochs, settings.max_length) == (8e-5, 3.0, 48)  # the flag wins
    assert settings.task == str(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: r\nlabels: [a, b]\ncolour: blue\n", "unknown keys colour"),
        ("name: r\nlabels: [a, b]\nlr: fast\n", "lr: Input should be a valid number"),
        ("name: r\nlabels: [a, b]\nepochs: [1]\n", "epochs:"),
        ("name: r\nlabels: [yes, no]\n", "quote it"),
        ("name: r\nlabels: [a, b]\nfallback_label: c\n", "fallback_label 'c' is not one of the labels"),
        ("name: r\nlabels: [a, a, b]\n", "labels are listed more than once: a"),
        ("name: r\nlabels: [a]\n", "at least 2 items"),
        ("name: r\nkind: detector\nlabels: [a, b]\n", "a detector needs positive_label"),
        ("name: r\nkind: detector\nlabels: [a, b, c]\npositive_label: a\n", "a detector has exactly 2 labels"),
        ("name: R S\nlabels: [a, b]\n", "name must be lower-case"),
        ("name: r\nkind: sorter\nlabels: [a, b]\n", "kind:"),
        ("name: r\nlabels: [a, b]\nloader: mine\n", "unknown loader 'mine'"),
        ("name: intent\nlabels: [a, b]\n", "one of the router's own endpoints"),
        ("name: r\nlabels: [a, b]\nmapping_file: config.json\n", "mapping_file must be a plain .json file name"),
        ("name: r\nlabels: [a, b]\nmapping_file: ../x.json\n", "mapping_file must be a plain .json file name"),
        ("name: r\nlabels: [a, b]\nlength_bands: [[s, 0, 9], [l, 12, null]]\n", "length_bands must start at 0"),
        ("name: r\nlabels: [a, b]\nlength_bands: [[s, 0, 9]]\n", "end open"),
        ("name: r\nkind: detector\nlabels: [a, b]\npositive_label: a\nfallback_label: a\n", "not its positive_label"),
        ("name: r\nlabels: [a, b]\nloader: jailbreak\n", "the jailbreak loader's rows are labelled benign, jailbreak"),
        ("name: r\nlabels: [a, b]\nout: models/x\n", "unknown keys out"),
        ("- a\n- b\n", "must be a YAML mapping"),
        ("name: r\nlabels: [a, b\n", "not valid YAML"),
    ],
)
def test_task_file_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RouteclfError, match=message.replace("[", r"\[").replace("(", r"\(")):
        resolve_task(str(task_file(tmp_path, text)))


def test_a_detector_answers_its_other_label(tmp_path: Path) -> None:
    path = task_file(tmp_path, "name: guard\nkind: detector\npositive_label: attack\n")
    task = resolve_task(str(path)).with_labels(["attack", "ok"])  # labels taken from the data
    assert (task.positive_label, task.fallback_label, task.windowed) == ("attack", "ok", True)


def test_unknown_task_name_points_to_task_files(capsys, tmp_path: Path) -> None:
    assert main(["train", "weather", "--data", str(ROUTES_DATA), "--out", str(tmp_path / "m")]) == 2
    assert "write a task file" in capsys.readouterr().err
    assert main(["train", "--task", str(tmp_path / "absent.yaml"), "--data", str(ROUTES_DATA)]) == 2
    assert "task file not found" in capsys.readouterr().err


def _rows(counts: dict[str, int]) -> list[dict]:
    return [{"text": f"request {label} number {i}", "label": label} for label, n in counts.items() for i in range(n)]


@pytest.mark.parametrize(
    "labels, counts, message",
    [
        ("[a, b, c]", {"a": 5, "b": 5}, "have no examples: c. .* Fix: add examples"),
        ("[a, b]", {"a": 5, "b": 5, "z": 4}, "labels not in the r task: 'z' \\(4 rows\\).* Fix: list them in your task file's `labels`"),
        ("[a, b]", {"a": 5, "b": 2}, "fewer than 3 examples .* b \\(2\\). Fix: add examples"),
    ],
)
def test_data_that_does_not_fit_the_labels_is_refused(tmp_path: Path, capsys, labels: str, counts, message: str) -> None:
    path = task_file(tmp_path, f"name: r\nlabels: {labels}\n")
    data = write_jsonl(tmp_path / "data.jsonl", _rows(counts))
    out = tmp_path / "m"
    assert main(["train", "--task", str(path), "--data", str(data), "--out", str(out), *TINY]) == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_labels_omitted_are_taken_from_the_data(tmp_path: Path, capsys) -> None:
    path = task_file(tmp_path, "name: r\n")
    data = write_jsonl(tmp_path / "data.jsonl", _rows({"x": 3, "y": 3, "z": 3}))
    assert main(["split", str(path), "--data", str(data), "--out", str(tmp_path / "split.json")]) == 0
    manifest = json.loads((tmp_path / "split.json").read_text())
    assert set(manifest["label_counts"]["train"]) == {"x", "y", "z"}


def test_small_data_schedule_and_cross_validation_folds() -> None:
    from routeclf.data.sources import Row
    from routeclf.settings import TrainSettings
    from routeclf.training.trainer import cv_folds, plan_schedule

    task = resolve_task(str(ROUTES_TASK))
    few = [Row(str(i), f"t{i}", ROUTES[i % 6], f"t{i}", "s") for i in range(24)]
    many = [Row(str(i), f"t{i}", ROUTES[i % 6], f"t{i}", "s") for i in range(600)]
    settings = TrainSettings(task=str(ROUTES_TASK), batch_size=32)
    small = plan_schedule(settings, task, n_train=102, validation=few, world_size=1)
    assert small.epochs == 13 and small.eval_steps == 6  # 4 steps an epoch, at least 50 steps, <= 10 evaluations
    assert (small.metric, small.greater_is_better) == ("loss", False)
    large = plan_schedule(settings, task, n_train=8000, validation=many, world_size=1)
    assert (large.epochs, large.eval_steps, large.metric) == (4.0, None, "macro_f1")
    assert cv_folds(settings, task, few) == 5 and cv_folds(settings, task, many) == 0
    assert cv_folds(TrainSettings(cv_folds=0), task, few) == 0


def test_threshold_keeps_a_coverage_floor() -> None:
    from routeclf.evaluation.calibration import choose_threshold

    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(4), size=200)
    y = rng.integers(0, 4, size=200)  # a model no better than chance: the accuracy target is never met
    unfloored = choose_threshold(probabilities, y, 0.95)
    floored = choose_threshold(probabilities, y, 0.95, min_coverage=0.9)
    assert (probabilities.max(1) >= unfloored).mean() < 0.1
    assert (probabilities.max(1) >= floored).mean() >= 0.9


@pytest.fixture(scope="module")
def routes_model(tmp_path_factory) -> Path:
    """The example routes task, trained briefly (3-fold cross-validation included)."""
    out = tmp_path_factory.mktemp("routes") / "routes"
    flags = [*TINY[: TINY.index("--cv-folds")], "--cv-folds", "3", "--epochs", "2"]
    assert main(["train", "--task", str(ROUTES_TASK), "--data", str(ROUTES_DATA), "--out", str(out), *flags]) == 0
    return out


def test_the_model_directory_describes_itself(routes_model: Path) -> None:
    saved = json.loads((routes_model / "task.json").read_text())
    assert saved["name"] == "routes" and saved["labels"] == ROUTES and saved["fallback_label"] == "chitchat"
    assert saved["window"] == {"enabled": False, "max_length": 32, "stride": 8}
    assert load_task(routes_model) == resolve_task(str(ROUTES_TASK))
    metrics = json.loads((routes_model / "metrics.json").read_text())
    cv = metrics["cross_validation"]
    assert cv["folds"] == 3 and len(cv["per_fold"]) == 3 and cv["pooled"]["n"] == 150
    assert sum(f["n"] for f in cv["per_fold"]) == 150
    assert "How far to trust these figures" in metrics["trust"]
    card = (routes_model / "README.md").read_text()
    assert "Cross-validation" in card and "routeclf routes classifier" in card


def test_a_task_of_ones_own_is_validated_and_evaluated(routes_model: Path, tmp_path: Path, capsys) -> None:
    assert main(["validate", str(routes_model)]) == 0
    assert "task.json" in capsys.readouterr().out
    held_out = write_jsonl(tmp_path / "held_out.jsonl", [{"text": "translate good night into german", "label": "translation"},
                                                         {"text": "fix my python import error", "label": "code"}])
    assert main(["evaluate", str(routes_model), "--data", str(held_out), "--split", "all"]) == 0
    copy = tmp_path / "copy"
    shutil.copytree(routes_model, copy)
    assert main(["export-onnx", str(copy)]) == 0  # 150 rows: every one is a parity input
    assert json.loads((copy / "onnx" / "parity.json").read_text())["n_inputs"] == 150
    (copy / "task.json").unlink()
    assert main(["validate", str(copy)]) == 1
    assert "missing task.json" in capsys.readouterr().out


def test_served_under_its_own_name_by_a_fresh_process(routes_model: Path, tmp_path: Path) -> None:
    with served_process(["--model", f"routes={routes_model}"]) as (_, url):
        body = httpx.post(f"{url}/api/v1/classify/routes",
                          json={"text": "write a haiku about rain", "options": {"return_probabilities": True}}).json()
        assert set(body["probabilities"]) == set(ROUTES)
        assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert body["classification"]["top_category"] in ROUTES
        version = body["model"]["version"]
        assert body["model"]["name"] == "routes" and version.startswith("sha256:")
        batch = httpx.post(f"{url}/api/v1/classify/batch", json={"texts": ["hi there", "solve 2x=4"],
                                                                 "task_type": "routes"}).json()
        assert batch["total_count"] == 2 and batch["model"]["version"] == version
        (info,) = httpx.get(f"{url}/info/models").json()["models"]
        assert info["name"] == "routes" and info["kind"] == "classifier" and info["version"] == version
        assert info["task"]["labels"] == ROUTES
        missing = httpx.post(f"{url}/api/v1/classify/weather", json={"text": "hi"})
        assert missing.status_code == 404 and "served: routes" in missing.json()["error"]["message"]
        intent = httpx.post(f"{url}/api/v1/classify/intent", json={"text": "hi"})
        assert intent.status_code == 503 and intent.json()["error"]["type"] == "model_not_loaded"
        data = write_jsonl(tmp_path / "e2e.jsonl", [{"text": "hello, how are you", "label": "chitchat"},
                                                   {"text": "what is 12 times 7", "label": "math"}])
        assert main(["e2e", "--url", url, "--task", "routes", "--data", str(data), "--min-accuracy", "0"]) == 0


def test_version_changes_with_the_calibration(routes_model: Path, tmp_path: Path) -> None:
    from routeclf.artifact.version import model_version

    copy = tmp_path / "copy"
    shutil.copytree(routes_model, copy)
    before = model_version(copy)
    assert before == model_version(routes_model)
    calibration = json.loads((copy / "calibration.json").read_text())
    calibration["paths"]["routeclf"]["threshold"] = 0.99
    (copy / "calibration.json").write_text(json.dumps(calibration))
    assert model_version(copy) != before


def test_reserved_and_duplicate_model_names(routes_model: Path, capsys) -> None:
    assert main(["serve", "--model", f"intent={routes_model}"]) == 2
    assert "reserved" in capsys.readouterr().err
    assert main(["serve", "--model", f"a={routes_model}", "--model", f"a={routes_model}"]) == 2
    assert "two models are named 'a'" in capsys.readouterr().err
    assert main(["serve", "--model", "routes"]) == 2
    assert "write NAME=DIR" in capsys.readouterr().err
