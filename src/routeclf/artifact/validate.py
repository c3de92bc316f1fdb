"""`routeclf validate`: the gate an artifact passes before anyone uploads or serves it.

Exit codes: 0 every check passed, 1 a check failed, 2 the validation could not run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from routeclf.artifact.writer import REQUIRED_FILES, SOURCE_TYPE_MAP_FILE, label_mappings, read_json
from routeclf.errors import RouteclfError
from routeclf.tasks import TASK_FILE, Task, load_task, resolve_task

PROBE_TEXTS = (
    "What is the derivative of x squared?",
    "my landlord kept my deposit, can he do that",
    "Explain how photosynthesis stores energy.",
)


class CheckFailed(Exception):
    """The artifact does not meet the check; the message says how."""


class CannotRun(Exception):
    """The check could not be carried out (unreadable file, data not reachable)."""


@dataclass
class Thresholds:
    min_accuracy: float | None = None
    min_macro_f1: float | None = None
    min_micro_f1: float | None = None  # token tasks: entity-level micro-F1
    min_class_f1: float | None = None
    max_ece: float | None = None
    min_recall: float | None = None  # detectors, at the served threshold
    max_fpr: float | None = None
    min_coverage: float | None = None  # classifiers: the share answered rather than abstained
    min_answered_accuracy: float | None = None


# Token tasks: the worst-type check skips types with fewer test entities than this (too few to judge).
MIN_TYPE_SUPPORT = 20
# The figures `metrics.json` must reproduce, per problem type.
REPRODUCED = {"sequence": ("n", "accuracy", "macro_f1"), "token": ("n", "n_entities", "micro_f1", "macro_f1")}


@dataclass
class CheckResult:
    name: str
    status: str  # pass | fail | skip | error
    detail: str


@dataclass
class Report:
    directory: str
    task: str
    checks: list[CheckResult] = field(default_factory=list)
    recomputed: dict[str, dict[str, Any]] = field(default_factory=dict)  # consumer path -> test figures

    @property
    def exit_code(self) -> int:
        statuses = {c.status for c in self.checks}
        return 2 if "error" in statuses else 1 if "fail" in statuses else 0

    def table(self) -> str:
        width = max(len(c.name) for c in self.checks) + 2
        lines = [f"{'check':<{width}}status  detail"]
        lines += [f"{c.name:<{width}}{c.status.upper():<8}{c.detail}" for c in self.checks]
        verdict = {0: "PASSED", 1: "FAILED", 2: "COULD NOT RUN"}[self.exit_code]
        lines.append(f"validation {verdict}: {self.directory}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        keys = ("n", "accuracy", "macro_f1", "micro_f1", "n_entities", "ece", "abstention", "top_label")
        summary = {path: {k: v for k, v in test.items() if k in keys} |
                   ({"binary": {k: v for k, v in test["binary"].items() if k != "roc_curve"}} if "binary" in test else {})
                   for path, test in self.recomputed.items()}
        return {"directory": self.directory, "task": self.task, "exit_code": self.exit_code,
                "passed": self.exit_code == 0, "checks": [asdict(c) for c in self.checks], "recomputed_test": summary}


def _json(directory: Path, name: str) -> Any:
    try:
        return read_json(directory / name)
    except (OSError, json.JSONDecodeError) as exc:
        raise CannotRun(f"cannot read {name}: {exc}") from exc


def contract_files(directory: Path, task: Task) -> list[str]:
    """Every file an artifact of this task must hold (besides optional exports)."""
    expected = list(REQUIRED_FILES) + list(label_mappings(task))
    if task.positive_label:
        expected.append("roc_curve.png")
    if task.kind == "classifier":
        expected.append("coverage_curve.png")
    if task.source_type_map:
        expected.append(SOURCE_TYPE_MAP_FILE)
    if (directory / "training_config.json").is_file():
        config = _json(directory, "training_config.json")
        if config.get("settings", {}).get("method") == "lora":
            expected.append("adapter/adapter_config.json")
        if config.get("ngram_blend"):
            expected += ["ngram/blend.json", "ngram/ngram_config.json", "ngram/ngram.safetensors"]
    return list(dict.fromkeys(expected))


def missing_files(directory: Path, task: Task) -> list[str]:
    return [name for name in contract_files(directory, task) if not (directory / name).is_file()]


class Validator:
    def __init__(self, directory: Path, task: Task, required_labels: list[str], data: str | None,
                 thresholds: Thresholds) -> None:
        self.directory = directory
        self.task = task
        self.required_labels = required_labels
        self.data = data
        self.thresholds = thresholds
        self.report = Report(str(directory), task.name)
        self._predictor = None

    def run(self) -> Report:
        checks: list[tuple[str, tuple[str, ...], Callable[[], str]]] = [
            ("artifact contract", (), self.check_contract),
            ("label mappings agree", ("config.json", "label_mapping.json", TASK_FILE), self.check_mappings),
            ("required labels present", ("config.json",), self.check_required_labels),
            ("weights finite", ("model.safetensors",), self.check_finite),
            ("loads and is deterministic", ("config.json", "model.safetensors"), self.check_deterministic),
            ("deciding files unchanged", ("metrics.json", TASK_FILE), self.check_unchanged),
            ("metrics reproduce on saved test ids, every consumer path",
             ("split.json", "metrics.json", "training_config.json", "model.safetensors"), self.check_metrics),
            ("quality thresholds", ("metrics.json",), self.check_thresholds),
        ]
        for name, needs, check in checks:
            missing = [n for n in needs if not (self.directory / n).is_file()]
            if missing:
                self.report.checks.append(CheckResult(name, "skip", f"needs {', '.join(missing)}"))
                continue
            try:
                self.report.checks.append(CheckResult(name, "pass", check()))
            except CheckFailed as exc:
                self.report.checks.append(CheckResult(name, "fail", str(exc)))
            except Exception as exc:  # a broken artifact must give a report, never a traceback
                self.report.checks.append(CheckResult(name, "error", f"{type(exc).__name__}: {exc}"))
        return self.report

    # -- checks -------------------------------------------------------------------------------
    def check_contract(self) -> str:
        missing = missing_files(self.directory, self.task)
        if missing:
            raise CheckFailed(f"missing {', '.join(missing)}")
        return f"{len(contract_files(self.directory, self.task))} files present"

    def _config_labels(self) -> list[str]:
        id2label = _json(self.directory, "config.json").get("id2label") or {}
        return [id2label[k] for k in sorted(id2label, key=int)]

    def check_mappings(self) -> str:
        config = _json(self.directory, "config.json")
        order = self._config_labels()
        label2id = config.get("label2id") or {}
        problems = []
        if label2id != {label: i for i, label in enumerate(order)}:
            problems.append("config.json label2id is not the inverse of its id2label")
        files = {"label_mapping.json": ("label2id", "id2label")}
        if self.task.mapping_file:
            files[self.task.mapping_file] = self.task.mapping_keys
        for name, (to_idx, to_label) in files.items():
            if not (self.directory / name).is_file():
                continue  # reported by the contract check
            mapping = _json(self.directory, name)
            listed = [mapping.get(to_label, {}).get(str(i)) for i in range(len(mapping.get(to_label, {})))]
            if listed != order:
                problems.append(f"{name} {to_label} order {listed} differs from config.json id2label {order}")
            if {k: int(v) for k, v in mapping.get(to_idx, {}).items()} != {label: i for i, label in enumerate(order)}:
                problems.append(f"{name} {to_idx} disagrees with config.json id2label")
        if list(self.task.labels) != order:
            problems.append(f"the {self.task.name} task's labels {list(self.task.labels)} differ from config.json "
                            f"id2label {order}")
        if problems:
            raise CheckFailed("; ".join(problems))
        return f"{len(order)} labels, same order in config.json, {TASK_FILE} and {', '.join(files)}"

    def check_required_labels(self) -> str:
        labels = self._config_labels()
        missing = [label for label in self.required_labels if label not in labels]
        if missing:
            raise CheckFailed(
                f"the model has {len(labels)} labels; {len(missing)} required labels are missing: {', '.join(missing)}"
            )
        return f"all {len(self.required_labels)} required labels present"

    def check_finite(self) -> str:
        from safetensors.numpy import load_file

        files = [self.directory / "model.safetensors"] + sorted((self.directory / "ngram").glob("*.safetensors"))
        bad, total = [], 0
        for path in files:
            try:
                tensors = load_file(str(path))
            except Exception as exc:  # safetensors raises its own error types on corrupt files
                raise CannotRun(f"cannot read {path.name}: {exc}") from exc
            for name, tensor in tensors.items():
                total += 1
                if np.issubdtype(tensor.dtype, np.floating) and not np.isfinite(tensor).all():
                    bad.append(f"{path.name}:{name}")
        if bad:
            raise CheckFailed(f"non-finite values in {len(bad)} tensors: {', '.join(bad[:5])}")
        return f"{total} tensors finite"

    def predictor(self):
        from routeclf.inference import load_predictor

        if self._predictor is None:
            try:
                self._predictor = load_predictor(self.directory)
            except (OSError, ValueError, RuntimeError) as exc:
                raise CannotRun(f"cannot load the model or tokenizer: {exc}") from exc
        return self._predictor

    def check_deterministic(self) -> str:
        predictor = self.predictor()
        first, second = predictor.raw_scores(list(PROBE_TEXTS)), predictor.raw_scores(list(PROBE_TEXTS))
        rows = first.shape[0] if self.task.problem_type == "token" else len(PROBE_TEXTS)  # token tasks: one per word
        if first.shape != (rows, len(predictor.labels)) or not rows:
            raise CheckFailed(f"logits shape {first.shape} does not match {len(predictor.labels)} labels")
        if not np.isfinite(first).all():
            raise CheckFailed("the model outputs non-finite scores")
        if not np.array_equal(first, second):
            raise CheckFailed(f"the same input gave different logits (max diff {np.abs(first - second).max():.2e})")
        return "tokenizer and model load; identical logits twice"

    def check_unchanged(self) -> str:
        """Tamper evidence: every deciding file is as it was when the figures were measured."""
        from routeclf.artifact.version import deciding_hashes

        saved = _json(self.directory, "metrics.json").get("hashes")
        if not saved:
            raise CheckFailed("metrics.json records no hashes of the files that decide the answers")
        now = deciding_hashes(self.directory)
        changed = sorted(name for name in saved.keys() & now.keys() if saved[name] != now[name])
        gone, added = sorted(saved.keys() - now.keys()), sorted(now.keys() - saved.keys())
        problems = ([f"changed after evaluation: {', '.join(changed)}"] if changed else []) + \
                   ([f"missing: {', '.join(gone)}"] if gone else []) + \
                   ([f"not evaluated (added later): {', '.join(added)}"] if added else [])
        if problems:
            raise CheckFailed("; ".join(problems) + " - re-run training or routeclf export-onnx to re-measure")
        return f"{len(now)} files unchanged since evaluation"

    def _test_rows(self):
        from routeclf.data.sources import Fields, load_rows
        from routeclf.data.split import apply_manifest

        manifest = _json(self.directory, "split.json")
        config = _json(self.directory, "training_config.json")
        source = self.data or config["settings"]["data"]
        try:
            data = load_rows(source, self.task, Fields(**config["fields"]), require_all_labels=False)
        except RouteclfError as exc:
            raise CannotRun(f"cannot load the data to recompute metrics ({exc}); pass --data") from exc
        if data.sha256 != manifest.get("data_sha256"):
            raise CheckFailed(
                f"{data.source} has sha256 {data.sha256[:12]}..., split.json was made from "
                f"{str(manifest.get('data_sha256'))[:12]}...: the data changed since training"
            )
        try:
            return apply_manifest(data, manifest)["test"]
        except RouteclfError as exc:
            raise CheckFailed(str(exc)) from exc

    def _paths(self) -> dict[str, dict[str, Any]]:
        """Every consumer path's saved test figures; an exported ONNX model must have its own."""
        metrics = _json(self.directory, "metrics.json")
        paths = {"routeclf": metrics.get("test")} | {
            name: section.get("test") for name, section in metrics.get("paths", {}).items()}
        onnx_files = {"onnx": "onnx/model.onnx", "onnx-int8": "onnx/model_int8.onnx"}
        unmeasured = [name for name, file in onnx_files.items() if (self.directory / file).is_file() and name not in paths]
        if unmeasured:
            raise CheckFailed(f"{', '.join(unmeasured)} exported but never measured; re-run routeclf export-onnx")
        missing = [name for name, test in paths.items() if not test]
        if missing:
            raise CheckFailed(f"metrics.json has no test figures for {', '.join(missing)}")
        return paths

    def check_metrics(self) -> str:
        from routeclf.evaluation.evaluate import score_rows
        from routeclf.inference import load_predictor
        from routeclf.inference.predictor import path_backend

        if self._config_labels() != list(self.task.labels):
            raise CheckFailed(f"the model's labels are not the {self.task.name} task's; its metrics cannot be reproduced")
        test_rows = self._test_rows()
        differences, reproduced = [], []
        for path, saved in self._paths().items():
            backend, plain = path_backend(path)
            try:
                predictor = load_predictor(self.directory, backend=backend, plain=plain)
                recomputed = score_rows(predictor, test_rows, self.task)
            except (MemoryError, OSError) as exc:  # the machine, not the model
                raise CannotRun(f"{path}: {type(exc).__name__}: {exc}") from exc
            except Exception as exc:  # a corrupt model file, non-finite scores, a path without calibration...
                raise CheckFailed(f"{path}: cannot score the saved test split: {type(exc).__name__}: {exc}") from exc
            self.report.recomputed[path] = recomputed
            differences += [f"{path}: {d}" for d in _differences(saved, recomputed, self.task.problem_type)]
            headline = "micro_f1" if self.task.problem_type == "token" else "accuracy"
            reproduced.append(f"{path} {headline} {recomputed[headline]:.4f}")
        if differences:
            raise CheckFailed("metrics.json does not match the saved test ids: " + "; ".join(differences))
        return f"test n={len(test_rows)}: {', '.join(reproduced)} reproduced; data sha256 matches"

    def check_thresholds(self) -> str:
        saved = _json(self.directory, "metrics.json")
        paths = self.report.recomputed or {"routeclf": saved.get("test", {})} | {
            name: section.get("test", {}) for name, section in saved.get("paths", {}).items()}
        t = self.thresholds
        kind_flags = {"detector": ("--min-recall", "--max-fpr"), "classifier": ("--min-coverage", "--min-answered-accuracy")}
        given = {"--min-recall": t.min_recall, "--max-fpr": t.max_fpr, "--min-coverage": t.min_coverage,
                 "--min-answered-accuracy": t.min_answered_accuracy}
        wrong = [flag for kind, flags in kind_flags.items() if kind != self.task.kind for flag in flags
                 if given[flag] is not None]
        if wrong:
            raise CannotRun(f"{', '.join(wrong)} do not apply to a {self.task.kind}")
        failures, notes = [], []
        for path, test in paths.items():
            for name, value, limit, op in self._measured(test):
                if limit is None:
                    continue
                if value is None:
                    failures.append(f"{path}: {name} not measured")
                elif (value < limit) if op == ">=" else (value > limit):
                    failures.append(f"{path}: {name} {value:.4f} (required {op} {limit})")
                else:
                    notes.append(f"{path}: {name} {value:.4f} {op} {limit}")
        if failures:
            raise CheckFailed("; ".join(failures))
        return "; ".join(notes) if notes else "no thresholds given"

    def _measured(self, test: dict[str, Any]) -> list[tuple[str, float | None, float | None, str]]:
        """(figure, value, limit, direction) for every threshold flag, of the answer given."""
        t = self.thresholds
        floor = MIN_TYPE_SUPPORT if self.task.problem_type == "token" else 0
        judged = {k: v for k, v in test.get("per_class", {}).items() if v["support"] >= floor}
        worst = min(judged.items(), key=lambda kv: kv[1]["f1"]) if judged else None
        kind = f"type with >= {floor} test entities" if floor else "class"
        binary, abstention = test.get("binary", {}), test.get("abstention", {})
        return [
            ("accuracy", test.get("accuracy"), t.min_accuracy, ">="),
            ("macro-F1", test.get("macro_f1"), t.min_macro_f1, ">="),
            ("entity micro-F1", test.get("micro_f1"), t.min_micro_f1, ">="),
            (f"worst {kind} F1 ({worst[0] if worst else '-'})", worst[1]["f1"] if worst else None, t.min_class_f1, ">="),
            ("ECE", test.get("ece"), t.max_ece, "<="),
            ("recall at the served threshold", binary.get("recall"), t.min_recall, ">="),
            ("false-positive rate at the served threshold", binary.get("false_positive_rate"), t.max_fpr, "<="),
            ("coverage (answered share)", abstention.get("coverage"), t.min_coverage, ">="),
            ("accuracy when answered", abstention.get("answered_accuracy"), t.min_answered_accuracy, ">="),
        ]


