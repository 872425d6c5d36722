"""The prepared GPU benchmark runs end to end in its CPU dry-run mode (as pytorch/examples
smoke-tests every model type with --dry-run), so that it works when a GPU is lent."""

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
