"""`routeclf export-onnx`: the encoder as ONNX (fp32, optionally int8), checked for parity.

The export goes to `DIR/onnx/` only after parity holds on real inputs: max |logit difference|
<= 1e-3 and >= 99.5% identical top labels for fp32 (taggers: every word's logits and tag). Each
ONNX path (served with the n-gram blend, like the torch path) gets its own temperature and
threshold (taggers: entity threshold and fusion rule), fitted on the rows the torch path's were,
and its own test figures in `metrics.json`; an int8 model that misses its bars (below) is refused.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from routeclf.artifact.writer import write_json
from routeclf.errors import RouteclfError

ONNX_DIR = "onnx"
FP32_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
MAX_ABS_DIFF = 1e-3
MIN_AGREEMENT = 0.995
MIN_PARITY_INPUTS = 200


SPIN_US = 50
THREADS_ENV = "ROUTECLF_THREADS"  # threads per ONNX session (set per worker by `routeclf serve --workers`)


def load_session(directory: Path, quantized: bool = False):
    import onnxruntime as ort

    path = directory / ONNX_DIR / (INT8_FILE if quantized else FP32_FILE)
    if not path.is_file():
        hint = " --quantize int8" if quantized else ""
        raise RouteclfError(f"{path} not found; run `routeclf export-onnx {directory}{hint}` first")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(os.environ.get(THREADS_ENV, "0"))  # 0: onnxruntime's choice
    # onnxruntime's threads spin for a while after each run, waiting for the next: CPU burnt
    # between a service's requests. A short spin cut the server's CPU per answer by about a fifth
    # (benchmarks/serve_latency.py) at no cost in latency.
    options.add_session_config_entry("session.intra_op.spin_duration_us", str(SPIN_US))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export_fp32(directory: Path, path: Path, problem_type: str) -> None:
    import torch
    from transformers import AutoTokenizer

    from routeclf.training.models import model_class

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = model_class(problem_type).from_pretrained(directory).eval()
    names = [n for n in tokenizer.model_input_names if n in ("input_ids", "attention_mask", "token_type_ids")]

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs))).logits

    example = tokenizer(["an example input", "a second, longer example input"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        torch.onnx.export(
            LogitsOnly(),
            tuple(example[n] for n in names),
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names},
                          "logits": {0: "batch", 1: "sequence"} if problem_type == "token" else {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


def _splits(directory: Path, data: str | None):
    from routeclf.evaluation.evaluate import load_for_artifact, saved_splits

    try:
        loaded, _ = load_for_artifact(directory, data, "test")
        return saved_splits(directory, loaded)
    except RouteclfError as exc:
        raise RouteclfError(f"cannot load the training data for the parity check ({exc}); pass --data") from exc


def export_onnx(directory: Path, quantize: str | None = None, data: str | None = None) -> dict[str, Any]:
    """Export, check parity, then fit and measure each ONNX path at its own operating point.
    All or nothing: `onnx/`, `calibration.json` and `metrics.json` change together, or not at all."""
    from routeclf.evaluation.evaluate import artifact_task
    from routeclf.inference import load_predictor

    if quantize not in (None, "int8"):
        raise RouteclfError(f"unknown quantization {quantize!r}; supported: int8")
    task, _ = artifact_task(directory)
    _refuse_edited(directory)
    splits = _splits(directory, data)
    # Parity is about the export, not generalisation: test texts first, topped up with validation
    # and train texts (a small task's whole data when it holds fewer than MIN_PARITY_INPUTS).
    pool = [r.text for name in ("test", "validation", "train") for r in splits[name]]
    texts = pool[: max(MIN_PARITY_INPUTS, len(splits["test"]))]
    reference = load_predictor(directory)
    previous = {name: (directory / name).read_bytes() for name in ("calibration.json", "metrics.json")}
    staging = Path(tempfile.mkdtemp(prefix=".onnx.partial-", dir=directory))
    final, backup = directory / ONNX_DIR, None
    try:
        _export_fp32(directory, staging / FP32_FILE, task.problem_type)
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # Per-channel scales: per-tensor ones moved 2.3% of the default category model's top labels
            # (600 test questions), per-channel 1.2%, at the same speed.
            quantize_dynamic(str(staging / FP32_FILE), str(staging / INT8_FILE), weight_type=QuantType.QInt8,
                             per_channel=True)
        # The staged files are checked through the same Predictor the service uses.
        if final.exists():
            backup = directory / f".onnx.previous-{staging.name.rsplit('-', 1)[-1]}"
            final.rename(backup)
        staging.rename(final)
        check = _check_and_measure_tagger if task.problem_type == "token" else _check_and_measure
        report, calibration, metrics = check(directory, task, reference, texts, splits, bool(quantize))
        write_json(final / "parity.json", report)
        _record(directory, task, calibration, metrics)
    except BaseException:
        if final.exists() and not staging.exists():
            shutil.rmtree(final, ignore_errors=True)
        if backup is not None:
            backup.rename(final)
        for name, content in previous.items():
            (directory / name).write_bytes(content)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return report


def _refuse_edited(directory: Path) -> None:
    """An export re-measures and re-hashes: it must not approve files edited since training."""
    from routeclf.artifact.version import WEIGHTS, deciding_hashes
    from routeclf.artifact.writer import read_json

    try:
        recorded = read_json(directory / "metrics.json").get("hashes") or {}
    except (OSError, ValueError) as exc:
        raise RouteclfError(f"cannot read {directory / 'metrics.json'}: {exc}") from exc
    onnx_files = {WEIGHTS["onnx"], WEIGHTS["onnx-int8"]}
    now = {k: v for k, v in deciding_hashes(directory).items() if k not in onnx_files}
    changed = sorted(k for k in now.keys() | recorded.keys() - onnx_files if recorded.get(k) != now.get(k))
    if not recorded or changed:
        raise RouteclfError(f"{directory}: files changed since the model was evaluated "
                            f"({', '.join(changed) or 'no hashes recorded'}); retrain rather than export")


def parity(logits: np.ndarray, torch_logits: np.ndarray, backend: str) -> dict[str, float]:
    """How far an ONNX path's logits are from torch's (rows: texts, or a tagger's words); fp32
    must be within its bars, int8 is judged on its answers afterwards."""
    found = {"max_abs_logit_diff": float(np.abs(logits - torch_logits).max()),
             "top_label_agreement": float((logits.argmax(1) == torch_logits.argmax(1)).mean())}
    if backend == "onnx" and (found["max_abs_logit_diff"] > MAX_ABS_DIFF or found["top_label_agreement"] < MIN_AGREEMENT):
        raise RouteclfError(f"ONNX fp32 export fails parity: {found}")
    return found


def _check_and_measure(directory: Path, task, reference, texts: list[str], splits, quantized: bool):
    """fp32 parity on logits; then each ONNX path's policy fitted on validation and its figures
    on test; int8 must stay within its bars against the torch path's figures."""
    from routeclf.artifact.writer import read_json
    from routeclf.evaluation.calibration import fit_path
    from routeclf.evaluation.evaluate import score_rows
    from routeclf.inference.predictor import Predictor, policy_from
    from routeclf.training.trainer import saved_threshold_rows

    torch_logits = reference.encoder_logits(texts)
    report: dict[str, Any] = {"n_inputs": len(texts), "max_abs_diff_limit": MAX_ABS_DIFF, "min_agreement": MIN_AGREEMENT}
    calibration = read_json(directory / "calibration.json")
    rule = {k: v for k, v in calibration.items() if k != "paths"}
    # The rows the torch paths' thresholds were fitted on, so that every path is fitted alike.
    rows, where = saved_threshold_rows(directory, task, splits)
    for name in ("onnx", "onnx-int8"):  # a path this export does not measure is no longer served
        calibration["paths"].pop(name, None)
    metrics: dict[str, dict[str, Any]] = {}
    for backend in ("onnx", "onnx-int8") if quantized else ("onnx",):
        predictor = Predictor(directory, backend=backend)
        report["fp32" if backend == "onnx" else "int8"] = parity(predictor.encoder_logits(texts), torch_logits, backend)
        calibration["paths"][predictor.path] = fit_path(predictor, rows, task, rule, where)
        predictor.policy = policy_from(calibration, task, predictor.labels, predictor.path)
        metrics[predictor.path] = {name: score_rows(predictor, splits[name], task) for name in ("validation", "test")}
    if quantized:
        reference_test = score_rows(reference, splits["test"], task)
        report["int8"] |= int8_changes(reference_test, metrics["onnx-int8"]["test"])
        failures = int8_failures(report["int8"], reference_test)
        if failures:
            raise RouteclfError("the int8 model misses its parity bar, nothing was installed: " + "; ".join(failures))
    return report, calibration, metrics


def _check_and_measure_tagger(directory: Path, task, reference, texts: list[str], splits, quantized: bool):
    """Taggers: fp32 parity on every word's logits; each ONNX path's temperature, entity threshold
    and fusion rule fitted on validation and its entity figures on test; int8 within its bars
    (word tags kept, entity micro-F1 against the torch path's)."""
    from routeclf.artifact.writer import read_json
    from routeclf.evaluation.entities import fit_entity_path, score_entity_rows
    from routeclf.inference.entities import EntityPredictor
    from routeclf.training.trainer import saved_threshold_rows

    torch_logits = reference.raw_scores(texts)
    report: dict[str, Any] = {"n_inputs": len(texts), "n_words": len(torch_logits), "max_abs_diff_limit": MAX_ABS_DIFF,
                              "min_agreement": MIN_AGREEMENT}
    calibration = read_json(directory / "calibration.json")
    for name in ("onnx", "onnx-int8"):
        calibration["paths"].pop(name, None)
    recognizers = "fusion" in calibration["paths"]["routeclf"]
    rows, where = saved_threshold_rows(directory, task, splits)  # as the torch path was fitted
    metrics: dict[str, dict[str, Any]] = {}
    for backend in ("onnx", "onnx-int8") if quantized else ("onnx",):
        predictor = EntityPredictor(directory, backend=backend)
        report["fp32" if backend == "onnx" else "int8"] = parity(predictor.raw_scores(texts), torch_logits, backend)
        calibration["paths"][predictor.path] = fit_entity_path(predictor, rows, task, recognizers, where)
        metrics[predictor.path] = {name: score_entity_rows(predictor, splits[name], task) for name in ("validation", "test")}
    if quantized:
        torch_test = read_json(directory / "metrics.json")["test"]
        torch_f1 = torch_test["micro_f1"]
        int8_f1 = metrics["onnx-int8"]["test"]["micro_f1"]
        report["int8"] |= {"test_micro_f1_torch": torch_f1, "test_micro_f1_int8": int8_f1,
                           "test_micro_f1_change": int8_f1 - torch_f1}
        failures = [f"{name} {value:.4f} (required >= {limit:.4f})" for name, value, limit in (
            ("word tag agreement", report["int8"]["top_label_agreement"], INT8_MIN_AGREEMENT),
            # one entity is the finest step of a small test split: a change of one always passes
            ("test entity micro-F1 change", int8_f1 - torch_f1,
             -max(INT8_MAX_ACCURACY_DROP, 1 / max(torch_test["n_entities"], 1)))) if value < limit - 1e-9]
        if failures:
            raise RouteclfError("the int8 model misses its parity bar, nothing was installed: " + "; ".join(failures))
    return report, calibration, metrics


# int8 bars (against the torch path, each at its own operating point). Dynamic int8 of a small
# encoder keeps about 98-99% of top labels; a router takes a 1-point accuracy cost for its speed,
# and a detector may spend at most half of its 1% false-positive budget on quantisation. On a small
# test split one row is the finest step, so a change of one row always passes.
INT8_MIN_AGREEMENT = 0.98
INT8_MAX_ACCURACY_DROP = 0.01
INT8_MAX_RECALL_DROP = 0.02
INT8_MAX_FPR_RISE = 0.005


def int8_changes(reference: dict[str, Any], int8: dict[str, Any]) -> dict[str, Any]:
    changes = {"test_accuracy_torch": reference["accuracy"], "test_accuracy_int8": int8["accuracy"],
               "test_accuracy_change": int8["accuracy"] - reference["accuracy"]}
    if "binary" in reference:
        for key in ("recall", "false_positive_rate"):
            changes[f"test_{key}_change"] = (int8["binary"][key] or 0.0) - (reference["binary"][key] or 0.0)
    return changes


def int8_failures(report: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    """The int8 bars this export misses (none: it may be installed)."""
    n = reference["n"]
    # (name, measured, limit, direction); a change of one test row always passes.
    bars = [("top-label agreement", report["top_label_agreement"], INT8_MIN_AGREEMENT, ">="),
            ("test accuracy change", report["test_accuracy_change"], -max(INT8_MAX_ACCURACY_DROP, 1 / n), ">=")]
    if "binary" in reference:
        attacks, benign = reference["binary"]["n_attacks"] or 1, reference["binary"]["n_benign"] or 1
        bars += [("test recall change", report["test_recall_change"], -max(INT8_MAX_RECALL_DROP, 1 / attacks), ">="),
                 ("test false-positive rate change", report["test_false_positive_rate_change"],
                  max(INT8_MAX_FPR_RISE, 1 / benign), "<=")]
    tolerance = 1e-9  # the changes are differences of fractions
    return [f"{name} {value:.4f} (required {op} {limit:.4f})" for name, value, limit, op in bars
            if (value < limit - tolerance if op == ">=" else value > limit + tolerance)]


def _record(directory: Path, task, calibration: dict[str, Any], metrics: dict[str, dict[str, Any]]) -> None:
    """The ONNX paths' policies and figures, and the hashes of every deciding file, then the card."""
    from routeclf.artifact.card import write_model_card
    from routeclf.artifact.version import deciding_hashes
    from routeclf.artifact.writer import read_json, write_json_atomic

    saved = read_json(directory / "metrics.json")
    paths = {k: v for k, v in saved.get("paths", {}).items() if k not in ("onnx", "onnx-int8")}
    saved["paths"] = paths | metrics
    write_json_atomic(directory / "calibration.json", calibration)
    saved["hashes"] = deciding_hashes(directory)
    write_json_atomic(directory / "metrics.json", saved)
    if task.kind == "classifier":
        from routeclf.evaluation.plots import plot_coverage

        plot_coverage(saved, directory / "coverage_curve.png", f"{task.name}: coverage and accuracy (test)")
    write_model_card(directory, task)
