"""A deterministic CPU run killed with SIGKILL and resumed ends with the same weights."""

import json
import os
import signal
import subprocess
import sys
import time

import torch

from rnnkit import checkpoint as ckpt

from .conftest import run_cli

ARGS = [
    "model.embedding_dim=8",
    "model.hidden_size=32",
    "model.dropout=0.2",  # dropout draws from the global RNG, which must be restored too
    "model.layers=2",
    "data.train_messages=2048",
    "data.eval_messages=128",
    "data.min_length=10",
    "train.epochs=4",
    "train.batch_size=32",
    "train.checkpoint_every=7",
    "train.progress=false",
    "train.device=cpu",
    "--deterministic",
]


def _final_weights(directory):
    tensors = ckpt.read_tensors(directory / "trainer.safetensors")
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def _step(directory):
    try:
        return json.loads((directory / "trainer.json").read_text())["state"]["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_cli("train", "cipher", *ARGS, "--out", str(whole)).returncode == 0

    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnkit", "train", "cipher", *ARGS, "--out", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    deadline = time.time() + 120
    while _step(killed) < 100 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped_at = _step(killed)
    assert 0 < stopped_at < 4 * 64

    result = run_cli("train", "cipher", "--resume", str(killed), "--deterministic")
    assert result.returncode == 0, result.stderr
    a, b = _final_weights(whole), _final_weights(killed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert (whole / "metrics.jsonl").read_text().count("\n") == 4
    assert (killed / "metrics.jsonl").read_text().count("\n") == 4
