"""Training under PyTorch's launcher (two CPU ranks, gloo) and resuming a killed run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from routeclf.cli import main
from routeclf.training.trainer import checkpoint_directory

from conftest import TINY, synthetic_rows, write_jsonl

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _train_command(data: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "routeclf", "train", "category", "--data", str(data), "--out", str(out), *TINY, "--device", "cpu",
            *extra]


def test_torchrun_two_cpu_ranks_write_one_artifact(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", synthetic_rows())
    out = tmp_path / "model"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               *_train_command(data, out)]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    config = json.loads((out / "training_config.json").read_text())
    assert config["world_size"] == 2 and config["device"] == "cpu"
    # Two ranks of 16 share each step: half the steps of one process on the same data.
    n_train = len(json.loads((out / "split.json").read_text())["ids"]["train"])
    assert config["train_steps"] == -(-(-(-n_train // 2)) // 16)
    assert not checkpoint_directory(out).exists()
    assert not list(tmp_path.glob(".model.partial-*"))
    assert main(["validate", str(out)]) == 0


def test_a_killed_run_resumes_to_the_same_result(tmp_path: Path, capsys) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", synthetic_rows())
    flags = ["--epochs", "2", "--save-steps", "4"]
    out = tmp_path / "model"
    process = subprocess.Popen([sys.executable, *_train_command(data, out, *flags)], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = checkpoint_directory(out) / "checkpoint-4" / "trainer_state.json"
    deadline = time.time() + 600
    while not first.is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # let the checkpoint's last files land
    process.kill()
    process.wait()
    assert first.is_file(), "no checkpoint was written before the run ended"
    assert not out.exists(), "a killed run left an artifact behind"

    command = ["train", "category", "--data", str(data), "--out", str(out), *TINY, "--device", "cpu", *flags]
    assert main([*command, "--lr", "1e-3", "--resume"]) == 1  # other settings: refused, named
    assert "settings differ from the interrupted run's: lr" in capsys.readouterr().err
    assert main([*command, "--resume"]) == 0
    reference = tmp_path / "reference"
    assert main([*command[:4], "--out", str(reference), *command[6:]]) == 0
    resumed, uninterrupted = (json.loads((d / "metrics.json").read_text())["test"] for d in (out, reference))
    assert json.loads((out / "training_config.json").read_text())["resumed"] is True
    for key in ("accuracy", "macro_f1"):
        assert abs(resumed[key] - uninterrupted[key]) <= 0.005, (key, resumed[key], uninterrupted[key])
    assert main(["validate", str(out)]) == 0


def test_resume_without_checkpoints_is_refused(tmp_path: Path, capsys) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", synthetic_rows())
    assert main(["train", "category", "--data", str(data), "--out", str(tmp_path / "m"), *TINY, "--resume"]) == 1
    assert "--resume: no checkpoint" in capsys.readouterr().err
