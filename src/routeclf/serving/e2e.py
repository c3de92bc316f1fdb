"""`routeclf e2e`: labelled texts through a running service, single and batched."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np

from routeclf.data.sources import Row
from routeclf.errors import RouteclfError


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.array(values)
    return {f"p{q}": round(float(np.percentile(array, q)), 3) for q in (50, 95, 99)} | {"mean": round(float(array.mean()), 3)}


def run_e2e(url: str, rows: list[Row], task_type: str = "intent", batch_size: int = 32,
            api_key: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """Send every row alone, then in batches; return accuracy per class and latency percentiles."""
    import httpx

    if task_type != "intent":
        raise RouteclfError(f"e2e supports task intent in this version, not {task_type!r}")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    single_correct: dict[str, list[bool]] = defaultdict(list)
    routed: list[bool] = []
    latencies, errors = [], 0
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout) as client:
        try:
            client.get("/health").raise_for_status()
        except httpx.HTTPError as exc:
            raise RouteclfError(f"service at {url} is not reachable: {exc}") from exc
        for row in rows:
            started = time.perf_counter()
            response = client.post("/api/v1/classify/intent", json={"text": row.text})
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                errors += 1
                single_correct[row.label].append(False)
                continue
            classification = response.json()["classification"]
            single_correct[row.label].append(classification["top_category"] == row.label)
            routed.append(classification["category"] == row.label)
        batch_correct, batch_latencies = [], []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            started = time.perf_counter()
            response = client.post("/api/v1/classify/batch", json={"texts": [r.text for r in chunk], "task_type": task_type})
            batch_latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                errors += len(chunk)
                batch_correct += [False] * len(chunk)
                continue
            results = response.json()["results"]
            batch_correct += [res["classification"]["top_category"] == r.label for res, r in zip(results, chunk)]
    single = [ok for oks in single_correct.values() for ok in oks]
    return {
        "url": url,
        "n": len(rows),
        "errors": errors,
        "accuracy_single": float(np.mean(single)) if single else 0.0,
        "accuracy_batch": float(np.mean(batch_correct)) if batch_correct else 0.0,
        # What a router acts on: below the threshold the answer is the fallback label.
        "accuracy_routed": float(np.mean(routed)) if routed else 0.0,
        "per_class_accuracy": {label: float(np.mean(oks)) for label, oks in sorted(single_correct.items())},
        "latency_ms_single": _percentiles(latencies),
        "latency_ms_batch": _percentiles(batch_latencies) | {"batch_size": batch_size},
    }
