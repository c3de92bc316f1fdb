"""What the training benchmarks share: their command line and how results are recorded."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from routeclf.cli import build_parser
from routeclf.settings import TrainSettings, settings_from_args

RESULTS = Path(__file__).resolve().parent / "results"
DATA_DIR = Path(os.environ.get("ROUTECLF_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def train_settings(doc: str, task: str, data_default: str, out_default: str,
                   own_flags: Callable[[argparse.ArgumentParser], None] | None = None,
                   ) -> tuple[argparse.Namespace, list[str], TrainSettings]:
    """The benchmark's own flags (`--data`, `--out`, `--label`, and any `own_flags` adds) and
    `routeclf train` settings from every other flag (after `--`)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", "--data-dir", dest="data", default=data_default)
    parser.add_argument("--out", default=out_default)
    parser.add_argument("--label", default="default", help="name of this configuration in the results table")
    if own_flags:
        own_flags(parser)
    own, flags = parser.parse_known_args()
    flags = [f for f in flags if f != "--"]
    args = build_parser().parse_args(["train", task, "--data", own.data, "--out", own.out, "--overwrite", *flags])
    return own, flags, settings_from_args(args)


def run_summary(label: str, flags: list[str], wall: float, config: dict[str, Any]) -> dict[str, Any]:
    """The fields every results file starts with."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "configuration": label,
        "flags": flags,
        "wall_seconds": round(wall, 1),
        "best_epoch": config["best_epoch"],
    }


def record(name: str, result: dict[str, Any], header: list[str], row: list[str], table: str | None = None) -> None:
    """Write `results/NAME.json` (this run) and append a row to `results/TABLE.md` (default NAME)."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = RESULTS / f"{table or name}.md"
    if not table.exists():
        table.write_text("| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|\n")
    with table.open("a") as handle:
        handle.write("| " + " | ".join(row) + " |\n")
