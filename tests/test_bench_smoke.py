"""Every benchmark runs end to end in its ``--quick`` mode at tiny sizes, on data written here
(never ``../shared/data``), so that none can rot unseen; the ones that train models or start
servers are in the slow tier."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

LM_TEXT = "the cat sat on the mat. the dog ate the bone. " * 200
TINY_LM = ["model.embedding_dim=8", "model.hidden_size=16", "data.bptt=16", "train.batch_size=4"]


def bench(name: str, *args: str, timeout: int = 300) -> str:
    """Run ``python bench/NAME.py --quick ARGS``; its report (stdout), after checking it ran."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--quick", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "[quick]" in run.stdout
    return run.stdout


def lm_text(tmp_path) -> list[str]:
    """Overrides that point an LM recipe at a tiny generated text."""
    text = tmp_path / "lm.txt"
    text.write_text(LM_TEXT)
    return [f"data.{split}={text}" for split in ("train", "dev", "test")]


def test_tagging_benchmark_seed_sections():
    """bench/tagging.py's seed-size sections (no data needed)."""
    assert "seed size, rnnkit" in bench("tagging", "--recipes", "", "--batches", "8")


def test_precision_benchmark_on_the_recipe_without_data():
    """bench/precision.py on the one recipe that needs no data (ROT13 on random messages)."""
    out = bench("precision", "--seconds", "1", "--recipes", "cipher-rot13")
    row = next(line for line in out.splitlines() if line.startswith("| cipher-rot13"))
    fp32, bf16 = (float(cell) for cell in row.split("|")[4:6])
    assert fp32 > 0 and bf16 > 0


def test_crf_benchmark_agrees_and_times():
    assert "Viterbi paths equal" in bench("crf", "--tags", "3", "--batch", "2")


def test_lm_benchmark_on_a_tiny_text(tmp_path):
    out = bench("lm", "--seconds", "0.2", "--matmul-seconds", "0.05", "--gen-tokens", "5",
                *TINY_LM, *lm_text(tmp_path))  # fmt: skip
    assert "ratio rnnkit / plain" in out


@pytest.mark.slow
def test_cipher_benchmark():
    out = bench("cipher", "--sizes", "5x10", "--throughput-seconds", "0.2", "--seed-budget", "0.5",
                "--rnnkit-max-epochs", "1")  # fmt: skip
    assert "rnnkit (batch" in out


@pytest.mark.slow
def test_translate_benchmark_on_synthetic_pairs():
    out = bench(
        "translate", "--synthetic", "--seconds", "0.2", "--seed-pairs", "2", "--decode", "8"
    )
    assert "beam 5" in out


@pytest.mark.slow
def test_embed_benchmark_against_gensim(tmp_path):
    pytest.importorskip("gensim")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(LM_TEXT.replace(". ", ".\n"))
    out = bench("embed", "--methods", "cbow", f"data.train={corpus}", f"data.dev={corpus}",
                "data.min_freq=1", "model.embedding_dim=8")  # fmt: skip
    assert "| cbow |" in out


@pytest.mark.slow
def test_export_benchmark_on_tiny_models(tmp_path):
    pytest.importorskip("onnxruntime")
    assert "| tagger | 2 |" in bench("export", "--batches", "2")


@pytest.mark.slow
def test_serve_benchmark_on_tiny_models(tmp_path):
    out = bench("serve", "--backends", "torch", "--modes", "on", "--requests", "4",
                "--translator-requests", "2", "--warmup", "1", "--models-from", str(tmp_path),
                timeout=600)  # fmt: skip
    assert "| cipher | on |" in out


@pytest.mark.slow
def test_scale_benchmark_one_process(tmp_path):
    text = tmp_path / "lm.txt"
    text.write_text(LM_TEXT)
    recipe = tmp_path / "lm.yaml"
    recipe.write_text(f"task: lm\ndata:\n  train: {text}\n  dev: {text}\n  bptt: 16\n")
    out = bench("scale", "--tasks", "lm", "--procs", "1", "--lm-steps", "2",
                "--lm-config", str(recipe))  # fmt: skip
    assert "char LM" in out


@pytest.mark.slow
def test_crack_benchmark_with_a_tiny_lm(tmp_path):
    from tests.tiny import train_tiny

    lm = train_tiny("lm", tmp_path / "lm")
    text = tmp_path / "text.txt"
    text.write_text("It was the best of times, it was the worst of times, it was the age. " * 20)
    out = bench("crack", str(lm), "--text", str(text), "--messages", "1", "--vigenere-lengths",
                "64", "--substitution-lengths", "64")  # fmt: skip
    assert "Messages cracked per second" in out
    treebank = tmp_path / "web.conllu"
    treebank.write_text("".join(f"# text = Post {i} at http://example.com/{i} is up.\n1\tx\n\n"
                                for i in range(12)))  # fmt: skip
    out = bench("crack", str(lm), "--ewt", str(treebank), "--ewt-windows", "2",
                "--ewt-lengths", "64", "--dev", str(text))  # fmt: skip
    assert "Web text" in out and "flagged low" in out and "Messages cracked" not in out
