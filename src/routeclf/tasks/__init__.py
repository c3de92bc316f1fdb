"""Tasks are data: the built-in ones are task files in `builtin/`, a user's own are task files
anywhere, and a trained model carries its resolved task in `task.json`."""

from __future__ import annotations

import functools
import importlib.resources
import json
from pathlib import Path

from routeclf.errors import RouteclfError
from routeclf.tasks.base import Task
from routeclf.tasks.taskfile import read_task_file, task_from_json

TASK_FILE = "task.json"
BUILTIN = ("category", "jailbreak", "pii")


@functools.cache
def get_task(name: str) -> Task:
    """A built-in task by name."""
    if name not in BUILTIN:
        raise RouteclfError(
            f"unknown task {name!r}; built-in tasks: {', '.join(BUILTIN)}. For labels of your own, write a "
            "task file (name, labels, fallback_label) and pass its path, e.g. --task routes.yaml"
        )
    with importlib.resources.as_file(importlib.resources.files(__package__) / "builtin" / f"{name}.yaml") as path:
        return read_task_file(path)


def resolve_task(spec: str) -> Task:
    """A built-in task's name or a task file's path."""
    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise RouteclfError(f"task file not found: {spec}")
        return read_task_file(path)
    return get_task(spec)


def read_task_json(directory: Path) -> dict:
    """A model directory's `task.json`: the resolved task and its window settings."""
    path = Path(directory) / TASK_FILE
    if not path.is_file():
        raise RouteclfError(f"{directory} has no {TASK_FILE}: it is not a routeclf model directory, or was made by "
                            "a version before tasks were saved with the model; retrain it")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RouteclfError(f"cannot read {path}: {exc}") from exc


def load_model_task(directory: Path) -> tuple[Task, dict]:
    """The task a model directory was trained for, and its window settings, from `task.json`."""
    payload = read_task_json(directory)
    return task_from_json(payload, str(Path(directory) / TASK_FILE)), payload.get("window") or {}


def load_task(directory: Path) -> Task:
    return load_model_task(directory)[0]


__all__ = ["BUILTIN", "TASK_FILE", "Task", "get_task", "load_model_task", "load_task", "read_task_json", "resolve_task"]
