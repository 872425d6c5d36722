"""Benchmarks run end to end in their quick modes, and the prepared GPU one in its CPU dry-run
mode (as pytorch/examples smoke-tests every model type with --dry-run), so that it works when
a GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_gpu_benchmark_dry_run_completes(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--dry-run", "--device", "cpu",
         "--data-dir", str(tmp_path / "no-data")],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-report.json").read_text())
    assert report and (tmp_path / "gpu-report.md").exists()


def test_tagging_benchmark_quick_run_completes(tmp_path):
    """The seed-size sections of bench/tagging.py (no data needed), so it cannot rot unseen."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "tagging.py"), "--quick", "--recipes", ""],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "seed size, rnnkit" in run.stdout


def test_precision_benchmark_quick_run_completes():
    """bench/precision.py on the one recipe that needs no data (ROT13 on random messages)."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "precision.py"), "--quick", "--seconds", "1",
         "--recipes", "cipher-rot13"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    row = next(line for line in run.stdout.splitlines() if line.startswith("| cipher-rot13"))
    fp32, bf16 = (float(cell) for cell in row.split("|")[4:6])
    assert fp32 > 0 and bf16 > 0
