"""What decides a model's answers, hashed: a version that a router's logs can show, and the
hashes `metrics.json` records so that `routeclf validate` sees any later edit."""

from __future__ import annotations

import hashlib
from pathlib import Path

# The weights each backend answers with.
WEIGHTS = {"torch": "model.safetensors", "onnx": "onnx/model.onnx", "onnx-int8": "onnx/model_int8.onnx"}
DECIDING_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "task.json",
                  "calibration.json",
                  "label_mapping.json", "ngram/blend.json", "ngram/ngram_config.json", "ngram/ngram.safetensors")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def deciding_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file present that decides an answer: all weights, the task, the
    calibration, the label mappings and the companions."""
    from routeclf.tasks import load_task

    mapping = load_task(directory).mapping_file
    names = [*WEIGHTS.values(), *DECIDING_FILES, *([mapping] if mapping else [])]
    return {name: file_sha256(directory / name) for name in names if (directory / name).is_file()}


def model_version(directory: Path, backend: str = "torch") -> str:
    """`sha256:` and the first 16 hex digits of the hash of every deciding file the backend uses."""
    digest = hashlib.sha256()
    for name in (WEIGHTS[backend], *DECIDING_FILES):
        path = directory / name
        if path.is_file():
            digest.update(f"{name}\0{file_sha256(path)}\n".encode())
    return "sha256:" + digest.hexdigest()[:16]
