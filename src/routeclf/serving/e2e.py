"""`routeclf e2e`: labelled texts through a running service, single and batched.

The service says which task the endpoint's model was trained for (`/info/models`), so the data is
read with that task's labels and columns, and no task is looked up in code.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np

from routeclf.errors import RouteclfError


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.array(values)
    return {f"p{q}": round(float(np.percentile(array, q)), 3) for q in (50, 95, 99)} | {"mean": round(float(array.mean()), 3)}


def start_server(arguments: list[str], port: int, timeout: float = 120.0, **popen: Any):
    """`routeclf serve ARGUMENTS --port PORT` in its own process, returned once `/ready` answers 200;
    stopped, with the reason, if it exits or is not ready in time."""
    import subprocess
    import sys

    import httpx

    server = subprocess.Popen([sys.executable, "-m", "routeclf", "serve", *arguments, "--port", str(port)], **popen)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise RouteclfError(f"the server exited with {server.returncode} before it was ready")
        time.sleep(0.1)
    server.kill()
    raise RouteclfError(f"the server was not ready within {timeout:g} s")


def served_latency_quantile(metrics: str, endpoint: str, quantile: float) -> float:
    """From a `/metrics` text: the upper bound of the latency bucket that holds `quantile` of the
    service's own timings of its 2xx answers on `endpoint` (as Prometheus' histogram_quantile
    would bound it)."""
    from prometheus_client.parser import text_string_to_metric_families

    (family,) = [f for f in text_string_to_metric_families(metrics) if f.name == "routeclf_request_latency_seconds"]
    buckets = sorted((float(s.labels["le"]), s.value) for s in family.samples
                     if s.name.endswith("_bucket") and s.labels["endpoint"] == endpoint and s.labels["status"] == "2xx")
    return next(bound for bound, count in buckets if count >= quantile * buckets[-1][1])


def _served_task(client, endpoint: str):
    """The task of the model behind `endpoint`, as the service describes it."""
    from routeclf.serving.models import ROLE_ENDPOINTS
    from routeclf.tasks.taskfile import task_from_json

    name = ROLE_ENDPOINTS[endpoint][0] if endpoint in ROLE_ENDPOINTS else endpoint
    models = {m["name"]: m for m in client.get("/info/models").json()["models"]}
    if name not in models:
        raise RouteclfError(f"the service serves no model for {endpoint!r}; it serves: {', '.join(models) or 'none'}")
    if "task" not in models[name]:
        raise RouteclfError(f"the {name} model could not be loaded by the service ({models[name].get('state')})")
    return task_from_json(models[name]["task"], f"/info/models {name}")


def _answer(task, body: dict[str, Any]) -> tuple[str, str]:
    """(the answer the router acts on, the top label) from one response."""
    if task.kind == "detector":
        top = task.positive_label if body["risk_score"] >= 0.5 else task.fallback_label
        return body["label"], top
    classification = body["classification"]
    return classification["category"], classification["top_category"]


def run_e2e(url: str, data: str, endpoint: str = "intent", fields: dict[str, str | None] | None = None,
            batch_size: int = 32, api_key: str | None = None, timeout: float = 30.0,
            limit: int | None = None) -> dict[str, Any]:
    """Send every row alone, then in batches; accuracy of the answer given (and of the top label)
    per class, and latency percentiles."""
    import httpx

    from routeclf.data.sources import Fields, load_rows

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout) as client:
        try:
            client.get("/health").raise_for_status()
        except httpx.HTTPError as exc:
            raise RouteclfError(f"service at {url} is not reachable: {exc}") from exc
        task = _served_task(client, endpoint)
        if task.kind == "tagger":
            raise RouteclfError("e2e scores classifiers and detectors; evaluate a tagger with routeclf evaluate")
        fields = fields or {}
        chosen = Fields.for_task(task, fields.get("text"), fields.get("label"), fields.get("id"))
        rows = load_rows(data, task, chosen, require_all_labels=False).rows[:limit]
        path = f"/api/v1/classify/{endpoint}"
        single: dict[str, list[bool]] = defaultdict(list)
        top_correct: list[bool] = []
        latencies, errors = [], 0
        for row in rows:
            started = time.perf_counter()
            response = client.post(path, json={"text": row.text})
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                errors += 1
                single[row.label].append(False)
                continue
            answer, top = _answer(task, response.json())
            single[row.label].append(answer == row.label)
            top_correct.append(top == row.label)
        batch_correct, batch_latencies = [], []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            started = time.perf_counter()
            response = client.post("/api/v1/classify/batch", json={"texts": [r.text for r in chunk], "task_type": endpoint})
            batch_latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                errors += len(chunk)
                batch_correct += [False] * len(chunk)
                continue
            batch_correct += [_answer(task, res)[0] == r.label for res, r in zip(response.json()["results"], chunk)]
    answered = [ok for oks in single.values() for ok in oks]
    return {
        "url": url,
        "endpoint": path,
        "task": task.name,
        "n": len(rows),
        "errors": errors,
        # What a router acts on: below the threshold the answer is the fallback label.
        "accuracy_single": float(np.mean(answered)) if answered else 0.0,
        "accuracy_batch": float(np.mean(batch_correct)) if batch_correct else 0.0,
        "top_label_accuracy": float(np.mean(top_correct)) if top_correct else 0.0,
        "per_class_accuracy": {label: float(np.mean(oks)) for label, oks in sorted(single.items())},
        "latency_ms_single": _percentiles(latencies),
        "latency_ms_batch": _percentiles(batch_latencies) | {"batch_size": batch_size},
    }
