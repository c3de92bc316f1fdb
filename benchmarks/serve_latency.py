"""Latency and throughput of `routeclf serve` for the torch, onnx and onnx-int8 backends.

For each backend a server is started on a free loopback port and sent median-length MMLU-Pro
questions: one at a time (p50/p95/p99 latency), then from 1, 8 and 32 concurrent clients
(questions/s). The same Predictor is also timed in-process, without HTTP, one text and 32
texts per call: the compute floor under the service's numbers. The clients run on the same
machine as the server and take CPU from it. Writes `benchmarks/results/serve_latency.json` and `.md`.

    python benchmarks/serve_latency.py --model models/category [--requests 300] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

from routeclf.serving.e2e import start_server as serve_in_process

RESULTS = Path(__file__).resolve().parent / "results"
DATA_DIR = Path(os.environ.get("ROUTECLF_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def median_length_questions(path: Path, n: int) -> list[str]:
    """The n questions whose length is closest to the median length."""
    questions = [json.loads(line)["question"] for line in path.read_text().split("\n") if line.strip()]
    median = np.median([len(q) for q in questions])
    return sorted(questions, key=lambda q: abs(len(q) - median))[:n]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, backend: str, port: int) -> subprocess.Popen:
    return serve_in_process(["--category", str(model), "--backend", backend, "--max-text-chars", "32000"], port)


def sequential(url: str, texts: list[str]) -> dict[str, float]:
    latencies, errors = [], 0
    with httpx.Client(base_url=url, timeout=30) as client:
        for text in texts[:10]:  # warm-up
            client.post("/api/v1/classify/intent", json={"text": text})
        for text in texts:
            started = time.perf_counter()
            response = client.post("/api/v1/classify/intent", json={"text": text})
            latencies.append((time.perf_counter() - started) * 1000)
            errors += response.status_code != 200
    array = np.array(latencies)
    return {"n": len(texts), "errors": errors, **{f"p{q}_ms": round(float(np.percentile(array, q)), 2) for q in (50, 95, 99)}}


async def concurrent(url: str, texts: list[str], clients: int, seconds: float) -> dict[str, float]:
    done, errors = 0, 0
    stop = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal done, errors
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            i = offset
            while time.perf_counter() < stop:
                response = await client.post("/api/v1/classify/intent", json={"text": texts[i % len(texts)]})
                done += 1
                errors += response.status_code != 200
                i += clients

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(clients)))
    elapsed = time.perf_counter() - started
    return {"clients": clients, "requests": done, "errors": errors, "per_second": round(done / elapsed, 1)}


def in_process(model: Path, backend: str, texts: list[str]) -> dict[str, float]:
    """The same Predictor without HTTP: the compute floor the service cannot go below."""
    from routeclf.inference.predictor import Predictor

    predictor = Predictor(model, backend=backend)
    predictor.predict_proba(texts[:8])
    timings = {}
    for batch in (1, 32):
        started = time.perf_counter()
        for i in range(0, len(texts), batch):
            predictor.predict_proba(texts[i : i + batch])
        timings[f"ms_per_text_batch{batch}"] = round((time.perf_counter() - started) * 1000 / len(texts), 2)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/category"))
    parser.add_argument("--data", type=Path, default=DATA_DIR / "mmlu-pro" / "test.jsonl")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx", "onnx-int8"])
    args = parser.parse_args()
    texts = median_length_questions(args.data, args.requests)
    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": str(args.model),
               "cpus": os.cpu_count(), "median_question_chars": int(np.median([len(t) for t in texts])), "backends": {}}
    for backend in args.backends:
        floor = in_process(args.model, backend, texts)
        port = free_port()
        server = start_server(args.model, backend, port)
        try:
            url = f"http://127.0.0.1:{port}"
            entry = {"in_process": floor, "single": sequential(url, texts)}
            entry["concurrent"] = [asyncio.run(concurrent(url, texts, c, args.seconds)) for c in (1, 8, 32)]
            results["backends"][backend] = entry
            print(backend, json.dumps(entry))
        finally:
            server.terminate()
            server.wait(timeout=30)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve_latency.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| backend | in-process ms/text (1 / 32 per call) | p50 ms | p95 ms | p99 ms | q/s @1 | q/s @8 | q/s @32 | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    for backend, entry in results["backends"].items():
        s, c = entry["single"], {x["clients"]: x for x in entry["concurrent"]}
        errors = s["errors"] + sum(x["errors"] for x in entry["concurrent"])
        f = entry["in_process"]
        lines.append(f"| {backend} | {f['ms_per_text_batch1']} / {f['ms_per_text_batch32']} | {s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} | {c[1]['per_second']} | "
                     f"{c[8]['per_second']} | {c[32]['per_second']} | {errors} |")
    (RESULTS / "serve_latency.md").write_text(f"Measured {results['date']} on {results['cpus']} CPUs, "
                                             f"model {args.model}\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
