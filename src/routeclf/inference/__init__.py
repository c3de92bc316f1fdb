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

        # A tagger's answer needs routeclf's decoding and fusion: there is no plain transformers path.
        if options.pop("plain", False):
            raise RouteclfError(f"{directory} holds a tagger, which has no plain transformers path")
        return EntityPredictor(directory, **options)
    from routeclf.inference.predictor import Predictor

    return Predictor(directory, **options)
