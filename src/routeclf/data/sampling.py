"""Seeded, label-stratified sampling that keeps every class (never "the first N rows")."""

from __future__ import annotations

import random
from collections import defaultdict

from routeclf.data.sources import Row
from routeclf.errors import DataError


def stratified_sample(rows: list[Row], n: int, seed: int, min_per_label: int = 3) -> list[Row]:
    """About `n` rows, each label in proportion but never fewer than `min_per_label` (or all it has)."""
    if n >= len(rows):
        return list(rows)
    by_label: dict[str, list[Row]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r.id):
        by_label[row.label].append(row)
    if n < min_per_label * len(by_label):
        raise DataError(
            f"--max-samples {n} is too few to keep {min_per_label} rows of each of the {len(by_label)} labels "
            f"(need at least {min_per_label * len(by_label)})"
        )
    exact = {label: n * len(members) / len(rows) for label, members in by_label.items()}
    quota = {label: max(min(min_per_label, len(by_label[label])), int(x)) for label, x in exact.items()}
    # Hand out what is left by largest remainder, so the total is n.
    for label in sorted(exact, key=lambda lb: int(exact[lb]) - exact[lb]):
        if sum(quota.values()) >= n:
            break
        if quota[label] < len(by_label[label]):
            quota[label] += 1
    rng = random.Random(seed)
    sample = [row for label, members in sorted(by_label.items()) for row in rng.sample(members, quota[label])]
    return sorted(sample, key=lambda r: r.id)
