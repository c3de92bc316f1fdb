"""The PII detector per backend: what it answers and how fast, through HTTP and in-process.

For each backend the model has (torch; onnx and onnx-int8 once `routeclf export-onnx` has made
them) a server is started with `--pii MODEL --backend B` and sent, by one client and then by 8,
the hand-written chat messages nearest the median length (`eval/pii_messages.jsonl`): p50/p95/p99
latency and answers per second as the client sees them. In-process, the same detector's time per
message is split into its parts (the token model's word scores; Presidio's recognizers and spaCy;
decoding and fusion), and the fused detector the backend serves is scored on all the messages
(exact span-and-type micro-F1 and boundary-relaxed F1): every backend's answer, not only torch's.
Writes `benchmarks/results/pii_latency.json` and `.md`.

    python benchmarks/pii_latency.py --model models/bench-pii [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from common import RESULTS
from serve_latency import free_port, load

from routeclf.evaluation.entities import entity_metrics
from routeclf.inference.entities import EntityPredictor
from routeclf.inference.recognizers import recognize
from routeclf.serving.e2e import start_server

MESSAGES = Path(__file__).resolve().parents[1] / "eval" / "pii_messages.jsonl"
ENDPOINT = "/api/v1/classify/pii"
ONNX_FILES = {"onnx": "onnx/model.onnx", "onnx-int8": "onnx/model_int8.onnx"}


def read_messages(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def in_process(model: Path, backend: str, messages: list[dict], near_median: list[str]) -> dict:
    predictor = EntityPredictor(model, backend=backend)
    predictor.entities(near_median[:4])  # warm-up
    parts = {"token model": [], "recognizers": [], "whole detector": []}
    for text in near_median:
        for name, work in (("token model", lambda: predictor.word_scores([text])),
                           ("recognizers", lambda: recognize(text)),
                           ("whole detector", lambda: predictor.entities([text]))):
            started = time.perf_counter()
            work()
            parts[name].append((time.perf_counter() - started) * 1000)
    found = predictor.entities([m["text"] for m in messages])
    types = predictor.entity_types
    gold = [{(s["start"], s["end"], s["type"]) for s in m["spans"]} for m in messages]
    predicted = [{(e.start, e.end, e.type) for e in entities} for entities in found]
    figures = entity_metrics(gold, predicted, types)
    return {"ms_median": {name: round(float(np.median(values)), 2) for name, values in parts.items()},
            "messages": {k: round(figures[k], 4) for k in ("micro_precision", "micro_recall", "micro_f1", "overlap_f1")}
            | {"n": len(messages), "n_entities": figures["n_entities"]}}


def through_http(model: Path, backend: str, texts: list[str], seconds: float) -> list[dict]:
    port = free_port()
    server = start_server(["--pii", str(model), "--backend", backend], port)
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(load(url, texts, 2, 2, ENDPOINT))  # warm-up
        runs = [asyncio.run(load(url, texts, clients, seconds, ENDPOINT)) for clients in (1, 8)]
    finally:
        server.terminate()
        server.wait(timeout=60)
    return runs


def table(result: dict) -> str:
    lines = [f"Measured {result['date']} on 2 CPUs, model {result['model']}, {result['n_texts']} chat messages nearest "
             f"the median length ({result['median_chars']} characters); clients on the same machine.", "",
             "| backend | clients | p50 ms | p95 ms | p99 ms | answers/s | 5xx | in-process ms: token model / recognizers / "
             "whole | messages micro-F1 (relaxed) |", "|---" * 9 + "|"]
    for backend, entry in result["backends"].items():
        ms, messages = entry["in_process"]["ms_median"], entry["in_process"]["messages"]
        for run in entry["http"]:
            lines.append(f"| {backend} | {run['clients']} | {run['p50_ms']} | {run['p95_ms']} | {run['p99_ms']} | "
                         f"{run['answers_per_second']} | {run['server_errors']} | {ms['token model']} / "
                         f"{ms['recognizers']} / {ms['whole detector']} | {messages['micro_f1']} "
                         f"({messages['overlap_f1']}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/bench-pii"))
    parser.add_argument("--messages", type=Path, default=MESSAGES)
    parser.add_argument("--texts", type=int, default=40, help="messages nearest the median length sent in turn")
    parser.add_argument("--seconds", type=float, default=10.0, help="per load level")
    args = parser.parse_args()
    messages = read_messages(args.messages)
    median = float(np.median([len(m["text"]) for m in messages]))
    near_median = [m["text"] for m in sorted(messages, key=lambda m: abs(len(m["text"]) - median))[: args.texts]]
    backends = ["torch", *(name for name, file in ONNX_FILES.items() if (args.model / file).is_file())]
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": str(args.model),
              "n_texts": len(near_median), "median_chars": int(median), "backends": {}}
    for backend in backends:
        result["backends"][backend] = {"in_process": in_process(args.model, backend, messages, near_median),
                                       "http": through_http(args.model, backend, near_median, args.seconds)}
        print(backend, json.dumps(result["backends"][backend]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pii_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "pii_latency.md").write_text(table(result) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
