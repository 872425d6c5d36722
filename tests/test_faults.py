"""Fault injection: training runs of three tasks killed with SIGKILL at 20 random moments in
all (during steps, evaluations and checkpoint writes alike), each resumed until it finishes,
end bit-identical to undisturbed runs: weights, optimizer moments, RNG and trainer state."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnnkit import checkpoint as ckpt
from tests.conftest import ROOT, TINY
from tests.test_tag import ner_overrides

KILLS = {"cipher": 7, "tag": 7, "lm": 6}  # 20 moments in all


def recipe(task: str, data: Path) -> list[str]:
    data.mkdir(exist_ok=True)
    if task == "cipher":
        return [*TINY, "model.dropout=0.2", "model.layers=2", "train.checkpoint_every=5"]
    if task == "tag":
        return ner_overrides(data, "model.head=crf", "train.epochs=3", "train.checkpoint_every=4")
    text = data / "lm.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    return [
        f"data.train={text}", "data.bptt=16", "model.embedding_dim=8", "model.hidden_size=24",
        "model.dropout=0.1", "train.batch_size=4", "train.epochs=3", "train.checkpoint_every=3",
        "train.progress=false", "train.device=cpu",
    ]  # fmt: skip


def command(task: str, overrides: list[str], out: Path, resume: bool) -> list[str]:
    base = [sys.executable, "-m", "rnnkit", "train", task, "--deterministic"]
    if resume:
        return [*base, "--resume", str(out)]
    return [*base, *overrides, "--out", str(out), "--force"]


def step_of(out: Path) -> int:
    try:
        return json.loads((out / "trainer.json").read_text())["state"]["step"]
    except (OSError, ValueError, KeyError):
        return 0


def run_until(cmd: list[str], out: Path, step: int | None, pause: float) -> bool:
    """Run ``cmd``; SIGKILL it ``pause`` seconds after its checkpoint reaches ``step``.
    True when it finished by itself first."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 300
    while proc.poll() is None and (step is None or step_of(out) < step):
        assert time.monotonic() < deadline, "the run stalled"
        time.sleep(0.005)
    if proc.poll() is None and step is not None:
        time.sleep(pause)  # lands in a step, an evaluation or the next checkpoint write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return False
    proc.wait()
    err = proc.stderr.read().decode()
    assert proc.returncode == 0, err
    return True


def state_of(out: Path) -> dict:
    tensors = {
        name: ckpt.read_tensors(out / name)
        for name in ("model.safetensors", "trainer.safetensors", "optimizer.safetensors")
    }
    trainer = ckpt.read_json(out / "trainer.json")
    for record in trainer["state"]["history"]:
        record.pop("elapsed_s")
        record.pop("dev_s")  # clocks differ between runs
    return {"tensors": tensors, "trainer": trainer["state"], "rng": trainer["python_rng"]}


def assert_same(a: dict, b: dict) -> None:
    assert a["trainer"] == b["trainer"] and a["rng"] == b["rng"]
    for name, tensors in a["tensors"].items():
        other = b["tensors"][name]
        assert tensors.keys() == other.keys(), name
        for key in tensors:
            assert tensors[key].equal(other[key]), f"{name}: {key}"


# Each kill is a process of its own (a torch import): one task in the fast tier, the other
# two in the slow tier that CI runs.
@pytest.mark.parametrize(
    "task", [t if t == "cipher" else pytest.param(t, marks=pytest.mark.slow) for t in sorted(KILLS)]
)
def test_runs_killed_at_random_moments_resume_bit_identical(task, tmp_path):
    overrides = recipe(task, tmp_path / "data")
    whole = tmp_path / "whole"
    assert run_until(command(task, overrides, whole, False), whole, None, 0)
    total = step_of(whole)
    rng = random.Random(f"faults-{task}")
    targets = sorted(rng.sample(range(1, total - 1), KILLS[task]))
    out = tmp_path / "killed"
    kills = 0
    for target in [*targets, None]:
        resume = (out / "trainer.json").exists()
        finished = run_until(
            command(task, overrides, out, resume), out, target, rng.uniform(0, 0.05)
        )
        kills += not finished
    assert kills >= KILLS[task] - 1  # a run may outpace one close target
    assert_same(state_of(whole), state_of(out))
