"""Several processes on one model directory: a trainer checkpointing every step, a reader
loading and predicting in a loop, and a second trainer. The trainer must finish exactly as an
undisturbed run does, the reader must never see a mix of two checkpoints, and the second
writer must be refused in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from rnnkit import checkpoint as ckpt
from tests.conftest import ROOT, TINY, run_cli

TRAIN = ["train", "cipher", "--deterministic", *TINY, "train.checkpoint_every=1"]

# Loads the directory the way every reader does and checks, inside one snapshot, that the
# trainer state, the optimizer state and the weights all come from the same step.
READER = """
import sys, time
import rnnkit
from rnnkit import checkpoint as ckpt
out, stop = sys.argv[1], sys.argv[2]
import pathlib
checks = answers = 0
while not pathlib.Path(stop).exists():
    if not (pathlib.Path(out) / "trainer.json").exists():
        time.sleep(0.01)
        continue
    with ckpt.reading(out):
        step = ckpt.read_json(pathlib.Path(out) / "trainer.json")["state"]["step"]
        moments = ckpt.read_tensors(pathlib.Path(out) / "optimizer.safetensors")
        weights = ckpt.read_tensors(pathlib.Path(out) / "trainer.safetensors")
        best = ckpt.read_tensors(pathlib.Path(out) / "model.safetensors")
    if int(moments["0.step"]) != step:
        sys.exit(f"mix: trainer.json at step {step}, optimizer at {int(moments['0.step'])}")
    if set(best) != {k[6:] for k in weights if k.startswith("model.")}:
        sys.exit("mix: model.safetensors and trainer.safetensors hold different models")
    checks += 1
    answers += len(rnnkit.load(out).predict(["URYYB", "FUVEMVEMNMERPDRF"]))
print(checks, answers)
"""


def test_trainer_reader_and_a_second_writer_on_one_directory(tmp_path):
    quiet = run_cli(*TRAIN, "--out", str(tmp_path / "alone"))
    assert quiet.returncode == 0, quiet.stderr

    out, stop = tmp_path / "busy", tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    trainer = subprocess.Popen(
        [sys.executable, "-m", "rnnkit", *TRAIN, "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(out), str(stop)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out / "trainer.json").exists() and trainer.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = run_cli(*TRAIN, "--out", str(out), "--force")
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"written by process {trainer.pid}" in lines[0], lines
        _, err = trainer.communicate(timeout=300)
        assert trainer.returncode == 0, err
    finally:
        stop.touch()
        trainer.kill()
    checks, errors = reader.communicate(timeout=120)
    assert reader.returncode == 0, errors
    assert int(checks.split()[0]) > 0  # it did read while the trainer wrote

    # Bit-identical to the undisturbed run: weights, optimizer moments and trainer state.
    for name in ("model.safetensors", "trainer.safetensors", "optimizer.safetensors"):
        a = ckpt.read_tensors(tmp_path / "alone" / name)
        b = ckpt.read_tensors(out / name)
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), name
    state = [ckpt.read_json(d / "trainer.json")["state"] for d in (tmp_path / "alone", out)]
    for s in state:
        timings = ("elapsed_s", "dev_s")
        s["history"] = [{k: v for k, v in h.items() if k not in timings} for h in s["history"]]
    assert state[0] == state[1]
