"""The served models: one slot per name, loaded and warmed in the background, scored through a
micro-batcher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from routeclf.serving.batching import MicroBatcher

WARMUP_TEXTS = ["warm-up request", "What is the derivative of x squared?"]
# The vLLM semantic router's endpoints, bound to the models that play their roles.
ROLE_ENDPOINTS = {"intent": ("category", "classifier"), "security": ("jailbreak", "detector"), "pii": ("pii", "tagger")}


def check_role(name: str, task, directory: Path) -> None:
    """A model served under a role's name (category, jailbreak, pii) must be of the role's kind."""
    from routeclf.errors import RouteclfError

    for endpoint, (model, kind) in ROLE_ENDPOINTS.items():
        if model == name and task.kind != kind:
            raise RouteclfError(f"{directory} holds a {task.kind} ({task.name}); the {name} role "
                                f"(/api/v1/classify/{endpoint}) needs a {kind}")


class ModelSlot:
    """One served model. Its task (and so its kind and answer shape) is read at once from
    `task.json`; the weights load in the background, and `/ready` reports either."""

    def __init__(self, name: str, directory: Path, backend: str, max_batch_size: int, max_wait_ms: float,
                 max_queue: int, on_batch) -> None:
        from routeclf.errors import RouteclfError
        from routeclf.tasks import load_task

        self.name, self.directory, self.backend = name, directory, backend
        self.max_batch_size, self.max_wait_ms, self.on_batch = max_batch_size, max_wait_ms, on_batch
        self.max_queue = max_queue
        self.predictor = None
        self.version: str | None = None
        self.error: str | None = None
        self.batcher: MicroBatcher | None = None
        self.task = None
        try:
            self.task = load_task(directory)
            check_role(name, self.task, directory)
        except RouteclfError as exc:
            self.error = str(exc)

    @property
    def kind(self) -> str | None:
        return self.task.kind if self.task is not None else None

    def load(self) -> None:
        if self.error is not None:
            return
        from routeclf.artifact.validate import missing_files
        from routeclf.artifact.version import model_version
        from routeclf.inference import load_predictor

        try:
            missing = missing_files(self.directory, self.task)
            if missing:  # nothing is invented for a file that is not there
                self.error = f"incomplete model directory: missing {', '.join(missing)}"
                return
            predictor = load_predictor(self.directory, backend=self.backend)
            scorer = predictor.word_scores if self.kind == "tagger" else predictor.raw_scores
            scorer(WARMUP_TEXTS)
            if self.kind == "tagger":  # a path without its calibration is not served
                predictor.check_calibrated()
            else:
                predictor.fitted_policy()
            self.version = model_version(self.directory, self.backend)
            self._scorer = scorer
            self.predictor = predictor
        except Exception as exc:  # reported by /ready and by 503s; the service stays up
            self.error = f"{type(exc).__name__}: {exc}"

    def start(self) -> None:
        self.batcher = MicroBatcher(self._score, self.max_batch_size, self.max_wait_ms, self.max_queue,
                                    on_batch=self.on_batch, read_chars=self.read_chars)
        self.batcher.start()

    def model_inputs(self, texts: list[str]) -> list[int]:
        """What each text costs the model (`routeclf.inference.cost`)."""
        return self.predictor.model_inputs(texts)

    def read_chars(self, text: str) -> int:
        """Characters of a text the model reads: what predicts its scoring time."""
        return self.predictor.read_chars(text)

    def _score(self, texts: list[str]) -> list[Any]:
        """Per text: uncalibrated scores, or (taggers) word scores, that each request then turns
        into its answer with its own options (`routeclf.inference.decision.decide`)."""
        return list(self._scorer(texts))

    @property
    def state(self) -> str:
        return "ready" if self.predictor is not None else f"failed: {self.error}" if self.error else "loading"

    def identity(self) -> dict[str, Any]:
        """What every answer carries: which model gave it."""
        return {"name": self.name, "version": self.version}
