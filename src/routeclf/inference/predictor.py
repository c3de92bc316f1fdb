"""Load an artifact directory and classify texts with it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from routeclf.artifact.writer import read_json
from routeclf.errors import RouteclfError
from routeclf.evaluation.metrics import softmax
from routeclf.inference.cost import model_inputs, read_chars, window_stride
from routeclf.inference.decision import Decisions, Policy, decide
from routeclf.tasks import load_model_task
from routeclf.training.ngram import NgramModel, blend

NGRAM_DIR = "ngram"
CALIBRATION_FILE = "calibration.json"
BACKENDS = ("torch", "onnx", "onnx-int8")
# The ways a model is consumed, each with its own scores and so its own fitted policy:
# routeclf (predict, serve) with the encoder + n-gram blend on torch, ONNX fp32 or ONNX int8, and a
# plain transformers consumer (the vLLM semantic router) that loads model.safetensors alone.
PATHS = ("routeclf", "onnx", "onnx-int8", "transformers")
BACKEND_PATHS = {"torch": "routeclf", "onnx": "onnx", "onnx-int8": "onnx-int8"}
# A plain consumer tokenizes with the tokenizer's defaults and truncates at 512 tokens.
PLAIN_MAX_LENGTH = 512


def path_backend(path: str) -> tuple[str, bool]:
    """A consumer path's (backend, plain)."""
    if path not in PATHS:
        raise RouteclfError(f"unknown consumer path {path!r}; use one of {', '.join(PATHS)}")
    return ("torch", True) if path == "transformers" else ({v: k for k, v in BACKEND_PATHS.items()}[path], False)


@dataclass
class Windows:
    """The pieces a batch of texts was scored in: one per text, or several overlapping windows
    per text for windowed tasks. `owners[i]` is the text window `i` belongs to."""

    pieces: list[str]
    owners: np.ndarray
    encoder: np.ndarray  # raw encoder logits per piece
    n_texts: int


