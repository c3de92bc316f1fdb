"""A model's version: a content hash of what decides its answers (weights, task, calibration and
companions), so a router's logs show exactly which model answered."""

from __future__ import annotations

import hashlib
from pathlib import Path

# The weights each backend answers with.
WEIGHTS = {"torch": "model.safetensors", "onnx": "onnx/model.onnx", "onnx-int8": "onnx/model_int8.onnx"}
DECIDING_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "task.json", "calibration.json",
                  "ngram/blend.json", "ngram/ngram_config.json", "ngram/ngram.safetensors")


def model_version(directory: Path, backend: str = "torch") -> str:
    """`sha256:` and the first 16 hex digits of the hash of every deciding file present."""
    digest = hashlib.sha256()
    for name in (WEIGHTS[backend], *DECIDING_FILES):
        path = directory / name
        if not path.is_file():
            continue
        digest.update(name.encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]
