"""Latency, throughput, overload behaviour and CPU cost of `routeclf serve`, per backend.

For each backend a server is started on a free loopback port (its default limits) and sent
median-length MMLU-Pro questions: from 1, 8, 32 and 128 concurrent clients for a fixed time
(p50/p95/p99 latency as the client sees it, answers per second, and the server's CPU seconds per
answered request). The same Predictor is timed in-process, without HTTP, one text and 32 texts per
call (wall time and CPU time per text): the compute floor under the service's figures. Then an
overload run: a server with a small queue (`--max-queue`) and deadline is sent more than it can
score; the share of requests refused (429/503 with Retry-After), the admitted requests' p99, and
any 5xx or lost answer are reported. The clients run on the same machine and take CPU from it.
Writes `benchmarks/results/serve_latency.json` and `.md`.

    python benchmarks/serve_latency.py --model models/category [--seconds 10] [--backends onnx-int8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
import psutil

from routeclf.serving.e2e import served_latency_quantile, start_server

RESULTS = Path(__file__).resolve().parent / "results"
DATA_DIR = Path(os.environ.get("ROUTECLF_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
CLIENTS = (1, 8, 32, 128)
ENDPOINT = "/api/v1/classify/intent"


def median_length_questions(path: Path, n: int) -> list[str]:
    """The n questions whose length is closest to the median length."""
    questions = [json.loads(line)["question"] for line in path.read_text().split("\n") if line.strip()]
    median = np.median([len(q) for q in questions])
    return sorted(questions, key=lambda q: abs(len(q) - median))[:n]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_cpu_seconds(server) -> float:
    """CPU time of the server process and any worker processes it started."""
    processes = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
    return sum(p.cpu_times().user + p.cpu_times().system for p in processes)


async def load(url: str, texts: list[str], clients: int, seconds: float, endpoint: str = ENDPOINT) -> dict[str, float]:
    """`clients` concurrent clients, each sending one request after another for `seconds`."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def worker(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop:
                started = time.perf_counter()
                try:
                    response = await client.post(endpoint, json={"text": texts[i % len(texts)]})
                    status = str(response.status_code)
                except httpx.TransportError as exc:
                    status = type(exc).__name__
                statuses[status] = statuses.get(status, 0) + 1
                if status == "200":
                    latencies.append((time.perf_counter() - started) * 1000)
                i += clients

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        elapsed = time.perf_counter() - started
    total = sum(statuses.values())
    array = np.array(latencies or [np.nan])
    return {
        "clients": clients, "requests": total, "answered": statuses.get("200", 0),
        "answers_per_second": round(statuses.get("200", 0) / elapsed, 1),
        **{f"p{q}_ms": round(float(np.percentile(array, q)), 2) for q in (50, 95, 99)},
        "refused": statuses.get("429", 0) + statuses.get("503", 0),
        "server_errors": sum(n for s, n in statuses.items() if s.startswith("5") and s != "503"),
        "lost": sum(n for s, n in statuses.items() if not s.isdigit()),
        "statuses": statuses,
    }


def in_process(model: Path, backend: str, texts: list[str]) -> dict[str, float]:
    """The same Predictor without HTTP: the compute floor the service cannot go below (wall and CPU
    time per text, answers included)."""
    from routeclf.inference.predictor import Predictor

    predictor = Predictor(model, backend=backend)
    predictor.predict(texts[:8])
    timings = {}
    for batch in (1, 32):
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(texts), batch):
            predictor.predict(texts[i : i + batch])
        timings[f"ms_per_text_batch{batch}"] = round((time.perf_counter() - wall) * 1000 / len(texts), 3)
        timings[f"cpu_ms_per_text_batch{batch}"] = round((time.process_time() - cpu) * 1000 / len(texts), 3)
    return timings


def measure(model: Path, backend: str, texts: list[str], seconds: float) -> dict:
    port = free_port()
    server = start_server(["--category", str(model), "--backend", backend], port)
    url = f"http://127.0.0.1:{port}"
    runs = []
    try:
        asyncio.run(load(url, texts, 4, 2))  # warm-up
        for clients in CLIENTS:
            cpu = server_cpu_seconds(server)
            run = asyncio.run(load(url, texts, clients, seconds))
            run["server_cpu_ms_per_answer"] = round((server_cpu_seconds(server) - cpu) * 1000 / max(run["answered"], 1), 3)
            runs.append(run)
            print(backend, json.dumps(run))
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {"runs": runs}