class Predictor:
    """An artifact's encoder, plus its n-gram companion when it has one, as one consumer path uses
    them (`plain`: the encoder alone, as plain transformers loads it)."""

    def __init__(
        self,
        directory: str | Path,
        device: str = "cpu",
        batch_size: int = 64,
        max_length: int | None = None,
        backend: str = "torch",
        plain: bool = False,
    ) -> None:
        self.directory = Path(directory)
        if not (self.directory / "config.json").is_file():
            raise RouteclfError(f"{self.directory} is not a model directory (no config.json)")
        if backend not in BACKENDS:
            raise RouteclfError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        if plain and backend != "torch":
            raise RouteclfError("the plain transformers path runs on torch")
        self.task, window = load_model_task(self.directory)
        self.plain = plain
        self.path = "transformers" if plain else BACKEND_PATHS[backend]
        self.windowed: bool = not plain and bool(window.get("enabled", self.task.windowed))
        # A text read whole is read as a plain consumer reads it (up to 512 tokens), so the two
        # paths give one answer; windows are as long as `task.json` records (the training length,
        # or for a detector the length chosen after training: `routeclf.training.reading`).
        self.max_length: int = max_length or (int(window.get("max_length") or PLAIN_MAX_LENGTH) if self.windowed
                                              else PLAIN_MAX_LENGTH)
        self.positive_label: str | None = self.task.positive_label
        # A plain consumer reads the text as written; routeclf's detectors may also read it deobfuscated.
        self.deobfuscate: bool = not plain and self.task.deobfuscate
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.directory)
        self.backend = backend
        self.encoder = load_encoder(self.directory, backend, "sequence", self.device)
        self.labels: tuple[str, ...] = self.encoder.labels
        self.policy: Policy | None = load_policy(self.directory, self.task, self.labels, self.path)
        blend_config = {} if plain else self._optional_json(f"{NGRAM_DIR}/blend.json")
        self.ngram: NgramModel | None = None
        self.ngram_weight = 0.0
        if blend_config:
            self.ngram = NgramModel.load(self.directory / NGRAM_DIR)
            self.ngram_weight = float(blend_config["weight"])

    @property
    def threshold(self) -> float:
        return self.fitted_policy().threshold

    def fitted_policy(self) -> Policy:
        if self.policy is None:
            raise RouteclfError(f"{self.directory} has no calibration for the {self.path} path in "
                                f"{CALIBRATION_FILE}" + ("; run routeclf export-onnx first" if "onnx" in self.path else ""))
        return self.policy

    def _optional_json(self, name: str) -> dict[str, Any]:
        path = self.directory / name
        return read_json(path) if path.is_file() else {}

    @torch.inference_mode()
    def windows(self, texts: list[str], progress: bool = False) -> Windows:
        """Encoder logits for every window of every text; batches are formed by length so padding
        stays small. Only detector tasks cut texts into windows (see `_windows`)."""
        pieces, owners = self._windows(texts)
        order = np.argsort([len(t) for t in pieces], kind="stable")
        scores = np.zeros((len(pieces), len(self.labels)), dtype=np.float32)
        starts = range(0, len(pieces), self.batch_size)
        for start in tqdm(starts, desc="predict", disable=not progress, unit="batch"):
            index = order[start : start + self.batch_size]
            scores[index] = self._forward([pieces[i] for i in index])
        return Windows(pieces, np.asarray(owners), scores, len(texts))

    def reduce(self, windows: Windows, scores: np.ndarray) -> np.ndarray:
        """One row of scores per text. Detectors: the window most likely to be an attack speaks for
        the text, so an attack after a long benign preamble is not cut off or averaged away.
        Classifiers: the mean of the windows' scores."""
        if len(windows.pieces) == windows.n_texts:
            return scores
        if self.positive_label is None:
            totals = np.zeros((windows.n_texts, scores.shape[1]), dtype=np.float64)
            np.add.at(totals, windows.owners, scores)
            return (totals / np.bincount(windows.owners, minlength=windows.n_texts)[:, None]).astype(scores.dtype)
        positive = self.labels.index(self.positive_label)
        risk = softmax(scores)[:, positive]
        best = np.full(windows.n_texts, -1)
        for window, owner in enumerate(windows.owners):
            if best[owner] < 0 or risk[window] > risk[best[owner]]:
                best[owner] = window
        return scores[best]

    def encoder_logits(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """The encoder's own logits per text, without the n-gram companion or temperature."""
        windows = self.windows(texts, progress)
        return self.reduce(windows, windows.encoder)

    def scores(self, windows: Windows, weight: float | None = None) -> np.ndarray:
        """Uncalibrated scores per text: each window's encoder logits blended with the n-gram
        model's reading of the same window, then reduced to one row per text."""
        scores = windows.encoder
        weight = self.ngram_weight if weight is None else weight
        if self.ngram is not None and weight > 0:
            scores = blend(scores, self.ngram.logits(windows.pieces), weight)
        return self.reduce(windows, scores)

    def readings(self, texts: list[str]) -> tuple[list[str], list[int]]:
        """What the model reads of each text, and whose it is: the text, and for a detector that
        undoes obfuscation, also the text with it undone (`routeclf.inference.deobfuscate`)."""
        if not self.deobfuscate:
            return list(texts), list(range(len(texts)))
        from routeclf.inference.deobfuscate import deobfuscated

        read, owners = [], []
        for i, text in enumerate(texts):
            for reading in (text, deobfuscated(text)):
                if reading is not None:
                    read.append(reading)
                    owners.append(i)
        return read, owners

    def _windows(self, texts: list[str]) -> tuple[list[str], list[int]]:
        """Each text's readings, cut into overlapping token windows when the task reads windows,
        and the text each piece belongs to."""
        readings, whose = self.readings(texts)
        if not self.windowed:
            return readings, whose
        stride = window_stride(self.max_length)
        pieces, owners = [], []
        for i, text in zip(whose, readings):
            encoded = self.tokenizer(
                text, truncation=True, max_length=self.max_length, stride=stride,
                return_overflowing_tokens=True, return_offsets_mapping=True,
            )
            spans = encoded["offset_mapping"] if len(encoded["input_ids"]) > 1 else None
            if not spans or not isinstance(spans[0], list):
                pieces.append(text)
                owners.append(i)
                continue
            for offsets in spans:
                chars = [pair for pair in offsets if pair[1] > pair[0]]
                pieces.append(text[chars[0][0] : chars[-1][1]] if chars else text)
                owners.append(i)
        return pieces, owners

    def model_inputs(self, texts: list[str]) -> list[int]:
        """Encoder inputs each text is read in, all its readings counted (`routeclf.inference.cost`)."""
        readings, owners = self.readings(texts)
        costs = [0] * len(texts)
        for owner, cost in zip(owners, model_inputs(self.tokenizer, readings, self.max_length, self.windowed)):
            costs[owner] += cost
        return costs

    def read_chars(self, text: str) -> int:
        """Characters of a text the model reads (`routeclf.inference.cost`)."""
        return read_chars(text, self.max_length, self.windowed)

    def _forward(self, texts: list[str]) -> np.ndarray:
        tensors = "pt" if self.backend == "torch" else "np"
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors=tensors)
        return self.encoder.logits(encoded)

    def raw_scores(self, texts: list[str], progress: bool = False) -> np.ndarray:
        return self.scores(self.windows(texts, progress))

    def decide(self, texts: list[str], threshold: float | None = None) -> Decisions:
        return decide(self.raw_scores(texts), self.fitted_policy(), threshold)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.decide(texts).probabilities

    def predict(self, texts: list[str], top_k: int = 3, threshold: float | None = None) -> list[dict[str, Any]]:
        """The answers, as the CLI prints them (see `routeclf.inference.decision`)."""
        decisions = self.decide(texts, threshold)
        return [decisions.row(i, top_k) for i in range(len(texts))]


