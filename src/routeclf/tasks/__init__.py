"""Task registry: adding a classifier means adding a module here, nothing else changes."""

from routeclf.errors import RouteclfError
from routeclf.tasks.base import Task
from routeclf.tasks.category import CATEGORY
from routeclf.tasks.jailbreak import JAILBREAK
from routeclf.tasks.pii import PII

TASKS: dict[str, Task] = {task.name: task for task in (CATEGORY, JAILBREAK, PII)}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise RouteclfError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


__all__ = ["TASKS", "Task", "get_task"]
