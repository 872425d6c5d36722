"""Training on several processes with torchrun and DistributedDataParallel (gloo, on CPU):
the same weights as one process over the same global batches, one writer, a killed run that
resumes, and two "machines" on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnnkit import checkpoint as ckpt
from tests.conftest import ROOT, run_cli
from tests.serving import free_port
from tests.test_embed import _corpus
from tests.test_tag import ner_overrides


def torchrun(*args: str, nodes: tuple[int, int] | None = None, port: int | None = None):
    """``python -m torch.distributed.run`` over ``python -m rnnkit ARGS``, as a Popen."""
    launch = [sys.executable, "-m", "torch.distributed.run"]
    if nodes is None:
        launch += ["--standalone", "--nproc_per_node", "2"]
    else:
        count, node = nodes
        launch += ["--nnodes", str(count), "--node_rank", str(node), "--nproc_per_node", "1",
                   "--master_addr", "127.0.0.1", "--master_port", str(port)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*launch, "-m", "rnnkit", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env, start_new_session=True,
    )  # fmt: skip


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def finish(process: subprocess.Popen, timeout: float = 240) -> tuple[str, str]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out, err


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> list[str]:
    # No dropout of any kind: each process draws its own masks, where one process draws one.
    # set of masks for the whole batch.
    data = tmp_path_factory.mktemp("ner")
    # fp32: in bf16 each process rounds its half-batch on its own, beyond this tolerance.
    return [*ner_overrides(data, "model.head=crf", "model.dropout=0", "model.word_dropout=0",
                            "train.epochs=2", "train.precision=fp32"),
            "--deterministic"]  # fmt: skip


def weights(directory: Path) -> dict:
    return ckpt.read_tensors(directory / "model.safetensors")


def test_two_processes_train_the_weights_one_process_does(recipe, tmp_path):
    one = run_cli("train", "tag", *recipe, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    out, err = finish(torchrun("train", "tag", *recipe, "--out", str(tmp_path / "two")))
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, worst  # the same global batches; only float summation order differs
    # One writer, one voice: rank 0's files, its log lines once, its summary once.
    listing = {p.name for p in (tmp_path / "two").iterdir()}
    assert listing == {p.name for p in (tmp_path / "one").iterdir()}
    assert out.count("best dev f1") == 1
    assert sum(line.startswith("epoch ") for line in err.splitlines()) == 2
    history = ckpt.read_json(tmp_path / "two" / "trainer.json")["state"]["history"]
    reference = ckpt.read_json(tmp_path / "one" / "trainer.json")["state"]["history"]
    for got, want in zip(history, reference, strict=True):
        assert got["f1"] == pytest.approx(want["f1"], abs=1e-6)
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4)


@pytest.mark.slow  # torchrun: three processes that each import torch
def test_a_killed_two_process_run_resumes(recipe, tmp_path):
    out = tmp_path / "run"
    run = torchrun("train", "tag", *recipe, "train.epochs=3", "train.checkpoint_every=3",
                   "--out", str(out))  # fmt: skip
    deadline = time.monotonic() + 180
    step = 0
    while step < 20 and run.poll() is None:
        assert time.monotonic() < deadline
        try:
            step = json.loads((out / "trainer.json").read_text())["state"]["step"]
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    assert run.poll() is None, "finished before it could be killed"
    for pid in [run.pid, *descendants(run.pid)]:  # the launcher and both workers at once
        os.kill(pid, signal.SIGKILL)
    run.wait()
    finish(torchrun("train", "tag", "--resume", str(out), "--deterministic"))
    state = ckpt.read_json(out / "trainer.json")["state"]
    assert state["finished"] and [h["epoch"] for h in state["history"]] == [1, 2, 3]


@pytest.mark.slow  # torchrun: three processes that each import torch
def test_two_machines_on_loopback(recipe, tmp_path):
    port = free_port()
    out = tmp_path / "run"
    nodes = [torchrun("train", "tag", *recipe, "--out", str(out), nodes=(2, rank), port=port)
             for rank in (0, 1)]  # fmt: skip
    for node in nodes:
        finish(node)
    assert (out / "model.safetensors").exists()
    assert ckpt.read_json(out / "trainer.json")["state"]["finished"]


@pytest.mark.slow  # torchrun: three processes that each import torch
@pytest.mark.parametrize(
    "model",
    [
        ["model.method=skipgram"],  # word2vec's hand gradient: row gradients, gathered
        ["model.method=cbow", "model.loss=softmax"],  # a sparse and a dense gradient, reduced
    ],
)
def test_word_vectors_on_two_processes_are_those_of_one(tmp_path, model):
    corpus = _corpus(tmp_path / "corpus.txt")
    recipe = ["embed", f"data.train={corpus}", "data.min_freq=1", "model.embedding_dim=8",
              *model, "train.batch_size=64", "train.epochs=2", "train.progress=false",
              "--deterministic"]  # fmt: skip
    one = run_cli("train", *recipe, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    finish(torchrun("train", *recipe, "--out", str(tmp_path / "two")))
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for name in a:  # each process's half of a global batch: the same sum of gradients
        assert (a[name] - b[name]).abs().max() <= 1e-6, name
    trained = ckpt.read_json(tmp_path / "two" / "trainer.json")["state"]
    assert trained["step"] == ckpt.read_json(tmp_path / "one" / "trainer.json")["state"]["step"]


@pytest.mark.slow  # torchrun: three processes that each import torch
def test_a_language_model_on_two_processes_resumes_with_each_ones_own_streams(tmp_path):
    text = tmp_path / "lm.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 80)
    recipe = [f"data.train={text}", "data.bptt=16", "model.embedding_dim=8",
              "model.hidden_size=16", "model.dropout=0", "model.embedding_dropout=0",
              "train.batch_size=5", "train.epochs=2", "train.checkpoint_every=2",
              "train.progress=false", "--deterministic"]  # fmt: skip
    out = tmp_path / "run"
    run = torchrun("train", "lm", *recipe, "--out", str(out))
    deadline = time.monotonic() + 180
    while run.poll() is None:
        assert time.monotonic() < deadline
        try:
            if json.loads((out / "trainer.json").read_text())["state"]["step"] >= 6:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    assert run.poll() is None, "finished before it could be killed"
    for pid in [run.pid, *descendants(run.pid)]:
        os.kill(pid, signal.SIGKILL)
    run.wait()
    carried = ckpt.read_tensors(out / "trainer.safetensors")
    assert {k.split(".")[1] for k in carried if k.startswith("carried.")} == {"rank0", "rank1"}
    finish(torchrun("train", "lm", "--resume", str(out), "--deterministic"))
    assert ckpt.read_json(out / "trainer.json")["state"]["finished"]
    one = run_cli("train", "lm", "--resume", str(out))  # another world size: one clear line
    assert one.returncode == 0 or "several processes" in one.stderr