@dataclass
class Encoder:
    """An artifact's encoder on one backend: the torch model, or an onnxruntime session."""

    config: Any
    device: torch.device
    model: Any = None  # torch
    session: Any = None  # onnx, onnx-int8
    input_names: tuple[str, ...] = ()  # the session's inputs, read once rather than per batch

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.config.id2label[i] for i in range(len(self.config.id2label)))

    @torch.inference_mode()
    def logits(self, encoded) -> np.ndarray:
        """Logits of a padded, tokenized batch (tensors of the backend's kind)."""
        if self.model is not None:
            return self.model(**encoded.to(self.device)).logits.float().cpu().numpy()
        feed = {name: encoded[name].astype(np.int64) for name in self.input_names}
        return self.session.run(None, feed, arena_shrinkage())[0].astype(np.float32)


def load_encoder(directory: Path, backend: str, problem_type: str, device: torch.device) -> Encoder:
    from routeclf.training.models import model_class

    if backend == "torch":
        model = model_class(problem_type).from_pretrained(directory).to(device).eval()
        return Encoder(model.config, device, model=model)
    from transformers import AutoConfig

    from routeclf.artifact.onnx import load_session

    session = load_session(directory, quantized=backend == "onnx-int8")
    return Encoder(AutoConfig.from_pretrained(directory), device, session=session,
                   input_names=tuple(i.name for i in session.get_inputs()))


# onnxruntime's CPU arena keeps what every new input shape needed: a service scoring texts of every
# length grew past 5 GB in 10 minutes. After each run the arena hands back what it is not using
# (a process stayed near 0.8 GB), at a small cost per batch.
@lru_cache(maxsize=1)
def arena_shrinkage():
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def load_policy(directory: Path, task, labels: tuple[str, ...], path: str) -> Policy | None:
    """A consumer path's policy from `calibration.json` (None before calibration is written)."""
    file = directory / CALIBRATION_FILE
    return policy_from(read_json(file), task, labels, path) if file.is_file() else None


def policy_from(calibration: dict[str, Any], task, labels: tuple[str, ...], path: str) -> Policy | None:
    section = calibration.get("paths", {}).get(path)
    if section is None:
        return None
    return Policy(labels, float(section["temperature"]), float(section["threshold"]), task.fallback_label,
                  task.positive_label)
