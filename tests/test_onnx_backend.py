"""The ONNX backend (rnnkit/backends.py): predict through onnxruntime answers what PyTorch does.

For every task and model kind the backend serves (cipher; tagger with a CRF and with a softmax
head and CNN character features; neural and bag-of-n-grams classifier; translator, greedy and
beam search with attention), ``rnnkit.load(DIR, backend="onnx").predict`` is compared with
``rnnkit.load(DIR).predict`` on inputs that include an empty string, unknown words and foreign
characters, in Python and through a real ``rnnkit serve --backend onnx``. Strings (plaintexts,
tags, labels, translations) and the order of every list and mapping must be identical; numbers
(probabilities, scores, attention weights) within backends.TOLERANCE, attention weights, which
the answer rounds to 5 decimals, within that plus one unit of the 5th decimal. Largest
differences seen on the tiny models: probabilities 6e-8, translation scores 5e-7, attention
weights 0 (after rounding).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import pytest
import torch

import rnnkit
from rnnkit.errors import ConfigError, RnnkitError
from tests.serving import free_port, wait_until_up
from tests.tiny import SAMPLE_INPUTS

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from rnnkit import backends, export  # noqa: E402  (after the skip: needs onnx)

# Variants trained here besides the session's tiny models: name → (task, overrides).
VARIANTS = {
    "tag-softmax": ("tag", ["model.head=softmax", "model.chars=cnn"]),
    "classify-bow": (
        "classify", ["model.kind=bow", "model.ngram_max=2", "model.features=tfidf", "model.norm=l2"]
    ),
}  # fmt: skip
SERVED = ["cipher", "tag", "tag-softmax", "classify", "classify-bow", "translate"]
# Beyond tests/tiny.py's SAMPLE_INPUTS (each with an empty string): unknown words, foreign
# characters, one symbol or word, repeats, a blank line.
MORE = {
    "cipher": ["N", "GUVF-VF-N-ZHPU-YBATRE-ZRFFNTR-GB-QRPELCG", "Äöü 123 ?!"],
    "tag": ["Zqxjvorth", "a", "the the the the the the the the the the the Oslo", "   "],
    "classify": ["zqxjvorth", "dog", "a a a a a a a a a a a a river", "ÉTÉ"],
    "translate": ["zqxjvorth", "je", "il est tres tres tres grand . je suis fatigue .", "   "],
}
# name → the options each check runs with
CASES = [
    ("cipher", {}),
    ("tag", {}),
    ("tag-softmax", {}),
    ("classify", {"top": 0}),
    ("classify-bow", {"top": 0}),
    ("translate", {"beam": 1}),
    ("translate", {"beam": 5, "attention": True}),
]


def inputs_of(name: str) -> list[str]:
    task = name.split("-")[0]
    return SAMPLE_INPUTS[task] + MORE[task]


def assert_same(ours: Any, theirs: Any, where: str = "") -> float:
    """Assert two answers equal but for numbers within the tolerance; returns the largest
    difference of a number."""
    if isinstance(ours, float) or isinstance(theirs, float):
        assert isinstance(ours, (int, float)) and isinstance(theirs, (int, float)), where
        limit = backends.TOLERANCE + (1e-5 if "attention" in where else 0.0)
        assert abs(ours - theirs) <= limit, f"{where}: {ours} vs {theirs}"
        return abs(ours - theirs)
    assert type(ours) is type(theirs), f"{where}: {ours!r} vs {theirs!r}"
    if isinstance(ours, dict):
        assert list(ours) == list(theirs), f"{where}: {list(ours)} vs {list(theirs)}"
        return max((assert_same(ours[k], theirs[k], f"{where}.{k}") for k in ours), default=0.0)
    if isinstance(ours, list):
        assert len(ours) == len(theirs), f"{where}: {ours!r} vs {theirs!r}"
        pairs = enumerate(zip(ours, theirs, strict=True))
        return max((assert_same(a, b, f"{where}[{i}]") for i, (a, b) in pairs), default=0.0)
    assert ours == theirs, f"{where}: {ours!r} vs {theirs!r}"
    return 0.0


@pytest.fixture(scope="module")
def dirs(tiny_models, tmp_path_factory) -> dict:
    from tests.tiny import train_tiny

    root = tmp_path_factory.mktemp("onnx-backend")
    found = {name: tiny_models[name] for name in ("cipher", "tag", "classify", "translate")}
    for name, (task, extra) in VARIANTS.items():
        found[name] = train_tiny(task, root / name, *extra)
    found["lm"], found["embed"] = tiny_models["lm"], tiny_models["embed"]
    return found


@pytest.fixture(scope="module")
def loaded(dirs) -> dict:
    """name → (PyTorch task, ONNX task)."""
    return {n: (rnnkit.load(dirs[n]), rnnkit.load(dirs[n], backend="onnx")) for n in SERVED}


@pytest.mark.parametrize(("name", "options"), CASES, ids=lambda v: json.dumps(v) if v else "")
def test_onnx_predicts_what_torch_predicts(loaded, name, options):
    torch_task, onnx_task = loaded[name]
    assert torch_task.runner is None
    assert isinstance(onnx_task.runner, backends.OnnxRunner)
    calls = []
    run = onnx_task.runner.run
    onnx_task.runner.run = lambda graph, feeds: calls.append(graph) or run(graph, feeds)
    try:
        ours = onnx_task.predict(inputs_of(name), options)
    finally:
        del onnx_task.runner.run
    theirs = torch_task.predict(inputs_of(name), options)
    assert_same(ours, theirs, name)
    assert calls, "the ONNX backend never ran a graph"
    if name == "translate":
        assert {"encoder", "decoder"} <= set(calls)


def test_onnx_backend_threads_match_torch_and_model_dir_stays_read_only(dirs):
    directory = dirs["tag"]
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}
    task = rnnkit.load(directory, backend="onnx")
    after = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}
    assert after == before
    assert task.runner.threads == torch.get_num_threads()


def test_tasks_without_an_onnx_backend_and_bad_names_are_one_clear_error(dirs):
    for name in ("lm", "embed"):
        with pytest.raises(ConfigError, match=f"the {name} task has no ONNX backend"):
            rnnkit.load(dirs[name], backend="onnx")
    with pytest.raises(ConfigError, match="bad value 'tensorrt' for backend"):
        rnnkit.load(dirs["cipher"], backend="tensorrt")
    assert backends.onnx_tasks() == ["cipher", "tag", "classify", "translate"]


def test_graphs_that_fail_the_parity_check_are_refused(dirs, monkeypatch):
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no difference is small enough
    with pytest.raises(RnnkitError, match="differs from PyTorch.*backend onnx refused"):
        rnnkit.load(dirs["cipher"], backend="onnx")


def test_serve_backend_onnx_answers_what_torch_answers(dirs, loaded):
    port = free_port()
    cmd = [sys.executable, "-m", "rnnkit", "serve", "--backend", "onnx", "--port", str(port),
           "--log-level", "warning"]  # fmt: skip
    for name in SERVED:
        cmd += ["--model", f"{name}={dirs[name]}"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base)
        for name, options in CASES:
            inputs = inputs_of(name)
            reply = httpx.post(
                f"{base}/v1/models/{name}/predict",
                json={"inputs": inputs, "options": options},
                timeout=60,
            )
            assert reply.status_code == 200, reply.text
            theirs = json.loads(json.dumps(loaded[name][0].predict(inputs, options)))
            assert_same(reply.json()["outputs"], theirs, f"HTTP {name}")
    finally:
        process.terminate()
        out, err = process.communicate(timeout=20)
    assert "serving cipher (cipher)" in out, err
