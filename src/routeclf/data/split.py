"""The one split every task uses, its leakage audit and its manifest (`split.json`).

Rows are grouped by normalised text, so copies of one text never sit in two splits, and each
label is spread over train/validation/test in the requested ratios. The split is computed once
and written down; training reads `train`, model selection reads `validation`, and only the final
evaluation reads `test`. Nothing ever merges splits and splits again.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from routeclf.data.sampling import stratified_sample
from routeclf.data.sources import LoadedData, Row
from routeclf.errors import DataError, LeakageError

SPLITS = ("train", "validation", "test")
GROUP_RULE = "lower case, whitespace collapsed (routeclf.data.sources.normalise_text)"


def _targets(counts: Counter[str], ratios: tuple[float, ...]) -> dict[str, list[int]]:
    """Per label, how many rows each split should get (largest remainder, sums exactly)."""
    targets = {}
    for label, n in counts.items():
        exact = [n * r for r in ratios]
        floor = [int(x) for x in exact]
        order = sorted(range(len(ratios)), key=lambda i: (floor[i] - exact[i], i))
        for i in order[: n - sum(floor)]:
            floor[i] += 1
        # Every split gets at least one row of every label that has enough rows for it.
        for i in range(len(floor)):
            if floor[i] == 0 and n >= len(ratios):
                floor[floor.index(max(floor))] -= 1
                floor[i] += 1
        targets[label] = floor
    return targets


def split_rows(
    rows: list[Row], ratios: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 42
) -> dict[str, list[Row]]:
    """Grouped, stratified split. Deterministic for a seed, whatever the input order."""
    if len(ratios) != 3 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise DataError(f"split ratios must be three positive numbers summing to 1, got {ratios}")
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[row.group].append(row)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    # Large groups first, singletons last: the singletons then fill each label's remaining gap.
    keys.sort(key=lambda k: -len(groups[k]))

    targets = _targets(Counter(row.label for row in rows), ratios)
    filled: dict[str, list[int]] = {label: [0, 0, 0] for label in targets}
    assigned: list[list[Row]] = [[], [], []]
    for key in keys:
        members = groups[key]
        need = Counter(row.label for row in members)
        # Send the group where its labels are most wanted; ties go to the larger split.
        best = max(
            range(3),
            key=lambda s: (sum(n * (targets[lb][s] - filled[lb][s]) for lb, n in need.items()), ratios[s], -s),
        )
        for label, n in need.items():
            filled[label][best] += n
        assigned[best].extend(members)
    return {name: sorted(part, key=lambda r: r.id) for name, part in zip(SPLITS, assigned)}


def _near_duplicates(splits: dict[str, list[Row]], threshold: float, limit: int) -> dict[str, Any]:
    """Pairs across splits whose word TF-IDF cosine similarity is at least `threshold`."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    train = splits["train"]
    if not train:
        return {"threshold": threshold, "count": 0, "examples": []}
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1).fit([r.text for r in train])
    train_matrix = vectorizer.transform([r.text for r in train])
    examples: list[dict[str, Any]] = []
    count = 0
    for name in ("validation", "test"):
        part = splits[name]
        if not part:
            continue
        similarity = vectorizer.transform([r.text for r in part]) @ train_matrix.T
        similarity = similarity.tocoo()
        for i, j, score in zip(similarity.row, similarity.col, similarity.data):
            if score >= threshold:
                count += 1
                if len(examples) < limit:
                    examples.append(
                        {
                            "split": name,
                            "id": part[i].id,
                            "train_id": train[j].id,
                            "similarity": round(float(score), 4),
                            "text": part[i].text[:200],
                            "train_text": train[j].text[:200],
                        }
                    )
    examples.sort(key=lambda e: -e["similarity"])
    return {"threshold": threshold, "count": count, "examples": examples}


def audit_splits(
    splits: dict[str, list[Row]], near_threshold: float = 0.9, example_limit: int = 10
) -> dict[str, Any]:
    """Fail on shared ids, exact or normalised duplicate texts across splits; report near-duplicates."""
    report: dict[str, Any] = {"shared_ids": {}, "exact_duplicates": {}, "normalised_duplicates": {}}
    problems = []
    for a_index, a in enumerate(SPLITS):
        for b in SPLITS[a_index + 1 :]:
            pair = f"{a}/{b}"
            for key, attribute in (
                ("shared_ids", "id"),
                ("exact_duplicates", "text"),
                ("normalised_duplicates", "group"),
            ):
                shared = {getattr(r, attribute) for r in splits[a]} & {getattr(r, attribute) for r in splits[b]}
                report[key][pair] = len(shared)
                if shared:
                    sample = next(iter(sorted(shared)))
                    problems.append(f"{len(shared)} {key.replace('_', ' ')} between {pair} (e.g. {sample[:80]!r})")
    report["near_duplicates"] = _near_duplicates(splits, near_threshold, example_limit)
    report["passed"] = not problems
    if problems:
        raise LeakageError("leakage audit failed: " + "; ".join(problems))
    return report


def build_manifest(
    data: LoadedData,
    splits: dict[str, list[Row]],
    seed: int,
    ratios: tuple[float, float, float],
    audit: dict[str, Any],
) -> dict[str, Any]:
    return {
        "data_source": data.source,
        "data_sha256": data.sha256,
        "n_rows": len(data.rows),
        "seed": seed,
        "ratios": dict(zip(SPLITS, ratios)),
        "group_rule": GROUP_RULE,
        "label_counts": {name: dict(sorted(Counter(r.label for r in part).items())) for name, part in splits.items()},
        "audit": audit,
        "ids": {name: [r.id for r in part] for name, part in splits.items()},
    }


def make_split(
    data: LoadedData,
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 42,
    max_samples: int | None = None,
) -> tuple[dict[str, list[Row]], dict[str, Any]]:
    """Sample (optionally), split, audit and describe: the only way training obtains its splits."""
    rows = stratified_sample(data.rows, max_samples, seed) if max_samples else data.rows
    splits = split_rows(rows, ratios, seed)
    for name, part in splits.items():
        if not part:
            raise DataError(f"the {name} split is empty: {len(data.rows)} rows are too few for ratios {ratios}")
    audit = audit_splits(splits)
    manifest = build_manifest(data, splits, seed, ratios, audit)
    manifest["max_samples"] = max_samples
    return splits, manifest


def write_manifest(manifest: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read split manifest {path}: {exc}") from exc
    if set(manifest.get("ids", {})) != set(SPLITS):
        raise DataError(f"{path} does not list ids for {', '.join(SPLITS)}")
    return manifest


def apply_manifest(data: LoadedData, manifest: dict[str, Any], strict: bool = True) -> dict[str, list[Row]]:
    """Rebuild the saved splits from freshly loaded rows.

    With `strict`, the data must be exactly what the manifest was made from (same sha256).
    """
    if strict and data.sha256 != manifest["data_sha256"]:
        raise DataError(
            f"{data.source} is not the data this split was made from "
            f"(sha256 {data.sha256[:12]}... vs {manifest['data_sha256'][:12]}... in split.json)"
        )
    by_id = {row.id: row for row in data.rows}
    splits = {}
    for name in SPLITS:
        missing = [i for i in manifest["ids"][name] if i not in by_id]
        if missing:
            raise DataError(f"{len(missing)} {name} ids of split.json are not in {data.source} (e.g. {missing[:5]})")
        splits[name] = [by_id[i] for i in manifest["ids"][name]]
    return splits
