"""Shared fixtures: the real data folder (skipped when absent) and small synthetic data sets."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from routeclf.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("ROUTECLF_DATA_DIR", REPO.parent / "shared" / "data"))
MMLU_PRO = DATA_DIR / "mmlu-pro" / "test.jsonl"

# A few words per category, enough for a tiny model to learn something in one epoch.
KEYWORDS = {
    "biology": ["cell", "gene", "protein", "enzyme", "species"],
    "business": ["revenue", "marketing", "invoice", "profit", "shareholder"],
    "chemistry": ["molar", "reaction", "acid", "electron", "compound"],
    "computer science": ["algorithm", "compiler", "array", "binary", "runtime"],
    "economics": ["inflation", "demand", "supply", "tariff", "gdp"],
    "engineering": ["beam", "torque", "circuit", "voltage", "turbine"],
    "health": ["patient", "symptom", "dose", "clinic", "diagnosis"],
    "history": ["empire", "treaty", "dynasty", "revolution", "century"],
    "law": ["plaintiff", "statute", "court", "contract", "defendant"],
    "math": ["integral", "matrix", "prime", "equation", "derivative"],
    "other": ["recipe", "travel", "hobby", "weather", "garden"],
    "philosophy": ["ethics", "kant", "virtue", "metaphysics", "socrates"],
    "physics": ["momentum", "photon", "gravity", "quantum", "velocity"],
    "psychology": ["behavior", "memory", "cognitive", "freud", "emotion"],
}
FILLER = ["what", "is", "the", "about", "explain", "how", "does", "a", "why", "this", "question"]


def synthetic_rows(per_label: int = 20, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for label in get_task("category").labels:
        for i in range(per_label):
            words = rng.sample(KEYWORDS[label], 3) + rng.sample(FILLER, 4)
            rng.shuffle(words)
            rows.append({"question_id": len(rows), "question": " ".join(words) + f" number {i}?", "category": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def synthetic_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "synthetic.jsonl", synthetic_rows())


@pytest.fixture(scope="session")
def mmlu_pro() -> Path:
    if not MMLU_PRO.is_file():
        pytest.skip(f"MMLU-Pro not found at {MMLU_PRO}; set ROUTECLF_DATA_DIR to the shared data folder")
    return MMLU_PRO


@pytest.fixture(scope="session")
def gate_model(mmlu_pro, tmp_path_factory) -> Path:
    """A small real category model: a stratified subset of MMLU-Pro, two short epochs."""
    from routeclf.cli import main

    out = tmp_path_factory.mktemp("gate") / "category"
    argv = ["train", "category", "--data", str(mmlu_pro), "--out", str(out), *GATE_FLAGS]
    assert main(argv) == 0
    return out


# Also used by the gate test's thresholds: keep both in one place.
GATE_FLAGS = ["--max-samples", "1400", "--epochs", "2", "--max-length", "64", "--lr", "2e-4", "--seed", "42",
              "--min-steps", "0", "--cv-folds", "0", "--no-augment"]


# Tests keep training short: no small-data schedule, no cross-validation, no extra training rows
# (each is tested on its own).
TINY = ["--epochs", "1", "--batch-size", "16", "--max-length", "32", "--lr", "3e-4", "--seed", "42", "--min-steps", "0",
        "--cv-folds", "0", "--no-augment"]


def train_tiny(tmp_path_factory, method: str, extra: list[str] = ()) -> Path:
    """One epoch on the synthetic data: seconds, yet a real artifact."""
    from routeclf.cli import main

    root = tmp_path_factory.mktemp(method)
    data = write_jsonl(root / "data.jsonl", synthetic_rows())
    out = root / "model"
    code = main(["train", "category", "--data", str(data), "--out", str(out), "--method", method, *TINY, *extra])
    assert code == 0
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory, "full")


@pytest.fixture(scope="session")
def served_model(tiny_model: Path, tmp_path_factory) -> Path:
    """A copy of the tiny model with its ONNX exports (fp32 and int8)."""
    from routeclf.cli import main

    target = tmp_path_factory.mktemp("serve") / "model"
    shutil.copytree(tiny_model, target)
    assert main(["export-onnx", str(target), "--quantize", "int8"]) == 0
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_ready(url: str, seconds: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ready").status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"{url} never became ready")


@contextlib.contextmanager
def live_server(config) -> Iterator[str]:
    """The service on a loopback port in this process, ready; yields its URL."""
    import uvicorn

    from routeclf.serving.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def served_process(arguments: list[str]) -> Iterator[tuple[subprocess.Popen, str]]:
    """`routeclf serve ARGUMENTS` in its own process on a loopback port, ready; yields it and its URL,
    and stops it (SIGTERM) afterwards."""
    from routeclf.serving.e2e import start_server

    port = free_port()
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    server = start_server(arguments, port, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def require_data(relative: str) -> Path:
    if not (DATA_DIR / relative).is_file():
        pytest.skip(f"{relative} not found under {DATA_DIR}; set ROUTECLF_DATA_DIR")
    return DATA_DIR


def train_on_sample(tmp_path_factory, task: str, relative: str, flags: list[str]) -> Path:
    """A tiny model of a built-in task, trained on a sample of the real data (skipped without it)."""
    from routeclf.cli import main

    data = require_data(relative)
    out = tmp_path_factory.mktemp(task) / "model"
    common = ["--epochs", "1", "--batch-size", "16", "--min-steps", "0"]
    assert main(["train", task, "--data", str(data), "--out", str(out), *common, *flags]) == 0
    return out


@pytest.fixture(scope="session")
def jailbreak_model(tmp_path_factory) -> Path:
    return train_on_sample(tmp_path_factory, "jailbreak", "jailbreak/jackhhao/default_full.csv",
                           ["--max-samples", "300", "--max-length", "32", "--lr", "2e-4"])


@pytest.fixture(scope="session")
def pii_model(tmp_path_factory) -> Path:
    return train_on_sample(tmp_path_factory, "pii", "pii/presidio-synth/synth_dataset_v2.jsonl",
                           ["--max-samples", "240", "--max-length", "48", "--lr", "3e-4"])
