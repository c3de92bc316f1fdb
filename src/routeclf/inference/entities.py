"""Load a token-classification artifact and find entities (character spans) in texts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from routeclf.artifact.writer import read_json
from routeclf.data.alignment import Entity, decode_tags, merge_units, units
from routeclf.errors import RouteclfError
from routeclf.evaluation.metrics import softmax
from routeclf.inference.cost import model_inputs, read_chars, window_stride
from routeclf.inference.hybrid import FusionRule, fuse
from routeclf.inference.predictor import BACKEND_PATHS, BACKENDS, CALIBRATION_FILE, load_encoder
from routeclf.inference.recognizers import recognize
from routeclf.tasks import load_model_task


@dataclass
class WordScores:
    """One text's words: character extents and raw logits of the word's first sub-token."""

    offsets: list[tuple[int, int]]
    logits: np.ndarray  # (words, labels)


class EntityPredictor:
    """A token classifier: texts are read in overlapping windows, each word is scored from the
    window where it sits furthest from an edge, and words merge into entities."""

    def __init__(self, directory: str | Path, device: str = "cpu", batch_size: int = 32,
                 max_length: int | None = None, backend: str = "torch") -> None:
        self.directory = Path(directory)
        if not (self.directory / "config.json").is_file():
            raise RouteclfError(f"{self.directory} is not a model directory (no config.json)")
        if backend not in BACKENDS:
            raise RouteclfError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self.task, window = load_model_task(self.directory)
        self.max_length: int = max_length or int(window.get("max_length") or 512)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.directory)
        self.backend = backend
        self.path = BACKEND_PATHS[backend]
        self.encoder = load_encoder(self.directory, backend, "token", self.device)
        self.labels: tuple[str, ...] = self.encoder.labels
        self.entity_types = tuple(sorted({label[2:] for label in self.labels if label != "O"}))
        self.temperature, self.threshold = 1.0, 0.0
        self.fusion: FusionRule | None = None
        # Absent only while training (or an export) calibrates this path.
        self.calibrated = False
        saved = self._optional_json(CALIBRATION_FILE)
        if saved and "routeclf" not in saved.get("paths", {}):
            raise RouteclfError(f"{self.directory / CALIBRATION_FILE} has no routeclf path: the model was "
                                "calibrated by an earlier version; retrain it")
        if self.path in saved.get("paths", {}):
            self.apply_calibration(saved["paths"][self.path])

    def apply_calibration(self, section: dict) -> None:
        """This path's temperature, entity threshold and (when fitted) the rule fusing the model with
        Presidio's recognizers (`inference.hybrid`)."""
        self.temperature = float(section["temperature"])
        self.threshold = float(section["threshold"])
        self.fusion = FusionRule.from_json(section["fusion"]) if "fusion" in section else None
        self.calibrated = True

    def check_calibrated(self) -> None:
        if not self.calibrated:
            raise RouteclfError(f"{self.directory} has no calibration for the {self.path} path in {CALIBRATION_FILE}"
                                + ("; run routeclf export-onnx first" if "onnx" in self.path else ""))

    def _optional_json(self, name: str) -> dict:
        path = self.directory / name
        return read_json(path) if path.is_file() else {}

    @torch.inference_mode()
    def word_scores(self, texts: list[str]) -> list[WordScores]:
        if not texts:
            return []
        stride = window_stride(self.max_length)
        encoded = self.tokenizer(
            texts, truncation=True, max_length=self.max_length, stride=stride,
            return_overflowing_tokens=True, return_offsets_mapping=True,
        )
        owners = encoded["overflow_to_sample_mapping"]
        n_windows = len(encoded["input_ids"])
        window_logits: list[np.ndarray] = [np.empty(0)] * n_windows
        order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
        for start in range(0, n_windows, self.batch_size):
            index = order[start : start + self.batch_size]
            features = [{k: encoded[k][i] for k in self.tokenizer.model_input_names if k in encoded} for i in index]
            logits = self._forward(features)
            for row, i in enumerate(index):
                window_logits[i] = logits[row, : len(encoded["input_ids"][i])]
        # A word's extent is the union of its pieces in every window (a window edge may cut a long
        # word); its logits come from the window that holds its first sub-token furthest from an edge.
        extents: list[dict[int, tuple[int, int]]] = [{} for _ in texts]
        for window in range(n_windows):
            offsets, words = encoded["offset_mapping"][window], encoded.word_ids(window)
            for unit in units(offsets, words):
                word, start, end = words[unit[0]], offsets[unit[0]][0], offsets[unit[-1]][1]
                held = extents[owners[window]].get(word, (start, end))
                extents[owners[window]][word] = (min(held[0], start), max(held[1], end))
        best: list[dict[int, tuple[int, tuple[int, int], np.ndarray]]] = [{} for _ in texts]
        for window in range(n_windows):
            offsets, words = encoded["offset_mapping"][window], encoded.word_ids(window)
            for unit in units(offsets, words):
                first, word = unit[0], words[unit[0]]
                extent = extents[owners[window]][word]
                if offsets[first][0] != extent[0]:
                    continue  # this window starts inside the word
                centrality = min(first, len(offsets) - 1 - first)
                held = best[owners[window]].get(word)
                if held is None or centrality > held[0]:
                    best[owners[window]][word] = (centrality, extent, window_logits[window][first])
        results = []
        for words in best:
            ordered = [words[w] for w in sorted(words)]
            logits = np.array([entry[2] for entry in ordered]) if ordered else np.zeros((0, len(self.labels)))
            results.append(WordScores([entry[1] for entry in ordered], logits))
        return results

    def _forward(self, features: list[dict]) -> np.ndarray:
        """Token logits of a batch of tokenized windows, padded to the longest."""
        return self.encoder.logits(self.tokenizer.pad(features, return_tensors="pt" if self.backend == "torch" else "np"))

    def model_inputs(self, texts: list[str]) -> list[int]:
        """Encoder inputs each text is read in (`routeclf.inference.cost`)."""
        return model_inputs(self.tokenizer, texts, self.max_length, windowed=True)

    def read_chars(self, text: str) -> int:
        """Characters of a text the model reads (`routeclf.inference.cost`)."""
        return read_chars(text, self.max_length, windowed=True)

    def raw_scores(self, texts: list[str]) -> np.ndarray:
        """Every word's raw logits, texts one after another (for checks and comparisons)."""
        scores = self.word_scores(texts)
        return np.concatenate([w.logits for w in scores]) if scores else np.zeros((0, len(self.labels)))

    def entities(self, texts: list[str], threshold: float | None = None, types: Iterable[str] | None = None,
                 scores: list[WordScores] | None = None, fused: bool = True) -> list[list[Entity]]:
        """Entities per text, each with its confidence; `types` keeps only those types. With a
        fusion rule (and `fused`), the model's entities are fused with Presidio's recognizers."""
        threshold = self.threshold if threshold is None else threshold
        wanted = set(types) if types is not None else None
        results = []
        for text, words in zip(texts, scores or self.word_scores(texts)):
            probabilities = softmax(words.logits / self.temperature) if len(words.offsets) else words.logits
            path = decode_tags(words.logits / self.temperature, self.labels)
            tagged = [
                (start, end, self.labels[tag], float(p[tag]))
                for (start, end), p, tag in zip(words.offsets, probabilities, path)
            ]
            found = merge_units(text, tagged, threshold)
            if self.fusion is not None and fused:
                found = fuse(found, recognize(text), self.fusion)
            results.append([e for e in found if wanted is None or e.type in wanted])
        return results