def overload(model: Path, backend: str, texts: list[str], seconds: float, clients: int, queue: int,
             timeout_s: float) -> dict:
    port = free_port()
    server = start_server(["--category", str(model), "--backend", backend, "--max-queue", str(queue),
                           "--request-timeout", str(timeout_s)], port)
    url = f"http://127.0.0.1:{port}"
    try:
        run = asyncio.run(load(url, texts, clients, seconds))
        # The clients share the cores with the server; the service's own timing bounds its part.
        run["served_p99_bound_s"] = served_latency_quantile(httpx.get(f"{url}/metrics").text, ENDPOINT, 0.99)
    finally:
        server.terminate()
        server.wait(timeout=60)
    run.update(max_queue=queue, request_timeout_s=timeout_s,
               refused_share=round(run["refused"] / max(run["requests"], 1), 4))
    print(backend, "overload", json.dumps(run))
    return run


def table(results: dict) -> str:
    lines = ["| backend (measured) | clients | p50 ms | p95 ms | p99 ms | answers/s | server CPU ms/answer | in-process CPU ms/text "
             "(batch 1 / 32) | CPU ratio | refused | 5xx | lost |", "|---" * 12 + "|"]
    for backend, entry in results["backends"].items():
        floor = entry["in_process"]
        for run in entry["runs"]:
            # Against the cheaper of the two in-process figures: what the model alone costs at best.
            reference = min(floor["cpu_ms_per_text_batch1"], floor["cpu_ms_per_text_batch32"])
            lines.append(
                f"| {backend} ({entry.get('date', results['date'])[:16]}) | {run['clients']} | {run['p50_ms']} | {run['p95_ms']} | {run['p99_ms']} | "
                f"{run['answers_per_second']} | {run['server_cpu_ms_per_answer']} | {floor['cpu_ms_per_text_batch1']} / "
                f"{floor['cpu_ms_per_text_batch32']} | {run['server_cpu_ms_per_answer'] / reference:.2f} | "
                f"{run['refused']} | {run['server_errors']} | {run['lost']} |")
    lines += ["", "Overload (a small queue and deadline, more clients than the model can serve):", "",
              "| backend | clients | max queue | deadline s | requests | refused share | admitted p50 / p99 ms (clients) | "
              "admitted p99 (service's own timing) | 5xx | lost |", "|---" * 10 + "|"]
    for backend, entry in results["backends"].items():
        run = entry["overload"]
        lines.append(f"| {backend} | {run['clients']} | {run['max_queue']} | {run['request_timeout_s']} | "
                     f"{run['requests']} | {run['refused_share']} | {run['p50_ms']} / {run['p99_ms']} | "
                     f"<= {run['served_p99_bound_s']} s | {run['server_errors']} | {run['lost']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/category"))
    parser.add_argument("--data", type=Path, default=DATA_DIR / "mmlu-pro" / "test.jsonl")
    parser.add_argument("--texts", type=int, default=300, help="median-length questions sent in turn")
    parser.add_argument("--seconds", type=float, default=10.0, help="per load level")
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx", "onnx-int8"])
    parser.add_argument("--overload-clients", type=int, default=256)
    parser.add_argument("--overload-queue", type=int, default=32)
    parser.add_argument("--overload-timeout", type=float, default=1.0)
    parser.add_argument("--table-only", action="store_true", help="rewrite the .md from the saved .json")
    args = parser.parse_args()
    if args.table_only:
        write_table(json.loads((RESULTS / "serve_latency.json").read_text()))
        return
    texts = median_length_questions(args.data, args.texts)
    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": str(args.model),
               "cpus": os.cpu_count(), "median_question_chars": int(np.median([len(t) for t in texts])),
               "seconds_per_level": args.seconds, "backends": {}}
    saved = RESULTS / "serve_latency.json"
    if saved.is_file():  # a rerun of some backends keeps the others' last figures, each with its date
        previous = json.loads(saved.read_text())
        if previous.get("model") == str(args.model):
            results["backends"] = {name: entry | {"date": entry.get("date", previous["date"])}
                                   for name, entry in previous["backends"].items()}
    for backend in args.backends:
        entry = {"date": results["date"], "in_process": in_process(args.model, backend, texts)}
        entry.update(measure(args.model, backend, texts, args.seconds))
        entry["overload"] = overload(args.model, backend, texts, args.seconds, args.overload_clients,
                                     args.overload_queue, args.overload_timeout)
        results["backends"][backend] = entry
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve_latency.json").write_text(json.dumps(results, indent=2) + "\n")
    write_table(results)


def write_table(results: dict) -> None:
    text = table(results)
    (RESULTS / "serve_latency.md").write_text(
        f"Measured {results['date']} on {results['cpus']} CPUs, model {results['model']}, median question "
        f"{results['median_question_chars']} characters, {results['seconds_per_level']:g} s per load level; clients "
        f"on the same machine. CPU ratio: the server's CPU time per answer over the cheaper in-process figure.\n\n"
        f"{text}\n")
    print(text)


if __name__ == "__main__":
    main()
