"""Predictors: `Predictor` for classifiers and detectors, `EntityPredictor` for taggers."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_predictor(directory: str | Path, **options: Any):
    """The predictor a model directory needs, chosen by the kind of its saved task."""
    from routeclf.errors import RouteclfError
    from routeclf.tasks import load_task

    if not (Path(directory) / "config.json").is_file():
        raise RouteclfError(f"{directory} is not a model directory (no config.json)")
    if load_task(Path(directory)).problem_type == "token":
        from routeclf.inference.entities import EntityPredictor

        # Taggers are served with torch (no ONNX export for them yet), through routeclf alone.
        if options.pop("backend", "torch") != "torch" or options.pop("plain", False):
            raise RouteclfError(f"{directory} holds a tagger, which is measured and served on the routeclf path alone")
        return EntityPredictor(directory, **options)
    from routeclf.inference.predictor import Predictor

    return Predictor(directory, **options)
