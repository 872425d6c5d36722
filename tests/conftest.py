import atexit
import io
import os
import shutil
import sys
import tempfile
import traceback
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
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


# A 1x1 PNG: what every in-process training writes as curve.png instead of drawing one.
_BLANK_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


@pytest.fixture(autouse=True)
def _cheap_training_curve(request, monkeypatch):
    """Drawing curve.png with matplotlib takes a second or two at the end of every training,
    and only tests that ask for ``real_training_curve`` look at it; the others get a blank
    PNG in its place (the same file name, written the same atomic way)."""
    if "real_training_curve" in request.fixturenames:
        return
    import rnnkit.plots
    from rnnkit.checkpoint import atomic_write_bytes

    def blank(history, metric, path) -> None:
        atomic_write_bytes(path, _BLANK_PNG)

    monkeypatch.setattr(rnnkit.plots, "plot_training_curve", blank)


@pytest.fixture
def real_training_curve() -> None:
    """Ask for it to have training draw its real curve.png."""


@dataclass
class CliRun:
    """What one ``rnnkit`` call left behind, as a finished process would: its exit status and
    everything it printed."""

    returncode: int
    stdout: str
    stderr: str


# The warning filters of a fresh interpreter: in-process calls print what a process would.
_FRESH_PROCESS_IGNORES = (DeprecationWarning, PendingDeprecationWarning, ImportWarning)


@contextmanager
def _no_server_in_process():
    """``rnnkit serve`` in process may only refuse: a server that starts would never return."""
    import uvicorn

    def refuse(*args, **kwargs):
        raise AssertionError("rnnkit serve started a server in process; use a real process")

    run = uvicorn.Server.run
    uvicorn.Server.run = refuse
    try:
        yield
    finally:
        uvicorn.Server.run = run


def run_cli(*args: str, cwd: Path | None = None, stdin: str | None = None, env=None) -> CliRun:
    """Run ``rnnkit ARGS`` in this process (``rnnkit.cli.main``), with ``stdin`` as its standard
    input, ``env`` over the environment and ``cwd`` as the working directory; returns its exit
    status and output. What a process's end would undo is undone: writer locks are released,
    deterministic kernels switched back. A crash is exit status 1 with its traceback on stderr.
    Use :func:`spawn_cli` where a real process is the point (signals, pipes, resource limits)."""
    from rnnkit import checkpoint as ckpt
    from rnnkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    held = set(ckpt._WRITING)
    deterministic = torch.are_deterministic_algorithms_enabled()
    saved_env, saved_cwd, saved_stdin = dict(os.environ), os.getcwd(), sys.stdin
    try:
        os.environ.update(env or {})
        if cwd is not None:
            os.chdir(cwd)
        sys.stdin = io.StringIO(stdin or "")
        with (
            redirect_stdout(out),
            redirect_stderr(err),
            warnings.catch_warnings(),
            _no_server_in_process(),
        ):
            warnings.simplefilter("default")
            for category in _FRESH_PROCESS_IGNORES:
                warnings.simplefilter("ignore", category)
            try:
                code = main(list(args))
            except SystemExit as stop:  # argparse's usage errors and --help
                code = stop.code if isinstance(stop.code, int) else (stop.code is not None)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        sys.stdin = saved_stdin
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        torch.use_deterministic_algorithms(deterministic)
        for directory in set(ckpt._WRITING) - held:
            ckpt.release_writer(directory)
    return CliRun(int(code), out.getvalue(), err.getvalue())


def spawn_cli(*args: str, cwd: Path | None = None, stdin: str | None = None, env=None):
    """Run ``python -m rnnkit ARGS`` in a subprocess; returns the CompletedProcess. Only for
    what needs a process of its own: its real exit status, signals, limits, pipes."""
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
