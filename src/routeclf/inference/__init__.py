"""Predictors: `Predictor` for sequence tasks, `EntityPredictor` for token tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_predictor(directory: str | Path, problem_type: str | None = None, **options: Any):
    """The predictor an artifact needs, chosen by its task's problem type."""
    from routeclf.artifact.writer import read_json

    if problem_type is None:
        config = Path(directory) / "training_config.json"
        problem_type = read_json(config).get("problem_type", "sequence") if config.is_file() else "sequence"
    if problem_type == "token":
        from routeclf.inference.entities import EntityPredictor

        options.pop("task_name", None)
        return EntityPredictor(directory, **options)
    from routeclf.inference.predictor import Predictor

    return Predictor(directory, **options)
