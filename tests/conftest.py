import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

# One thread: the test models are tiny, and several torch processes that each spin two threads
# on a 2-core machine slow each other down many times over.
os.environ["OMP_NUM_THREADS"] = "1"
# Prepared corpora (rnnkit/data/corpus.py) go to a cache of the test session's own, never the
# user's; subprocesses inherit it.
_CACHE = tempfile.mkdtemp(prefix="rnnkit-test-cache-")
os.environ["RNNKIT_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _quiet_torch():
    torch.manual_seed(0)
    yield


def run_cli(*args: str, cwd: Path | None = None, stdin: str | None = None, env=None):
    """Run ``python -m rnnkit ARGS`` in a subprocess; returns the CompletedProcess."""
    import subprocess

    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "rnnkit", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=300,
    )


TINY = [
    "model.embedding_dim=8",
    "model.hidden_size=32",
    "data.train_messages=2048",
    "train.batch_size=32",
    "data.eval_messages=256",
    "train.epochs=3",
    "train.progress=false",
    "train.device=cpu",
]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """A tiny trained model directory of every task (trained once per test session)."""
    from tests.tiny import train_all

    return train_all(tmp_path_factory.mktemp("tiny"))