def _differences(saved: dict[str, Any], recomputed: dict[str, Any], problem_type: str) -> list[str]:
    keys = REPRODUCED[problem_type]
    found = [f"{key} {saved.get(key)} saved vs {recomputed[key]} recomputed" for key in keys
             if saved.get(key) is None or abs(float(saved[key]) - float(recomputed[key])) > 1e-6]
    if saved.get("confusion_matrix") != recomputed["confusion_matrix"]:
        found.append("confusion matrix differs")
    for section, key in (("abstention", "threshold"), ("abstention", "coverage"), ("binary", "threshold"),
                         ("binary", "recall"), ("binary", "false_positive_rate")):
        before, after = saved.get(section, {}).get(key), recomputed.get(section, {}).get(key)
        if (before is None) != (after is None) or (before is not None and abs(before - after) > 1e-6):
            found.append(f"{section} {key} {before} saved vs {after} recomputed")
    return found


def validate_artifact(
    directory: Path,
    task_spec: str | None = None,
    require_labels: list[str] | None = None,
    data: str | None = None,
    thresholds: Thresholds | None = None,
) -> Report:
    if not directory.is_dir():
        raise RouteclfError(f"{directory} does not exist or is not a directory")
    if task_spec is not None:
        task = resolve_task(task_spec)
    elif (directory / TASK_FILE).is_file():
        task = load_task(directory)
    else:  # without its task nothing else can be judged
        report = Report(str(directory), "unknown")
        report.checks.append(CheckResult("artifact contract", "fail", f"missing {TASK_FILE} (the model's task)"))
        return report
    required = require_labels if require_labels is not None else list(task.labels)
    return Validator(directory, task, required, data, thresholds or Thresholds()).run()
