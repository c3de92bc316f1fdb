"""`routeclf export-onnx`: the encoder as ONNX (fp32, optionally int8), checked for parity.

The export goes to `DIR/onnx/` only after parity holds on real inputs: max |logit difference|
<= 1e-3 and >= 99.5% identical top labels for fp32. The int8 model is reported with its
agreement and its accuracy change on the test split.
"""

from __future__ import annotations

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


def load_session(directory: Path, quantized: bool = False):
    import onnxruntime as ort

    path = directory / ONNX_DIR / (INT8_FILE if quantized else FP32_FILE)
    if not path.is_file():
        hint = " --quantize int8" if quantized else ""
        raise RouteclfError(f"{path} not found; run `routeclf export-onnx {directory}{hint}` first")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export_fp32(directory: Path, path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
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
            dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


def _parity_texts(directory: Path, data: str | None) -> tuple[list[str], list[str], np.ndarray]:
    """Real inputs for the parity check (test split first), and the labelled test split."""
    from routeclf.evaluation.evaluate import artifact_task, load_for_artifact, saved_splits

    task, _ = artifact_task(directory)
    try:
        loaded, _ = load_for_artifact(directory, data, "test")
        splits = saved_splits(directory, loaded)
    except RouteclfError as exc:
        raise RouteclfError(f"cannot load the training data for the parity check ({exc}); pass --data") from exc
    test_rows = splits["test"]
    # Parity is about the export, not generalisation: top up with validation and train texts
    # (a small task's whole data when it holds fewer than MIN_PARITY_INPUTS).
    pool = [r.text for name in ("test", "validation", "train") for r in splits[name]]
    texts = pool[: max(MIN_PARITY_INPUTS, len(test_rows))]
    y = np.array([task.label2id[r.label] for r in test_rows])
    return texts, [r.text for r in test_rows], y


def export_onnx(directory: Path, quantize: str | None = None, data: str | None = None) -> dict[str, Any]:
    from routeclf.inference.predictor import Predictor

    if quantize not in (None, "int8"):
        raise RouteclfError(f"unknown quantization {quantize!r}; supported: int8")
    from routeclf.evaluation.evaluate import artifact_task

    task, _ = artifact_task(directory)
    if task.problem_type != "sequence":
        raise RouteclfError(f"ONNX export is for sequence classifiers; {directory} holds a {task.name} "
                            f"({task.problem_type} classification) model, which is served with torch")
    texts, test_texts, y_test = _parity_texts(directory, data)
    reference = Predictor(directory)
    staging = Path(tempfile.mkdtemp(prefix=".onnx.partial-", dir=directory))
    try:
        _export_fp32(directory, staging / FP32_FILE)
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(staging / FP32_FILE), str(staging / INT8_FILE), weight_type=QuantType.QInt8)
        # Check the staged files through the same Predictor the service uses.
        final = directory / ONNX_DIR
        backup = None
        if final.exists():
            backup = directory / f".onnx.previous-{staging.name.rsplit('-', 1)[-1]}"
            final.rename(backup)
        staging.rename(final)
        try:
            report = _parity(directory, reference, texts, test_texts, y_test, bool(quantize))
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            if backup is not None:
                backup.rename(final)
            raise
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
        write_json(final / "parity.json", report)
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _parity(directory: Path, reference, texts: list[str], test_texts: list[str], y_test: np.ndarray,
            quantized: bool) -> dict[str, Any]:
    from routeclf.inference.predictor import Predictor

    torch_logits = reference.encoder_logits(texts)
    report: dict[str, Any] = {"n_inputs": len(texts), "max_abs_diff_limit": MAX_ABS_DIFF, "min_agreement": MIN_AGREEMENT}
    fp32 = Predictor(directory, backend="onnx").encoder_logits(texts)
    report["fp32"] = {
        "max_abs_logit_diff": float(np.abs(fp32 - torch_logits).max()),
        "top_label_agreement": float((fp32.argmax(1) == torch_logits.argmax(1)).mean()),
    }
    if report["fp32"]["max_abs_logit_diff"] > MAX_ABS_DIFF or report["fp32"]["top_label_agreement"] < MIN_AGREEMENT:
        raise RouteclfError(f"ONNX fp32 export fails parity: {report['fp32']}")
    if quantized:
        int8 = Predictor(directory, backend="onnx-int8")
        reference_accuracy = float((reference.predict_proba(test_texts).argmax(1) == y_test).mean())
        int8_accuracy = float((int8.predict_proba(test_texts).argmax(1) == y_test).mean())
        logits = int8.encoder_logits(texts)
        report["int8"] = {
            "max_abs_logit_diff": float(np.abs(logits - torch_logits).max()),
            "top_label_agreement": float((logits.argmax(1) == torch_logits.argmax(1)).mean()),
            "test_accuracy_fp32": reference_accuracy,
            "test_accuracy_int8": int8_accuracy,
            "test_accuracy_change": int8_accuracy - reference_accuracy,
        }
    return report
