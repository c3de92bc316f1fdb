"""Data code that a task file names by `loader:` (multi-source folders, training-only rows)."""

from __future__ import annotations

from routeclf.tasks import category, jailbreak, pii
from routeclf.tasks.base import DataCode

LOADERS: dict[str, DataCode] = {
    "category": DataCode(augment=category.question_views, train_only=category.chat_training_rows),
    "jailbreak": DataCode(folder=jailbreak.load_folder, augment=jailbreak.mixed_rows, augment_validation=True,
                          train_only=jailbreak.written_training_rows, labels=("benign", "jailbreak")),
    "pii": DataCode(folder=pii.load_folder, train_only=pii.written_training_rows),
}


def data_code(name: str | None) -> DataCode:
    if name is None:
        return DataCode()
    try:
        return LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown loader {name!r}; built-in loaders: {', '.join(LOADERS)}") from None
