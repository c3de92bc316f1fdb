"""A soak of `routeclf serve`: mixed traffic for a long time while the server's memory is sampled.

The traffic mixes what a router and a hostile client send: single requests and conversations,
/batch calls, invalid bodies, lone surrogates, oversized texts, and requests to random URLs (which
must not grow the metrics). Every `--sample` seconds the server's resident memory is read. The
result holds the memory at the end of the first minute and at the end, the least-squares slope
over the last two thirds (MiB per 10 minutes), the answers by status, and any 5xx or lost answer.
Writes `benchmarks/results/serve_soak.json` and `.md`.

    python benchmarks/serve_soak.py --model models/category [--minutes 10] [--backend onnx-int8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
import psutil

from routeclf.serving.e2e import start_server

RESULTS = Path(__file__).resolve().parent / "results"
DATA_DIR = Path(os.environ.get("ROUTECLF_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def questions(path: Path, n: int = 500) -> list[str]:
    rows = [json.loads(line)["question"] for line in path.read_text().split("\n") if line.strip()]
    return random.Random(0).sample(rows, n)


def request(rng: random.Random, texts: list[str]) -> tuple[str, str, dict | bytes]:
    """One request of the mix: (method, path, JSON body or raw bytes)."""
    text = rng.choice(texts)
    kind = rng.random()
    if kind < 0.55:
        return "POST", "/api/v1/classify/intent", {"text": text}
    if kind < 0.65:
        return "POST", "/api/v1/classify/intent", {"messages": [{"role": "user", "content": text[:200]},
                                                                {"role": "assistant", "content": "ok"},
                                                                {"role": "user", "content": "and this one?"}]}
    if kind < 0.75:
        return "POST", "/api/v1/classify/batch", {"texts": rng.sample(texts, 16), "task_type": "intent"}
    if kind < 0.82:
        return "POST", "/api/v1/classify/intent", b'{"text": "bad \\ud800 surrogate"}'
    if kind < 0.88:
        return "POST", "/api/v1/classify/intent", b'{"text": ' + b"[" * rng.randint(1, 50)
    if kind < 0.92:
        return "POST", "/api/v1/classify/intent", {"text": "x" * 40_000}
    return "GET", f"/random/{rng.getrandbits(64):x}", b""


async def traffic(url: str, texts: list[str], clients: int, until: float, statuses: dict[str, int]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < until:
                method, path, body = request(rng, texts)
                try:
                    if isinstance(body, dict):
                        response = await client.request(method, path, json=body)
                    else:
                        response = await client.request(method, path, content=body,
                                                        headers={"content-type": "application/json"})
                    status = str(response.status_code)
                except httpx.TransportError as exc:
                    status = type(exc).__name__
                statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(worker(seed) for seed in range(clients)))


async def soak(url: str, server, texts: list[str], minutes: float, clients: int, sample: float) -> dict:
    process = psutil.Process(server.pid)
    statuses: dict[str, int] = {}
    started = time.monotonic()
    until = started + minutes * 60
    samples: list[tuple[float, float]] = []
    load = asyncio.ensure_future(traffic(url, texts, clients, until, statuses))
    while not load.done():
        samples.append((time.monotonic() - started, process.memory_info().rss / 2**20))
        await asyncio.sleep(sample)
    await load
    samples.append((time.monotonic() - started, process.memory_info().rss / 2**20))
    async with httpx.AsyncClient(base_url=url) as client:
        metrics_lines = len((await client.get("/metrics")).text.splitlines())
    # Large batches of long texts raise the memory for a moment and give it back; what a leak would
    # raise is the memory held between them: each minute's lowest reading.
    minutes_seen = sorted({int(t // 60) for t, _ in samples})
    floors = [min(m for t, m in samples if int(t // 60) == minute) for minute in minutes_seen]
    tail = minutes_seen[len(minutes_seen) // 3 :]
    slope = float(np.polyfit(tail, floors[len(floors) - len(tail) :], 1)[0]) * 10 if len(tail) > 1 else 0.0
    return {
        "minutes": minutes, "clients": clients, "requests": sum(statuses.values()), "statuses": statuses,
        "server_errors": sum(n for s, n in statuses.items() if s.startswith("5")),
        "lost": sum(n for s, n in statuses.items() if not s.isdigit()),
        "rss_mib_floor_by_minute": [round(f, 1) for f in floors],
        "rss_mib_floor_slope_per_10_min_last_two_thirds": round(slope, 1),
        "rss_mib_max": round(max(m for _, m in samples), 1),
        "metrics_lines_at_end": metrics_lines,
        "samples": [(round(t, 1), round(m, 1)) for t, m in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/category"))
    parser.add_argument("--data", type=Path, default=DATA_DIR / "mmlu-pro" / "test.jsonl")
    parser.add_argument("--backend", default="onnx-int8")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients (8 stay within capacity)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between memory readings")
    args = parser.parse_args()
    port = free_port()
    server = start_server(["--category", str(args.model), "--backend", args.backend], port)
    try:
        result = asyncio.run(soak(f"http://127.0.0.1:{port}", server, questions(args.data), args.minutes,
                                  args.clients, args.sample))
    finally:
        server.terminate()
        server.wait(timeout=60)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": str(args.model),
              "backend": args.backend, "cpus": os.cpu_count(), **result}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve_soak.json").write_text(json.dumps(result, indent=2) + "\n")
    floors = result["rss_mib_floor_by_minute"]
    row = (f"| {result['date'][:10]} | {args.backend} | {args.minutes:g} | {args.clients} | {result['requests']} | "
           f"{floors[1] if len(floors) > 1 else floors[0]} | {floors[-1]} | "
           f"{result['rss_mib_floor_slope_per_10_min_last_two_thirds']} | {result['rss_mib_max']} | "
           f"{result['metrics_lines_at_end']} | {result['server_errors']} | {result['lost']} |")
    header = ("| date | backend | minutes | clients | requests | held RSS MiB, minute 2 | held RSS MiB, last minute | "
              "slope of held RSS MiB/10 min (last two thirds) | peak RSS MiB | /metrics lines | 5xx | lost |\n"
              + "|---" * 12 + "|\n")
    (RESULTS / "serve_soak.md").write_text(
        "Mixed traffic (valid, invalid, oversized, surrogates, random URLs); server memory sampled every "
        f"{args.sample:g} s. Held RSS: each minute's lowest reading (large batches raise the memory for a moment "
        "and give it back). Statuses: " + json.dumps(result["statuses"]) + "\n\n" + header + row + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))


if __name__ == "__main__":
    main()
